//! The nodes of one quorum: connected and admitted at build, reconnected
//! and admitted again by a supervisor task, with their subscribers and the
//! settings. This is the handle every engine call takes.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Instant;

use futures::future::join_all;
use tokio::sync::mpsc;

use super::admission::{Deployment, Suspicion, quarantine_until};
use super::cluster::{Conn, SHARD_WATCH};
use super::node::{Hello, Node};
use super::notify::Notifier;
use super::queue::Queues;
use super::renewable::Renewals;
use super::scripts::Flavor;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::observe;

/// The nodes of one quorum.
pub(crate) struct Nodes {
    nodes: Vec<Node>,
    addrs: Arc<[String]>,
    config: Config,
    notifier: Notifier,
    queues: Queues,
    renewals: Renewals,
    deployment: Deployment,
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.addrs.iter()).finish()
    }
}

/// A node's connection and handshake, when it answered at build.
type Answer = Option<(Conn, Hello)>;

impl Nodes {
    /// Checks the node list, connects, and admits every node that answers;
    /// the others connect in the background. See `QuorumBuilder::build`.
    pub(crate) async fn connect(urls: &[String], config: Config) -> Result<Arc<Nodes>> {
        config.validate()?;
        check_count(urls.len(), &config)?;
        let (reconnect, requests) = mpsc::unbounded_channel();
        let nodes = urls
            .iter()
            .enumerate()
            .map(|(i, u)| Node::open(u, i, &config, reconnect.clone()))
            .collect::<Result<Vec<_>>>()?;
        check_duplicates(&nodes)?;
        let answers = join_all(nodes.iter().map(Node::connect)).await;
        let answers = check_identities(&nodes, answers)?;
        let deployment = Deployment::new(config.max_ttl, nodes.len());
        for (node, answer) in nodes.iter().zip(&answers) {
            if let Some((_, hello)) = answer {
                deployment.note_start(node.index(), hello.at, hello.uptime);
                deployment.raise_bound(hello.recorded_max_ttl);
            }
        }
        let notifier = Notifier::new(&nodes, &config);
        let shared = Arc::new(Nodes {
            addrs: nodes.iter().map(|n| n.addr.clone()).collect(),
            nodes,
            config,
            notifier,
            queues: Queues::default(),
            renewals: Renewals::default(),
            deployment,
        });
        tokio::spawn(supervise(Arc::downgrade(&shared), requests));
        for node in &shared.nodes {
            if node.flavor() == Flavor::Sharded || node.fails_over() {
                tokio::spawn(watch_primaries(Arc::downgrade(&shared), node.index()));
            }
        }
        for (node, answer) in shared.nodes.iter().zip(answers) {
            match answer {
                Some((conn, hello)) => shared.admit(node, conn, &hello),
                None => node.start_reconnecting(),
            }
        }
        Ok(shared)
    }

    pub(crate) fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Yes votes an operation needs: a majority, `N / 2 + 1`.
    pub(crate) fn majority(&self) -> usize {
        self.len() / 2 + 1
    }

    pub(crate) fn addrs(&self) -> &Arc<[String]> {
        &self.addrs
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// The leases of this quorum that renew themselves.
    pub(crate) fn renewals(&self) -> &Renewals {
        &self.renewals
    }

    /// This process's waiters, per resource.
    pub(crate) fn queues(&self) -> &Queues {
        &self.queues
    }

    /// Decides whether a node's grants count, records a quarantine on the
    /// node for clients that cannot tell, and puts the connection in
    /// service.
    fn admit(&self, node: &Node, conn: Conn, hello: &Hello) {
        let younger = self
            .deployment
            .younger_by(node.index(), hello.at, hello.uptime);
        let quarantine = self.config.quarantine(self.deployment.bound());
        let previous = node.known_run_id();
        let decision = quarantine_until(&hello.seen(), previous.as_deref(), younger, quarantine);
        if let Some((until, why)) = decision {
            let left = until.saturating_duration_since(Instant::now());
            observe::quarantined(&node.addr, left, &why);
            if why != Suspicion::Recorded {
                node.record_quarantine(conn.clone(), &hello.run_id, left);
            }
        }
        node.install(conn, hello, decision.map(|(until, _)| until));
        // A promoted replica has been up all along: its quarantine counts
        // from now, not from its start.
        let replaced = previous.is_some_and(|p| p != hello.run_id);
        if replaced
            && node.fails_over()
            && let Some(period) = quarantine
        {
            observe::quarantined(&node.addr, period, &Suspicion::Restarted);
            node.sit_out(Instant::now() + period);
        }
    }

    /// Reads the other nodes' records again, so a bound raised since this
    /// process connected counts for a quarantine decided now.
    async fn refresh_bound(&self, except: usize) {
        let others = self.nodes.iter().filter(|n| n.index() != except);
        for bound in join_all(others.map(Node::recorded_bound))
            .await
            .into_iter()
            .flatten()
        {
            self.deployment.raise_bound(bound);
        }
    }
}

/// Every [`SHARD_WATCH`] until the quorum is dropped: reads a cluster
/// node's primaries, and a shard whose primary changed sits the node out
/// (see `cluster.rs`); asks a Sentinel node's sentinels for the primary,
/// and follows it to a new one (whose new `run_id` then sits it out).
async fn watch_primaries(nodes: Weak<Nodes>, i: usize) {
    loop {
        tokio::time::sleep(SHARD_WATCH).await;
        let Some(shared) = nodes.upgrade() else {
            return;
        };
        let node = shared.node(i);
        if node.fails_over() {
            node.follow_primary().await;
            continue;
        }
        if !node.shards_changed().await {
            continue;
        }
        shared.refresh_bound(i).await;
        if let Some(period) = shared.config.quarantine(shared.deployment.bound()) {
            observe::quarantined(&node.addr, period, &Suspicion::Restarted);
            node.sit_out(Instant::now() + period);
        }
    }
}

/// Reconnects the nodes whose connections broke (or never came up), one
/// attempt loop per node, until the quorum is dropped.
async fn supervise(nodes: Weak<Nodes>, mut requests: mpsc::UnboundedReceiver<usize>) {
    while let Some(i) = requests.recv().await {
        tokio::spawn(reconnect(nodes.clone(), i));
    }
}

/// Connects one node until it answers, then admits it. A restart seen here
/// (a new `run_id`) first reads the other nodes' records again.
async fn reconnect(nodes: Weak<Nodes>, i: usize) {
    const MIN: std::time::Duration = std::time::Duration::from_millis(20);
    const MAX: std::time::Duration = std::time::Duration::from_millis(500);
    let mut pause = MIN;
    loop {
        let Some(shared) = nodes.upgrade() else {
            return;
        };
        let node = shared.node(i);
        node.attempting(true);
        match node.connect().await {
            Ok((_, hello)) if !hello.primary => {
                node.attempting(false);
                tracing::warn!(node = %node.addr, "node is a replica now; locks need primaries");
            }
            Ok((conn, hello)) => {
                let previous = node.known_run_id();
                if previous.as_ref().is_some_and(|p| *p != hello.run_id) {
                    shared.refresh_bound(i).await;
                }
                shared.deployment.raise_bound(hello.recorded_max_ttl);
                if previous.is_none() {
                    shared.deployment.note_start(i, hello.at, hello.uptime);
                }
                shared.admit(node, conn, &hello);
                return;
            }
            Err(e) => {
                node.attempting(false);
                tracing::debug!(node = %node.addr, error = %e, "reconnect failed");
            }
        }
        drop(shared);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX);
    }
}

/// Refuses an empty list and, unless allowed, an even count.
fn check_count(n: usize, config: &Config) -> Result<()> {
    if n == 0 {
        return Err(Error::config("nodes", "no node given"));
    }
    if n.is_multiple_of(2) && !config.allow_even_nodes {
        return Err(Error::config(
            "nodes",
            format!(
                "{n} nodes tolerate no more failures than {}; use an odd count or allow_even_nodes",
                n - 1
            ),
        ));
    }
    Ok(())
}

/// Refuses the same address twice: a node must vote once.
fn check_duplicates(nodes: &[Node]) -> Result<()> {
    let mut seen = HashMap::new();
    for node in nodes {
        if let Some(first) = seen.insert(node.addr.to_lowercase(), &node.addr) {
            return Err(Error::config(
                "nodes",
                format!("{first} is listed twice; a node must vote once"),
            ));
        }
    }
    Ok(())
}

/// Refuses replicas and aliases of one server; tolerates unreachable nodes
/// while a majority answers.
fn check_identities(nodes: &[Node], answers: Vec<Result<(Conn, Hello)>>) -> Result<Vec<Answer>> {
    let mut run_ids: HashMap<String, &str> = HashMap::new();
    let mut unreachable = Vec::new();
    let mut hellos = Vec::new();
    for (node, answer) in nodes.iter().zip(answers) {
        match answer {
            Ok((conn, hello)) => {
                node.check_role(&hello)?;
                if let Some(other) = run_ids.insert(hello.run_id.clone(), &node.addr) {
                    return Err(Error::config(
                        "nodes",
                        format!(
                            "{other} and {} are the same server (run_id {})",
                            node.addr, hello.run_id
                        ),
                    ));
                }
                hellos.push(Some((conn, hello)));
            }
            Err(Error::Connect { node, source }) => {
                unreachable.push((node, source));
                hellos.push(None);
            }
            Err(other) => return Err(other),
        }
    }
    if nodes.len() - unreachable.len() < nodes.len() / 2 + 1 {
        let (node, source) = unreachable.swap_remove(0);
        return Err(Error::Connect { node, source });
    }
    for (node, source) in unreachable {
        tracing::warn!(%node, error = %source, "node unreachable at connect; it will count once it answers");
    }
    Ok(hellos)
}
