//! The Lua scripts, one per file in `lua/`, each hashed once and loaded on
//! every connection at its handshake.
//!
//! Every script is loaded with `lua/prelude.lua` in front: the helpers all
//! scripts share (server time, the fencing floor). [`redis::Script`] sends
//! EVALSHA and, on NOSCRIPT (after `SCRIPT FLUSH`), the node module loads
//! it again and retries.

use std::sync::LazyLock;

use redis::Script;
use redis::aio::MultiplexedConnection;

macro_rules! scripts {
    ($($name:ident => $file:literal,)*) => {
        $(
            pub(crate) static $name: LazyLock<Script> =
                LazyLock::new(|| Script::new(source!($file)));
        )*

        /// Every script's source, as loaded.
        const SOURCES: &[&str] = &[$(source!($file)),*];
    };
}

macro_rules! source {
    ($file:literal) => {
        concat!(
            include_str!("../lua/prelude.lua"),
            include_str!(concat!("../lua/", $file))
        )
    };
}

scripts! {
    NODE_HELLO => "node_hello.lua",
    NODE_QUARANTINE => "node_quarantine.lua",
    MUTEX_ACQUIRE => "mutex_acquire.lua",
    MUTEX_EXTEND => "mutex_extend.lua",
    MUTEX_RELEASE => "mutex_release.lua",
    FENCE_COMMIT => "fence_commit.lua",
    SEMAPHORE_ACQUIRE => "semaphore_acquire.lua",
    SEMAPHORE_EXTEND => "semaphore_extend.lua",
    SEMAPHORE_RELEASE => "semaphore_release.lua",
    SEMAPHORE_AVAILABLE => "semaphore_available.lua",
    REENTRANT_ACQUIRE => "reentrant_acquire.lua",
    REENTRANT_EXTEND => "reentrant_extend.lua",
    REENTRANT_RELEASE => "reentrant_release.lua",
    REENTRANT_HOLDS => "reentrant_holds.lua",
    LATCH_COUNT_DOWN => "latch_count_down.lua",
    LATCH_READ => "latch_read.lua",
    LATCH_SEAL => "latch_seal.lua",
    BARRIER_ARRIVE => "barrier_arrive.lua",
    BARRIER_DECIDE => "barrier_decide.lua",
}

/// Loads every script on a fresh connection, so that nobody meets NOSCRIPT
/// in normal operation.
pub(crate) async fn load_all(conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for source in SOURCES {
        pipe.cmd("SCRIPT").arg("LOAD").arg(*source).ignore();
    }
    pipe.query_async(conn).await
}
