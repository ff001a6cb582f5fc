//! A TCP proxy in front of one node that injects network faults on demand.
//!
//! [`RedisServer::pause`](super::RedisServer::pause) and
//! [`kill`](super::RedisServer::kill) fail a node for every client at once.
//! Real networks fail more selectively: one client loses a node that the
//! others still reach, a request arrives but its reply is lost, a link gets
//! slow. Giving each client (each [`Quorum`](crate::Quorum)) its own
//! [`FaultProxy`] per node lets a test produce exactly those cases, and
//! change them while the client runs.
//!
//! The proxy forwards bytes as they come and knows nothing about RESP; see
//! [`FaultProxy`] for what that means after a fault that swallows bytes.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Never listen on the default port: a developer's own Redis may live there.
const DEFAULT_REDIS_PORT: u16 = 6379;
/// Largest chunk read at once; RESP commands of tests are far smaller.
const CHUNK: usize = 16 * 1024;
/// Accept fails on resource exhaustion (EMFILE); spinning would not help.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// A TCP proxy on a free `127.0.0.1` port that forwards to one local port
/// and injects faults: latency, black holes, lost requests or replies,
/// resets and refused connections.
///
/// Faults can be switched at any time and apply to new and existing
/// connections alike. The proxy runs on the tokio runtime it was started
/// on; dropping the handle stops it and closes all its connections.
///
/// Bytes are forwarded in chunks of whatever size the kernel hands over;
/// the proxy knows nothing about RESP. A fault that swallows bytes
/// therefore leaves existing connections out of step with the server: a
/// swallowed reply makes a multiplexed client pair later replies with the
/// wrong requests, and half a swallowed command garbles the next one. After
/// [`heal`](Self::heal), call [`reset`](Self::reset) too when clients must
/// start clean.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use quorate::testkit::{FaultProxy, RedisServer};
/// let server = RedisServer::start()?;
/// let proxy = FaultProxy::start(server.port()).await?;
/// let q = quorate::Quorum::connect([proxy.url()]).await?;
/// proxy.set_latency(std::time::Duration::from_millis(20), std::time::Duration::ZERO);
/// # Ok(()) }
/// ```
pub struct FaultProxy {
    port: u16,
    target_port: u16,
    shared: Arc<Shared>,
    /// Dropped to ask the accept task to close everything and finish.
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// Fault settings, read by every connection on every chunk.
struct Shared {
    latency: Mutex<Latency>,
    blackhole: AtomicBool,
    drop_replies: AtomicBool,
    drop_requests: AtomicBool,
    refuse: AtomicBool,
    /// Bumped to abort every open connection, idle ones included.
    resets: watch::Sender<u64>,
    open: AtomicUsize,
}

#[derive(Debug, Clone, Copy, Default)]
struct Latency {
    delay: Duration,
    jitter: Duration,
}

/// Which way bytes flow through a connection.
#[derive(Debug, Clone, Copy)]
enum Direction {
    /// Client to server: requests.
    Up,
    /// Server to client: replies.
    Down,
}

impl FaultProxy {
    /// Starts a proxy listening on a free `127.0.0.1` port that forwards
    /// every connection to `127.0.0.1:target_port`, with no fault set.
    ///
    /// Must be called within a tokio runtime, which then runs the proxy.
    ///
    /// # Errors
    ///
    /// Fails if no listening socket can be bound.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped call leaves no proxy running.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use quorate::testkit::{FaultProxy, RedisServer};
    /// let server = RedisServer::start()?;
    /// let proxy = FaultProxy::start(server.port()).await?;
    /// assert_ne!(proxy.port(), server.port());
    /// # Ok(()) }
    /// ```
    pub async fn start(target_port: u16) -> io::Result<FaultProxy> {
        let listener = bind_free_port().await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::new());
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, target_port));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, target, shared.clone(), stopped));
        Ok(FaultProxy {
            port,
            target_port,
            shared,
            stop: Some(stop),
            task,
        })
    }

    /// The port the proxy listens on.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use quorate::testkit::{FaultProxy, RedisServer};
    /// let server = RedisServer::start()?;
    /// let proxy = FaultProxy::start(server.port()).await?;
    /// assert!(proxy.url().ends_with(&proxy.port().to_string()));
    /// # Ok(()) }
    /// ```
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connection URL, `redis://127.0.0.1:{port}`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use quorate::testkit::{FaultProxy, RedisServer};
    /// let server = RedisServer::start()?;
    /// let proxy = FaultProxy::start(server.port()).await?;
    /// let q = quorate::Quorum::connect([proxy.url()]).await?;
    /// # Ok(()) }
    /// ```
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Delays every forwarded chunk, in both directions, by `delay` plus a
    /// uniform random part in `[0, jitter]`; a request/reply round trip thus
    /// takes at least `2 * delay` more. Chunks are never reordered within a
    /// direction: a chunk whose draw is shorter waits for the one before.
    /// Chunks already on their way keep their earlier delay.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use quorate::testkit::{FaultProxy, RedisServer};
    /// let server = RedisServer::start()?;
    /// let proxy = FaultProxy::start(server.port()).await?;
    /// use std::time::Duration;
    /// proxy.set_latency(Duration::from_millis(30), Duration::from_millis(10));
    /// # Ok(()) }
    /// ```
    pub fn set_latency(&self, delay: Duration, jitter: Duration) {
        *self.shared.latency() = Latency { delay, jitter };
    }

    /// While on, connections are accepted and everything sent either way is
    /// read and discarded: nothing is forwarded and nothing answered, as
    /// with a frozen (SIGSTOPped) server or a silent network drop. Applies
    /// to existing connections too.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use quorate::testkit::{FaultProxy, RedisServer};
    /// let server = RedisServer::start()?;
    /// let proxy = FaultProxy::start(server.port()).await?;
    /// proxy.blackhole(true); // a partition: bytes vanish both ways
    /// proxy.blackhole(false);
    /// # Ok(()) }
    /// ```
    pub fn blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::SeqCst);
    }

    /// While on, requests still reach the server but everything it sends
    /// back is discarded: the command runs and the client never learns it
    /// did, the ambiguous outcome a lock client must survive.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use quorate::testkit::{FaultProxy, RedisServer};
    /// let server = RedisServer::start()?;
    /// let proxy = FaultProxy::start(server.port()).await?;
    /// proxy.drop_replies(true); // commands run, their answers never come
    /// # Ok(()) }
    /// ```
    pub fn drop_replies(&self, on: bool) {
        self.shared.drop_replies.store(on, Ordering::SeqCst);
    }

    /// While on, everything the client sends is discarded, so nothing
    /// reaches the server; replies to requests forwarded earlier still
    /// flow back.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use quorate::testkit::{FaultProxy, RedisServer};
    /// let server = RedisServer::start()?;
    /// let proxy = FaultProxy::start(server.port()).await?;
    /// proxy.drop_requests(true); // commands never reach the server
    /// # Ok(()) }
    /// ```
    pub fn drop_requests(&self, on: bool) {
        self.shared.drop_requests.store(on, Ordering::SeqCst);
    }

    /// Aborts every open connection at once: the client gets a TCP reset
    /// (RST), and bytes still queued for latency are lost. New connections
    /// are accepted as usual afterwards.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use quorate::testkit::{FaultProxy, RedisServer};
    /// let server = RedisServer::start()?;
    /// let proxy = FaultProxy::start(server.port()).await?;
    /// proxy.reset(); // every connection broken at once
    /// # Ok(()) }
    /// ```
    pub fn reset(&self) {
        self.shared
            .resets
            .send_modify(|generation| *generation += 1);
    }

    /// While on, new connections are reset right after they are accepted,
    /// like a node that is down; turning it on also resets the open ones.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use quorate::testkit::{FaultProxy, RedisServer};
    /// let server = RedisServer::start()?;
    /// let proxy = FaultProxy::start(server.port()).await?;
    /// proxy.refuse(true); // new connections are refused
    /// # Ok(()) }
    /// ```
    pub fn refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::SeqCst);
        if on {
            self.reset();
        }
    }

    /// Turns every fault off and the latency to zero. Open connections are
    /// kept; see the [type docs](FaultProxy) for why a
    /// [`reset`](Self::reset) may be wanted too.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use quorate::testkit::{FaultProxy, RedisServer};
    /// let server = RedisServer::start()?;
    /// let proxy = FaultProxy::start(server.port()).await?;
    /// proxy.blackhole(true);
    /// proxy.heal(); // every fault off
    /// # Ok(()) }
    /// ```
    pub fn heal(&self) {
        self.set_latency(Duration::ZERO, Duration::ZERO);
        self.blackhole(false);
        self.drop_replies(false);
        self.drop_requests(false);
        self.refuse(false);
    }

    /// The number of client connections currently open through the proxy.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use quorate::testkit::{FaultProxy, RedisServer};
    /// let server = RedisServer::start()?;
    /// let proxy = FaultProxy::start(server.port()).await?;
    /// let q = quorate::Quorum::connect([proxy.url()]).await?;
    /// assert!(proxy.connections() >= 1);
    /// # Ok(()) }
    /// ```
    pub fn connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Stops the proxy and waits until its port is released and all its
    /// connections are closed. Dropping the handle does the same without
    /// waiting.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the proxy stops either way; only the wait is cut short.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use quorate::testkit::{FaultProxy, RedisServer};
    /// let server = RedisServer::start()?;
    /// let proxy = FaultProxy::start(server.port()).await?;
    /// proxy.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(mut self) {
        drop(self.stop.take());
        // A panic of the proxy task would already have shown as failures;
        // there is nothing more to report here.
        let _ = (&mut self.task).await;
    }
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.shared;
        let latency = *shared.latency();
        f.debug_struct("FaultProxy")
            .field("port", &self.port)
            .field("target_port", &self.target_port)
            .field("connections", &self.connections())
            .field("latency", &latency.delay)
            .field("jitter", &latency.jitter)
            .field("blackhole", &shared.blackhole.load(Ordering::SeqCst))
            .field("drop_replies", &shared.drop_replies.load(Ordering::SeqCst))
            .field(
                "drop_requests",
                &shared.drop_requests.load(Ordering::SeqCst),
            )
            .field("refuse", &shared.refuse.load(Ordering::SeqCst))
            .finish()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Aborting drops the accept task's future, with it the listener and
        // the set of connection tasks, which aborts them in turn.
        self.task.abort();
    }
}

impl Shared {
    fn new() -> Shared {
        Shared {
            latency: Mutex::default(),
            blackhole: AtomicBool::new(false),
            drop_replies: AtomicBool::new(false),
            drop_requests: AtomicBool::new(false),
            refuse: AtomicBool::new(false),
            resets: watch::channel(0).0,
            open: AtomicUsize::new(0),
        }
    }

    fn latency(&self) -> std::sync::MutexGuard<'_, Latency> {
        self.latency.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The delay for the next chunk, jitter drawn anew each time.
    fn delay(&self) -> Duration {
        let Latency { delay, jitter } = *self.latency();
        delay + jitter.mul_f64(crate::engine::random_unit())
    }

    /// Whether bytes flowing this way are to be discarded now.
    fn swallows(&self, direction: Direction) -> bool {
        let dropped = match direction {
            Direction::Up => &self.drop_requests,
            Direction::Down => &self.drop_replies,
        };
        self.blackhole.load(Ordering::SeqCst) || dropped.load(Ordering::SeqCst)
    }
}

/// Counts a connection as open for as long as its task lives, however the
/// task ends (aborts included).
struct OpenGuard(Arc<Shared>);

impl OpenGuard {
    fn new(shared: Arc<Shared>) -> OpenGuard {
        shared.open.fetch_add(1, Ordering::SeqCst);
        OpenGuard(shared)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Binding port 0 lets the kernel pick a free port and keeps it: unlike
/// probing for a port, nothing can take it between choice and use.
async fn bind_free_port() -> io::Result<TcpListener> {
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        if listener.local_addr()?.port() != DEFAULT_REDIS_PORT {
            return Ok(listener);
        }
    }
}

/// Accepts connections until stopped, then closes the listener and every
/// connection before returning.
async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => accepted,
        };
        // Finished tasks keep their (empty) result until reaped.
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((client, _)) if shared.refuse.load(Ordering::SeqCst) => abort_on_close(&client),
            Ok((client, _)) => {
                // Subscribing here, not in the task, so a reset right after
                // the accept already covers this connection.
                let resets = shared.resets.subscribe();
                let open = OpenGuard::new(shared.clone());
                connections.spawn(serve(client, target, open, resets));
            }
            Err(err) => {
                tracing::debug!(error = %err, "fault proxy: accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// Runs one client connection until it ends or a reset aborts it.
async fn serve(
    mut client: TcpStream,
    target: SocketAddr,
    open: OpenGuard,
    mut resets: watch::Receiver<u64>,
) {
    // Nagle's algorithm would hold back small writes and add latency the
    // test did not ask for.
    let _ = client.set_nodelay(true);
    let aborted = tokio::select! {
        // Checked first so a reset wins over bytes that arrive with it.
        biased;
        _ = resets.changed() => true,
        () = relay(&mut client, target, &open.0) => false,
    };
    if aborted {
        abort_on_close(&client);
    }
}

/// Connects to the target and pumps both directions until both have ended;
/// an I/O error on either side aborts the client connection.
async fn relay(client: &mut TcpStream, target: SocketAddr, shared: &Shared) {
    let mut server = match TcpStream::connect(target).await {
        Ok(server) => server,
        Err(_) => return abort_on_close(client),
    };
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.split();
    let (server_read, server_write) = server.split();
    let outcome = tokio::try_join!(
        pump(client_read, server_write, shared, Direction::Up),
        pump(server_read, client_write, shared, Direction::Down),
    );
    if outcome.is_err() {
        abort_on_close(client);
    }
}

/// Moves bytes one way. Reading and writing are separate so that a delayed
/// chunk does not hold back the reading (and timing) of the next one.
async fn pump(
    reader: impl AsyncRead + Unpin,
    writer: impl AsyncWrite + Unpin,
    shared: &Shared,
    direction: Direction,
) -> io::Result<()> {
    let (queue, queued) = mpsc::unbounded_channel();
    tokio::try_join!(
        read_chunks(reader, queue, shared, direction),
        write_chunks(writer, queued, shared, direction),
    )?;
    Ok(())
}

/// Reads chunks and queues them with the time they are due; returns at end
/// of stream, which closing the queue passes on to the writer.
async fn read_chunks(
    mut reader: impl AsyncRead + Unpin,
    queue: mpsc::UnboundedSender<(Instant, Vec<u8>)>,
    shared: &Shared,
    direction: Direction,
) -> io::Result<()> {
    let mut buf = vec![0; CHUNK];
    let mut last_due = Instant::now();
    loop {
        let read = reader.read(&mut buf).await?;
        if read == 0 {
            return Ok(());
        }
        if shared.swallows(direction) {
            continue;
        }
        // Never due before the previous chunk: jitter must not reorder.
        let due = (Instant::now() + shared.delay()).max(last_due);
        last_due = due;
        if queue.send((due, buf[..read].to_vec())).is_err() {
            // The writer failed; its error ends the connection.
            return Ok(());
        }
    }
}

/// Writes queued chunks when due, then passes the end of stream on.
async fn write_chunks(
    mut writer: impl AsyncWrite + Unpin,
    mut queued: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
    shared: &Shared,
    direction: Direction,
) -> io::Result<()> {
    while let Some((due, chunk)) = queued.recv().await {
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        // Checked again: a fault switched on while the chunk was delayed
        // applies to it too.
        if !shared.swallows(direction) {
            writer.write_all(&chunk).await?;
        }
    }
    // A half-close: the other direction may still carry replies. The peer
    // may already be gone, which changes nothing here.
    let _ = writer.shutdown().await;
    Ok(())
}

/// Makes the coming close of `stream` send an RST instead of a FIN, as a
/// crashed host or a middlebox cutting the connection does.
#[allow(deprecated)] // `set_zero_linger` needs tokio 1.50; the crate allows 1.40.
fn abort_on_close(stream: &TcpStream) {
    // A zero linger never blocks on close (only a positive one does). If it
    // cannot be set, the close is a FIN, which still ends the connection.
    let _ = stream.set_linger(Some(Duration::ZERO));
}
