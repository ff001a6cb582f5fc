//! Replicated topologies of real `redis-server` processes: a local Redis
//! Cluster ([`LocalCluster`]) and a standalone primary with replicas
//! ([`ReplicatedPrimary`]).
//!
//! Both are built from [`RedisServer`]s, so every node can be killed, paused
//! and restarted, lives in its own temporary directory and is killed on drop.
//! On top of that the cluster offers the operations that move a key's owner
//! under a client's feet: manual failover and live slot migration, done the
//! way an operator (or `redis-cli --cluster reshard`) does them.
//!
//! Everything talks to the nodes synchronously (plain blocking calls, fine
//! between the steps of an async test), and the methods that change the
//! topology return only once every live node agrees on it, so a test does
//! not race the cluster's own gossip.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::RedisServer;

/// Node timeout in ms: short, so a dead primary is detected (and an automatic
/// failover can start) about a second after it dies.
const NODE_TIMEOUT_MS: &str = "1000";
const NODE_ARGS: [&str; 10] = [
    REPLICATION_ARGS[0],
    REPLICATION_ARGS[1],
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    NODE_TIMEOUT_MS,
    "--cluster-require-full-coverage",
    "no",
];
/// A primary otherwise waits 5 s for more replicas before it streams a full
/// sync to the first.
const REPLICATION_ARGS: [&str; 2] = ["--repl-diskless-sync-delay", "0"];
/// `RedisServer` already retries fresh ports, but a cluster node also needs
/// its bus port (port + 10000) free and below 65536: about one port in five
/// fails that, so a few more rounds make a six-node start reliable.
const NODE_START_ATTEMPTS: usize = 3;
const SLOT_COUNT: u32 = 16384;
/// Settling takes about 2 s after a (re)start (a primary stays unwritable
/// that long) and well under a second otherwise; the rest is for slow CI.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Outlasts MIGRATE's own timeout, so a slow batch is not cut off.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
const MIGRATE_TIMEOUT_MS: u64 = 5000;
const MIGRATE_BATCH: usize = 100;
const HOST: &str = "127.0.0.1";
const SERVER_BINARY_ENV: &str = "QUORATE_REDIS_SERVER";

/// A Redis Cluster of real `redis-server` processes on `127.0.0.1`.
///
/// Nodes are started with a 1 s `cluster-node-timeout` and
/// `cluster-require-full-coverage no`: while one shard is down the others
/// keep serving their slots (the cluster stays `ok` as long as a majority of
/// primaries is reachable), which is what a lock test needs to see.
///
/// The cluster fails over by itself: a primary that is killed or paused for
/// longer than about two seconds is replaced by its replica, if it has one.
/// A killed primary without a replica keeps owning its slots (it is still
/// listed by [`primaries`](Self::primaries)): the other nodes answer commands
/// on those slots with `MOVED` to the dead node, whose connections are
/// refused, while the other slots keep working.
///
/// Nodes are named by their `127.0.0.1:port` address, as `CLUSTER NODES`
/// names them; a `redis://` prefix is accepted too.
///
/// ```no_run
/// let mut cluster = quorate::testkit::LocalCluster::start(3, 1)?;
/// let owner = cluster.primary_of_slot(0);
/// let new_owner = cluster.failover(&owner)?;
/// assert_eq!(cluster.primary_of_slot(0), new_owner);
/// cluster.kill_node(&owner); // now a replica of new_owner
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct LocalCluster {
    nodes: Vec<RedisServer>,
    /// Ports of paused nodes: they would never answer, so queries skip them
    /// instead of waiting for a timeout.
    paused: Mutex<HashSet<u16>>,
}

impl LocalCluster {
    /// Starts `primaries * (1 + replicas_per_primary)` nodes, joins them with
    /// `redis-cli --cluster create` (which gives each primary an equal share
    /// of the 16384 slots) and waits until the cluster has settled, as
    /// [`wait_ok`](Self::wait_ok) does. Takes about two seconds.
    ///
    /// # Errors
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] for fewer than 3 primaries
    /// (redis-cli refuses those), with [`io::ErrorKind::NotFound`] if
    /// `redis-server` or `redis-cli` is missing (`redis-cli` is looked up
    /// next to `QUORATE_REDIS_SERVER` if that is set, then on `PATH`), or if
    /// the cluster does not form.
    pub fn start(primaries: usize, replicas_per_primary: usize) -> io::Result<LocalCluster> {
        if primaries < 3 {
            let message = format!("a Redis Cluster needs at least 3 primaries, not {primaries}");
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        let nodes = (0..primaries * (1 + replicas_per_primary))
            .map(|_| start_node())
            .collect::<io::Result<_>>()?;
        let cluster = LocalCluster {
            nodes,
            paused: Mutex::default(),
        };
        cluster.create(replicas_per_primary)?;
        cluster.wait_ok(SETTLE_TIMEOUT)?;
        Ok(cluster)
    }

    /// The URLs `redis://127.0.0.1:port` of all nodes, primaries and
    /// replicas, live or not: seeds for a cluster client.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The `127.0.0.1:port` addresses of the primaries that own slots, the
    /// owner of slot 0 first, then in the order of their first slot. Read
    /// live from a node's `CLUSTER NODES`, so it reflects failovers and
    /// migrations.
    ///
    /// # Panics
    ///
    /// Panics if no live node answers.
    pub fn primaries(&self) -> Vec<String> {
        let nodes = self.view_or_panic();
        let mut owners: Vec<&str> = Vec::new();
        for (_, _, id) in slot_map(&nodes) {
            if !owners.contains(&id) {
                owners.push(id);
            }
        }
        owners.iter().map(|id| addr_of(&nodes, id)).collect()
    }

    /// The `127.0.0.1:port` address of the primary that currently owns
    /// `slot`, as a live node sees it.
    ///
    /// # Panics
    ///
    /// Panics if no live node answers, or if the slot has no owner.
    pub fn primary_of_slot(&self, slot: u16) -> String {
        let nodes = self.view_or_panic();
        let owner = owner_of(&nodes, slot).unwrap_or_else(|| panic!("slot {slot} has no owner"));
        addr_of(&nodes, owner)
    }

    /// Kills a node with SIGKILL. A killed primary with a replica is failed
    /// over automatically after two to three seconds; one without keeps its
    /// slots, which stay unreachable until it is
    /// [restarted](Self::restart_node).
    ///
    /// # Panics
    ///
    /// Panics if no node of this cluster has that address.
    pub fn kill_node(&mut self, addr: &str) {
        let index = self.index_of(addr);
        self.paused().remove(&self.nodes[index].port());
        self.nodes[index].kill();
    }

    /// Freezes a node with SIGSTOP. The other nodes see it fail after the
    /// node timeout (1 s), and if it is a primary its replica takes over a
    /// second or two later; when [resumed](Self::resume_node) it learns of
    /// the takeover and becomes a replica itself.
    ///
    /// # Panics
    ///
    /// Panics if no node has that address or the signal cannot be sent.
    pub fn pause_node(&self, addr: &str) {
        let node = &self.nodes[self.index_of(addr)];
        node.pause();
        self.paused().insert(node.port());
    }

    /// Unfreezes a node stopped with [`pause_node`](Self::pause_node). Call
    /// [`wait_ok`](Self::wait_ok) to wait until it has caught up with the
    /// cluster.
    ///
    /// # Panics
    ///
    /// Panics if no node has that address or the signal cannot be sent.
    pub fn resume_node(&self, addr: &str) {
        let node = &self.nodes[self.index_of(addr)];
        node.resume();
        self.paused().remove(&node.port());
    }

    /// Restarts a node empty on the same port. Its `nodes.conf` survives, so
    /// it rejoins under its old identity: a replica resyncs from its
    /// primary; a primary that was failed over meanwhile becomes a replica
    /// of its successor; a primary that was not takes its slots back, empty,
    /// so their keys are lost. Call [`wait_ok`](Self::wait_ok) to wait until
    /// it has rejoined.
    ///
    /// # Errors
    ///
    /// Fails as [`RedisServer::restart`] does.
    ///
    /// # Panics
    ///
    /// Panics if no node has that address.
    pub fn restart_node(&mut self, addr: &str) -> io::Result<()> {
        let index = self.index_of(addr);
        self.paused().remove(&self.nodes[index].port());
        self.nodes[index].restart()
    }

    /// Promotes a replica of `primary_addr` with `CLUSTER FAILOVER` sent to
    /// the replica, once the live nodes agree on the topology, and waits
    /// until it is a primary and the cluster has settled (as
    /// [`wait_ok`](Self::wait_ok) does). A live primary hands over cleanly,
    /// losing no write it acknowledged; a killed or paused one is replaced
    /// with `FORCE` (the other primaries vote), or with `TAKEOVER` when too
    /// few of them are live to form a majority. Returns the new primary's
    /// address.
    ///
    /// # Errors
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] if `primary_addr` is not a
    /// primary, with [`io::ErrorKind::NotFound`] if it has no live replica,
    /// or with [`io::ErrorKind::TimedOut`] if the cluster does not settle.
    pub fn failover(&self, primary_addr: &str) -> io::Result<String> {
        // Not `wait_ok`: with most primaries down the cluster is not ok
        // until this very failover.
        wait_until(SETTLE_TIMEOUT, "the live nodes to agree", || self.agreed())?;
        let nodes = self.view()?;
        let primary = nodes
            .iter()
            .find(|n| port_of(&n.addr) == port_of(primary_addr) && n.is_primary())
            .ok_or_else(|| invalid_input(format!("{primary_addr} is not a primary")))?;
        let replica = nodes
            .iter()
            .find(|n| n.primary == primary.id && self.is_live(&n.addr))
            .ok_or_else(|| {
                let message = format!("primary {primary_addr} has no live replica");
                io::Error::new(io::ErrorKind::NotFound, message)
            })?;
        let mut command = redis::cmd("CLUSTER");
        command.arg("FAILOVER");
        if let Some(mode) = self.failover_mode(primary_addr, &nodes) {
            command.arg(mode);
        }
        let port = port_of(&replica.addr);
        query::<()>(port, &command)?;
        let what = format!("{} to take over from {primary_addr}", replica.addr);
        wait_until(SETTLE_TIMEOUT, &what, || {
            let info = replication_info(port)?;
            Ok(info_field(&info, "role") == Some("master") && self.settled()?)
        })?;
        Ok(replica.addr.clone())
    }

    /// Moves `slot` and its keys to the primary `to_primary` while the
    /// cluster keeps serving it, as `redis-cli --cluster reshard` does:
    /// during the move clients are sent `ASK` redirections, afterwards
    /// `MOVED`. Waits for the cluster to settle before, and until every live
    /// node sees the new owner after; moving a slot to its owner does
    /// nothing.
    ///
    /// # Errors
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] if `to_primary` is not a
    /// primary, or if a command fails (the current owner must be live).
    pub fn migrate_slot(&self, slot: u16, to_primary: &str) -> io::Result<()> {
        self.wait_ok(SETTLE_TIMEOUT)?;
        let nodes = self.view()?;
        let source = owner_of(&nodes, slot)
            .ok_or_else(|| invalid_input(format!("slot {slot} has no owner")))?;
        let target = nodes
            .iter()
            .find(|n| port_of(&n.addr) == port_of(to_primary) && n.is_primary())
            .ok_or_else(|| invalid_input(format!("{to_primary} is not a primary")))?;
        if source == target.id {
            return Ok(());
        }
        let (from, to) = (port_of(&addr_of(&nodes, source)), port_of(&target.addr));
        set_slot(to, slot, "IMPORTING", source)?;
        set_slot(from, slot, "MIGRATING", &target.id)?;
        move_keys(slot, from, to)?;
        // Target first: once the source lets go, clients it redirects must
        // find a target that already owns the slot.
        set_slot(to, slot, "NODE", &target.id)?;
        set_slot(from, slot, "NODE", &target.id)?;
        for other in nodes
            .iter()
            .filter(|n| n.is_primary() && self.is_live(&n.addr))
        {
            let port = port_of(&other.addr);
            if port != from && port != to {
                set_slot(port, slot, "NODE", &target.id)?;
            }
        }
        let what = format!("all nodes to see slot {slot} on {to_primary}");
        wait_until(SETTLE_TIMEOUT, &what, || {
            Ok(self.settled()? && owner_of(&self.view()?, slot) == Some(target.id.as_str()))
        })
    }

    /// Waits until the cluster has settled: every live node (running and
    /// not paused) reports `cluster_state:ok`, reaches the other live nodes
    /// over the cluster bus without suspecting them, and sees the same
    /// owner for each of the 16384 slots and the same primary for each
    /// replica; and every replica of a live primary has completed its sync,
    /// on both ends.
    ///
    /// Dead and paused nodes are left out, so right after a primary is
    /// killed this returns at once, without waiting for the automatic
    /// failover.
    ///
    /// # Errors
    ///
    /// Fails with [`io::ErrorKind::TimedOut`], naming the last error seen,
    /// if that does not happen within `timeout`.
    pub fn wait_ok(&self, timeout: Duration) -> io::Result<()> {
        let what = "the live nodes to report cluster_state:ok and agree";
        wait_until(timeout, what, || self.settled())
    }

    fn create(&self, replicas_per_primary: usize) -> io::Result<()> {
        let cli = cli_path();
        let output = Command::new(&cli)
            .args(["--cluster", "create"])
            .args(self.nodes.iter().map(|n| format!("{HOST}:{}", n.port())))
            .args(["--cluster-replicas", &replicas_per_primary.to_string()])
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .output()
            .map_err(|err| explain_cli_error(err, &cli))?;
        if output.status.success() {
            return Ok(());
        }
        let message = format!(
            "redis-cli --cluster create failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Err(io::Error::other(message))
    }

    fn settled(&self) -> io::Result<bool> {
        Ok(self.all_ok()? && self.agreed()?)
    }

    fn all_ok(&self) -> io::Result<bool> {
        for port in self.live_ports() {
            let info: String = query(port, redis::cmd("CLUSTER").arg("INFO"))?;
            if info_field(&info, "cluster_state") != Some("ok") {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether the live nodes have synced, reach each other and see the same
    /// topology, with every slot owned.
    fn agreed(&self) -> io::Result<bool> {
        let live = self.live_ports();
        let mut views = Vec::new();
        for &port in &live {
            let nodes = cluster_nodes(port)?;
            // A node just resumed from a pause suspects everyone until their
            // pongs arrive, and refuses a manual failover until its links
            // are back.
            let doubts_a_live_node = nodes
                .iter()
                .any(|n| live.contains(&port_of(&n.addr)) && n.looks_down());
            if doubts_a_live_node || !synced(port, &live)? {
                return Ok(false);
            }
            views.push(Topology::of(&nodes));
        }
        let same = views.windows(2).all(|pair| pair[0] == pair[1]);
        Ok(same
            && views
                .first()
                .is_some_and(|view| covers_all_slots(&view.slots)))
    }

    /// Without a live primary the others must vote for the replica (FORCE);
    /// if too few of them are live to form a majority, nobody can, and the
    /// replica has to take over on its own authority (TAKEOVER).
    fn failover_mode(&self, primary_addr: &str, nodes: &[ClusterNode]) -> Option<&'static str> {
        if self.is_live(primary_addr) {
            return None;
        }
        let owners: HashSet<&str> = slot_map(nodes).into_iter().map(|(_, _, id)| id).collect();
        let live = owners
            .iter()
            .filter(|id| self.is_live(&addr_of(nodes, id)))
            .count();
        Some(if live > owners.len() / 2 {
            "FORCE"
        } else {
            "TAKEOVER"
        })
    }

    /// The cluster as the first live node that answers sees it.
    fn view(&self) -> io::Result<Vec<ClusterNode>> {
        let mut last_error = io::Error::other("no node is running and unpaused");
        for port in self.live_ports() {
            match cluster_nodes(port) {
                Ok(nodes) => return Ok(nodes),
                Err(err) => last_error = err,
            }
        }
        Err(last_error)
    }

    fn view_or_panic(&self) -> Vec<ClusterNode> {
        self.view()
            .unwrap_or_else(|err| panic!("no live cluster node answered CLUSTER NODES: {err}"))
    }

    fn live_ports(&self) -> Vec<u16> {
        let paused = self.paused();
        self.nodes
            .iter()
            .filter(|n| n.is_running() && !paused.contains(&n.port()))
            .map(RedisServer::port)
            .collect()
    }

    fn is_live(&self, addr: &str) -> bool {
        self.live_ports().contains(&port_of(addr))
    }

    fn index_of(&self, addr: &str) -> usize {
        let port = port_of(addr);
        self.nodes
            .iter()
            .position(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node of this cluster at {addr}"))
    }

    fn paused(&self) -> MutexGuard<'_, HashSet<u16>> {
        self.paused.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A standalone primary and its replicas (`--replicaof`), for what
/// asynchronous replication does to a lock: a write acknowledged by the
/// primary may never reach a replica that is then promoted.
///
/// ```
/// let mut group = quorate::testkit::ReplicatedPrimary::start(1)?;
/// let new_primary = group.promote(0)?; // the old primary is killed
/// assert_eq!(new_primary, group.replica_urls()[0]);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct ReplicatedPrimary {
    primary: RedisServer,
    replicas: Vec<RedisServer>,
}

impl ReplicatedPrimary {
    /// Starts a primary and `replicas` replicas of it, and waits until the
    /// primary lists them all as online: synced, and counted by `WAIT`.
    ///
    /// # Errors
    ///
    /// Fails as [`RedisServer::start`] does, or with
    /// [`io::ErrorKind::TimedOut`] if replication does not come up.
    pub fn start(replicas: usize) -> io::Result<ReplicatedPrimary> {
        let primary = RedisServer::start_with(&REPLICATION_ARGS)?;
        let port = primary.port().to_string();
        let replicas = (0..replicas)
            .map(|_| {
                RedisServer::start_with(
                    &[&REPLICATION_ARGS[..], &["--replicaof", HOST, &port]].concat(),
                )
            })
            .collect::<io::Result<_>>()?;
        let group = ReplicatedPrimary { primary, replicas };
        group.wait_replicating()?;
        Ok(group)
    }

    /// The primary's URL. After [`promote`](Self::promote) it still names
    /// the old, killed primary.
    pub fn primary_url(&self) -> String {
        self.primary.url()
    }

    /// The replicas' URLs, in index order.
    pub fn replica_urls(&self) -> Vec<String> {
        self.replicas.iter().map(RedisServer::url).collect()
    }

    /// Kills replica `i` with SIGKILL.
    ///
    /// # Panics
    ///
    /// Panics if there is no replica `i`.
    pub fn stop_replica(&mut self, i: usize) {
        self.replicas[i].kill();
    }

    /// Freezes replica `i` with SIGSTOP: the primary keeps streaming to it
    /// but gets no acknowledgements, so `WAIT` stops counting it.
    ///
    /// # Panics
    ///
    /// Panics if there is no replica `i` or the signal cannot be sent.
    pub fn pause_replica(&self, i: usize) {
        self.replicas[i].pause();
    }

    /// Unfreezes replica `i`.
    ///
    /// # Panics
    ///
    /// Panics if there is no replica `i` or the signal cannot be sent.
    pub fn resume_replica(&self, i: usize) {
        self.replicas[i].resume();
    }

    /// Fails over to replica `i` without waiting for it to catch up: sends
    /// it `REPLICAOF NO ONE`, then kills the old primary, so writes the
    /// replica had not received are lost. Returns replica `i`'s URL, now a primary.
    ///
    /// The other replicas are not re-pointed: they keep trying to reach the
    /// old primary. Replica `i` keeps its `--replicaof` argument, so a
    /// [restart](RedisServer::restart) makes it a replica again.
    ///
    /// # Errors
    ///
    /// Fails if replica `i` does not accept the command.
    ///
    /// # Panics
    ///
    /// Panics if there is no replica `i`.
    pub fn promote(&mut self, i: usize) -> io::Result<String> {
        let replica = &self.replicas[i];
        query::<()>(replica.port(), redis::cmd("REPLICAOF").arg("NO").arg("ONE"))?;
        self.primary.kill();
        Ok(replica.url())
    }

    /// The primary's server, to kill, pause or restart it.
    pub fn primary_mut(&mut self) -> &mut RedisServer {
        &mut self.primary
    }

    /// Replica `i`'s server.
    ///
    /// # Panics
    ///
    /// Panics if there is no replica `i`.
    pub fn replica_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.replicas[i]
    }

    fn wait_replicating(&self) -> io::Result<()> {
        let count = self.replicas.len();
        let what = format!("{count} replicas to be online at the primary");
        wait_until(SETTLE_TIMEOUT, &what, || {
            let info = replication_info(self.primary.port())?;
            Ok(replicas_online(&info).filter(|&online| online).count() == count)
        })
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug)]
struct ClusterNode {
    id: String,
    /// `127.0.0.1:port`, without the `@busport` suffix.
    addr: String,
    flags: String,
    /// The primary's id for a replica, `-` for a primary.
    primary: String,
    /// Whether the viewing node has a cluster bus link to this one.
    connected: bool,
    /// Owned slot ranges; slots being imported or migrated are left out.
    slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    fn parse(line: &str) -> Option<ClusterNode> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let addr = fields.get(1)?.split('@').next()?;
        let slots = fields
            .get(8..)
            .unwrap_or_default()
            .iter()
            .filter_map(|range| parse_range(range))
            .collect();
        Some(ClusterNode {
            id: (*fields.first()?).to_owned(),
            addr: addr.to_owned(),
            flags: (*fields.get(2)?).to_owned(),
            primary: (*fields.get(3)?).to_owned(),
            connected: *fields.get(7)? == "connected",
            slots,
        })
    }

    fn is_primary(&self) -> bool {
        self.flags.split(',').any(|flag| flag == "master")
    }

    /// Failed (`fail`), suspected by the viewing node (`fail?`), or out of
    /// its reach.
    fn looks_down(&self) -> bool {
        !self.connected
            || self
                .flags
                .split(',')
                .any(|flag| flag == "fail" || flag == "fail?")
    }
}

/// What all live nodes must agree on before the cluster counts as settled.
#[derive(Debug, PartialEq)]
struct Topology {
    slots: Vec<(u16, u16, String)>,
    /// Each node's id with the id of the primary it follows: a primary that
    /// has not yet heard of a new replica ignores its manual failover.
    follows: Vec<(String, String)>,
}

impl Topology {
    fn of(nodes: &[ClusterNode]) -> Topology {
        let slots = slot_map(nodes)
            .into_iter()
            .map(|(start, end, id)| (start, end, id.to_owned()))
            .collect();
        let mut follows: Vec<_> = nodes
            .iter()
            .map(|n| (n.id.clone(), n.primary.clone()))
            .collect();
        follows.sort_unstable();
        Topology { slots, follows }
    }
}

/// `5461` or `0-5460`; `[slot->-id]` and `[slot-<-id]` (a migration in
/// progress) give `None`.
fn parse_range(range: &str) -> Option<(u16, u16)> {
    match range.split_once('-') {
        Some((start, end)) => Some((start.parse().ok()?, end.parse().ok()?)),
        None => range.parse().ok().map(|slot| (slot, slot)),
    }
}

/// Slot ranges with their owner's id, sorted by first slot.
fn slot_map(nodes: &[ClusterNode]) -> Vec<(u16, u16, &str)> {
    let mut map: Vec<_> = nodes
        .iter()
        .flat_map(|n| {
            n.slots
                .iter()
                .map(|&(start, end)| (start, end, n.id.as_str()))
        })
        .collect();
    map.sort_unstable();
    map
}

fn covers_all_slots(map: &[(u16, u16, String)]) -> bool {
    let mut next = 0_u32;
    for &(start, end, _) in map {
        if u32::from(start) != next {
            return false;
        }
        next = u32::from(end) + 1;
    }
    next == SLOT_COUNT
}

fn owner_of(nodes: &[ClusterNode], slot: u16) -> Option<&str> {
    slot_map(nodes)
        .into_iter()
        .find(|&(start, end, _)| (start..=end).contains(&slot))
        .map(|(_, _, id)| id)
}

fn addr_of(nodes: &[ClusterNode], id: &str) -> String {
    nodes
        .iter()
        .find(|n| n.id == id)
        .map_or_else(|| format!("<unknown node {id}>"), |n| n.addr.clone())
}

/// Accepts `127.0.0.1:port` and `redis://127.0.0.1:port`; anything else is
/// port 0, which no node has.
fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap_or(0)
}

fn cluster_nodes(port: u16) -> io::Result<Vec<ClusterNode>> {
    let text: String = query(port, redis::cmd("CLUSTER").arg("NODES"))?;
    Ok(text.lines().filter_map(ClusterNode::parse).collect())
}

/// A replica of a live node must have finished its sync, or a `WAIT` right
/// after a settle could find no replica to acknowledge.
fn synced(port: u16, live: &[u16]) -> io::Result<bool> {
    let info = replication_info(port)?;
    let follows_live = info_field(&info, "role") == Some("slave")
        && info_field(&info, "master_port")
            .and_then(|primary| primary.parse().ok())
            .is_some_and(|primary| live.contains(&primary));
    let link_up = !follows_live || info_field(&info, "master_link_status") == Some("up");
    Ok(link_up && replicas_online(&info).all(|online| online))
}

fn replication_info(port: u16) -> io::Result<String> {
    query(port, redis::cmd("INFO").arg("replication"))
}

/// Whether each replica in a primary's `INFO replication` is online. A
/// replica reports its link up as soon as it has loaded the snapshot, but
/// the primary streams writes to it, and counts it in `WAIT`, only after its
/// first acknowledgement.
fn replicas_online(info: &str) -> impl Iterator<Item = bool> + '_ {
    info.lines()
        .filter(|line| line.starts_with("slave") && line.contains(",state="))
        .map(|line| line.contains(",state=online,"))
}

fn set_slot(port: u16, slot: u16, state: &str, node_id: &str) -> io::Result<()> {
    let mut command = redis::cmd("CLUSTER");
    command.arg("SETSLOT").arg(slot).arg(state).arg(node_id);
    query(port, &command)
}

fn move_keys(slot: u16, from: u16, to: u16) -> io::Result<()> {
    let mut conn = connect(from)?;
    loop {
        let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(MIGRATE_BATCH)
            .query(&mut conn)
            .map_err(|err| redis_error(from, err))?;
        if keys.is_empty() {
            return Ok(());
        }
        redis::cmd("MIGRATE")
            .arg(HOST)
            .arg(to)
            .arg("")
            .arg(0)
            .arg(MIGRATE_TIMEOUT_MS)
            .arg("KEYS")
            .arg(&keys)
            .query::<()>(&mut conn)
            .map_err(|err| redis_error(from, err))?;
    }
}

fn connect(port: u16) -> io::Result<redis::Connection> {
    let client =
        redis::Client::open(format!("redis://{HOST}:{port}")).map_err(|e| redis_error(port, e))?;
    let conn = client
        .get_connection_with_timeout(CONNECT_TIMEOUT)
        .map_err(|err| redis_error(port, err))?;
    conn.set_read_timeout(Some(COMMAND_TIMEOUT))
        .and_then(|()| conn.set_write_timeout(Some(COMMAND_TIMEOUT)))
        .map_err(|err| redis_error(port, err))?;
    Ok(conn)
}

fn query<T: redis::FromRedisValue>(port: u16, command: &redis::Cmd) -> io::Result<T> {
    command
        .query(&mut connect(port)?)
        .map_err(|err| redis_error(port, err))
}

fn redis_error(port: u16, err: redis::RedisError) -> io::Error {
    io::Error::other(format!("{HOST}:{port}: {err}"))
}

fn invalid_input(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
}

/// Errors count as "not yet" (a node may still be loading or electing), but
/// the last one is reported if time runs out.
fn wait_until(
    timeout: Duration,
    what: &str,
    mut done: impl FnMut() -> io::Result<bool>,
) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match done() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(err) => last_error = Some(err),
        }
        if Instant::now() >= deadline {
            let last = last_error.map_or_else(String::new, |err| format!("; last error: {err}"));
            let message = format!("timed out after {timeout:?} waiting for {what}{last}");
            return Err(io::Error::new(io::ErrorKind::TimedOut, message));
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// redis-server itself refuses to start when the bus port is taken or past
/// 65535, so a failed start just means trying other ports.
fn start_node() -> io::Result<RedisServer> {
    let mut attempt = 1;
    loop {
        match RedisServer::start_with(&NODE_ARGS) {
            Err(err) if err.kind() != io::ErrorKind::NotFound && attempt < NODE_START_ATTEMPTS => {
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// redis-cli ships next to redis-server, so a custom server binary brings
/// the matching cli.
fn cli_path() -> PathBuf {
    std::env::var_os(SERVER_BINARY_ENV)
        .and_then(|server| Some(PathBuf::from(server).parent()?.join("redis-cli")))
        .filter(|cli| cli.is_file())
        .unwrap_or_else(|| PathBuf::from("redis-cli"))
}

fn explain_cli_error(err: io::Error, cli: &Path) -> io::Error {
    if err.kind() != io::ErrorKind::NotFound {
        return err;
    }
    let message = format!(
        "redis-cli not found (tried `{}`): it comes with redis-server \
         (apt install redis-server, or brew install redis)",
        cli.display()
    );
    io::Error::new(io::ErrorKind::NotFound, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_parse_without_migrating_slots() {
        let line = "07c3 127.0.0.1:30004@40004,host myself,master - 0 0 1 connected \
                    0-5460 5462 [5461->-e7d1]";
        let node = ClusterNode::parse(line).unwrap();
        assert_eq!(node.addr, "127.0.0.1:30004");
        assert!(node.is_primary() && !node.looks_down());
        assert_eq!(node.slots, [(0, 5460), (5462, 5462)]);
    }

    #[test]
    fn a_slot_map_must_cover_every_slot_without_gaps() {
        let whole = [(0, 8191, "a".to_owned()), (8192, 16383, "b".to_owned())];
        assert!(covers_all_slots(&whole));
        assert!(!covers_all_slots(&whole[..1]));
        assert!(!covers_all_slots(&[(1, 16383, "a".to_owned())]));
    }
}
