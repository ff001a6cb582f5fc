//! [`Quorum`]: the public handle every primitive is built on, and its
//! builder. The engine behind it lives in `engine`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::engine::Nodes;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;

/// A client for one Redis node, or for N independent nodes voting as a
/// Redlock quorum.
///
/// Cheap to clone: clones share the connections (one multiplexed connection
/// and, once something waits, one subscriber connection per node). Build it
/// once and hand clones to the primitives.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> quorate::Result<()> {
/// use quorate::Quorum;
///
/// // One node:
/// let single = Quorum::connect(["redis://127.0.0.1:6379"]).await?;
///
/// // Three independent nodes, two must agree:
/// let q = Quorum::builder()
///     .nodes(["redis://10.0.0.1", "redis://10.0.0.2", "redis://10.0.0.3"])
///     .ttl(std::time::Duration::from_secs(30))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Quorum {
    nodes: Arc<Nodes>,
}

impl Quorum {
    /// Connects to the given nodes with the default [`Config`].
    ///
    /// See [`QuorumBuilder::build`] for what is checked.
    ///
    /// # Errors
    ///
    /// As [`QuorumBuilder::build`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped call leaves nothing behind.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> quorate::Result<()> {
    /// # let servers = quorate::testkit::ServerGroup::start(1).unwrap();
    /// # let q = quorate::Quorum::connect(servers.urls()).await?;
    /// // `servers` are throwaway local redis-servers from the testkit.
    /// let q = quorate::Quorum::connect(servers.urls()).await?;
    /// assert_eq!(q.node_count(), 1);
    /// # Ok(()) }
    /// ```
    pub async fn connect<I, U>(urls: I) -> Result<Quorum>
    where
        I: IntoIterator<Item = U>,
        U: AsRef<str>,
    {
        Quorum::builder().nodes(urls).build().await
    }

    /// Connects to one Redis Cluster, given by some of its nodes' URLs, as
    /// the only node of the quorum, with the default [`Config`]. Every
    /// primitive works on it unchanged: a resource's keys share a hash
    /// slot, so each operation runs on one shard, and resources spread
    /// over all of them. See [`QuorumBuilder::cluster_node`].
    ///
    /// # Errors
    ///
    /// As [`QuorumBuilder::build`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped call leaves nothing behind.
    ///
    /// ```no_run
    /// # async fn demo() -> quorate::Result<()> {
    /// let q = quorate::Quorum::connect_cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]).await?;
    /// assert_eq!(q.node_count(), 1);
    /// # Ok(()) }
    /// ```
    pub async fn connect_cluster<I, U>(seeds: I) -> Result<Quorum>
    where
        I: IntoIterator<Item = U>,
        U: AsRef<str>,
    {
        Quorum::builder().cluster_node(seeds).build().await
    }

    /// A builder for the nodes and settings.
    ///
    /// ```no_run
    /// # async fn demo() -> quorate::Result<()> {
    /// let q = quorate::Quorum::builder()
    ///     .nodes(["redis://10.0.0.1", "redis://10.0.0.2", "redis://10.0.0.3"])
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn builder() -> QuorumBuilder {
        QuorumBuilder {
            urls: Vec::new(),
            config: Config::default(),
        }
    }

    /// Number of nodes.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// assert!(q.node_count() % 2 == 1 || q.config().allow_even_nodes);
    /// # }
    /// ```
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Yes votes an operation needs: a majority, `N / 2 + 1`.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// assert_eq!(q.majority(), q.node_count() / 2 + 1);
    /// # }
    /// ```
    pub fn majority(&self) -> usize {
        self.nodes.majority()
    }

    /// The settings in force.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// println!("leases last {:?} by default", q.config().ttl);
    /// # }
    /// ```
    pub fn config(&self) -> &Config {
        self.nodes.config()
    }

    /// The nodes' addresses (`host:port`, `/db` when not 0), in order.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// for addr in q.node_addrs() {
    ///     println!("{addr}");
    /// }
    /// # }
    /// ```
    pub fn node_addrs(&self) -> impl Iterator<Item = &str> {
        self.nodes.addrs().iter().map(String::as_str)
    }

    /// The engine handle every primitive works through.
    pub(crate) fn nodes(&self) -> &Arc<Nodes> {
        &self.nodes
    }
}

impl fmt::Debug for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quorum")
            .field("nodes", &self.nodes)
            .field("majority", &self.majority())
            .finish()
    }
}

/// Builds a [`Quorum`].
///
/// ```no_run
/// # async fn demo() -> quorate::Result<()> {
/// let q = quorate::Quorum::builder()
///     .nodes(["redis://10.0.0.1", "redis://10.0.0.2", "redis://10.0.0.3"])
///     .ttl(std::time::Duration::from_secs(30))
///     .key_prefix("myapp:")
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `.build().await`"]
pub struct QuorumBuilder {
    urls: Vec<String>,
    config: Config,
}

impl QuorumBuilder {
    /// Adds one node (`redis://host:port/db`, `rediss://...`,
    /// `redis+unix:///path`).
    ///
    /// ```no_run
    /// # fn demo() {
    /// let builder = quorate::Quorum::builder()
    ///     .node("redis://10.0.0.1")
    ///     .node("rediss://10.0.0.2")
    ///     .node("redis+unix:///run/redis.sock");
    /// # }
    /// ```
    pub fn node(mut self, url: impl AsRef<str>) -> Self {
        self.urls.push(url.as_ref().to_owned());
        self
    }

    /// Adds one node that is a whole Redis Cluster, given by the URLs of
    /// some of its nodes (the seeds; the client learns the rest). A quorum
    /// may mix clusters and standalone servers: three independent clusters
    /// make a Redlock whose every member scales out.
    ///
    /// In a [`Config`]'s node list (and so in TOML and `QUORATE_NODES`) a
    /// cluster node is written `cluster:URL|URL|...`.
    ///
    /// A cluster node runs the scripts on the shard of the resource's hash
    /// slot and sends wake-ups over sharded pub/sub. A shard whose primary
    /// changes (a restart, a failover) makes the node's grants sit out the
    /// restart quarantine, as a restarted server's do; see the README's
    /// *Redis Cluster* section for what that means and what
    /// [`wait_replicas`](Self::wait_replicas) adds.
    ///
    /// ```no_run
    /// # fn demo() {
    /// let builder = quorate::Quorum::builder()
    ///     .cluster_node(["redis://a1:7000", "redis://a2:7000"])
    ///     .cluster_node(["redis://b1:7000", "redis://b2:7000"])
    ///     .cluster_node(["redis://c1:7000", "redis://c2:7000"]);
    /// # }
    /// ```
    pub fn cluster_node<I, U>(mut self, seeds: I) -> Self
    where
        I: IntoIterator<Item = U>,
        U: AsRef<str>,
    {
        self.urls.push(crate::engine::cluster_entry(seeds));
        self
    }

    /// Adds one node that is a primary Sentinel fails over: the service
    /// `service`, found through `sentinels` (their URLs) at every connect.
    /// After a failover the node reconnects to the new primary, whose grants
    /// sit out the restart quarantine from when it is first seen: it is a
    /// promoted replica that may lack leases the old primary granted. With
    /// [`wait_replicas`](Self::wait_replicas), a lease the replicas
    /// confirmed survives the failover.
    ///
    /// In a [`Config`]'s node list a Sentinel node is written
    /// `sentinel:SERVICE@URL|URL|...`.
    ///
    /// ```no_run
    /// # fn demo() {
    /// let builder = quorate::Quorum::builder()
    ///     .sentinel_node(["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"], "locks")
    ///     .wait_replicas(1, std::time::Duration::from_millis(100));
    /// # }
    /// ```
    pub fn sentinel_node<I, U>(mut self, sentinels: I, service: &str) -> Self
    where
        I: IntoIterator<Item = U>,
        U: AsRef<str>,
    {
        self.urls
            .push(crate::engine::sentinel_entry(sentinels, service));
        self
    }

    /// Adds several nodes.
    ///
    /// ```no_run
    /// # fn demo() {
    /// let urls = vec!["redis://10.0.0.1", "redis://10.0.0.2", "redis://10.0.0.3"];
    /// let builder = quorate::Quorum::builder().nodes(urls);
    /// # }
    /// ```
    pub fn nodes<I, U>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = U>,
        U: AsRef<str>,
    {
        self.urls
            .extend(urls.into_iter().map(|u| u.as_ref().to_owned()));
        self
    }

    /// Replaces all settings. The nodes of `config.nodes` are connected to
    /// as well as those added with [`node`](Self::node) and
    /// [`nodes`](Self::nodes).
    ///
    /// ```no_run
    /// # async fn demo() -> quorate::Result<()> {
    /// let config = quorate::Config {
    ///     ttl: std::time::Duration::from_secs(30),
    ///     ..quorate::Config::default()
    /// };
    /// let q = quorate::Quorum::builder().config(config).node("redis://10.0.0.1").build().await?;
    /// # Ok(()) }
    /// ```
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Default lease TTL. Defaults to 10 s.
    ///
    /// ```no_run
    /// # fn demo() {
    /// let builder = quorate::Quorum::builder().ttl(std::time::Duration::from_secs(30));
    /// # }
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = ttl;
        self
    }

    /// The longest lease TTL of the deployment, and the restart quarantine
    /// (see [`Config::max_ttl`]). Defaults to 60 s.
    ///
    /// ```no_run
    /// # fn demo() {
    /// // The longest lease any process of the deployment takes.
    /// let builder = quorate::Quorum::builder().max_ttl(std::time::Duration::from_secs(120));
    /// # }
    /// ```
    pub fn max_ttl(mut self, max_ttl: Duration) -> Self {
        self.config.max_ttl = max_ttl;
        self
    }

    /// Per-node request timeout. Defaults to `min(50 ms, ttl / 20)`.
    ///
    /// ```no_run
    /// # fn demo() {
    /// let builder = quorate::Quorum::builder().node_timeout(std::time::Duration::from_millis(20));
    /// # }
    /// ```
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.config.node_timeout = Some(timeout);
        self
    }

    /// Clock drift factor, in `[0, 1)`. Defaults to 0.01.
    ///
    /// ```no_run
    /// # fn demo() {
    /// let builder = quorate::Quorum::builder().drift_factor(0.02);
    /// # }
    /// ```
    pub fn drift_factor(mut self, factor: f64) -> Self {
        self.config.drift_factor = factor;
        self
    }

    /// First backoff between attempts, and the random jitter added to each.
    /// Default to 50 ms and 50 ms.
    ///
    /// ```no_run
    /// # fn demo() {
    /// use std::time::Duration;
    /// let builder = quorate::Quorum::builder().retry(Duration::from_millis(10), Duration::from_millis(10));
    /// # }
    /// ```
    pub fn retry(mut self, delay: Duration, jitter: Duration) -> Self {
        self.config.retry_delay = delay;
        self.config.retry_jitter = jitter;
        self
    }

    /// Time allowed to open a connection. Defaults to 1 s.
    ///
    /// ```no_run
    /// # fn demo() {
    /// let builder = quorate::Quorum::builder().connect_timeout(std::time::Duration::from_secs(3));
    /// # }
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Accept an even number of nodes. Defaults to false.
    ///
    /// ```no_run
    /// # fn demo() {
    /// let builder = quorate::Quorum::builder()
    ///     .nodes(["redis://10.0.0.1", "redis://10.0.0.2", "redis://10.0.0.3", "redis://10.0.0.4"])
    ///     .allow_even_nodes(true);
    /// # }
    /// ```
    pub fn allow_even_nodes(mut self, allow: bool) -> Self {
        self.config.allow_even_nodes = allow;
        self
    }

    /// Keeps a node presumed restarted out of the vote for `max_ttl` plus
    /// drift (see [`Config::restart_quarantine`]). Defaults to on; turn it
    /// off only when every node persists every write.
    ///
    /// ```no_run
    /// # fn demo() {
    /// // Every node runs with appendonly yes and appendfsync always.
    /// let builder = quorate::Quorum::builder().restart_quarantine(false);
    /// # }
    /// ```
    pub fn restart_quarantine(mut self, on: bool) -> Self {
        self.config.restart_quarantine = on;
        self
    }

    /// After each lease write, waits for `replicas` replicas of the node's
    /// primary to confirm it, for up to `timeout` beyond the per-node
    /// timeout (see [`Config::wait_replicas`]). An acquire whose writes go
    /// unconfirmed on too many nodes undoes its lease and fails like any
    /// acquire that falls short of a majority.
    ///
    /// `WAIT` makes a lease survive the promotion of a replica that
    /// confirmed it; it is not strong consistency: a write the replicas did
    /// not confirm may still be on the primary (it is undone), and a
    /// failover to a replica that was not among those counted loses it.
    ///
    /// ```no_run
    /// # fn demo() {
    /// let builder = quorate::Quorum::builder()
    ///     .node("redis://primary.example:6379")
    ///     .wait_replicas(1, std::time::Duration::from_millis(100));
    /// # }
    /// ```
    pub fn wait_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.config.wait_replicas = Some(crate::WaitReplicas { replicas, timeout });
        self
    }

    /// Prefix for every key. Defaults to none.
    ///
    /// ```no_run
    /// # fn demo() {
    /// let builder = quorate::Quorum::builder().key_prefix("myapp:");
    /// # }
    /// ```
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.key_prefix = prefix.into();
        self
    }

    /// Checks the settings and the nodes, and connects.
    ///
    /// Before any I/O it refuses an empty node list, a URL that does not
    /// parse, the same address twice, an even node count (unless allowed)
    /// and settings out of range, with [`Error::InvalidConfig`]. Then it
    /// shakes hands with every node: it loads the scripts, records this
    /// process's `max_ttl`, reads each server's role, `run_id` and uptime,
    /// and refuses replicas and two URLs that reach the same server. A node
    /// that started well after the others is presumed restarted and sits
    /// out the quarantine (see [`Config::restart_quarantine`]). Nodes that
    /// cannot be reached are accepted while a majority can be (they connect
    /// in the background and count once admitted); otherwise it fails with
    /// [`Error::Connect`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for the node list or a setting, before any
    /// I/O, and for a replica or two URLs of one server; [`Error::Connect`]
    /// naming a node when too few can be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped call leaves nothing behind but the record of
    /// this process's `max_ttl` on the nodes it reached.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> quorate::Result<()> {
    /// # let servers = quorate::testkit::ServerGroup::start(1).unwrap();
    /// # let q = quorate::Quorum::connect(servers.urls()).await?;
    /// let q = quorate::Quorum::builder()
    ///     .nodes(servers.urls())
    ///     .ttl(std::time::Duration::from_secs(5))
    ///     .build()
    ///     .await?;
    /// assert_eq!(q.config().ttl, std::time::Duration::from_secs(5));
    ///
    /// let e = quorate::Quorum::builder().build().await.unwrap_err();
    /// assert!(e.is_invalid_input()); // no node
    /// # Ok(()) }
    /// ```
    pub async fn build(mut self) -> Result<Quorum> {
        self.config.nodes.append(&mut self.urls);
        let nodes = Nodes::connect(&self.config.nodes.clone(), self.config).await?;
        Ok(Quorum { nodes })
    }
}
