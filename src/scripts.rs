//! The Lua scripts, one per file in `lua/`, each hashed once.
//!
//! Every script is loaded with `lua/prelude.lua` in front: the helpers all
//! scripts share (server time, the fencing floor, the server's incarnation).
//! [`redis::Script`] sends EVALSHA and, on NOSCRIPT (after `SCRIPT FLUSH` or a
//! restart), loads the script on that connection and retries.

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($name:ident, $file:literal) => {
        pub(crate) static $name: LazyLock<Script> = LazyLock::new(|| {
            Script::new(concat!(
                include_str!("../lua/prelude.lua"),
                include_str!(concat!("../lua/", $file))
            ))
        });
    };
}

script!(MUTEX_ACQUIRE, "mutex_acquire.lua");
script!(MUTEX_EXTEND, "mutex_extend.lua");
script!(MUTEX_RELEASE, "mutex_release.lua");
script!(FENCE_COMMIT, "fence_commit.lua");
script!(SEMAPHORE_ACQUIRE, "semaphore_acquire.lua");
script!(SEMAPHORE_EXTEND, "semaphore_extend.lua");
script!(SEMAPHORE_RELEASE, "semaphore_release.lua");
script!(SEMAPHORE_AVAILABLE, "semaphore_available.lua");
script!(REENTRANT_ACQUIRE, "reentrant_acquire.lua");
script!(REENTRANT_EXTEND, "reentrant_extend.lua");
script!(REENTRANT_RELEASE, "reentrant_release.lua");
script!(REENTRANT_HOLDS, "reentrant_holds.lua");
script!(LATCH_COUNT_DOWN, "latch_count_down.lua");
script!(LATCH_READ, "latch_read.lua");
script!(BARRIER_ARRIVE, "barrier_arrive.lua");
script!(BARRIER_STATE, "barrier_state.lua");
script!(BARRIER_SETTLE, "barrier_settle.lua");
