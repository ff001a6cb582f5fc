//! A round: one script on every node in parallel, counted as votes.
//!
//! Every request is sent at once with the per-node timeout and polled from
//! the start, so it is queued on its connection before the caller can be
//! cancelled: anything sent to that node afterwards (an undo) follows it.
//! Votes are counted as they arrive; with [`Need::Majority`] the round
//! stops as soon as the outcome is certain (a majority of yes votes, or too
//! many refusals and failures for one), and the requests still in flight
//! run on in a task of their own (a script reload after NOSCRIPT is two
//! more commands that must not be cut short). A failure is a vote, never a
//! failure of the whole round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, Shared};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};

use super::node::{Call, Payload, Reply};
use super::nodes::Nodes;
use crate::error::{Error, NodeReport, Tally, Vote};

/// How long a round waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Until a majority said yes, or can no longer.
    Majority,
    /// Until every node answered (or timed out).
    All,
}

/// The votes of one round, in node order; `None` for nodes not heard from.
pub(crate) struct Round {
    replies: Vec<Option<Reply>>,
    /// Yes votes that make a quorum.
    need: usize,
    addrs: Arc<[String]>,
    stragglers: Option<Stragglers>,
}

/// One node's request: it owns what it needs, so it can outlive the round.
type Request = BoxFuture<'static, (usize, Reply)>;

/// The answers still in flight when a round was decided, from the task
/// they run on; shared, so an undo can wait for them as well.
pub(crate) type Stragglers = Shared<BoxFuture<'static, Arc<Vec<(usize, Reply)>>>>;

/// Runs `call` on every node.
pub(crate) async fn on_all(nodes: &Arc<Nodes>, call: Call, need: Need, timeout: Duration) -> Round {
    let all: Vec<usize> = (0..nodes.len()).collect();
    on(nodes, call, &all, need, timeout).await
}

/// Runs `call` on the nodes `targets`.
pub(crate) async fn on(
    nodes: &Arc<Nodes>,
    call: Call,
    targets: &[usize],
    need: Need,
    timeout: Duration,
) -> Round {
    let mut round = Round::empty(nodes);
    if let [only] = targets {
        // One request: nothing to count early, nothing to leave behind.
        round.replies[*only] = Some(nodes.node(*only).invoke(&call, timeout).await);
        return round;
    }
    let mut pending: FuturesUnordered<Request> = targets
        .iter()
        .map(|&i| request(nodes, i, &call, timeout))
        .collect();
    let mut answered = 0;
    while let Some((i, reply)) = pending.next().await {
        round.replies[i] = Some(reply);
        answered += 1;
        if need == Need::Majority && decided(round.granted(), answered, nodes.len(), round.need) {
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

fn request(nodes: &Arc<Nodes>, node: usize, call: &Call, timeout: Duration) -> Request {
    let nodes = nodes.clone();
    let call = call.clone();
    Box::pin(async move { (node, nodes.node(node).invoke(&call, timeout).await) })
}

/// Whether `granted` yes votes out of `answered` answers (of `total` nodes)
/// settle a round that needs `need`: reached, or out of reach.
fn decided(granted: usize, answered: usize, total: usize, need: usize) -> bool {
    granted >= need || answered - granted > total - need
}

impl Round {
    /// Waits for the answers still in flight (each bounded by its timeout).
    pub(crate) async fn finish(&mut self) {
        if let Some(stragglers) = self.stragglers.take() {
            for (i, reply) in stragglers.await.iter() {
                self.replies[*i] = Some(reply.clone());
            }
        }
    }

    /// The answers still in flight, to wait for elsewhere.
    pub(crate) fn stragglers(&self) -> Option<Stragglers> {
        self.stragglers.clone()
    }

    /// Every node's reply, in node order; `None` for nodes not heard from.
    pub(crate) fn replies(&self) -> &[Option<Reply>] {
        &self.replies
    }

    /// Yes votes that make a quorum.
    pub(crate) fn need(&self) -> usize {
        self.need
    }

    pub(crate) fn granted(&self) -> usize {
        self.count(|r| matches!(r, Reply::Yes(_)))
    }

    /// A quorum said yes.
    pub(crate) fn reached(&self) -> bool {
        self.granted() >= self.need
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
    fn no(&self) -> impl Iterator<Item = &Payload> + '_ {
        self.replies.iter().flatten().filter_map(|r| match r {
            Reply::No(p) => Some(p),
            _ => None,
        })
    }

    /// The value of `key` that a quorum of yes votes share, with the nodes
    /// that gave it.
    pub(crate) fn agreed<K: PartialEq>(
        &self,
        key: impl Fn(&Payload) -> K,
    ) -> Option<(K, Vec<usize>)> {
        let keyed: Vec<(usize, K)> = self.yes().map(|(i, p)| (i, key(p))).collect();
        let at = keyed
            .iter()
            .position(|(_, k)| keyed.iter().filter(|(_, other)| other == k).count() >= self.need)?;
        let nodes = keyed
            .iter()
            .filter(|(_, other)| *other == keyed[at].1)
            .map(|(i, _)| *i)
            .collect();
        keyed.into_iter().nth(at).map(|(_, k)| (k, nodes))
    }

    /// The shortest lease left among the holders that refused us: a refusal
    /// carries the milliseconds left first (negative when unknown).
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        self.no()
            .filter_map(|p| p.int(0))
            .filter(|&ms| ms >= 0)
            .min()
            .map(|ms| Duration::from_millis(ms as u64))
    }

    /// An error that retrying will not fix, if any node returned one.
    pub(crate) fn permanent_error(&self, resource: &str) -> Option<Error> {
        self.replies
            .iter()
            .zip(self.addrs.iter())
            .find_map(|(r, node)| match r {
                Some(Reply::Failed(f)) if f.mismatch.is_some() => Some(Error::ConfigMismatch {
                    resource: resource.to_owned(),
                    reason: f.mismatch.clone().unwrap_or_default(),
                }),
                Some(Reply::Failed(f)) if !f.transient => Some(Error::Script {
                    resource: resource.to_owned(),
                    node: node.clone(),
                    message: f.message.clone(),
                }),
                _ => None,
            })
    }

    /// Nodes that may have applied the script: all but definite refusals.
    pub(crate) fn maybe_applied(&self) -> Vec<usize> {
        (0..self.replies.len())
            .filter(|&i| !matches!(self.replies[i], Some(Reply::No(_))))
            .collect()
    }

    pub(crate) fn tally(&self, expired: bool) -> Tally {
        let nodes = self
            .replies
            .iter()
            .zip(self.addrs.iter())
            .map(|(reply, node)| {
                let vote = match reply {
                    Some(Reply::Yes(_)) => Vote::Granted,
                    Some(Reply::No(_)) => Vote::Refused,
                    Some(Reply::Failed(f)) => Vote::Failed(f.message.clone()),
                    Some(Reply::Quarantined { until }) => Vote::Quarantined {
                        remaining: until.saturating_duration_since(Instant::now()),
                    },
                    None => Vote::Uncounted,
                };
                NodeReport::new(node.clone(), vote)
            })
            .collect();
        Tally::new(self.granted(), self.need, expired, nodes)
    }

    /// The error for a round that fell short.
    pub(crate) fn shortfall(&self, resource: &str) -> Error {
        self.permanent_error(resource)
            .unwrap_or_else(|| Error::Quorum(self.tally(false)))
    }

    /// A round with no answer yet, to fill in with [`record`](Self::record).
    pub(crate) fn empty(nodes: &Nodes) -> Round {
        Round {
            replies: vec![None; nodes.len()],
            need: nodes.majority(),
            addrs: nodes.addrs().clone(),
            stragglers: None,
        }
    }

    /// Notes node `i`'s reply.
    pub(crate) fn record(&mut self, i: usize, reply: Reply) {
        self.replies[i] = Some(reply);
    }

    /// A round made of the given replies (unit tests of vote counting).
    #[cfg(test)]
    pub(crate) fn of(replies: Vec<Option<Reply>>) -> Round {
        let n = replies.len();
        Round {
            replies,
            need: n / 2 + 1,
            addrs: (0..n).map(|i| format!("node{i}")).collect(),
            stragglers: None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use redis::Value;

    use super::*;

    pub(crate) fn yes(values: &[i64]) -> Option<Reply> {
        Some(Reply::Yes(Payload(
            values.iter().map(|&v| Value::Int(v)).collect(),
        )))
    }

    pub(crate) fn no(values: &[i64]) -> Option<Reply> {
        Some(Reply::No(Payload(
            values.iter().map(|&v| Value::Int(v)).collect(),
        )))
    }

    #[test]
    fn a_round_is_decided_once_a_majority_is_reached_or_out_of_reach() {
        // Three nodes, two needed.
        assert!(!decided(1, 1, 3, 2));
        assert!(decided(2, 2, 3, 2));
        assert!(!decided(1, 2, 3, 2));
        assert!(decided(1, 3, 3, 2));
        assert!(decided(0, 2, 3, 2));
        // Five nodes, three needed: two failures leave it open.
        assert!(!decided(0, 2, 5, 3));
        assert!(decided(0, 3, 5, 3));
    }

    #[test]
    fn agreement_needs_a_majority_of_the_same_value() {
        let round = Round::of(vec![yes(&[7, 0, 1]), yes(&[8, 0, 2]), yes(&[9, 0, 1])]);
        let (slots, nodes) = round.agreed(|p| p.ints_from(2)).unwrap();
        assert_eq!((slots, nodes), (vec![1], vec![0, 2]));
        let split = Round::of(vec![yes(&[7, 0, 1]), yes(&[8, 0, 2]), None]);
        assert!(split.agreed(|p| p.ints_from(2)).is_none());
    }

    #[test]
    fn refusals_decide_when_no_majority_is_left_and_give_the_shortest_wait() {
        let round = Round::of(vec![no(&[900]), no(&[300]), yes(&[1, 0])]);
        assert!(round.definitely_refused());
        assert_eq!(round.retry_after(), Some(Duration::from_millis(300)));
        let open = Round::of(vec![no(&[900]), None, yes(&[1, 0])]);
        assert!(!open.definitely_refused());
        assert_eq!(open.maybe_applied(), vec![1, 2]);
    }

    #[test]
    fn the_tally_names_every_node_and_its_vote() {
        let until = Instant::now() + Duration::from_secs(5);
        let round = Round::of(vec![yes(&[]), Some(Reply::Quarantined { until }), None]);
        let tally = round.tally(false);
        assert_eq!((tally.granted(), tally.needed()), (1, 2));
        assert_eq!(tally.nodes()[0].vote(), &Vote::Granted);
        assert!(matches!(tally.nodes()[1].vote(), Vote::Quarantined { .. }));
        assert_eq!(tally.nodes()[2].vote(), &Vote::Uncounted);
        assert_eq!(tally.nodes()[2].node(), "node2");
    }
}
