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

use futures::future::{BoxFuture, Shared};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use redis::{Script, ScriptInvocation};

use crate::client::Quorum;
use crate::config::Timing;
use crate::error::{Error, NodeReport, Result, Tally, Vote};
use crate::node::{Payload, Reply};
use crate::scripts;

/// How long a fencing counter outlives the last lease that raised it. The
/// counters are floored at server time, so even a counter that expired
/// issues larger tokens than before.
const FENCE_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// A script invocation shared by the per-node tasks of a round.
#[derive(Clone)]
pub(crate) struct Call {
    inv: Arc<ScriptInvocation<'static>>,
    /// Its yes votes grant a lease: a node presumed restarted may have
    /// forgotten another holder's, so its yes does not count. Other yes
    /// votes (an extension, a release) stand: they come from a node that
    /// still holds our key, which blocks everyone else there.
    grants: bool,
}

impl Call {
    pub(crate) fn new(inv: ScriptInvocation<'static>) -> Call {
        Call {
            inv: Arc::new(inv),
            grants: false,
        }
    }

    /// An acquisition, whose yes votes grant a lease.
    pub(crate) fn grant(inv: ScriptInvocation<'static>) -> Call {
        Call {
            inv: Arc::new(inv),
            grants: true,
        }
    }

    pub(crate) fn invocation(&self) -> &ScriptInvocation<'static> {
        &self.inv
    }

    pub(crate) fn grants(&self) -> bool {
        self.grants
    }
}

impl From<ScriptInvocation<'static>> for Call {
    fn from(inv: ScriptInvocation<'static>) -> Call {
        Call::new(inv)
    }
}

/// The scripts and keys of one kind of lease.
///
/// Lease scripts share a calling convention: `KEYS` are `keys`; extend takes
/// `ARGV = [token, ttl_ms, extra...]`, release takes
/// `ARGV = [token, channel, extra...]`, where `extra` names what this lease
/// holds (semaphore slots, a reentrant hold id; nothing for a mutex). A
/// release with no extra releases everything the token holds.
#[derive(Debug)]
pub(crate) struct LeaseSpec {
    pub(crate) resource: String,
    pub(crate) extend: &'static Script,
    pub(crate) release: &'static Script,
    pub(crate) keys: Vec<String>,
    pub(crate) channel: String,
}

impl LeaseSpec {
    pub(crate) fn extend_call(&self, token: &str, ttl_ms: u64, extra: &[String]) -> Call {
        let mut inv = invocation(self.extend, &self.keys);
        inv.arg(token).arg(ttl_ms).arg(extra);
        Call::new(inv)
    }

    pub(crate) fn release_call(&self, token: &str, extra: &[String]) -> Call {
        let mut inv = invocation(self.release, &self.keys);
        inv.arg(token).arg(&self.channel).arg(extra);
        Call::new(inv)
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
///
/// The acquire script replies `{1, fence, final, agreed...}` when granted:
/// `fence` is a token already issued when `final` is 1 (one node, or a
/// reentrant hold), otherwise the node's counter for round two; `agreed` is
/// what the node granted (semaphore slots), which a majority must agree on.
/// It replies `{0, pttl}` when the resource is held, `pttl` being what is
/// left of the holder's lease in milliseconds (negative when unknown).
pub(crate) struct Claim {
    /// The acquire script, ready to send.
    pub(crate) acquire: Call,
    pub(crate) lease: Arc<LeaseSpec>,
    pub(crate) token: String,
    /// Extra lease arguments known before the attempt (a hold id).
    pub(crate) extra: Vec<String>,
    pub(crate) timing: Timing,
    /// Where round two of fencing checks and raises the counter.
    pub(crate) fence: FenceTarget,
}

/// Keys and fields for fencing round two (see `lua/fence_commit.lua`).
#[derive(Debug, Clone)]
pub(crate) struct FenceTarget {
    pub(crate) lease_key: String,
    pub(crate) counter_key: String,
    /// Hash field naming the owner; `None` takes the first agreed value.
    pub(crate) owner_field: Option<String>,
    /// Hash field that keeps the issued token, if any.
    pub(crate) store_field: Option<String>,
}

/// A successful acquisition.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    /// When the votes were in and the lease was decided.
    pub(crate) granted: Instant,
    pub(crate) deadline: Instant,
    pub(crate) fence: u64,
    /// The claim's extra arguments, then what the majority agreed on.
    pub(crate) extra: Vec<String>,
}

/// The outcome of one attempt of a waiting call.
#[derive(Debug)]
pub(crate) enum Attempt<T> {
    Done(T),
    /// Held by someone else; their lease has about `retry_after` left.
    Busy {
        retry_after: Option<Duration>,
    },
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
///
/// Requests still in flight when the round was decided run on in a task of
/// their own (a script reload after NOSCRIPT is two more commands that must
/// not be cut short); [`Round::finish`] waits for them.
pub(crate) struct Round {
    replies: Vec<Option<Reply>>,
    need: usize,
    stragglers: Option<Stragglers>,
}

/// One node's request: it owns what it needs, so it can outlive the round.
type Request = BoxFuture<'static, (usize, Reply)>;

/// The answers still in flight when a round was decided, from the task
/// they run on; shared, so an undo can wait for them as well.
type Stragglers = Shared<BoxFuture<'static, Arc<Vec<(usize, Reply)>>>>;

impl Round {
    /// Waits for the answers still in flight (each bounded by its timeout).
    pub(crate) async fn finish(&mut self) {
        if let Some(stragglers) = self.stragglers.take() {
            for (i, reply) in stragglers.await.iter() {
                self.replies[*i] = Some(reply.clone());
            }
        }
    }

    /// Every node's reply, in node order; `None` for nodes not heard from.
    pub(crate) fn replies(&self) -> &[Option<Reply>] {
        &self.replies
    }

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

    /// The payloads of the yes votes, with their node index.
    pub(crate) fn yes(&self) -> impl Iterator<Item = (usize, &Payload)> + '_ {
        self.replies
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r {
                Some(Reply::Yes(p)) => Some((i, p)),
                _ => None,
            })
    }

    /// The payloads of the refusals.
    pub(crate) fn no(&self) -> impl Iterator<Item = &Payload> + '_ {
        self.replies.iter().flatten().filter_map(|r| match r {
            Reply::No(p) => Some(p),
            _ => None,
        })
    }

    /// The value of `key` that at least `need` yes votes share, with the
    /// nodes that gave it.
    pub(crate) fn agreed<K: PartialEq>(
        &self,
        key: impl Fn(&Payload) -> K,
    ) -> Option<(K, Vec<usize>)> {
        let mut groups: Vec<(K, Vec<usize>)> = Vec::new();
        for (i, payload) in self.yes() {
            let k = key(payload);
            match groups.iter_mut().find(|(g, _)| *g == k) {
                Some((_, nodes)) => nodes.push(i),
                None => groups.push((k, vec![i])),
            }
        }
        groups
            .into_iter()
            .find(|(_, nodes)| nodes.len() >= self.need)
    }

    /// True when the yes votes agree on what was granted and, if any node
    /// reports a token it already issued, a majority reports the same one.
    fn settled(&self) -> bool {
        let any_issued = self.yes().any(|(_, p)| p.int(1) == Some(1));
        self.agreed(|p| p.ints_from(2)).is_some() && (!any_issued || self.issued_token().is_some())
    }

    /// A token a majority of yes votes report as already issued (one node;
    /// a reentrant hold).
    fn issued_token(&self) -> Option<i64> {
        self.agreed(|p| (p.int(1) == Some(1)).then(|| p.int(0)))
            .and_then(|(token, _)| token.flatten())
    }

    /// The shortest lease left among the holders that refused us.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        self.no()
            .filter_map(|p| p.int(0))
            .filter(|&ms| ms >= 0)
            .min()
            .map(|ms| Duration::from_millis(ms as u64))
    }

    /// An error that retrying will not fix, if any node returned one.
    pub(crate) fn permanent_error(&self, resource: &str) -> Option<Error> {
        self.replies.iter().flatten().find_map(|r| match r {
            Reply::Failed(f) if f.mismatch.is_some() => Some(Error::ConfigMismatch {
                resource: resource.to_owned(),
                reason: f.mismatch.clone().unwrap_or_default(),
            }),
            Reply::Failed(f) if !f.transient => Some(Error::Redis(
                (
                    redis::ErrorKind::Client,
                    "script failed",
                    format!("{resource}: {}", f.message),
                )
                    .into(),
            )),
            _ => None,
        })
    }

    /// Nodes that may have applied the script: all but definite refusals
    /// (and nodes the round was not sent to, which `nodes` leaves out).
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
                    Some(Reply::Quarantined { until }) => Vote::Quarantined {
                        remaining: until.saturating_duration_since(Instant::now()),
                    },
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

    /// The error for a round that fell short.
    pub(crate) fn shortfall(&self, quorum: &Quorum, resource: &str) -> Error {
        self.permanent_error(resource)
            .unwrap_or_else(|| Error::Quorum(self.tally(quorum, false)))
    }
}

impl Quorum {
    /// Runs one script on the given nodes in parallel and counts votes until
    /// `need` yes votes arrive or they can no longer arrive. With `need` above
    /// the node count, waits for every answer.
    pub(crate) async fn round(
        &self,
        call: impl Into<Call>,
        nodes: &[usize],
        timeout: Duration,
        need: usize,
    ) -> Round {
        let call = call.into();
        let all = self.node_count();
        // Polled here first, so every request is queued on its connection
        // before this call can be cancelled: an undo sent afterwards follows
        // it on every node.
        let mut pending: FuturesUnordered<Request> = nodes
            .iter()
            .map(|&i| self.request(i, &call, timeout))
            .collect();
        let mut round = Round {
            replies: vec![None; all],
            need: need.min(all),
            stragglers: None,
        };
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
        if !pending.is_empty() {
            let task = tokio::spawn(pending.collect::<Vec<_>>());
            let answers = async move { Arc::new(task.await.unwrap_or_default()) };
            round.stragglers = Some(answers.boxed().shared());
        }
        round
    }

    fn request(&self, node: usize, call: &Call, timeout: Duration) -> Request {
        let quorum = self.clone();
        let call = call.clone();
        Box::pin(async move { (node, quorum.node(node).invoke(&call, timeout).await) })
    }

    /// Runs a script on every node and waits for all answers (release).
    pub(crate) async fn round_all(&self, call: impl Into<Call>, timeout: Duration) -> Round {
        let mut round = self
            .round(call, &self.all_nodes(), timeout, usize::MAX)
            .await;
        round.need = self.majority();
        round
    }

    /// Runs a script on every node, deciding early at a majority.
    pub(crate) async fn round_majority(&self, call: impl Into<Call>, timeout: Duration) -> Round {
        self.round(call, &self.all_nodes(), timeout, self.majority())
            .await
    }

    /// One acquisition attempt: round one, fencing round two on several
    /// nodes, and the undo when either falls short.
    pub(crate) async fn claim(&self, claim: Claim) -> Result<Attempt<Grant>> {
        let t1 = Instant::now();
        let deadline = t1 + claim.timing.ttl - claim.timing.drift;
        let mut undo = Undo::armed(self, &claim);
        let mut first = self
            .round_majority(claim.acquire.clone(), claim.timing.node_timeout)
            .await;
        undo.after = first.stragglers.clone();
        if first.granted() >= self.majority() && !first.settled() {
            // The votes in hand disagree; the stragglers may settle it.
            first.finish().await;
        }
        let agreed = first.agreed(|p| p.ints_from(2));
        let in_time = Instant::now() < deadline;
        if let Some((key, _)) = agreed.as_ref().filter(|_| in_time) {
            let held: Vec<String> = key.iter().map(i64::to_string).collect();
            if let Some(fence) = self.fence(&claim, &first, &held, deadline).await {
                undo.keep(first, key.clone());
                let mut extra = claim.extra;
                extra.extend(held);
                return Ok(Attempt::Done(Grant {
                    granted: Instant::now(),
                    deadline,
                    fence,
                    extra,
                }));
            }
        }
        // Undo after the stragglers answered: on each node the undo then
        // follows the acquire, and nodes that refused need none.
        first.finish().await;
        undo.run(first.maybe_applied()).await;
        if let Some(e) = first.permanent_error(&claim.lease.resource) {
            return Err(e);
        }
        // Enough yes votes granting different things (semaphore slots) is
        // contention among holders, as is a majority of refusals.
        let split = agreed.is_none() && first.granted() >= self.majority();
        if split || first.definitely_refused() {
            return Ok(Attempt::Busy {
                retry_after: first.retry_after(),
            });
        }
        let expired = agreed.is_some() && Instant::now() >= deadline;
        Ok(Attempt::Unavailable(Error::Quorum(
            first.tally(self, expired),
        )))
    }

    /// The fencing token of a granted round one: the token the agreeing
    /// nodes already issued, or one made by round two.
    async fn fence(
        &self,
        claim: &Claim,
        first: &Round,
        held: &[String],
        deadline: Instant,
    ) -> Option<u64> {
        if let Some(token) = first.issued_token() {
            return Some(token.max(0) as u64);
        }
        if first.yes().any(|(_, p)| p.int(1) == Some(1)) {
            // Some nodes hold a token already issued to this owner but no
            // majority agrees on it: minting another would give one holding
            // two tokens. Try again; a stale one expires with its TTL.
            return None;
        }
        let top = first.yes().filter_map(|(_, p)| p.int(0)).max()?;
        let token = top.max(0) as u64 + 1;
        let target = &claim.fence;
        let owner_field = target
            .owner_field
            .as_deref()
            .or(held.first().map(String::as_str))
            .unwrap_or("");
        let mut inv = invocation(
            &scripts::FENCE_COMMIT,
            &[target.lease_key.clone(), target.counter_key.clone()],
        );
        inv.arg(&claim.token)
            .arg(token)
            .arg(fence_ttl_ms(claim.timing))
            .arg(owner_field)
            .arg(target.store_field.as_deref().unwrap_or(""));
        let second = self.round_majority(inv, claim.timing.node_timeout).await;
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
        extra: &[String],
        timing: Timing,
    ) -> Result<Instant> {
        let t1 = Instant::now();
        let deadline = t1 + timing.ttl - timing.drift;
        let inv = spec.extend_call(token, timing.ttl_ms(), extra);
        let round = self.round_majority(inv, timing.node_timeout).await;
        if round.granted() >= self.majority() && Instant::now() < deadline {
            return Ok(deadline);
        }
        if round.definitely_refused() {
            return Err(Error::NotHeld);
        }
        Err(Error::Quorum(
            round.tally(self, round.granted() >= self.majority()),
        ))
    }
}

pub(crate) fn fence_ttl_ms(timing: Timing) -> u64 {
    (FENCE_TTL.max(timing.ttl * 2)).as_millis() as u64
}

/// Runs the undo (release) script of a claim unless disarmed. Dropped while
/// armed (the caller's future was cancelled), it spawns the undo on every
/// node, so no phantom holder is left until the TTL.
struct Undo {
    quorum: Quorum,
    call: Option<Call>,
    timeout: Duration,
    /// Round one's answers still in flight: an undo sent before they land
    /// could overtake an acquire (one retried after NOSCRIPT goes out
    /// again), so it waits for them.
    after: Option<Stragglers>,
}

impl Undo {
    fn armed(quorum: &Quorum, claim: &Claim) -> Undo {
        Undo {
            quorum: quorum.clone(),
            call: Some(claim.lease.release_call(&claim.token, &claim.extra)),
            timeout: claim.timing.node_timeout,
            after: None,
        }
    }

    /// The claim succeeded with what the majority agreed on (`key`: the
    /// semaphore slots; nothing for a mutex). In the background, once every
    /// node has answered, undo on the nodes that granted something else:
    /// their slots are no part of the lease and nothing else would free them.
    fn keep(&mut self, mut first: Round, key: Vec<i64>) {
        let Some(call) = self.call.take() else { return };
        let quorum = self.quorum.clone();
        let timeout = self.timeout;
        tokio::spawn(async move {
            first.finish().await;
            let others: Vec<usize> = first
                .yes()
                .filter(|(_, p)| p.ints_from(2) != key)
                .map(|(i, _)| i)
                .collect();
            if !others.is_empty() {
                quorum.round(call, &others, timeout, usize::MAX).await;
            }
        });
    }

    /// Undoes on the given nodes and waits for it; the work runs in its own
    /// task, so cancelling this wait does not cancel the undo.
    async fn run(&mut self, nodes: Vec<usize>) {
        let Some(call) = self.call.take() else { return };
        if !nodes.is_empty() {
            let _ = spawn_round(self.quorum.clone(), call, nodes, self.timeout, None).await;
        }
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(call) = self.call.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let nodes = self.quorum.all_nodes();
            let after = self.after.take();
            spawn_round(self.quorum.clone(), call, nodes, self.timeout, after);
        }
    }
}

fn spawn_round(
    quorum: Quorum,
    call: Call,
    nodes: Vec<usize>,
    timeout: Duration,
    after: Option<Stragglers>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Some(stragglers) = after {
            stragglers.await;
        }
        quorum.round(call, &nodes, timeout, usize::MAX).await;
    })
}
