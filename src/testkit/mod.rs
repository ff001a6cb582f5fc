//! Test helpers (feature `testkit`): real `redis-server` processes that can
//! be killed, paused and restarted. Used by quorate's own tests, examples and
//! benches, and offered for yours.

mod clock;
mod history;
mod proxy;
mod server;

pub use clock::jump_clock;
pub use history::{History, LeaseId, LeaseKind, Spec, Violation};
pub use proxy::FaultProxy;
pub use server::{RedisServer, ServerGroup};
