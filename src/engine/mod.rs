//! The quorum-and-expiry engine: everything the primitives share, behind
//! one boundary (this module's exports).
//!
//! - `nodes` / `node`: the nodes of one quorum and each one's connection,
//!   handshake and per-request timeout; `admission` decides whether a node's
//!   grants count after a restart; `cluster` is what a node that is a
//!   whole Redis Cluster adds (its connection, its primaries, the shard
//!   watch).
//! - `scripts`: the Lua registry. `round`: one script on every node in
//!   parallel, counted as votes with early decision.
//! - `lease_ops`: claim (acquire, fence, undo), extend, release; `renew`:
//!   every due renewal of a quorum in one pipelined request per node.
//! - `read`: majority reads and writes with agreement.
//! - `notify`, `queue` and `wait`: push wake-ups, this process's waiters in
//!   arrival order, and how a blocked caller waits; `line`: fair mode's
//!   queue in Redis, across processes.
//!
//! Modules depend downwards only: admission, cluster, scripts ← node ← notify,
//! queue, renewable ← nodes ← round ← read, wait ← line ← lease_ops ← renew.

mod admission;
mod cluster;
mod lease_ops;
mod line;
mod node;
mod nodes;
mod notify;
mod queue;
mod read;
mod renew;
mod renewable;
mod round;
pub(crate) mod scripts;
mod wait;

pub(crate) use cluster::{entry as cluster_entry, sentinel_entry};
pub(crate) use lease_ops::{
    Claim, Fence, FenceTarget, Grant, Holding, LeaseSpec, claim, commit_fence, extend, read_fence,
    release,
};
pub(crate) use line::{Line, Waiter, wait_in_line};
pub(crate) use node::{Call, Payload, Reply, invocation};
pub(crate) use nodes::Nodes;
pub(crate) use read::{agree, gather, read, read_all, spread, write};
pub(crate) use renew::register as renew_itself;
pub(crate) use renewable::Renewable;
pub(crate) use round::{Round, Stragglers};
pub(crate) use scripts::Invocation;
pub(crate) use wait::{Attempt, backoff, random_unit, wait_for};
