//! Checks over lease windows: exclusion, capacity and fencing.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Event, LeaseId, LeaseKind, LeaseRecord, Sample, Timeline, Violation, ms};

/// A lease with its extensions, samples, loss and release folded in.
#[derive(Debug, Clone)]
pub(super) struct Window<'a> {
    pub(super) resource: &'a str,
    pub(super) id: LeaseId,
    kind: LeaseKind,
    holder: &'a str,
    /// None when the holder never asked for its token (it was never issued).
    token: Option<u64>,
    permits: u32,
    invoked: Option<Instant>,
    granted: Instant,
    /// The latest deadline recorded.
    deadline: Instant,
    /// The earliest release recorded.
    released: Option<Instant>,
    /// When `lost()` first fired.
    pub(super) lost: Option<Instant>,
    /// The guard's claims next to the servers' keys, in recording order.
    pub(super) samples: Vec<&'a Sample>,
}

impl<'a> Window<'a> {
    fn new(l: &'a LeaseRecord) -> Window<'a> {
        Window {
            resource: &l.resource,
            id: l.id,
            kind: l.kind,
            holder: &l.holder,
            token: l.token,
            permits: l.permits,
            invoked: None,
            granted: l.granted,
            deadline: l.deadline,
            released: None,
            lost: None,
            samples: Vec::new(),
        }
    }

    fn start(&self) -> Instant {
        self.granted
    }

    /// The token, in checks that only look at leases with one.
    fn token(&self) -> u64 {
        self.token.unwrap_or_default()
    }

    /// The deadline, cut short by a release or by `lost()` firing (unless
    /// the guard claimed to be valid again afterwards: then the library
    /// still let it act, and the `lost` check reports the revival).
    fn end(&self) -> Instant {
        let revived = |lost: &Instant| self.samples.iter().any(|s| s.at > *lost);
        let lost = self.lost.filter(|l| !revived(l));
        [self.released, lost]
            .into_iter()
            .flatten()
            .fold(self.deadline, Instant::min)
    }

    /// The earliest instant the lease's keys may have been written: its
    /// acquire's invoke when recorded, otherwise its grant.
    pub(super) fn since(&self) -> Instant {
        self.invoked.map_or(self.granted, |i| i.min(self.granted))
    }

    fn is_empty(&self) -> bool {
        self.end() <= self.start()
    }

    /// When the library granted it, at the latest. It returned the grant
    /// before the deadline, so a worker that measured `granted` late (it was
    /// paused) is placed at its deadline instead.
    fn order(&self) -> Instant {
        self.granted.min(self.deadline)
    }

    pub(super) fn describe(&self, time: Timeline) -> String {
        format!(
            "lease {} (holder {}, token {}, {}..{})",
            self.id,
            self.holder,
            self.token.map_or("none".to_owned(), |t| t.to_string()),
            time.at(self.start()),
            time.at(self.end())
        )
    }
}

/// Folds the events into one window per lease; an extension, release,
/// loss, sample or invoke time for a lease never granted here is a
/// `"history"` violation.
pub(super) fn windows(events: &[Event]) -> (Vec<Window<'_>>, Vec<Violation>) {
    let mut windows: Vec<Window<'_>> = Vec::new();
    let mut out = Vec::new();
    for event in events {
        let (id, what) = match event {
            Event::Lease(l) => {
                windows.push(Window::new(l));
                continue;
            }
            Event::Invoked { id, .. } => (*id, "acquire invoke time"),
            Event::Extended { id, .. } => (*id, "extension"),
            Event::Released { id, .. } => (*id, "release"),
            Event::Lost { id, .. } => (*id, "loss"),
            Event::Sampled { id, .. } => (*id, "sample"),
            _ => continue,
        };
        // Ids are handed out in recording order, so a lease's id is its index.
        match windows.get_mut(id.0) {
            Some(w) => fold(w, event),
            None => out.push(Violation::new(
                "history",
                "",
                format!("{what} of lease {id}, which this history never granted"),
            )),
        }
    }
    (windows, out)
}

fn fold<'a>(w: &mut Window<'a>, event: &'a Event) {
    let earliest = |was: Option<Instant>, at: Instant| Some(was.map_or(at, |w| w.min(at)));
    match event {
        Event::Invoked { at, .. } => w.invoked = earliest(w.invoked, *at),
        Event::Extended { deadline, .. } => w.deadline = w.deadline.max(*deadline),
        Event::Released { at, .. } => w.released = earliest(w.released, *at),
        Event::Lost { at, .. } => w.lost = earliest(w.lost, *at),
        Event::Sampled { sample, .. } => w.samples.push(sample),
        _ => {}
    }
}

/// Leases recorded with another kind than the spec gives the resource.
pub(super) fn kinds(
    resource: &str,
    expected: Option<LeaseKind>,
    ws: &[&Window<'_>],
) -> Vec<Violation> {
    ws.iter()
        .filter(|w| Some(w.kind) != expected)
        .map(|w| {
            let detail = format!(
                "lease {} was recorded as {:?}, the spec says {}",
                w.id,
                w.kind,
                expected.map_or("it holds no leases".to_owned(), |k| format!("{k:?}"))
            );
            Violation::new("history", resource, detail)
        })
        .collect()
}

/// A mutex: no two lease windows overlap (whoever holds them: one holder
/// cannot lock twice either), and tokens rise in grant order.
pub(super) fn mutex(resource: &str, ws: &[&Window<'_>], time: Timeline) -> Vec<Violation> {
    let mut out = exclusion("mutex", resource, ws, |_, _| true, time);
    out.extend(fencing_in_grant_order(resource, ws, time));
    out
}

/// A reentrant lock: windows of different owners never overlap, and the
/// holdings' tokens rise (see [`fencing_reentrant`]).
pub(super) fn reentrant(resource: &str, ws: &[&Window<'_>], time: Timeline) -> Vec<Violation> {
    let mut out = exclusion("reentrant", resource, ws, |a, b| a.holder != b.holder, time);
    out.extend(fencing_reentrant(resource, ws, time));
    out
}

/// A semaphore: at most `limit` permits valid at once, and fencing (see
/// [`fencing_semaphore`]).
pub(super) fn semaphore(
    resource: &str,
    limit: u32,
    ws: &[&Window<'_>],
    time: Timeline,
) -> Vec<Violation> {
    let mut out = capacity(resource, limit, ws, time);
    out.extend(fencing_semaphore(resource, limit, ws, time));
    out
}

/// Every pair of overlapping windows that `conflict` says may not overlap.
/// A sweep by start time, keeping the windows still open.
fn exclusion(
    check: &'static str,
    resource: &str,
    ws: &[&Window<'_>],
    conflict: impl Fn(&Window<'_>, &Window<'_>) -> bool,
    time: Timeline,
) -> Vec<Violation> {
    let mut sorted: Vec<&Window<'_>> = ws.iter().copied().filter(|w| !w.is_empty()).collect();
    sorted.sort_by_key(|w| (w.start(), w.id));
    let mut open: Vec<&Window<'_>> = Vec::new();
    let mut out = Vec::new();
    for w in sorted {
        open.retain(|a| a.end() > w.start());
        for a in open.iter().filter(|a| conflict(a, w)) {
            let overlap = a.end().min(w.end()) - w.start();
            let detail = format!(
                "{} and {} overlap by {}",
                a.describe(time),
                w.describe(time),
                ms(overlap)
            );
            out.push(Violation::new(check, resource, detail));
        }
        open.push(w);
    }
    out
}

/// At no instant do the valid windows hold more than `limit` permits. A
/// sweep over starts and ends (ends first at a tie: windows are half-open),
/// reporting each stretch of excess once, where it begins.
fn capacity(resource: &str, limit: u32, ws: &[&Window<'_>], time: Timeline) -> Vec<Violation> {
    let mut points: Vec<(Instant, bool, &Window<'_>)> = Vec::new();
    for w in ws.iter().filter(|w| !w.is_empty()) {
        points.push((w.start(), true, w));
        points.push((w.end(), false, w));
    }
    points.sort_by_key(|&(at, starts, w)| (at, starts, w.id));
    let mut held: BTreeMap<LeaseId, &Window<'_>> = BTreeMap::new();
    let mut sum = 0u64;
    let mut out = Vec::new();
    for (at, starts, w) in points {
        let was_over = sum > u64::from(limit);
        if starts {
            held.insert(w.id, w);
            sum += u64::from(w.permits);
        } else {
            held.remove(&w.id);
            sum -= u64::from(w.permits);
        }
        if sum > u64::from(limit) && !was_over {
            let detail = excess(at, sum, limit, &held, time);
            out.push(Violation::new("semaphore", resource, detail));
        }
    }
    out
}

fn excess(
    at: Instant,
    sum: u64,
    limit: u32,
    held: &BTreeMap<LeaseId, &Window<'_>>,
    time: Timeline,
) -> String {
    let holders: Vec<String> = held
        .values()
        .map(|h| format!("{} {} ({})", h.id, h.holder, h.permits))
        .collect();
    format!(
        "at {}, {sum} permits held of {limit}: {}",
        time.at(at),
        holders.join(", ")
    )
}

/// Tokens strictly rise in grant order. Sound for a mutex (and a semaphore
/// of one permit): a lease is granted only once the one before it is gone
/// from a majority, after that one's token was committed there.
fn fencing_in_grant_order(resource: &str, ws: &[&Window<'_>], time: Timeline) -> Vec<Violation> {
    let ws = &with_tokens(ws);
    let mut sorted = ws.to_vec();
    sorted.sort_by_key(|w| (w.order(), w.id));
    let mut top: Option<&Window<'_>> = None;
    let mut out = Vec::new();
    for w in sorted {
        match top {
            Some(t) if w.token() <= t.token() => out.push(not_above(resource, w, t, time)),
            _ => top = Some(w),
        }
    }
    out
}

/// A semaphore of several permits: concurrent acquisitions may commit their
/// tokens in either order, or even the same token, so tokens need only rise
/// from every lease granted before this one's acquire was invoked
/// ([`History::acquire_invoked`](super::History::acquire_invoked); leases
/// without it are not checked).
fn fencing_semaphore(
    resource: &str,
    limit: u32,
    ws: &[&Window<'_>],
    time: Timeline,
) -> Vec<Violation> {
    if limit <= 1 {
        return fencing_in_grant_order(resource, ws, time);
    }
    let ws = &with_tokens(ws);
    let mut sorted = ws.to_vec();
    sorted.sort_by_key(|w| (w.order(), w.id));
    // The lease with the highest token among the first i, for each i.
    let mut best: Vec<&Window<'_>> = Vec::with_capacity(sorted.len());
    for w in &sorted {
        let keep = best.last().filter(|b| b.token() >= w.token()).copied();
        best.push(keep.unwrap_or(w));
    }
    let mut out = Vec::new();
    for w in ws {
        let Some(invoked) = w.invoked else { continue };
        let before = sorted.partition_point(|a| a.order() < invoked);
        if let Some(t) = before.checked_sub(1).map(|i| best[i])
            && w.token() <= t.token()
        {
            out.push(not_above(resource, w, t, time));
        }
    }
    out
}

/// `w` came after `t` but its token is not above `t`'s.
fn not_above(resource: &str, w: &Window<'_>, t: &Window<'_>, time: Timeline) -> Violation {
    let how = if w.token() < t.token() {
        "whose token is higher"
    } else {
        "and repeats its token"
    };
    let detail = format!("{} follows {}, {how}", w.describe(time), t.describe(time));
    Violation::new("fencing", resource, detail)
}

/// One owner's continuous holding: holds whose windows overlap in a chain.
#[derive(Debug)]
struct Holding<'a> {
    owner: &'a str,
    start: Instant,
    end: Instant,
    first: &'a Window<'a>,
}

/// A reentrant lock: the holds of one holding share their token, and a
/// holding's token is above that of every earlier holding of another owner.
/// An owner holding again after a gap may keep its token: the node may have
/// kept the hash (a hold expired a moment early, or a re-entry raced the
/// release), so only "not below" is required there.
fn fencing_reentrant(resource: &str, ws: &[&Window<'_>], time: Timeline) -> Vec<Violation> {
    let ws = &with_tokens(ws);
    let mut out = Vec::new();
    let mut holdings = Vec::new();
    let mut by_owner: BTreeMap<&str, Vec<&Window<'_>>> = BTreeMap::new();
    for w in ws {
        by_owner.entry(w.holder).or_default().push(w);
    }
    for (owner, mut holds) in by_owner {
        holds.sort_by_key(|w| (w.order(), w.id));
        holdings.extend(chain(owner, &holds, resource, time, &mut out));
    }
    holdings.sort_by_key(|h| (h.start, h.first.id));
    // The highest token each owner's earlier holdings had.
    let mut tops: BTreeMap<&str, &Window<'_>> = BTreeMap::new();
    for h in &holdings {
        let token = h.first.token();
        let other = tops
            .iter()
            .filter(|&(owner, _)| *owner != h.owner)
            .map(|(_, t)| *t)
            .max_by_key(|t| t.token());
        let own = tops.get(h.owner).copied();
        let worse = other
            .filter(|t| t.token() >= token)
            .or(own.filter(|t| t.token() > token));
        if let Some(t) = worse {
            out.push(not_above(resource, h.first, t, time));
        }
        if own.is_none_or(|t| token > t.token()) {
            tops.insert(h.owner, h.first);
        }
    }
    out
}

/// Chains one owner's holds (sorted) into holdings, reporting holds of one
/// holding whose tokens differ.
fn chain<'a>(
    owner: &'a str,
    holds: &[&'a Window<'a>],
    resource: &str,
    time: Timeline,
    out: &mut Vec<Violation>,
) -> Vec<Holding<'a>> {
    let mut holdings: Vec<Holding<'a>> = Vec::new();
    for &w in holds {
        let end = w.end().max(w.order());
        match holdings.last_mut() {
            Some(h) if w.order() < h.end => {
                if w.token() != h.first.token() {
                    let detail = format!(
                        "{} and {} overlap in one holding but have different tokens",
                        h.first.describe(time),
                        w.describe(time)
                    );
                    out.push(Violation::new("fencing", resource, detail));
                }
                h.end = h.end.max(end);
            }
            _ => holdings.push(Holding {
                owner,
                start: w.order(),
                end,
                first: w,
            }),
        }
    }
    holdings
}

/// The windows of leases whose holder asked for a token: fencing is about
/// issued tokens only, and a token nobody asked for was never issued.
fn with_tokens<'w, 'a>(ws: &[&'w Window<'a>]) -> Vec<&'w Window<'a>> {
    ws.iter().copied().filter(|w| w.token.is_some()).collect()
}
