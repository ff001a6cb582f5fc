//! The Redlock mutex.

use std::time::Duration;

use crate::config::Timing;
use crate::engine::{FenceTarget, Holding, Invocation, LeaseSpec, scripts};
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::key::Keys;
use crate::lease::{self, Kind, Leases, owner_token};
use crate::quorum::Quorum;

/// A distributed mutual exclusion lock: at most one holder at a time across
/// every process that uses the same name on the same nodes.
///
/// On each node the lock is the plain string `SET name token NX PX ttl`, the
/// layout of the Redlock reference implementations (redis-py `Lock`,
/// redsync, node-redlock): a lock they hold blocks quorate and the other way
/// round. A holder needs a majority of the nodes.
///
/// `Mutex` is a cheap description (the quorum, a name, a TTL); it holds no
/// connection of its own and may be cloned and created freely.
///
/// # Guarantees
///
/// While [`Lease::is_valid`](crate::Lease::is_valid) is true, no other guard for the same name
/// is valid, given the Redlock assumptions: clocks that drift by at most the
/// drift factor, nodes that keep their keys (persistence, or a node kept out
/// of the quorum after a restart), and a holder that stops acting when its
/// lease ends. A process paused past its lease can still act afterwards:
/// pass [`Lease::fencing_token`](crate::Lease::fencing_token) to the protected resource and have it
/// refuse smaller tokens.
///
/// # Examples
///
/// ```no_run
/// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
/// use quorate::Mutex;
///
/// let orders = Mutex::new(&q, "orders:42");
/// let guard = orders.lock().await?;
/// // ... at most one process runs this at a time ...
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Mutex {
    leases: Leases<Exclusive>,
}

/// A mutex's keys: the lock, its fencing counter, its wake-up channel.
struct MutexKeys {
    lock: String,
    fence: String,
    channel: String,
}

/// The mutex as a kind of lease: a plain `SET NX` string per node.
#[derive(Debug)]
struct Exclusive;

impl Kind for Exclusive {
    type Ask = ();

    fn spec(&self, keys: &Keys) -> Result<LeaseSpec> {
        let k = MutexKeys {
            lock: keys.main.clone(),
            fence: keys.sibling("fence")?,
            channel: keys.sibling("ready")?,
        };
        Ok(LeaseSpec {
            resource: keys.resource.clone(),
            acquire: &scripts::MUTEX_ACQUIRE,
            extend: &scripts::MUTEX_EXTEND,
            release: &scripts::MUTEX_RELEASE,
            acquire_keys: vec![k.lock.clone(), k.fence.clone()],
            lease_keys: vec![k.lock.clone()],
            channel: k.channel,
            fence: FenceTarget {
                lease_key: k.lock,
                counter_key: k.fence,
                owner_field: None,
                store_field: None,
            },
            eager_fence: false,
            line: None,
            set_nx: true,
        })
    }

    fn attempt(&self, (): (), timing: Timing, acquire: &mut Invocation) -> (String, Holding) {
        let token = owner_token();
        acquire.arg(&token).arg(timing.ttl_ms());
        (token, Holding::Token)
    }
}

impl Mutex {
    /// A mutex called `name` on the quorum's nodes.
    ///
    /// The name is checked at the first call: an empty name, or one longer
    /// than 1 KiB with the prefix, is refused then with
    /// [`Error::InvalidArgument`] and nothing is sent.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// let orders = quorate::Mutex::new(&q, "orders:42");
    /// # }
    /// ```
    pub fn new(quorum: &Quorum, name: impl Into<String>) -> Mutex {
        Mutex {
            leases: Leases::new(quorum, name.into(), Exclusive),
        }
    }

    /// Sets the lease TTL. Defaults to the quorum's [`Config::ttl`](crate::Config::ttl).
    ///
    /// A crashed holder blocks others for at most this long. It is checked at
    /// the first call: at least 10 ms, at most `max_ttl`, and ten times the
    /// per-node timeout.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// let export = quorate::Mutex::new(&q, "export").with_ttl(std::time::Duration::from_secs(30));
    /// # }
    /// ```
    #[must_use]
    pub fn with_ttl(self, ttl: Duration) -> Mutex {
        Mutex {
            leases: self.leases.with_ttl(ttl),
        }
    }

    /// Turns automatic extension on or off. Defaults to on: a keeper task
    /// renews the lease at about a third of its TTL until release, and
    /// reports a failed renewal through [`Lease::lost`](crate::Lease::lost).
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let lock = quorate::Mutex::new(&q, "short-job").auto_extend(false);
    /// let guard = lock.lock().await?;
    /// // the lease ends at its TTL unless extended by hand
    /// guard.extend(std::time::Duration::from_secs(10)).await?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn auto_extend(self, on: bool) -> Mutex {
        Mutex {
            leases: self.leases.auto_extend(on),
        }
    }

    /// Fair mode: waiters get the lock in arrival order, across processes.
    ///
    /// Each waiter holds a place in a queue on the nodes, by its arrival
    /// time, and the lock goes only to the first in line; a release wakes
    /// that waiter alone. A waiter that crashes blocks the line for at most
    /// a few seconds (three of its longest sleeps between attempts, about
    /// 3 s by default); one that gives up leaves at once. Order follows the
    /// waiters' clocks, so clocks that differ by `d` may reorder arrivals
    /// less than `d` apart. Fairness holds among fair handles: a default
    /// handle on the same name does not queue.
    ///
    /// The default mode is faster: a fair acquisition that waits costs a
    /// subscription of its own, and every fair acquisition one queue update
    /// per node. Mutual exclusion is the same in both modes.
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let printer = quorate::Mutex::new(&q, "printer").fair();
    /// let guard = printer.lock().await?; // served in arrival order
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn fair(self) -> Mutex {
        Mutex {
            leases: self.leases.fair(),
        }
    }

    /// The resource name.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// assert_eq!(quorate::Mutex::new(&q, "orders:42").name(), "orders:42");
    /// # }
    /// ```
    pub fn name(&self) -> &str {
        self.leases.name()
    }

    /// Acquires the lock, waiting as long as it takes.
    ///
    /// Waiting is push based: a release wakes the waiters at once. Between
    /// wake-ups a waiter sleeps until the holder's lease would end or a
    /// jittered backoff passes, whichever is sooner. Node failures are
    /// retried too; use [`lock_timeout`](Self::lock_timeout) to bound the
    /// wait.
    ///
    /// # Errors
    ///
    /// Bad input ([`Error::InvalidArgument`], [`Error::InvalidConfig`],
    /// [`Error::CrossSlot`]) before any I/O; an error reply from a node that
    /// will not change by retrying (a key of another type under the name).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. A dropped `lock()` holds nothing: if its scripts were in
    /// flight, a spawned task deletes whatever they set, by owner token, on
    /// every node.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> quorate::Result<()> {
    /// # let servers = quorate::testkit::ServerGroup::start(1).unwrap();
    /// # let q = quorate::Quorum::connect(servers.urls()).await?;
    /// let orders = quorate::Mutex::new(&q, "orders:42");
    /// let guard = orders.lock().await?;
    /// assert!(orders.try_lock().await?.is_none()); // held
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn lock(&self) -> Result<MutexGuard> {
        let lease = self.leases.acquire((), None).await?;
        Ok(MutexGuard { lease })
    }

    /// Acquires the lock, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when it was held by someone else until the
    /// deadline; [`Error::Quorum`] with the per-node tally when the last
    /// attempt failed because too few nodes answered; bad input as for
    /// [`lock`](Self::lock).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`lock`](Self::lock).
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let orders = quorate::Mutex::new(&q, "orders:42");
    /// match orders.lock_timeout(std::time::Duration::from_secs(5)).await {
    ///     Ok(guard) => guard.release().await?,
    ///     Err(e) if e.is_timeout() => println!("busy; try later"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn lock_timeout(&self, timeout: Duration) -> Result<MutexGuard> {
        let lease = self.leases.acquire((), Some(timeout)).await?;
        Ok(MutexGuard { lease })
    }

    /// Makes one attempt: `Ok(None)` when someone else holds the lock.
    ///
    /// # Errors
    ///
    /// [`Error::Quorum`] when too few nodes answered to decide; bad input as
    /// for [`lock`](Self::lock).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`lock`](Self::lock).
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let nightly = quorate::Mutex::new(&q, "nightly-report");
    /// if let Some(guard) = nightly.try_lock().await? {
    ///     // this process runs the report; the others skip it
    ///     guard.release().await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn try_lock(&self) -> Result<Option<MutexGuard>> {
        let lease = self.leases.try_acquire(()).await?;
        Ok(lease.map(|lease| MutexGuard { lease }))
    }

    /// Acquires the lock, runs `body` while the lease lives, and releases
    /// it: the one-line safe way to use a lock. When the lease is lost
    /// first (its renewal failed, or the key was taken away), `body` is
    /// cancelled and the result is [`Error::LeaseLost`].
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// # async fn write(_: u64) -> quorate::Result<()> { Ok(()) }
    /// let report = quorate::Mutex::new(&q, "nightly-report");
    /// report
    ///     .run(async |guard| write(guard.fencing_token().await?).await)
    ///     .await??;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`] when the lease ended before `body` did; as
    /// [`lock`](Self::lock) otherwise.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it drops `body` and releases the lease in the
    /// background.
    pub async fn run<T>(&self, body: impl AsyncFnOnce(&MutexGuard) -> T) -> Result<T> {
        lease::run(self.lock().await?, body).await
    }
}

/// Proof of holding a [`Mutex`], until [`release`](Self::release) or drop.
/// It derefs to its [`Lease`](crate::Lease): `fencing_token()`,
/// `remaining()`, `is_valid()`, `extend(ttl)`, `lost()`.
///
/// Dropping it without `release` releases in a spawned task (when a tokio
/// runtime is running; otherwise the TTL frees the lock). Prefer `release`:
/// it reports whether the lease was still held.
///
/// `release` takes the guard, so releasing twice, or extending after the
/// release, does not compile:
///
/// ```compile_fail
/// # async fn demo(guard: quorate::MutexGuard) -> quorate::Result<()> {
/// guard.release().await?;
/// guard.release().await?; // error: use of moved value
/// # Ok(()) }
/// ```
///
/// ```compile_fail
/// # async fn demo(guard: quorate::MutexGuard) -> quorate::Result<()> {
/// guard.release().await?;
/// guard.extend(std::time::Duration::from_secs(1)).await?; // error: borrow of moved value
/// # Ok(()) }
/// ```
#[must_use = "the lock is released when the guard is dropped"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct MutexGuard {
    lease: lease::Lease,
}

lease::guard!(MutexGuard);
