//! Lease renewals, batched: one task per quorum renews every lease that is
//! due, with one pipelined request per node per tick, rather than a timer
//! task and a request per lease. Ten thousand leases of 10 s cost about ten
//! requests a second per node.
//!
//! A lease registers when it is granted with auto-extension and says when
//! it is next due; the task sleeps until the earliest due, then renews
//! every lease due within a tick (at most a quarter of its renewal period
//! early), and hands each lease its outcome: the new deadline, a definite
//! loss, or a failure to retry soon.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::future::join_all;
use tracing::Instrument;

use super::lease_ops::extend_outcome;
use super::node::Call;
use super::nodes::Nodes;
use super::renewable::Renewable;
use super::round::Round;
use crate::config::Timing;
use crate::observe;

/// The longest a renewal is brought forward to share a batch.
const TICK: Duration = Duration::from_millis(100);

/// Time a batch is given per renewal in it, beyond the per-node timeout:
/// several times what a node takes to run one extend script.
const PER_CALL: Duration = Duration::from_micros(20);

/// Takes a lease into the renewals of `nodes`, starting their task on first
/// use.
pub(crate) fn register(nodes: &Arc<Nodes>, lease: Weak<dyn Renewable>) {
    let weak = Arc::downgrade(nodes);
    nodes.renewals().add(lease, || {
        tokio::spawn(run(weak));
    });
}

/// How early a lease with this renewal period may be renewed, and how far
/// apart batches for it may be.
fn slack(period: Duration) -> Duration {
    TICK.min(period / 4)
}

/// The renewal task: until its quorum is dropped.
///
/// Batches are a tick apart at least (less for leases that renew more
/// often): a batch takes every lease due within its slack, so the next one
/// need not come sooner, and leases falling due while one is in flight
/// wait for the next rather than make a batch each.
async fn run(nodes: Weak<Nodes>) {
    let mut last: Option<(Instant, Duration)> = None;
    loop {
        let Some(shared) = nodes.upgrade() else {
            return;
        };
        let wake = shared.renewals().added();
        let registered = wake.notified();
        tokio::pin!(registered);
        registered.as_mut().enable();
        let (due, next) = shared.renewals().due(slack);
        if !due.is_empty() {
            let gap = due
                .iter()
                .filter_map(|lease| lease.due())
                .map(|(_, period)| slack(period))
                .min()
                .unwrap_or(TICK);
            let earliest = last.map(|(at, last_gap)| at + gap.min(last_gap));
            if let Some(wait) = earliest.and_then(|e| e.checked_duration_since(Instant::now())) {
                drop(shared);
                tokio::time::sleep(wait).await;
                continue;
            }
            last = Some((Instant::now(), gap));
            renew(&shared, due).await;
            continue;
        }
        // Asleep, the task does not keep the quorum alive.
        drop(shared);
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = &mut registered => {}
                }
            }
            None => registered.await,
        }
    }
}

/// One batch: every node gets one pipelined request with every lease's
/// renewal, each lease its outcome.
async fn renew(nodes: &Arc<Nodes>, due: Vec<Arc<dyn Renewable>>) {
    let t1 = Instant::now();
    let renewals: Vec<(Call, Timing)> = due.iter().map(|lease| lease.renewal()).collect();
    // A node serves a batch call by call: a large one gets time for each,
    // or it would time out as a whole, and be retried, again and again.
    let timeout = renewals
        .iter()
        .map(|(_, timing)| timing.node_timeout)
        .min()
        .unwrap_or(TICK)
        + PER_CALL * renewals.len() as u32;
    let calls: Vec<Call> = renewals.iter().map(|(call, _)| call.clone()).collect();
    let per_node = join_all((0..nodes.len()).map(|i| nodes.node(i).invoke_batch(&calls, timeout)))
        .instrument(observe::renew_span(calls.len()))
        .await;
    let mut rounds: Vec<Round> = (0..calls.len()).map(|_| Round::empty(nodes)).collect();
    for (i, replies) in per_node.into_iter().enumerate() {
        // One pipelined request per node: when it fails, every call of it
        // fails alike, and it counts once.
        if let Some(first) = replies.first() {
            nodes.node(i).observe(first);
        }
        for (round, reply) in rounds.iter_mut().zip(replies) {
            round.record(i, reply);
        }
    }
    for ((lease, (_, timing)), round) in due.iter().zip(&renewals).zip(&rounds) {
        lease.renewed(t1, extend_outcome(round, t1, *timing));
    }
}
