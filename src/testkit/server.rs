//! Real `redis-server` processes on free ports, for tests, examples and benches.
//!
//! A lock library is only as trustworthy as its behaviour against real
//! failures, so instead of mocking Redis this module starts throwaway
//! `redis-server` processes that can be killed, paused (the nastiest failure:
//! TCP still accepts but nothing ever replies) and restarted empty on the same
//! port. Each server keeps nothing on disk and lives in its own temporary
//! directory, which is removed when the [`RedisServer`] is dropped.
//!
//! The binary is taken from the `QUORATE_REDIS_SERVER` environment variable
//! if set, otherwise `redis-server` is looked up on `PATH`.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::ops::{Index, IndexMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

const BINARY_ENV: &str = "QUORATE_REDIS_SERVER";
const LOG_FILE: &str = "redis.log";
/// Never hand out the default port: a developer's own Redis may live there.
const DEFAULT_REDIS_PORT: u16 = 6379;
const READY_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(5);
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// A fresh port can be lost to a parallel test between probing and binding.
const FRESH_PORT_ATTEMPTS: usize = 5;
/// The same port can be briefly held by a lingering socket after a kill.
const SAME_PORT_ATTEMPTS: usize = 10;
const SAME_PORT_PAUSE: Duration = Duration::from_millis(100);

/// Makes temp dir names unique even when two servers reuse a port in one process.
static NEXT_DIR_ID: AtomicU64 = AtomicU64::new(0);

/// A `redis-server` process on a free `127.0.0.1` port, killed on drop.
///
/// The server is started with persistence disabled, so every (re)start
/// begins with an empty dataset.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut server = quorate::testkit::RedisServer::start()?;
/// let q = quorate::Quorum::connect([server.url()]).await?;
/// server.kill(); // a node down, for a test
/// # Ok(()) }
/// ```
pub struct RedisServer {
    port: u16,
    binary: PathBuf,
    dir: PathBuf,
    /// Arguments after the defaults, kept across restarts.
    extra: Vec<String>,
    /// Behind a mutex so `&self` methods can reap a server that died on its
    /// own; otherwise its pid could be reused and `pause` would stop a
    /// stranger's process.
    child: Mutex<Option<Child>>,
}

impl RedisServer {
    /// Starts a redis-server on a free 127.0.0.1 port and waits until it
    /// answers PING.
    ///
    /// # Errors
    ///
    /// Fails with [`io::ErrorKind::NotFound`] (and a message saying how to fix
    /// it) if the binary cannot be found, or with an error containing the
    /// server's log if it does not come up after several ports were tried.
    ///
    /// ```
    /// let server = quorate::testkit::RedisServer::start()?;
    /// assert!(server.is_running());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn start() -> io::Result<RedisServer> {
        RedisServer::start_with(&[])
    }

    /// Starts a server as [`start`](Self::start) does, with `args` after the
    /// defaults (a later argument wins in redis-server), for this start and
    /// every [`restart`](Self::restart). For instance `["--appendonly",
    /// "yes", "--appendfsync", "always"]` makes a server that keeps every
    /// acknowledged write across a kill: restarts then keep its data.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    ///
    /// ```
    /// let durable = quorate::testkit::RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"])?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn start_with(args: &[&str]) -> io::Result<RedisServer> {
        let binary = binary_path();
        retry(FRESH_PORT_ATTEMPTS, Duration::ZERO, || {
            let mut server = RedisServer::prepare(binary.clone(), free_port()?)?;
            server.extra = args.iter().map(|a| (*a).to_owned()).collect();
            server.launch()?;
            Ok(server)
        })
    }

    /// The TCP port the server listens on; it stays the same across
    /// [`restart`](Self::restart).
    ///
    /// ```
    /// let server = quorate::testkit::RedisServer::start()?;
    /// assert_ne!(server.port(), 6379);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connection URL, `redis://127.0.0.1:{port}`.
    ///
    /// ```
    /// let server = quorate::testkit::RedisServer::start()?;
    /// assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The process id, or `None` once the server was killed or has exited.
    ///
    /// ```
    /// let mut server = quorate::testkit::RedisServer::start()?;
    /// assert!(server.pid().is_some());
    /// server.kill();
    /// assert!(server.pid().is_none());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pid(&self) -> Option<u32> {
        self.live_child().as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL and waits for it to exit.
    ///
    /// Calling it again is a no-op. The port is remembered, so
    /// [`restart`](Self::restart) brings the server back on it.
    ///
    /// ```
    /// let mut server = quorate::testkit::RedisServer::start()?;
    /// server.kill();
    /// assert!(!server.is_running());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn kill(&mut self) {
        let slot = self.child.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(mut child) = slot.take() {
            // SIGKILL also ends a SIGSTOPped server, and waiting reaps it so
            // the port is free again once this returns.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server with SIGSTOP: connections are still accepted by the
    /// kernel, but no command ever gets a reply. Does nothing if the server
    /// is not running.
    ///
    /// # Panics
    ///
    /// Panics if the signal cannot be sent, because a test that believes the
    /// server is frozen when it is not would prove nothing.
    ///
    /// ```
    /// let server = quorate::testkit::RedisServer::start()?;
    /// server.pause(); // accepts connections, answers nothing
    /// server.resume();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Unfreezes a server stopped with [`pause`](Self::pause) (SIGCONT).
    ///
    /// # Panics
    ///
    /// Panics if the signal cannot be sent.
    ///
    /// ```
    /// let server = quorate::testkit::RedisServer::start()?;
    /// server.pause();
    /// server.resume();
    /// assert!(server.is_running());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Kills the server if it is running and starts it again on the same
    /// port, waiting until it answers PING. It comes back empty, unless it
    /// was started with persistence ([`start_with`](Self::start_with)).
    ///
    /// # Errors
    ///
    /// Fails if the server does not come back after several attempts; the
    /// error includes its log.
    ///
    /// ```
    /// let mut server = quorate::testkit::RedisServer::start()?;
    /// let port = server.port();
    /// server.restart()?; // empty, on the same port
    /// assert_eq!(server.port(), port);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        // Nothing should have been saved, but a test may have run SAVE;
        // a restart must still come back empty.
        let _ = fs::remove_file(self.dir.join("dump.rdb"));
        retry(SAME_PORT_ATTEMPTS, SAME_PORT_PAUSE, || self.launch())
    }

    /// Whether the server process is alive (a paused server counts as alive).
    ///
    /// ```
    /// let server = quorate::testkit::RedisServer::start()?;
    /// assert!(server.is_running());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_running(&self) -> bool {
        self.live_child().is_some()
    }

    /// The server's log (across restarts), meant for panic messages.
    ///
    /// ```
    /// let server = quorate::testkit::RedisServer::start()?;
    /// assert!(server.log().contains("Ready to accept connections"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn log(&self) -> String {
        match fs::read(self.dir.join(LOG_FILE)) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(err) => format!("<no log at {}: {err}>", self.dir.display()),
        }
    }

    /// A client for this server.
    ///
    /// # Panics
    ///
    /// Never in practice: the URL is always well formed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = quorate::testkit::RedisServer::start()?;
    /// let mut conn = server.client().get_multiplexed_async_connection().await?;
    /// let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
    /// assert_eq!(pong, "PONG");
    /// # Ok(()) }
    /// ```
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    fn prepare(binary: PathBuf, port: u16) -> io::Result<RedisServer> {
        let id = NEXT_DIR_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("quorate-redis-{}-{id}-{port}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        fs::create_dir_all(&dir)?;
        let child = Mutex::new(None);
        Ok(RedisServer {
            port,
            binary,
            dir,
            extra: Vec::new(),
            child,
        })
    }

    fn launch(&mut self) -> io::Result<()> {
        let child = spawn(&self.binary, self.port, &self.dir, &self.extra)?;
        *self.child.get_mut().unwrap_or_else(PoisonError::into_inner) = Some(child);
        let ready = self.wait_ready();
        if ready.is_err() {
            self.kill();
        }
        ready
    }

    fn wait_ready(&self) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let Some(pid) = self.pid() else {
                return Err(self.startup_error(io::ErrorKind::Other, "exited during startup"));
            };
            if answers_ping(self.port, pid) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let reason = format!("did not answer PING within {READY_TIMEOUT:?}");
                return Err(self.startup_error(io::ErrorKind::TimedOut, &reason));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn startup_error(&self, kind: io::ErrorKind, reason: &str) -> io::Error {
        let (port, log) = (self.port, self.log());
        io::Error::new(
            kind,
            format!("redis-server on port {port} {reason}; log:\n{log}"),
        )
    }

    /// Forgets a child that already exited, so its pid (which the OS may
    /// hand to another process once reaped) is never signalled.
    fn live_child(&self) -> MutexGuard<'_, Option<Child>> {
        let mut slot = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        let exited = slot
            .as_mut()
            .is_some_and(|c| !matches!(c.try_wait(), Ok(None)));
        if exited {
            *slot = None;
        }
        slot
    }

    fn signal(&self, signal: &str) {
        // The guard is held so the child cannot be reaped mid-signal.
        let slot = self.live_child();
        let Some(child) = slot.as_ref() else { return };
        let pid = child.id().to_string();
        match Command::new("kill").args([signal, &pid]).status() {
            Ok(status) if status.success() => {}
            other => panic!("`kill {signal} {pid}` failed: {other:?}"),
        }
    }
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("pid", &self.pid())
            .field("dir", &self.dir)
            .finish()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Several independent [`RedisServer`]s, e.g. the N masters of a Redlock.
///
/// Indexing gives access to single servers, so a test can kill, pause or
/// restart a minority of them.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let servers = quorate::testkit::ServerGroup::start(3)?;
/// let q = quorate::Quorum::connect(servers.urls()).await?;
/// assert_eq!(q.majority(), 2);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ServerGroup {
    servers: Vec<RedisServer>,
}

impl ServerGroup {
    /// Starts `n` servers, each on its own free port.
    ///
    /// # Errors
    ///
    /// Fails as [`RedisServer::start`] does; servers already started are
    /// stopped again.
    ///
    /// ```
    /// let servers = quorate::testkit::ServerGroup::start(3)?;
    /// assert_eq!(servers.len(), 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn start(n: usize) -> io::Result<ServerGroup> {
        let servers = (0..n)
            .map(|_| RedisServer::start())
            .collect::<io::Result<_>>()?;
        Ok(ServerGroup { servers })
    }

    /// The URLs of all servers, in index order.
    ///
    /// ```
    /// let servers = quorate::testkit::ServerGroup::start(3)?;
    /// assert!(servers.urls().iter().all(|u| u.starts_with("redis://127.0.0.1:")));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(RedisServer::url).collect()
    }

    /// The number of servers.
    ///
    /// ```
    /// let servers = quorate::testkit::ServerGroup::start(1)?;
    /// assert_eq!(servers.len(), 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether the group has no servers.
    ///
    /// ```
    /// let servers = quorate::testkit::ServerGroup::start(1)?;
    /// assert!(!servers.is_empty());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Iterates over the servers in index order.
    ///
    /// ```
    /// let servers = quorate::testkit::ServerGroup::start(3)?;
    /// assert!(servers.iter().all(|s| s.is_running()));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn iter(&self) -> std::slice::Iter<'_, RedisServer> {
        self.servers.iter()
    }
}

impl From<Vec<RedisServer>> for ServerGroup {
    /// A group of servers started one by one (with other arguments, say).
    fn from(servers: Vec<RedisServer>) -> ServerGroup {
        ServerGroup { servers }
    }
}

impl Index<usize> for ServerGroup {
    type Output = RedisServer;

    fn index(&self, index: usize) -> &RedisServer {
        &self.servers[index]
    }
}

impl IndexMut<usize> for ServerGroup {
    fn index_mut(&mut self, index: usize) -> &mut RedisServer {
        &mut self.servers[index]
    }
}

pub(super) fn binary_path() -> PathBuf {
    std::env::var_os(BINARY_ENV)
        .filter(|value| !value.is_empty())
        .map_or_else(|| PathBuf::from("redis-server"), PathBuf::from)
}

/// The port is released before redis binds it, so it can be lost to a
/// parallel test; callers retry, and readiness checks the pid behind it.
fn free_port() -> io::Result<u16> {
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        if port != DEFAULT_REDIS_PORT {
            return Ok(port);
        }
    }
}

/// Retries everything except a missing binary, which no retry can fix.
fn retry<T>(
    attempts: usize,
    pause: Duration,
    mut attempt: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    let mut tries = 1;
    loop {
        match attempt() {
            Err(err) if err.kind() != io::ErrorKind::NotFound && tries < attempts => {
                tries += 1;
                thread::sleep(pause);
            }
            result => return result,
        }
    }
}

fn spawn(binary: &Path, port: u16, dir: &Path, extra: &[String]) -> io::Result<Child> {
    // Errors printed before redis opens its logfile (bad arguments, say)
    // go to stdout/stderr; sending those to the log keeps them visible.
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LOG_FILE))?;
    Command::new(binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--protected-mode", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join(LOG_FILE))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|err| explain_spawn_error(err, binary))
}

fn explain_spawn_error(err: io::Error, binary: &Path) -> io::Error {
    if err.kind() != io::ErrorKind::NotFound {
        return err;
    }
    let message = format!(
        "redis-server not found (tried `{}`): install it (apt install redis-server, \
         or brew install redis) or set {BINARY_ENV} to its path",
        binary.display()
    );
    io::Error::new(io::ErrorKind::NotFound, message)
}

/// PONG alone is not enough: a parallel test's server may have won the port,
/// so the `process_id` from `INFO server` must match our child too.
fn answers_ping(port: u16, pid: u32) -> bool {
    probe(port).is_ok_and(|reply| reply.starts_with("+PONG") && reply_pid(&reply) == Some(pid))
}

fn probe(port: u16) -> io::Result<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    stream.write_all(b"PING\r\nINFO server\r\n")?;
    let mut reply = String::new();
    let mut chunk = [0; 4096];
    while reply_pid(&reply).is_none() {
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        reply.push_str(&String::from_utf8_lossy(&chunk[..read]));
    }
    Ok(reply)
}

/// Only a complete `process_id:` line counts; a partial read could cut the
/// number short.
fn reply_pid(reply: &str) -> Option<u32> {
    const KEY: &str = "process_id:";
    let rest = &reply[reply.find(KEY)? + KEY.len()..];
    rest[..rest.find("\r\n")?].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_names_the_fix() {
        let dir = std::env::temp_dir().join(format!("quorate-missing-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let err = spawn(Path::new("/nonexistent/redis-server"), 1, &dir, &[]).unwrap_err();
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let message = err.to_string();
        assert!(message.contains("apt install redis-server"), "{message}");
        assert!(message.contains(BINARY_ENV), "{message}");
    }

    #[test]
    fn startup_failure_reports_log_and_cleans_up() {
        let mut server =
            RedisServer::prepare(PathBuf::from("false"), free_port().unwrap()).unwrap();
        let err = server.launch().unwrap_err();
        assert!(err.to_string().contains("exited during startup"), "{err}");
        assert!(!server.is_running());
        let dir = server.dir.clone();
        drop(server);
        assert!(!dir.exists());
    }

    #[test]
    fn pid_needs_a_complete_line() {
        assert_eq!(reply_pid("+PONG\r\n$9\r\nprocess_id:12"), None);
        assert_eq!(reply_pid("x\r\nprocess_id:123\r\ny"), Some(123));
    }
}
