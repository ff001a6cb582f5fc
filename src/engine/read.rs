//! Majority reads and writes: a script that counts once a quorum of nodes
//! ran it, the value a quorum agrees on, and writes spread in the
//! background. A shortfall is reported with the per-node tally, or as the
//! error a node gave that retrying will not fix.

use std::sync::Arc;
use std::time::Duration;

use super::node::{Call, Payload};
use super::nodes::Nodes;
use super::round::{self, Need, Round};
use crate::error::Result;

/// Runs `call` until a quorum said yes; the round, or the shortfall.
pub(crate) async fn read(
    nodes: &Arc<Nodes>,
    call: Call,
    timeout: Duration,
    resource: &str,
) -> Result<Round> {
    let round = round::on_all(nodes, call, Need::Majority, timeout).await;
    require(round, resource)
}

/// Runs `call` on every node and waits for every answer: for reads that
/// count what each node says (free slots); the round, or the shortfall.
pub(crate) async fn read_all(
    nodes: &Arc<Nodes>,
    call: Call,
    timeout: Duration,
    resource: &str,
) -> Result<Round> {
    let round = round::on_all(nodes, call, Need::All, timeout).await;
    require(round, resource)
}

/// Runs `call` on every node and waits for every answer, whatever they
/// are: for callers that weigh each node's answer themselves.
pub(crate) async fn gather(nodes: &Arc<Nodes>, call: Call, timeout: Duration) -> Round {
    round::on_all(nodes, call, Need::All, timeout).await
}

/// Runs `call` until a quorum said yes: it counts from then on.
pub(crate) async fn write(
    nodes: &Arc<Nodes>,
    call: Call,
    timeout: Duration,
    resource: &str,
) -> Result<()> {
    read(nodes, call, timeout, resource).await.map(|_| ())
}

/// The value of `key` that a quorum of yes votes share, or the shortfall.
pub(crate) async fn agree<K: PartialEq>(
    nodes: &Arc<Nodes>,
    call: Call,
    timeout: Duration,
    resource: &str,
    key: impl Fn(&Payload) -> K,
) -> Result<K> {
    let round = round::on_all(nodes, call, Need::Majority, timeout).await;
    match round.agreed(key) {
        Some((value, _)) => Ok(value),
        None => Err(round.shortfall(resource)),
    }
}

/// Runs `call` on `targets` in the background: a repair or a mark that
/// only saves later readers a round.
pub(crate) fn spread(nodes: &Arc<Nodes>, call: Call, targets: Vec<usize>, timeout: Duration) {
    if targets.is_empty() {
        return;
    }
    let nodes = nodes.clone();
    tokio::spawn(async move {
        round::on(&nodes, call, &targets, Need::All, timeout).await;
    });
}

fn require(round: Round, resource: &str) -> Result<Round> {
    if round.reached() {
        Ok(round)
    } else {
        Err(round.shortfall(resource))
    }
}
