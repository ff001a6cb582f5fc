//! Lease operations: claim (acquire, fence, undo), extend and release.
//!
//! An acquisition is valid for `ttl - elapsed - drift` after its first send
//! (`t1`); its local deadline is `t1 + ttl - drift`, the earliest instant a
//! node could have let the key expire, less the drift allowance. When it
//! fails, or when the caller drops the future, the undo (release) script
//! runs on every node that may have said yes, from a spawned task the caller
//! cannot cancel, once round one's stragglers answered: an undo sent earlier
//! could overtake an acquire that a node is still reloading its script for.
//!
//! Fencing tokens. Per-node counters drift apart, so a token is chosen in
//! two rounds: round one reads the counter on each node where the lease is
//! held, the client picks `max + 1`, and round two raises the counter to it
//! on a quorum of nodes where the lease is still held. Any two quorums
//! share a node, and a lease is held on a node only after the previous
//! one ended there, so the next holder reads at least this token. Round two
//! runs when the holder first asks for its token, not at the grant: it
//! still runs while the lease is held (the commit checks the owner on each
//! node, and the token counts only if a quorum took it before the
//! deadline), and a token nobody asked for was never issued, so no later
//! token has to exceed it. The default mutex claim is a plain `SET NX`
//! that reads no counter, so for it round one waits for the ask as well
//! (`lua/fence_read.lua`): holders that never use their token pay nothing,
//! and one that does pays two rounds. Semaphore and reentrant claims read
//! the counters in their acquire scripts; with one node those issue the
//! token at once. The reentrant lock commits at the grant, since every hold
//! of one holding must share the token. Counters are floored at the server
//! clock (ms × 1024) where a node has none, so a node that restarted empty
//! keeps issuing larger tokens, as long as node clocks differ by less than
//! the restart quarantine.
//!
//! Every acquire script ends its ARGV with the fencing tail: `1` to issue
//! the token on the node (one node) or `0` to report the counter, then the
//! counter's TTL; and replies `{1, fence, final, agreed...}` when granted
//! (`final` 1: `fence` is a token already issued) or `{0, pttl}` when held
//! by someone else. Extend scripts take `[token, ttl_ms, holding...]` and
//! release scripts `[token, channel, holding...]`; both reply `{1}` when
//! done and `{0}` when the lease is not held there.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::line::{Line, Waiter};
use tracing::{Instrument, Span};

use super::node::{Call, invocation};
use super::nodes::Nodes;
use super::round::{self, Need, Round, Stragglers};
use super::scripts::{self, Invocation, Lua};
use super::wait::Attempt;
use crate::config::Timing;
use crate::error::{Error, Result};
use crate::observe::{self, Subject};

/// How long a fencing counter outlives the last lease that raised it. The
/// counters are floored at server time, so even a counter that expired
/// issues larger tokens than before.
const FENCE_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// How the leases of one resource are kept: its scripts and keys.
#[derive(Debug)]
pub(crate) struct LeaseSpec {
    pub(crate) resource: String,
    pub(crate) acquire: &'static Lua,
    pub(crate) extend: &'static Lua,
    pub(crate) release: &'static Lua,
    /// KEYS of the acquire script.
    pub(crate) acquire_keys: Vec<String>,
    /// KEYS of the extend and release scripts.
    pub(crate) lease_keys: Vec<String>,
    pub(crate) channel: String,
    pub(crate) fence: FenceTarget,
    /// Commit the token at the grant (every hold of one reentrant holding
    /// shares it), not when first asked for.
    pub(crate) eager_fence: bool,
    /// Fair mode: the queue its acquisitions wait in (see `line.rs`).
    pub(crate) line: Option<Line>,
    /// Outside fair mode, claims run as plain commands rather than the
    /// acquire script (a mutex: see [`Invocation::set_nx`]).
    pub(crate) set_nx: bool,
}

/// Where fencing round two checks the lease and raises the counter (see
/// `lua/fence_commit.lua`).
#[derive(Debug, Clone)]
pub(crate) struct FenceTarget {
    pub(crate) lease_key: String,
    pub(crate) counter_key: String,
    /// Hash field naming the owner; `None` takes the first agreed value.
    pub(crate) owner_field: Option<&'static str>,
    /// Hash field that keeps the issued token, if any.
    pub(crate) store_field: Option<&'static str>,
}

/// What a lease holds beyond its owner token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Holding {
    /// The key the token names (a mutex).
    Token,
    /// Semaphore slots: in a claim, those the grant names.
    Slots(Vec<u32>),
    /// One hold of a reentrant lock.
    Hold(String),
}

impl Holding {
    /// What extend scripts take after the token and TTL.
    fn extend_args(&self) -> Vec<String> {
        match self {
            Holding::Token => Vec::new(),
            Holding::Slots(slots) => slots.iter().map(u32::to_string).collect(),
            Holding::Hold(id) => vec![id.clone()],
        }
    }

    /// What release scripts take after the token and channel (slots are
    /// released by token, also those a lost reply granted).
    fn release_args(&self) -> Vec<String> {
        match self {
            Holding::Hold(id) => vec![id.clone()],
            Holding::Token | Holding::Slots(_) => Vec::new(),
        }
    }
}

impl LeaseSpec {
    /// An extension of the lease `token` holds to `ttl_ms` from now.
    pub(crate) fn extend_call(&self, token: &str, ttl_ms: u64, holding: &Holding) -> Call {
        let mut inv = invocation(self.extend, &keys(&self.lease_keys));
        inv.arg(token).arg(ttl_ms).arg(holding.extend_args());
        Call::extension(inv)
    }

    fn release_call(&self, token: &str, holding: &Holding) -> Call {
        let mut inv = invocation(self.release, &self.keys(&self.lease_keys));
        inv.arg(token)
            .arg(&self.channel)
            .arg(holding.release_args());
        Call::new(inv)
    }

    /// Whether claims run as plain commands, which read no fencing counter.
    fn plain_claims(&self) -> bool {
        self.set_nx && self.line.is_none()
    }

    /// What its leases are about, for spans and metrics.
    pub(crate) fn subject(&self) -> Subject<'_> {
        Subject::of_script(self.acquire.name(), &self.resource)
    }

    /// The acquire script with its keys set, for a claim to add its
    /// arguments to.
    pub(crate) fn acquire_invocation(&self) -> Invocation {
        let keys = self.keys(&self.acquire_keys);
        if self.plain_claims() {
            Invocation::set_nx(&keys)
        } else {
            invocation(self.acquire, &keys)
        }
    }

    /// A script's keys: its own, then in fair mode the queue's.
    fn keys<'a>(&'a self, own: &'a [String]) -> Vec<&'a str> {
        let line = self.line.iter().flat_map(Line::keys);
        own.iter().map(String::as_str).chain(line).collect()
    }
}

fn keys(keys: &[String]) -> Vec<&str> {
    keys.iter().map(String::as_str).collect()
}

/// One acquisition to attempt.
pub(crate) struct Claim {
    pub(crate) spec: Arc<LeaseSpec>,
    pub(crate) token: String,
    /// The acquire script with its own arguments, before the fencing tail.
    pub(crate) acquire: Invocation,
    pub(crate) holding: Holding,
    pub(crate) timing: Timing,
    /// Fair mode: the waiter's place in line.
    pub(crate) waiter: Option<Waiter>,
}

/// A successful acquisition.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    /// When the votes were in and the lease was decided.
    pub(crate) granted: Instant,
    pub(crate) deadline: Instant,
    pub(crate) fence: Fence,
    pub(crate) holding: Holding,
    /// Round one's answers still in flight: the release waits for them,
    /// or it could overtake an acquire a slow node is still reloading its
    /// script for, and leave a key there until the TTL.
    pub(crate) stragglers: Option<Stragglers>,
}

/// A granted lease's fencing token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fence {
    /// Issued: one node minted it, or it was committed at the grant.
    Issued(u64),
    /// To be committed on a quorum when first asked for (round two).
    Pending(u64),
    /// Not read yet (a plain-command claim): round one runs when the token
    /// is first asked for, round two after it.
    Unread,
}

/// One acquisition attempt: round one, fencing round two on several
/// nodes, and the undo when either falls short.
pub(crate) async fn claim(nodes: &Arc<Nodes>, claim: Claim) -> Result<Attempt<Grant>> {
    let spec = claim.spec.clone();
    let subject = spec.subject();
    let started = Instant::now();
    let span = observe::acquire_span(subject);
    let attempt = claim_once(nodes, claim, &span)
        .instrument(span.clone())
        .await;
    span.in_scope(|| match &attempt {
        Ok(Attempt::Done(_)) => observe::granted(subject, started.elapsed()),
        Ok(Attempt::Busy { retry_after }) => observe::contended(subject, *retry_after),
        Ok(Attempt::Unavailable(e)) => observe::unavailable(subject, e),
        Err(e) => observe::failed(subject, e),
    });
    attempt
}

async fn claim_once(nodes: &Arc<Nodes>, claim: Claim, span: &Span) -> Result<Attempt<Grant>> {
    let Claim {
        spec,
        token,
        mut acquire,
        holding,
        timing,
        waiter,
    } = claim;
    let t1 = Instant::now();
    let deadline = t1 + timing.ttl - timing.drift;
    acquire
        .arg(u8::from(nodes.len() == 1))
        .arg(fence_ttl_ms(timing));
    if let Some(waiter) = waiter {
        waiter.args(&mut acquire);
    }
    let mut undo = Undo::armed(nodes, &spec, &token, &holding, timing);
    let timeout = timing.node_timeout;
    let mut first = round::on_all(nodes, Call::grant(acquire), Need::Majority, timeout).await;
    undo.after = first.stragglers();
    observe::votes(span, || first.tally(false));
    let mut verdict = Verdict::of(&first);
    if first.reached() && !verdict.settled() {
        // The votes in hand disagree; the stragglers may settle it.
        first.finish().await;
        verdict = Verdict::of(&first);
    }
    let in_time = Instant::now() < deadline;
    if let Some(held) = verdict.agreed.as_ref().filter(|_| in_time) {
        let holding = match holding {
            Holding::Slots(_) => Holding::Slots(held.iter().map(|&s| s as u32).collect()),
            other => other,
        };
        let fenced = fence(
            nodes, &spec, &token, &holding, timing, &verdict, &first, deadline,
        )
        .await;
        if let Some(fence) = fenced {
            let stragglers = first.stragglers();
            undo.keep(first, held);
            return Ok(Attempt::Done(Grant {
                granted: Instant::now(),
                deadline,
                fence,
                holding,
                stragglers,
            }));
        }
    }
    // Undo after the stragglers answered: on each node the undo then
    // follows the acquire, and nodes that refused need none.
    first.finish().await;
    undo.run(first.maybe_applied()).await;
    if let Some(e) = first.permanent_error(&spec.resource) {
        return Err(e);
    }
    // Enough yes votes granting different things (semaphore slots) is
    // contention among holders, as is a majority of refusals.
    let split = verdict.agreed.is_none() && first.reached();
    if split || first.definitely_refused() {
        return Ok(Attempt::Busy {
            retry_after: first.retry_after(),
        });
    }
    let expired = verdict.agreed.is_some() && Instant::now() >= deadline;
    Ok(Attempt::Unavailable(Error::Quorum(first.tally(expired))))
}

/// What round one's yes votes say, read once.
struct Verdict {
    /// What a quorum granted alike (semaphore slots; nothing for a mutex).
    agreed: Option<Vec<i64>>,
    /// A token a quorum reports as already issued (one node; a reentrant
    /// hold).
    issued: Option<i64>,
    /// Some node reports an issued token.
    any_issued: bool,
}

impl Verdict {
    fn of(round: &Round) -> Verdict {
        Verdict {
            agreed: round.agreed(|p| p.ints_from(2)).map(|(held, _)| held),
            issued: round
                .agreed(|p| (p.int(1) == Some(1)).then(|| p.int(0)))
                .and_then(|(token, _)| token.flatten()),
            any_issued: round.yes().any(|(_, p)| p.int(1) == Some(1)),
        }
    }

    /// The yes votes agree on what was granted and, if any node reports a
    /// token it already issued, a quorum reports the same one.
    fn settled(&self) -> bool {
        self.agreed.is_some() && (!self.any_issued || self.issued.is_some())
    }
}

/// The fencing token of a granted round one: the token the agreeing nodes
/// already issued, or the one round two will commit (at once when eager).
#[allow(clippy::too_many_arguments, reason = "the parts of one claim")]
async fn fence(
    nodes: &Arc<Nodes>,
    spec: &LeaseSpec,
    owner: &str,
    holding: &Holding,
    timing: Timing,
    verdict: &Verdict,
    first: &Round,
    deadline: Instant,
) -> Option<Fence> {
    if let Some(token) = verdict.issued {
        return Some(Fence::Issued(token.max(0) as u64));
    }
    if verdict.any_issued {
        // Some nodes hold a token already issued to this owner but no
        // quorum agrees on it: minting another would give one holding two
        // tokens. Try again; a stale one expires with its TTL.
        return None;
    }
    if spec.plain_claims() {
        return Some(Fence::Unread);
    }
    let top = first.yes().filter_map(|(_, p)| p.int(0)).max()?;
    let token = top.max(0) as u64 + 1;
    if !spec.eager_fence {
        return Some(Fence::Pending(token));
    }
    let committed = commit_fence(nodes, spec, owner, holding, token, timing).await;
    (committed.is_ok() && Instant::now() < deadline).then_some(Fence::Issued(token))
}

/// Fencing round one, deferred (a plain-command claim read no counter):
/// the counters where `owner` still holds the lease. The next token is the
/// highest a quorum reports, plus one.
pub(crate) async fn read_fence(
    nodes: &Arc<Nodes>,
    spec: &LeaseSpec,
    owner: &str,
    timing: Timing,
) -> Result<u64> {
    let target = &spec.fence;
    let mut inv = invocation(
        &scripts::FENCE_READ,
        &[&target.lease_key, &target.counter_key],
    );
    inv.arg(owner);
    let round = round::on_all(nodes, Call::new(inv), Need::Majority, timing.node_timeout).await;
    if round.reached() {
        let top = round.yes().filter_map(|(_, p)| p.int(0)).max().unwrap_or(0);
        Ok(top.max(0) as u64 + 1)
    } else if round.definitely_refused() {
        Err(Error::NotHeld)
    } else {
        Err(round.shortfall(&spec.resource))
    }
}

/// Fencing round two: raises the counters to `token` on the nodes where
/// `owner` still holds the lease. `Ok` once a quorum took it; the caller
/// checks that the lease was still valid then.
pub(crate) async fn commit_fence(
    nodes: &Arc<Nodes>,
    spec: &LeaseSpec,
    owner: &str,
    holding: &Holding,
    token: u64,
    timing: Timing,
) -> Result<()> {
    let target = &spec.fence;
    let first_slot = match holding {
        Holding::Slots(slots) => slots.first().map(u32::to_string),
        _ => None,
    };
    let owner_field = target
        .owner_field
        .map(str::to_owned)
        .or(first_slot)
        .unwrap_or_default();
    let mut inv = invocation(
        &scripts::FENCE_COMMIT,
        &[&target.lease_key, &target.counter_key],
    );
    inv.arg(owner)
        .arg(token)
        .arg(fence_ttl_ms(timing))
        .arg(owner_field)
        .arg(target.store_field.unwrap_or(""));
    let round = round::on_all(nodes, Call::new(inv), Need::Majority, timing.node_timeout).await;
    if round.reached() {
        Ok(())
    } else if round.definitely_refused() {
        Err(Error::NotHeld)
    } else {
        Err(round.shortfall(&spec.resource))
    }
}

fn fence_ttl_ms(timing: Timing) -> u64 {
    (FENCE_TTL.max(timing.ttl * 2)).as_millis() as u64
}

/// Extends a lease; returns its new deadline.
///
/// [`Error::NotHeld`] means a quorum of nodes no longer holds it for us:
/// the lease is lost for good. Other errors are worth retrying.
pub(crate) async fn extend(
    nodes: &Arc<Nodes>,
    spec: &LeaseSpec,
    token: &str,
    holding: &Holding,
    timing: Timing,
) -> Result<Instant> {
    let t1 = Instant::now();
    let call = spec.extend_call(token, timing.ttl_ms(), holding);
    let span = observe::extend_span(spec.subject());
    let round = round::on_all(nodes, call, Need::Majority, timing.node_timeout)
        .instrument(span.clone())
        .await;
    observe::votes(&span, || round.tally(false));
    extend_outcome(&round, t1, timing)
}

/// What an extension's round says: the new deadline, counted from the
/// extension's start `t1`, when a quorum extended it in time;
/// [`Error::NotHeld`] when no quorum can hold it any more; otherwise the
/// tally, worth retrying.
pub(crate) fn extend_outcome(round: &Round, t1: Instant, timing: Timing) -> Result<Instant> {
    let deadline = t1 + timing.ttl - timing.drift;
    if round.reached() && Instant::now() < deadline {
        return Ok(deadline);
    }
    if round.definitely_refused() {
        return Err(Error::NotHeld);
    }
    Err(Error::Quorum(round.tally(round.reached())))
}

/// Releases on every node. `Ok` when a quorum deleted our keys;
/// [`Error::NotHeld`] when the lease was no longer valid (`valid` false) or
/// a quorum no longer held it (their keys are left alone).
pub(crate) async fn release(
    nodes: &Arc<Nodes>,
    spec: &LeaseSpec,
    token: &str,
    holding: &Holding,
    timeout: Duration,
    valid: bool,
) -> Result<()> {
    let call = spec.release_call(token, holding);
    let round = round::on_all(nodes, call, Need::All, timeout)
        .instrument(observe::release_span(spec.subject()));
    tokio::pin!(round);
    // Polled once, the release is queued on every connection; the head of
    // this process's waiters may go now, and its attempt follows it there.
    let mut handed = false;
    let round = std::future::poll_fn(|cx| {
        let poll = round.as_mut().poll(cx);
        if !std::mem::replace(&mut handed, true) {
            nodes.queues().released(&spec.channel);
        }
        poll
    })
    .await;
    if !valid || round.definitely_refused() {
        return Err(Error::NotHeld);
    }
    if round.reached() {
        return Ok(());
    }
    Err(Error::Quorum(round.tally(false)))
}

/// Runs the undo (release) script of a claim unless disarmed. Dropped while
/// armed (the caller's future was cancelled), it spawns the undo on every
/// node, so no phantom holder is left until the TTL.
struct Undo {
    nodes: Arc<Nodes>,
    spec: Arc<LeaseSpec>,
    token: String,
    holding: Holding,
    timeout: Duration,
    armed: bool,
    /// Round one's answers still in flight: an undo sent before they land
    /// could overtake an acquire (one retried after NOSCRIPT goes out
    /// again), so it waits for them.
    after: Option<Stragglers>,
}

impl Undo {
    fn armed(
        nodes: &Arc<Nodes>,
        spec: &Arc<LeaseSpec>,
        token: &str,
        holding: &Holding,
        timing: Timing,
    ) -> Undo {
        Undo {
            nodes: nodes.clone(),
            spec: spec.clone(),
            token: token.to_owned(),
            holding: holding.clone(),
            timeout: timing.node_timeout,
            armed: true,
            after: None,
        }
    }

    /// The undo's call, once: nothing when already disarmed.
    fn disarm(&mut self) -> Option<Call> {
        std::mem::replace(&mut self.armed, false)
            .then(|| self.spec.release_call(&self.token, &self.holding))
    }

    /// The claim succeeded with what the quorum agreed on (`held`: the
    /// semaphore slots; nothing for a mutex). Nodes that granted something
    /// else hold slots that are no part of the lease and that nothing else
    /// would free before the release: undo there, once every node has
    /// answered (in the background when some have not yet).
    fn keep(&mut self, mut first: Round, held: &[i64]) {
        // Only slots can differ from node to node: a mutex or reentrant
        // grant is the same everywhere, and a straggler's is part of it.
        if !matches!(self.holding, Holding::Slots(_)) {
            self.armed = false;
            return;
        }
        let others = |round: &Round| -> Vec<usize> {
            round
                .yes()
                .filter(|(_, p)| p.ints_from(2) != held)
                .map(|(i, _)| i)
                .collect()
        };
        if first.stragglers().is_none() && others(&first).is_empty() {
            self.armed = false;
            return;
        }
        let Some(call) = self.disarm() else { return };
        self.after = None;
        let nodes = self.nodes.clone();
        let timeout = self.timeout;
        let held = held.to_vec();
        tokio::spawn(async move {
            first.finish().await;
            let others: Vec<usize> = first
                .yes()
                .filter(|(_, p)| p.ints_from(2) != held)
                .map(|(i, _)| i)
                .collect();
            if !others.is_empty() {
                round::on(&nodes, call, &others, Need::All, timeout).await;
            }
        });
    }

    /// Undoes on the given nodes and waits for it; the work runs in its own
    /// task, so cancelling this wait does not cancel the undo.
    async fn run(&mut self, targets: Vec<usize>) {
        let Some(call) = self.disarm() else { return };
        if !targets.is_empty() {
            let nodes = self.nodes.clone();
            let _ = spawn_undo(nodes, call, targets, self.timeout, None).await;
        }
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if self.armed
            && tokio::runtime::Handle::try_current().is_ok()
            && let Some(call) = self.disarm()
        {
            let targets = (0..self.nodes.len()).collect();
            let after = self.after.take();
            spawn_undo(self.nodes.clone(), call, targets, self.timeout, after);
        }
    }
}

fn spawn_undo(
    nodes: Arc<Nodes>,
    call: Call,
    targets: Vec<usize>,
    timeout: Duration,
    after: Option<Stragglers>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Some(stragglers) = after {
            stragglers.await;
        }
        round::on(&nodes, call, &targets, Need::All, timeout).await;
    })
}

#[cfg(test)]
mod tests {
    use super::super::round::tests::yes;
    use super::*;

    #[test]
    fn a_token_issued_on_a_quorum_settles_round_one() {
        let round = Round::of(vec![yes(&[41, 1]), yes(&[41, 1]), None]);
        let verdict = Verdict::of(&round);
        assert!(verdict.settled());
        assert_eq!(verdict.issued, Some(41));
        let split = Verdict::of(&Round::of(vec![yes(&[41, 1]), yes(&[40, 0]), None]));
        assert!(!split.settled());
        assert_eq!(split.issued, None);
        // Slots granted alike on a quorum, no token issued: settled.
        let slots = Verdict::of(&Round::of(vec![yes(&[9, 0, 2]), yes(&[7, 0, 2]), None]));
        assert!(slots.settled());
        assert_eq!(slots.agreed, Some(vec![2]));
    }

    #[test]
    fn holdings_give_their_script_arguments() {
        assert!(Holding::Token.extend_args().is_empty());
        let slots = Holding::Slots(vec![0, 3]);
        assert_eq!(slots.extend_args(), ["0", "3"]);
        assert!(slots.release_args().is_empty());
        let hold = Holding::Hold("h".into());
        assert_eq!(hold.extend_args(), ["h"]);
        assert_eq!(hold.release_args(), ["h"]);
    }
}
