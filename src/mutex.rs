//! The Redlock mutex.

use std::sync::Arc;
use std::time::Duration;

use crate::client::Quorum;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::key::Keys;
use crate::lease::{Acquirer, Lease, Request, owner_token};
use crate::quorum::{FenceTarget, LeaseSpec, invocation};
use crate::scripts;

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
/// While [`MutexGuard::is_valid`] is true, no other guard for the same name
/// is valid, given the Redlock assumptions: clocks that drift by at most the
/// drift factor, nodes that keep their keys (persistence, or a node kept out
/// of the quorum after a restart), and a holder that stops acting when its
/// lease ends. A process paused past its lease can still act afterwards:
/// pass [`MutexGuard::fencing_token`] to the protected resource and have it
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
    quorum: Quorum,
    name: String,
    ttl: Option<Duration>,
    auto_extend: bool,
}

impl Mutex {
    /// A mutex called `name` on the quorum's nodes.
    ///
    /// The name is checked at the first call: an empty name, or one longer
    /// than 1 KiB with the prefix, is refused then with
    /// [`Error::InvalidArgument`] and nothing is sent.
    pub fn new(quorum: &Quorum, name: impl Into<String>) -> Mutex {
        Mutex {
            quorum: quorum.clone(),
            name: name.into(),
            ttl: None,
            auto_extend: true,
        }
    }

    /// Sets the lease TTL. Defaults to the quorum's [`Config::ttl`](crate::Config::ttl).
    ///
    /// A crashed holder blocks others for at most this long. It is checked at
    /// the first call: at least 10 ms, at most `max_ttl`, and ten times the
    /// per-node timeout.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Mutex {
        self.ttl = Some(ttl);
        self
    }

    /// Turns automatic extension on or off. Defaults to on: a keeper task
    /// renews the lease at about a third of its TTL until release, and
    /// reports a failed renewal through [`MutexGuard::lost`].
    #[must_use]
    pub fn auto_extend(mut self, on: bool) -> Mutex {
        self.auto_extend = on;
        self
    }

    /// The resource name.
    pub fn name(&self) -> &str {
        &self.name
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
    pub async fn lock(&self) -> Result<MutexGuard> {
        let lease = self.acquirer()?.acquire(None).await?;
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
    pub async fn lock_timeout(&self, timeout: Duration) -> Result<MutexGuard> {
        let lease = self.acquirer()?.acquire(Some(timeout)).await?;
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
    pub async fn try_lock(&self) -> Result<Option<MutexGuard>> {
        let lease = self.acquirer()?.try_acquire().await?;
        Ok(lease.map(|lease| MutexGuard { lease }))
    }

    fn acquirer(&self) -> Result<Acquirer<impl Fn() -> Request + '_>> {
        let config = self.quorum.config();
        let timing = config.timing(self.ttl.unwrap_or(config.ttl))?;
        let keys = Keys::new(&config.key_prefix, &self.name)?;
        let fence = FenceTarget {
            lease_key: keys.main.clone(),
            counter_key: keys.sibling("fence")?,
            owner_field: None,
            store_field: None,
        };
        let spec = LeaseSpec {
            resource: self.name.clone(),
            extend: &scripts::MUTEX_EXTEND,
            release: &scripts::MUTEX_RELEASE,
            channel: keys.sibling("ready")?,
            keys: vec![keys.main],
        };
        let (lock_key, counter_key) = (fence.lease_key.clone(), fence.counter_key.clone());
        let build = move || {
            let token = owner_token();
            let mut acquire = invocation(
                &scripts::MUTEX_ACQUIRE,
                &[lock_key.clone(), counter_key.clone()],
            );
            acquire.arg(&token).arg(timing.ttl_ms());
            Request {
                token,
                acquire,
                extra: Vec::new(),
            }
        };
        Ok(Acquirer {
            quorum: self.quorum.clone(),
            spec: Arc::new(spec),
            timing,
            fence,
            auto_extend: self.auto_extend,
            build,
        })
    }
}

/// Proof of holding a [`Mutex`], until [`release`](Self::release) or drop.
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
    lease: Lease,
}

impl MutexGuard {
    crate::lease::lease_methods!();
}
