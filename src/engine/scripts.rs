//! The script registry: the Lua scripts, one per file in `lua/`, each
//! hashed once and loaded on every connection at its handshake.
//!
//! Every script is loaded with the helpers of `lua/prelude.lua` in front,
//! folded onto the script's first line (the prelude keeps its comments on
//! lines of their own, and Lua reads a newline as a space), so an error in a
//! script names the line of its own file; an error in a prelude helper names
//! line 1. EVALSHA that meets NOSCRIPT (after `SCRIPT FLUSH`) loads the
//! script again and retries (see `node.rs`).

use std::sync::OnceLock;

use redis::Script;
use redis::aio::MultiplexedConnection;

const PRELUDE: &str = include_str!("../../lua/prelude.lua");

/// One script as loaded: the prelude on its first line, then the file.
pub(crate) struct Lua {
    name: &'static str,
    body: &'static str,
    script: OnceLock<Script>,
}

impl std::fmt::Debug for Lua {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lua/{}.lua", self.name)
    }
}

impl Lua {
    const fn new(name: &'static str, body: &'static str) -> Lua {
        Lua {
            name,
            body,
            script: OnceLock::new(),
        }
    }

    /// The script (hashed on first use), ready for `prepare_invoke`.
    pub(crate) fn script(&'static self) -> &'static Script {
        self.script.get_or_init(|| Script::new(&self.source()))
    }

    /// The file's name without `.lua`.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// The source as sent to Redis.
    pub(crate) fn source(&self) -> String {
        source(self.body)
    }
}

/// The prelude folded onto one line, then the script.
fn source(body: &str) -> String {
    let prelude: Vec<&str> = PRELUDE
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("--"))
        .collect();
    format!("{} {body}", prelude.join(" "))
}

macro_rules! scripts {
    ($($name:ident => $file:literal,)*) => {
        $(
            pub(crate) static $name: Lua =
                Lua::new($file, include_str!(concat!("../../lua/", $file, ".lua")));
        )*

        /// Every script.
        pub(crate) static ALL: &[&Lua] = &[$(&$name),*];
    };
}

scripts! {
    NODE_HELLO => "node_hello",
    NODE_QUARANTINE => "node_quarantine",
    MUTEX_ACQUIRE => "mutex_acquire",
    MUTEX_EXTEND => "mutex_extend",
    MUTEX_RELEASE => "mutex_release",
    FENCE_COMMIT => "fence_commit",
    SEMAPHORE_ACQUIRE => "semaphore_acquire",
    SEMAPHORE_EXTEND => "semaphore_extend",
    SEMAPHORE_RELEASE => "semaphore_release",
    SEMAPHORE_AVAILABLE => "semaphore_available",
    REENTRANT_ACQUIRE => "reentrant_acquire",
    REENTRANT_EXTEND => "reentrant_extend",
    REENTRANT_RELEASE => "reentrant_release",
    REENTRANT_HOLDS => "reentrant_holds",
    LATCH_COUNT_DOWN => "latch_count_down",
    LATCH_READ => "latch_read",
    LATCH_SEAL => "latch_seal",
    BARRIER_ARRIVE => "barrier_arrive",
    BARRIER_DECIDE => "barrier_decide",
}

/// Loads every script on a fresh connection, so that nobody meets NOSCRIPT
/// in normal operation.
pub(crate) async fn load_all(conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for lua in ALL {
        pipe.cmd("SCRIPT").arg("LOAD").arg(lua.source()).ignore();
    }
    pipe.query_async(conn).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prelude_takes_no_line_of_its_own() {
        for lua in ALL {
            let sent = lua.source();
            assert_eq!(
                sent.lines().count(),
                lua.body.lines().count(),
                "{}",
                lua.name
            );
            assert!(
                sent.lines()
                    .next()
                    .unwrap()
                    .contains("local function server_ms")
            );
        }
    }

    #[test]
    fn the_prelude_keeps_comments_on_lines_of_their_own() {
        for line in PRELUDE.lines() {
            let code = line.split("--").next().unwrap();
            assert!(
                code.trim().is_empty() || !line.contains("--"),
                "a comment after code would swallow the rest of the folded line: {line}"
            );
        }
    }
}
