//! The script registry: the Lua scripts, one per file in `lua/`, each
//! hashed once and loaded on every connection at its handshake.
//!
//! Every script is loaded with the helpers of `lua/prelude.lua` in front,
//! folded onto the script's first line (the prelude keeps its comments on
//! lines of their own, and Lua reads a newline as a space), so an error in a
//! script names the line of its own file; an error in a prelude helper names
//! line 1. EVALSHA that meets NOSCRIPT (after `SCRIPT FLUSH`) is sent again
//! as EVAL with the whole source: one more round trip, which a flush cannot
//! race the way a separate `SCRIPT LOAD` can.

use std::sync::OnceLock;

use redis::aio::ConnectionLike;
use redis::{Cmd, RedisResult, ToRedisArgs};

use crate::observe;

const PRELUDE: &str = include_str!("../../lua/prelude.lua");

/// One script as loaded: the prelude on its first line, then the file.
pub(crate) struct Lua {
    name: &'static str,
    body: &'static str,
    /// The source as sent, and its SHA1, made on first use.
    loaded: OnceLock<(String, String)>,
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
            loaded: OnceLock::new(),
        }
    }

    fn loaded(&self) -> &(String, String) {
        self.loaded.get_or_init(|| {
            let source = source(self.body);
            let sha = redis::Script::new(&source).get_hash().to_owned();
            (source, sha)
        })
    }

    /// The file's name without `.lua`.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// The source as sent to Redis.
    pub(crate) fn source(&self) -> &str {
        &self.loaded().0
    }

    fn sha(&self) -> &str {
        &self.loaded().1
    }
}

/// One call of a script: its keys and arguments, encoded once.
#[derive(Clone)]
pub(crate) struct Invocation {
    lua: &'static Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Invocation {
    /// Only counts: keys and arguments may carry owner tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invocation")
            .field("script", self.lua)
            .field("keys", &self.keys.len())
            .field("args", &self.args.len())
            .finish()
    }
}

impl Invocation {
    /// A call of `lua` with its `KEYS`.
    pub(crate) fn new(lua: &'static Lua, keys: &[&str]) -> Invocation {
        Invocation {
            lua,
            keys: keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
            args: Vec::new(),
        }
    }

    /// Appends to `ARGV`.
    pub(crate) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Invocation {
        arg.write_redis_args(&mut self.args);
        self
    }

    fn cmd(&self, name: &str, script: &str) -> Cmd {
        let mut cmd = redis::cmd(name);
        cmd.arg(script)
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        cmd
    }

    /// The EVALSHA command, to pipeline.
    pub(crate) fn evalsha(&self) -> Cmd {
        self.cmd("EVALSHA", self.lua.sha())
    }

    /// EVALSHA, and EVAL with the source if the node lost its scripts.
    pub(crate) async fn run<T: redis::FromRedisValue>(
        &self,
        conn: &mut impl ConnectionLike,
    ) -> RedisResult<T> {
        match self.evalsha().query_async(conn).await {
            Err(e) if e.kind() == NO_SCRIPT => {
                let eval = self.cmd("EVAL", self.lua.source());
                observe::script_reload(self.lua.name(), eval.query_async(conn)).await
            }
            other => other,
        }
    }
}

pub(crate) const NO_SCRIPT: redis::ErrorKind =
    redis::ErrorKind::Server(redis::ServerErrorKind::NoScript);

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
pub(crate) async fn load_all(conn: &mut impl ConnectionLike) -> RedisResult<()> {
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
