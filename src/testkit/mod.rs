//! Test helpers (feature `testkit`): real `redis-server` processes that can
//! be killed, paused and restarted. Used by quorate's own tests, examples and
//! benches, and offered for yours.

mod server;

pub use server::{RedisServer, ServerGroup};
