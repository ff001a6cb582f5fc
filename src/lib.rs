//! Distributed synchronization primitives on Redis, for async Rust.
//!
//! - [`Mutex`]: a Redlock mutual exclusion lock with fencing tokens.
//! - [`Semaphore`]: a counting semaphore, count-safe over a quorum.
//! - [`ReentrantLock`]: a lock its owner (a job, a request) may take again.
//! - [`Latch`]: a countdown latch that opens after N distinct count-downs.
//! - [`Barrier`]: a cyclic barrier for N parties, with a leader per generation.
//!
//! Every primitive runs on a [`Quorum`]: one Redis node, or N independent
//! nodes of which a majority must agree (Redlock). A node may be a whole
//! Redis Cluster ([`Quorum::connect_cluster`],
//! [`QuorumBuilder::cluster_node`]), and lease writes may wait for replicas
//! ([`QuorumBuilder::wait_replicas`]). Each operation is one Lua
//! script sent to all nodes in parallel with a per-node timeout; a lease is
//! valid for its TTL less the time the vote took and a clock drift
//! allowance, and is renewed in the background until released.
//!
//! ```no_run
//! use quorate::{Mutex, Quorum};
//!
//! # async fn demo() -> quorate::Result<()> {
//! let q = Quorum::connect(["redis://127.0.0.1:7001", "redis://127.0.0.1:7002", "redis://127.0.0.1:7003"]).await?;
//! let orders = Mutex::new(&q, "orders:42");
//! // Holds the lock for the body; a lost lease cancels it (Error::LeaseLost).
//! orders
//!     .run(async |guard| write_with_fence(guard.fencing_token().await?).await)
//!     .await??;
//! # Ok(()) }
//! # async fn write_with_fence(_: u64) -> quorate::Result<()> { Ok(()) }
//! ```
//!
//! # What is guaranteed
//!
//! - **Safety of a lease** holds under the Redlock assumptions: node clocks
//!   drift by at most the drift factor (1 % by default) and do not jump;
//!   nodes do not lose keys while a lease lives; the holder stops acting when
//!   `remaining()` reaches zero. A process paused past its lease (GC, swap,
//!   SIGSTOP) can still act afterwards: that is what fencing tokens are for.
//!   Send the token with every write, and make the resource refuse tokens
//!   smaller than one it has seen.
//! - **Restarts.** A node that restarts without persistence forgets the
//!   leases it granted. Restarts are detected when a connection is
//!   (re)established: a node whose `run_id` changed, or that at first
//!   contact started well after the oldest node of the quorum, or that
//!   carries another client's record of its quarantine, grants no lease
//!   that counts for the deployment's `max_ttl` plus drift
//!   ([`Config::max_ttl`], [`Config::restart_quarantine`]). Every process
//!   records its `max_ttl` on the nodes and takes the largest recorded, so
//!   the quarantine covers every process's leases. Nodes that persist
//!   every write (`appendfsync always`) are trusted at once, and a fresh
//!   deployment locks at once. The limits are in the `node` module's
//!   notes, repeated in the README: a restart within about two seconds of
//!   the oldest visible node's start looks like a fresh start, and one node
//!   alone cannot tell a restart it did not see.
//! - **Extensions never shorten a lease.** `extend(d)` makes a lease last
//!   at least `d` from now; the scripts never lower a TTL, so a guard's
//!   deadline, the latest any extension reported, is never later than the
//!   moment the servers may expire its key. One reentrant hold never
//!   shortens another's.
//! - **Fencing tokens** strictly increase per resource, also over several
//!   nodes, and are floored at the server clock (ms × 1024) so they keep
//!   increasing after a node restarts empty, as long as node clocks differ
//!   by less than the restart quarantine (`max_ttl`): a restarted node sits
//!   out longer than the offset, and its floor passes the token it lost.
//! - **Bounded time.** Every node request has a timeout; a hung node costs
//!   one timeout, never a hang. Waiting, extension and release end.
//! - **Nothing is lost.** A crashed holder's lock comes back after its TTL;
//!   every key quorate writes has a TTL; bad input is refused before any
//!   network I/O.
//!
//! # When not to use it
//!
//! - Inside one process: use [`tokio::sync`].
//! - When correctness must not depend on timing at all (money moves once,
//!   exactly): a lease can end while its holder still runs. Use a consensus
//!   store (etcd, ZooKeeper) or make the protected resource check fencing
//!   tokens.
//! - On one Redis primary with replicas and failover: a failover can drop a
//!   lock the old primary granted. Use independent primaries instead.
//!
//! # Testing against real failures
//!
//! The `testkit` feature offers what quorate's own tests use: throwaway
//! `redis-server` processes that can be killed, paused and restarted, a
//! fault-injecting TCP proxy, a history checker for the primitives' safety
//! properties, and a seeded torture run.
//!
//! # Operating it
//!
//! - **Logs**: `tracing` spans for acquisitions (each node's vote as
//!   fields), waits, extensions, releases, script reloads and restart
//!   quarantines; a lost lease and a quarantine at `warn`, contention at
//!   `debug`; owner tokens never.
//! - **Metrics** (feature `metrics`): through the `metrics` facade, named
//!   `quorate_*`, labelled by primitive and node; the `metrics` module
//!   lists them.
//! - **Configuration** (feature `config`): `Config::from_file` and
//!   `Config::with_env` read TOML and `QUORATE_*` variables, refusing
//!   unknown fields; [`Quorum::from_config`] connects.
//! - **Inspection** (feature `cli`): the `quorate` binary shows who holds a
//!   resource on every node, lists resources, releases a stuck lock,
//!   watches one live, and benchmarks a deployment.
//!
//! | feature | what |
//! |---|---|
//! | `metrics` | metrics through the `metrics` facade |
//! | `config` | `Config` from TOML files and the environment |
//! | `cli` | the `quorate` inspector (implies `config`) |
//! | `testkit` | throwaway servers, a fault proxy, a history checker, a torture run |
//!
//! # Cancel safety
//!
//! Each async method says whether it is cancel safe in the sense of
//! [`tokio::select!`]: whether dropping its future before completion loses
//! anything. Acquisitions are: a dropped acquire undoes whatever its scripts
//! set, from a spawned task.

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![deny(unused_must_use)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// deny, not forbid: clap's derives allow clippy's restriction lints in the
// code they generate, which a forbid refuses.
#![cfg_attr(not(test), deny(clippy::print_stdout))]

mod barrier;
#[cfg(feature = "cli")]
#[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
pub mod cli;
mod config;
mod engine;
mod error;
mod key;
mod latch;
mod lease;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
mod mutex;
mod observe;
mod quorum;
mod reentrant;
mod semaphore;

#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;

pub use barrier::{Barrier, BarrierWaitResult};
pub use config::{Config, WaitReplicas};
pub use error::{Error, NodeReport, Result, Tally, Vote};
pub use latch::Latch;
pub use lease::Lease;
pub use mutex::{Mutex, MutexGuard};
pub use quorum::{Quorum, QuorumBuilder};
pub use reentrant::{ReentrantGuard, ReentrantLock};
pub use semaphore::{Semaphore, SemaphorePermit};
