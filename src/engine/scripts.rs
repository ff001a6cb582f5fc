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
use redis::{Arg, Cmd, RedisResult, ToRedisArgs, Value};

use crate::observe;

const PRELUDE: &str = include_str!("../../lua/prelude.lua");

/// One script as loaded: the prelude on its first line, then the file.
pub(crate) struct Lua {
    name: &'static str,
    body: &'static str,
    /// The source as sent and its SHA1, per [`Flavor`], made on first use.
    loaded: OnceLock<[(String, String); 2]>,
}

/// The form of the scripts a node runs. A Redis Cluster node runs them
/// with every `PUBLISH` made `SPUBLISH`, so that a wake-up goes to its
/// shard's subscribers only; a standalone server keeps plain pub/sub,
/// which every client library can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    Plain = 0,
    Sharded = 1,
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

    fn loaded(&self, flavor: Flavor) -> &(String, String) {
        let both = self.loaded.get_or_init(|| {
            let plain = source(self.body);
            let sharded = plain.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'");
            [plain, sharded].map(|source| {
                let sha = redis::Script::new(&source).get_hash().to_owned();
                (source, sha)
            })
        });
        &both[flavor as usize]
    }

    /// The file's name without `.lua`.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// The source as sent to a standalone server.
    pub(crate) fn source(&self) -> &str {
        self.source_for(Flavor::Plain)
    }

    fn source_for(&self, flavor: Flavor) -> &str {
        &self.loaded(flavor).0
    }

    fn sha(&self, flavor: Flavor) -> &str {
        &self.loaded(flavor).1
    }
}

/// What an invocation runs.
#[derive(Clone, Copy)]
enum Program {
    Script(&'static Lua),
    /// The default mutex claim, in plain commands rather than a script
    /// (see [`Invocation::set_nx`]).
    SetNx,
}

/// One call of a script, built once in the form it is sent in:
/// `EVALSHA sha numkeys keys... args...`, shared by the requests of a
/// round to every node.
#[derive(Clone)]
pub(crate) struct Invocation {
    program: Program,
    keys: usize,
    cmd: Cmd,
}

impl std::fmt::Debug for Invocation {
    /// Only counts: keys and arguments may carry owner tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Invocation");
        match self.program {
            Program::Script(lua) => d.field("script", lua),
            Program::SetNx => d.field("commands", &"SET NX"),
        };
        d.field("keys", &self.keys)
            .field("args", &(self.cmd.args_iter().len() - 3 - self.keys))
            .finish()
    }
}

impl Invocation {
    /// A call of `lua` with its `KEYS`.
    pub(crate) fn new(lua: &'static Lua, keys: &[&str]) -> Invocation {
        Invocation::of(Program::Script(lua), lua, keys)
    }

    fn of(program: Program, lua: &'static Lua, keys: &[&str]) -> Invocation {
        // Room for the arguments scripts take, so building does not grow.
        let key_bytes: usize = keys.iter().map(|k| k.len()).sum();
        let mut cmd = Cmd::with_capacity(keys.len() + 12, key_bytes + 256);
        cmd.arg("EVALSHA")
            .arg(lua.sha(Flavor::Plain))
            .arg(keys.len())
            .arg(keys);
        Invocation {
            program,
            keys: keys.len(),
            cmd,
        }
    }

    /// The default mode's mutex claim, with the keys and arguments of an
    /// acquire script: `KEYS = {lock, fencing counter}`, `ARGV = {owner
    /// token, ttl ms, fencing tail}`; it replies as `lua/mutex_acquire.lua`
    /// would, without a fence: `{1}` or `{0, pttl}`.
    ///
    /// It is one plain command, `SET lock token NX PX ttl GET`, which a
    /// node serves in a fraction of a script's time: the `SET` decides the
    /// grant, and its `GET` returns the holder, or our own token when a
    /// retried claim finds that it landed before. Only when busy does a
    /// `PTTL` follow, for the wait. The fencing counter is read when the
    /// token is first asked for (`lua/fence_read.lua`), while the lease is
    /// held.
    pub(crate) fn set_nx(keys: &[&str]) -> Invocation {
        // Built as the fair claim's script call, whose keys and arguments
        // it takes; never sent as one.
        Invocation::of(Program::SetNx, &MUTEX_ACQUIRE, keys)
    }

    /// Appends to `ARGV`.
    pub(crate) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Invocation {
        self.cmd.arg(arg);
        self
    }

    /// The EVALSHA command, to pipeline with others.
    ///
    /// # Panics
    ///
    /// For a plain-command claim, which is never pipelined with others.
    pub(crate) fn evalsha(&self) -> Cmd {
        match self.program {
            Program::Script(_) => self.cmd.clone(),
            Program::SetNx => unreachable!("claims are sent alone"),
        }
    }

    /// The same call with another command and script: `EVAL` with the
    /// source, or `EVALSHA` with another flavor's hash.
    fn retargeted(&self, command: &str, script: &str) -> Cmd {
        let mut cmd = Cmd::with_capacity(self.cmd.args_iter().len(), script.len() + 256);
        cmd.arg(command).arg(script);
        for arg in self.cmd.args_iter().skip(2) {
            if let Arg::Simple(bytes) = arg {
                cmd.arg(bytes);
            }
        }
        cmd
    }

    /// The first of `KEYS`, which routes the call on a cluster.
    pub(crate) fn first_key(&self) -> &[u8] {
        self.part(3)
    }

    /// Argument `i` of the command as sent (0: `EVALSHA`).
    fn part(&self, i: usize) -> &[u8] {
        match self.cmd.args_iter().nth(i) {
            Some(Arg::Simple(bytes)) => bytes,
            _ => &[],
        }
    }

    /// EVALSHA in the scripts' `flavor`, and EVAL with the source if the
    /// node lost its scripts.
    pub(crate) async fn run_as<T: redis::FromRedisValue>(
        &self,
        conn: &mut impl ConnectionLike,
        flavor: Flavor,
    ) -> RedisResult<T> {
        let lua = match self.program {
            Program::Script(lua) => lua,
            Program::SetNx => return Ok(redis::from_redis_value(self.set_nx_run(conn).await?)?),
        };
        let sent = match flavor {
            Flavor::Plain => self.cmd.query_async(conn).await,
            Flavor::Sharded => {
                let cmd = self.retargeted("EVALSHA", lua.sha(flavor));
                cmd.query_async(conn).await
            }
        };
        match sent {
            Err(e) if e.kind() == NO_SCRIPT => {
                let eval = self.retargeted("EVAL", lua.source_for(flavor));
                observe::script_reload(lua.name(), eval.query_async(conn)).await
            }
            other => other,
        }
    }

    /// Runs a plain-command claim; replies as a script would.
    async fn set_nx_run(&self, conn: &mut impl ConnectionLike) -> RedisResult<Value> {
        // EVALSHA sha 2 lock counter token ttl ...
        let (lock, token, ttl) = (self.part(3), self.part(5), self.part(6));
        let before: Option<Vec<u8>> = redis::cmd("SET")
            .arg(lock)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(ttl)
            .arg("GET")
            .query_async(conn)
            .await?;
        if before.is_none_or(|holder| holder == token) {
            return Ok(Value::Array(vec![Value::Int(1)]));
        }
        let pttl: i64 = redis::cmd("PTTL").arg(lock).query_async(conn).await?;
        Ok(Value::Array(vec![Value::Int(0), Value::Int(pttl)]))
    }
}

pub(crate) const NO_SCRIPT: redis::ErrorKind =
    redis::ErrorKind::Server(redis::ServerErrorKind::NoScript);

/// The prelude's helpers that `body` calls, directly or through each
/// other, folded onto one line, then the script. Every helper costs each
/// call of a script that defines it, so a script carries only its own.
fn source(body: &str) -> String {
    let helpers = helpers(PRELUDE);
    let mut used = vec![false; helpers.len()];
    // A helper calls only those defined before it: walk back from the last.
    for i in (0..helpers.len()).rev() {
        let name = helpers[i].0;
        used[i] = calls(body, name)
            || (i + 1..helpers.len()).any(|j| used[j] && calls(&helpers[j].1, name));
    }
    let prelude: Vec<&str> = helpers
        .iter()
        .zip(&used)
        .filter(|(_, used)| **used)
        .map(|((_, code), _)| code.as_str())
        .collect();
    if prelude.is_empty() {
        return body.to_owned();
    }
    format!("{} {body}", prelude.join(" "))
}

/// The prelude's helpers, each as its name and its code on one line,
/// comments dropped.
fn helpers(prelude: &str) -> Vec<(&str, String)> {
    let mut helpers: Vec<(&str, String)> = Vec::new();
    for line in prelude.lines() {
        let code = line.trim();
        if code.is_empty() || code.starts_with("--") {
            continue;
        }
        match code.strip_prefix("local function ") {
            Some(rest) => {
                let name = rest.split('(').next().unwrap_or_default();
                helpers.push((name, code.to_owned()));
            }
            None => {
                if let Some((_, text)) = helpers.last_mut() {
                    text.push(' ');
                    text.push_str(code);
                }
            }
        }
    }
    helpers
}

/// Whether `code` calls the function `name`.
fn calls(code: &str, name: &str) -> bool {
    code.match_indices(name).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + name.len()..].chars().next();
        after == Some('(') && !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
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
    FENCE_READ => "fence_read",
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
    FAIR_LEAVE => "fair_leave",
}

/// Loads every script on a fresh connection, so that nobody meets NOSCRIPT
/// in normal operation.
pub(crate) async fn load_all(conn: &mut impl ConnectionLike, flavor: Flavor) -> RedisResult<()> {
    if flavor == Flavor::Sharded {
        // A cluster routes `SCRIPT LOAD` to every node, but a pipeline to
        // one: load them one by one.
        for lua in ALL {
            let load = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(lua.source_for(flavor))
                .to_owned();
            load.query_async::<()>(conn).await?;
        }
        return Ok(());
    }
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
        }
    }

    #[test]
    fn a_script_carries_the_helpers_it_calls_and_theirs_only() {
        let sent = MUTEX_ACQUIRE.source();
        for needed in [
            "mint_fence",
            "fence_floor",
            "server_ms",
            "fair_turn",
            "fair_front",
        ] {
            assert!(
                sent.contains(&format!("local function {needed}(")),
                "{needed}"
            );
        }
        for unused in ["barrier_settle", "semaphore_reap", "fair_wake"] {
            assert!(
                !sent.contains(&format!("local function {unused}(")),
                "{unused}"
            );
        }
        assert_eq!(MUTEX_EXTEND.source().matches("local function").count(), 1);
    }

    #[test]
    fn every_helper_is_defined_before_its_callers() {
        let helpers = helpers(PRELUDE);
        for (i, (_, code)) in helpers.iter().enumerate() {
            for (later, _) in &helpers[i..] {
                assert!(
                    !calls(code, later) || code.starts_with(&format!("local function {later}("))
                );
            }
        }
        assert!(calls("x = f(1)", "f") && !calls("x = gf(1)", "f") && !calls("f = 1", "f"));
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
