//! The latch check: opens only after `count` distinct count-downs, and
//! never closes once seen open.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Event, Timeline, Violation};

/// One latch's count-downs (earliest invoke per distinct id, and whether
/// any attempt under it succeeded) and observations.
#[derive(Debug, Default)]
struct Latch<'a> {
    downs: BTreeMap<&'a str, (Instant, bool)>,
    /// `(at, open)`, sorted.
    seen: Vec<(Instant, bool)>,
}

/// All latch checks for `resource`; `ttl` is how long its state lives
/// after each count-down, if it may expire within the history.
pub(super) fn check(
    resource: &str,
    count: u32,
    ttl: Option<Duration>,
    events: &[Event],
    time: Timeline,
) -> Vec<Violation> {
    let latch = collect(resource, events);
    let mut out = Vec::new();
    out.extend(opens_late_enough(resource, count, &latch, time));
    out.extend(never_closes(
        resource,
        &latch,
        kept_until(&latch, ttl),
        time,
    ));
    out
}

/// Until when every node that got a count-down surely keeps its state: its
/// first count-down landed no earlier than the first one was invoked, and
/// every count-down refreshes the TTL. `None`: for ever.
fn kept_until(latch: &Latch<'_>, ttl: Option<Duration>) -> Option<Instant> {
    let first = latch.downs.values().map(|&(at, _)| at).min()?;
    Some(first + ttl?)
}

fn collect<'a>(resource: &str, events: &'a [Event]) -> Latch<'a> {
    let mut latch = Latch::default();
    for event in events {
        match event {
            Event::CountDown {
                resource: r,
                id,
                invoked,
                ok,
            } if r == resource => {
                let e = latch.downs.entry(id.as_str()).or_insert((*invoked, *ok));
                *e = (e.0.min(*invoked), e.1 || *ok);
            }
            Event::LatchObserved {
                resource: r,
                open,
                at,
            } if r == resource => latch.seen.push((*at, *open)),
            _ => {}
        }
    }
    latch.seen.sort();
    latch
}

/// The first open observation comes no earlier than the invoke of the
/// `count`-th distinct count-down id. A repeated id counts once, at its
/// first invoke. Failed count-downs count too: one that returned an error
/// may still have been recorded by a majority ([`crate::Latch::count_down`]).
fn opens_late_enough(
    resource: &str,
    count: u32,
    latch: &Latch<'_>,
    time: Timeline,
) -> Option<Violation> {
    let (opened, _) = *latch.seen.iter().find(|(_, open)| *open)?;
    let mut invokes: Vec<Instant> = latch.downs.values().map(|&(at, _)| at).collect();
    invokes.sort();
    let nth = usize::try_from(count).ok()?.checked_sub(1)?;
    let detail = match invokes.get(nth) {
        Some(&needed) if needed <= opened => return None,
        Some(&needed) => format!(
            "seen open at {}, before count-down {count} was invoked at {}",
            time.at(opened),
            time.at(needed)
        ),
        None => format!(
            "seen open at {} after only {} distinct count-downs of {count} ({} of them failed)",
            time.at(opened),
            invokes.len(),
            latch.downs.values().filter(|&&(_, ok)| !ok).count()
        ),
    };
    Some(Violation::new("latch", resource, detail))
}

/// Once seen open, never seen closed by a read invoked later (and before
/// `kept_until`, when the state may expire).
fn never_closes(
    resource: &str,
    latch: &Latch<'_>,
    kept_until: Option<Instant>,
    time: Timeline,
) -> Option<Violation> {
    let (opened, _) = *latch.seen.iter().find(|(_, open)| *open)?;
    let closed: Vec<Instant> = latch
        .seen
        .iter()
        .filter(|&&(at, open)| !open && at > opened)
        .filter(|&&(at, _)| kept_until.is_none_or(|k| at < k))
        .map(|&(at, _)| at)
        .collect();
    let first = *closed.first()?;
    let detail = format!(
        "seen open at {}, then closed at {} ({} closed observations after opening)",
        time.at(opened),
        time.at(first),
        closed.len()
    );
    Some(Violation::new("latch", resource, detail))
}
