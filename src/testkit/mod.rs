//! Test helpers (feature `testkit`): real `redis-server` processes that can
//! be killed, paused and restarted, alone, as a local Redis Cluster or as a
//! primary with replicas, a fault-injecting TCP proxy, server clock jumps, a
//! history checker, and a seeded torture run that puts them all together.
//! Used by quorate's own tests, examples and benches, and offered for yours.

mod clock;
mod cluster;
mod history;
mod proxy;
mod scripts;
mod sentinel;
mod server;
pub mod torture;

pub use clock::jump_clock;
pub use cluster::{LocalCluster, ReplicatedPrimary};
pub use history::{History, LeaseId, LeaseKind, NodeHold, Sample, Spec, Violation};
pub use proxy::FaultProxy;
pub use scripts::script_source;
pub use sentinel::LocalSentinel;
pub use server::{RedisServer, ServerGroup};
