//! A Redis Sentinel watching a testkit primary, for what a failover that
//! Sentinel runs does to a lock: quorate follows the service to its new
//! primary, and the new primary's grants sit out the restart quarantine.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::server::binary_path;

const POLL: Duration = Duration::from_millis(50);
const READY: Duration = Duration::from_secs(10);

/// One `redis-server --sentinel` process on a free port, monitoring one
/// service with a quorum of 1; killed, and its directory removed, on drop.
///
/// ```no_run
/// let group = quorate::testkit::ReplicatedPrimary::start(1)?;
/// let port: u16 = group.primary_url().rsplit(':').next().unwrap().parse().unwrap();
/// let sentinel = quorate::testkit::LocalSentinel::start("locks", port)?;
/// let new_primary = sentinel.failover()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct LocalSentinel {
    child: Child,
    port: u16,
    dir: PathBuf,
    service: String,
}

impl LocalSentinel {
    /// Starts a sentinel for `service`, the primary on `127.0.0.1:primary_port`,
    /// and waits until it knows a replica of it (a failover needs one).
    ///
    /// # Errors
    ///
    /// When the binary cannot start, or the sentinel does not answer or find
    /// a replica within 10 s.
    pub fn start(service: &str, primary_port: u16) -> io::Result<LocalSentinel> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let dir =
            std::env::temp_dir().join(format!("quorate-sentinel-{}-{port}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let conf = dir.join("sentinel.conf");
        fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {service} 127.0.0.1 {primary_port} 1\n\
                 sentinel down-after-milliseconds {service} 1000\nsentinel failover-timeout {service} 5000\n",
                dir.display()
            ),
        )?;
        let child = Command::new(binary_path())
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let sentinel = LocalSentinel {
            child,
            port,
            dir,
            service: service.to_owned(),
        };
        sentinel.wait(|s| Ok(s.replicas()? > 0), "to know a replica")?;
        Ok(sentinel)
    }

    /// `redis://127.0.0.1:port` of the sentinel itself.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The monitored service's name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The service's primary as the sentinel names it, `host:port`.
    ///
    /// # Errors
    ///
    /// When the sentinel does not answer.
    pub fn primary(&self) -> io::Result<String> {
        let (host, port): (String, String) = self.query(
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(&self.service),
        )?;
        Ok(format!("{host}:{port}"))
    }

    /// Fails the service over to a replica (`SENTINEL FAILOVER`) and waits
    /// until the sentinel names the new primary, which it returns.
    ///
    /// # Errors
    ///
    /// When the sentinel refuses for 10 s, or then names no new primary
    /// within 10 s.
    pub fn failover(&self) -> io::Result<String> {
        let old = self.primary()?;
        // A replica it has just found is no candidate until the sentinel
        // has heard from it (NOGOODSLAVE until then).
        let failover = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(&self.service)
            .to_owned();
        self.wait(
            |s| Ok(s.query::<String>(&failover).is_ok()),
            "to accept a failover",
        )?;
        self.wait(|s| Ok(s.primary()? != old), "to name a new primary")?;
        self.primary()
    }

    fn replicas(&self) -> io::Result<usize> {
        let replicas: Vec<redis::Value> =
            self.query(redis::cmd("SENTINEL").arg("REPLICAS").arg(&self.service))?;
        Ok(replicas.len())
    }

    fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> io::Result<T> {
        let client = redis::Client::open(self.url()).map_err(io::Error::other)?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .map_err(io::Error::other)?;
        cmd.query(&mut conn).map_err(io::Error::other)
    }

    fn wait(&self, done: impl Fn(&Self) -> io::Result<bool>, what: &str) -> io::Result<()> {
        let deadline = Instant::now() + READY;
        while Instant::now() < deadline {
            if done(self).unwrap_or(false) {
                return Ok(());
            }
            thread::sleep(POLL);
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the sentinel on port {} took too long {what}", self.port),
        ))
    }
}

impl Drop for LocalSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
