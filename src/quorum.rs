//! The engine: one script on every node in parallel.
//!
//! # Implementation details
//!
//! A round sends one script invocation to every node at once, each with the
//! per-node timeout, and counts votes as they arrive. It stops as soon as the
//! outcome is certain (enough yes votes, or too many refusals and failures
//! for a quorum to remain possible). A failure is a vote, never a failure of
//! the whole round.
//!
//! An acquisition is valid for `ttl - elapsed - drift` after its first send
//! (`t1`); its local deadline is `t1 + ttl - drift`, the earliest instant a
//! node could have let the key expire, less the drift allowance. When it
//! fails, or when the caller drops the future, the undo script runs on every
//! node that may have said yes, from a spawned task the caller cannot cancel.
//!
//! Fencing tokens: one node issues them itself (`INCR` in the acquire
//! script). On several nodes per-node counters drift apart, so round one
//! reads each counter, the client picks `max + 1`, and round two raises the
//! counter to it on a quorum of nodes where the lease is still held. Any two
//! quorums share a node, so the next holder reads at least this token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use redis::{Script, ScriptInvocation};

use crate::client::Quorum;
use crate::config::Timing;
use crate::error::{Error, NodeReport, Result, Tally, Vote};
use crate::node::Reply;
use crate::scripts;

/// How long a fencing counter outlives the last lease that raised it. The
/// counters are floored at server time, so even a counter that expired
/// issues larger tokens than before.
const FENCE_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The scripts and keys of one kind of lease.
///
/// Lease scripts share a calling convention: `KEYS` are `keys`; extend takes
/// `ARGV = [token, ttl_ms]`, release takes `ARGV = [token, channel]`.
#[derive(Debug)]
pub(crate) struct LeaseSpec {
    pub(crate) resource: String,
    pub(crate) extend: &'static Script,
    pub(crate) release: &'static Script,
    pub(crate) keys: Vec<String>,
    pub(crate) channel: String,
}

impl LeaseSpec {
    pub(crate) fn extend_call(&self, token: &str, ttl_ms: u64) -> ScriptInvocation<'static> {
        let mut inv = invocation(self.extend, &self.keys);
        inv.arg(token).arg(ttl_ms);
        inv
    }

    pub(crate) fn release_call(&self, token: &str) -> ScriptInvocation<'static> {
        let mut inv = invocation(self.release, &self.keys);
        inv.arg(token).arg(&self.channel);
        inv
    }
}

/// A script invocation with its keys set.
pub(crate) fn invocation(script: &'static Script, keys: &[String]) -> ScriptInvocation<'static> {
    let mut inv = script.prepare_invoke();
    for key in keys {
        inv.key(key);
    }
    inv
}

/// One acquisition to attempt.
pub(crate) struct Claim {
    /// The acquire script, ready to send.
    pub(crate) acquire: ScriptInvocation<'static>,
    pub(crate) lease: Arc<LeaseSpec>,
    pub(crate) token: String,
    pub(crate) timing: Timing,
    /// Lease key and counter key for fencing round two, on several nodes.
    pub(crate) fence_keys: Option<(String, String)>,
}

/// A successful acquisition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grant {
    pub(crate) deadline: Instant,
    pub(crate) fence: u64,
}

/// The outcome of one attempt of a waiting call.
#[derive(Debug)]
pub(crate) enum Attempt<T> {
    Done(T),
    /// Held by someone else; their lease has about `retry_after` left.
    Busy { retry_after: Option<Duration> },
    /// Too many nodes failed; worth retrying later.
    Unavailable(Error),
}

impl<T> Attempt<T> {
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Attempt<U> {
        match self {
            Attempt::Done(t) => Attempt::Done(f(t)),
            Attempt::Busy { retry_after } => Attempt::Busy { retry_after },
            Attempt::Unavailable(e) => Attempt::Unavailable(e),
        }
    }
}

/// The votes of one round, in node order; `None` for nodes not heard from.
pub(crate) struct Round {
    replies: Vec<Option<Reply>>,
    need: usize,
}

impl Round {
    pub(crate) fn granted(&self) -> usize {
        self.count(|r| matches!(r, Reply::Yes(_)))
    }

    pub(crate) fn refused(&self) -> usize {
        self.count(|r| matches!(r, Reply::No(_)))
    }

    fn count(&self, pred: impl Fn(&Reply) -> bool) -> usize {
        self.replies.iter().flatten().filter(|r| pred(r)).count()
    }

    /// Enough refusals that no quorum is possible whatever the rest say.
    pub(crate) fn definitely_refused(&self) -> bool {
        self.refused() > self.replies.len() - self.need
    }

    /// The first payload value of every yes vote.
    pub(crate) fn yes_values(&self) -> impl Iterator<Item = i64> + '_ {
        self.replies.iter().flatten().filter_map(|r| match r {
            Reply::Yes(v) => v.first().copied(),
            _ => None,
        })
    }

    /// The first payload value of every refusal.
    pub(crate) fn no_values(&self) -> impl Iterator<Item = i64> + '_ {
        self.replies.iter().flatten().filter_map(|r| match r {
            Reply::No(v) => v.first().copied(),
            _ => None,
        })
    }

    fn permanent_failure(&self) -> Option<&str> {
        self.replies.iter().flatten().find_map(|r| match r {
            Reply::Failed(f) if !f.transient => Some(f.message.as_str()),
            _ => None,
        })
    }

    /// Nodes that may have applied the script: all but definite refusals.
    fn maybe_applied(&self) -> Vec<usize> {
        (0..self.replies.len())
            .filter(|&i| !matches!(self.replies[i], Some(Reply::No(_))))
            .collect()
    }

    pub(crate) fn tally(&self, quorum: &Quorum, expired: bool) -> Tally {
        let nodes = self
            .replies
            .iter()
            .zip(quorum.node_addrs())
            .map(|(reply, node)| NodeReport {
                node: node.to_owned(),
                vote: match reply {
                    Some(Reply::Yes(_)) => Vote::Granted,
                    Some(Reply::No(_)) => Vote::Refused,
                    Some(Reply::Failed(f)) => Vote::Failed(f.message.clone()),
                    None => Vote::Uncounted,
                },
            })
            .collect();
        Tally {
            granted: self.granted(),
            needed: self.need,
            expired,
            nodes,
        }
    }
}

impl Quorum {
    /// Runs one script on the given nodes in parallel and counts votes until
    /// `need` yes votes arrive or they can no longer arrive. With `need` above
    /// the node count, waits for every answer.
    pub(crate) async fn round(
        &self,
        inv: &ScriptInvocation<'_>,
        nodes: &[usize],
        timeout: Duration,
        need: usize,
    ) -> Round {
        let all = self.node_count();
        let mut round = Round {
            replies: vec![None; all],
            need: need.min(all),
        };
        let mut pending: FuturesUnordered<_> = nodes
            .iter()
            .map(|&i| async move { (i, self.node(i).invoke(inv, timeout).await) })
            .collect();
        let mut answered = 0;
        while let Some((i, reply)) = pending.next().await {
            round.replies[i] = Some(reply);
            answered += 1;
            let granted = round.granted();
            let hopeless = answered - granted > all - need.min(all);
            if need <= all && (granted >= need || hopeless) {
                break;
            }
        }
        round
    }

    /// Runs a script on every node and waits for all answers (release).
    pub(crate) async fn round_all(&self, inv: &ScriptInvocation<'_>, timeout: Duration) -> Round {
        let mut round = self.round(inv, &self.all_nodes(), timeout, usize::MAX).await;
        round.need = self.majority();
        round
    }

    /// Runs a script on every node, deciding early at a majority.
    pub(crate) async fn round_majority(
        &self,
        inv: &ScriptInvocation<'_>,
        timeout: Duration,
    ) -> Round {
        self.round(inv, &self.all_nodes(), timeout, self.majority()).await
    }

    /// One acquisition attempt: round one, fencing round two on several
    /// nodes, and the undo when either falls short.
    pub(crate) async fn claim(&self, claim: Claim) -> Result<Attempt<Grant>> {
        let t1 = Instant::now();
        let deadline = t1 + claim.timing.ttl - claim.timing.drift;
        let mut undo = Undo::armed(self, &claim);
        let first = self.round_majority(&claim.acquire, claim.timing.node_timeout).await;
        let fence = if first.granted() >= self.majority() && Instant::now() < deadline {
            self.fence(&claim, &first, deadline).await
        } else {
            None
        };
        if let Some(fence) = fence {
            undo.disarm();
            return Ok(Attempt::Done(Grant { deadline, fence }));
        }
        undo.run(first.maybe_applied()).await;
        let expired = first.granted() >= self.majority();
        if let Some(message) = first.permanent_failure() {
            return Err(permanent(&claim.lease.resource, message));
        }
        if !expired && first.definitely_refused() {
            let retry_after = first
                .no_values()
                .filter(|&ms| ms >= 0)
                .min()
                .map(|ms| Duration::from_millis(ms as u64));
            return Ok(Attempt::Busy { retry_after });
        }
        Ok(Attempt::Unavailable(Error::Quorum(first.tally(self, expired))))
    }

    /// The fencing token of a granted round one, after round two where needed.
    async fn fence(&self, claim: &Claim, first: &Round, deadline: Instant) -> Option<u64> {
        let top = first.yes_values().max().unwrap_or(0).max(0) as u64;
        let Some((lease_key, fence_key)) = &claim.fence_keys else {
            return Some(top);
        };
        let token = top + 1;
        let mut inv = scripts::FENCE_COMMIT.prepare_invoke();
        inv.key(lease_key).key(fence_key);
        inv.arg(&claim.token).arg(token).arg(fence_ttl_ms(claim.timing));
        let second = self.round_majority(&inv, claim.timing.node_timeout).await;
        (second.granted() >= self.majority() && Instant::now() < deadline).then_some(token)
    }

    /// Extends a lease; returns its new deadline.
    ///
    /// [`Error::NotHeld`] means a quorum of nodes no longer holds it for us:
    /// the lease is lost for good. Other errors are worth retrying.
    pub(crate) async fn extend(
        &self,
        spec: &LeaseSpec,
        token: &str,
        timing: Timing,
    ) -> Result<Instant> {
        let t1 = Instant::now();
        let deadline = t1 + timing.ttl - timing.drift;
        let inv = spec.extend_call(token, timing.ttl_ms());
        let round = self.round_majority(&inv, timing.node_timeout).await;
        if round.granted() >= self.majority() && Instant::now() < deadline {
            return Ok(deadline);
        }
        if round.definitely_refused() {
            return Err(Error::NotHeld);
        }
        Err(Error::Quorum(round.tally(self, round.granted() >= self.majority())))
    }
}

fn permanent(resource: &str, message: &str) -> Error {
    let kind = redis::ErrorKind::Client;
    Error::Redis((kind, "script failed", format!("{resource}: {message}")).into())
}

pub(crate) fn fence_ttl_ms(timing: Timing) -> u64 {
    (FENCE_TTL.max(timing.ttl * 2)).as_millis() as u64
}

/// Runs the undo (release) script of a claim unless disarmed. Dropped while
/// armed (the caller's future was cancelled), it spawns the undo on every
/// node, so no phantom holder is left until the TTL.
struct Undo {
    quorum: Quorum,
    call: Option<ScriptInvocation<'static>>,
    timeout: Duration,
}

impl Undo {
    fn armed(quorum: &Quorum, claim: &Claim) -> Undo {
        Undo {
            quorum: quorum.clone(),
            call: Some(claim.lease.release_call(&claim.token)),
            timeout: claim.timing.node_timeout,
        }
    }

    fn disarm(&mut self) {
        self.call = None;
    }

    /// Undoes on the given nodes and waits for it; the work runs in its own
    /// task, so cancelling this wait does not cancel the undo.
    async fn run(&mut self, nodes: Vec<usize>) {
        let Some(call) = self.call.take() else { return };
        if nodes.is_empty() {
            return;
        }
        let task = spawn_round(self.quorum.clone(), call, nodes, self.timeout);
        let _ = task.await;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(call) = self.call.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let nodes = self.quorum.all_nodes();
            spawn_round(self.quorum.clone(), call, nodes, self.timeout);
        }
    }
}

fn spawn_round(
    quorum: Quorum,
    call: ScriptInvocation<'static>,
    nodes: Vec<usize>,
    timeout: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        quorum.round(&call, &nodes, timeout, usize::MAX).await;
    })
}
