//! The reentrant lock.

use std::time::Duration;

use crate::config::Timing;
use crate::engine::{self, Call, FenceTarget, Holding, Invocation, LeaseSpec, invocation, scripts};
#[cfg(doc)]
use crate::error::Error;
use crate::error::{Error as E, Result};
use crate::key::{Keys, MAX_KEY_LEN};
use crate::lease::{self, Kind, Leases, owner_token};
use crate::quorum::Quorum;

/// A distributed lock that its owner may take again while holding it.
///
/// The owner is an id the caller chooses (a job id, a request id), not a
/// thread or task, so re-entry works across tasks and processes: whoever
/// presents the same owner id re-enters. Each [`lock`](Self::lock) returns a
/// guard; the lock is free once every guard of the owner is released (or has
/// expired). Other owners wait meanwhile; only the owner's guards release.
///
/// On each node the lock is a hash naming the owner, its fencing token and
/// one field per hold with that hold's expiry; the key lives as long as the
/// latest hold, so a short hold never cuts a long one.
///
/// # Guarantees
///
/// As [`Mutex`](crate::Mutex), between owners. Every guard of one holding
/// carries the same fencing token. Owner ids must be unique to one logical
/// owner: two processes using the same id share the lock.
///
/// # Examples
///
/// ```no_run
/// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
/// use quorate::ReentrantLock;
///
/// let ledger = ReentrantLock::new(&q, "ledger", "job-17");
/// let outer = ledger.lock().await?;
/// let inner = ledger.lock().await?; // same owner: does not wait
/// assert_eq!(outer.fencing_token().await?, inner.fencing_token().await?);
/// inner.release().await?;
/// outer.release().await?; // now free for other owners
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ReentrantLock {
    leases: Leases<Holds>,
}

/// A reentrant lock's keys: the hash of its holds, its fencing counter, its
/// wake-up channel.
struct ReentrantKeys {
    holds: String,
    fence: String,
    channel: String,
}

/// The reentrant lock as a kind of lease: one hold per guard, under the
/// caller's owner id.
#[derive(Debug)]
struct Holds {
    owner: String,
}

impl Kind for Holds {
    type Ask = ();

    fn spec(&self, keys: &Keys) -> Result<LeaseSpec> {
        if self.owner.is_empty() || self.owner.len() > MAX_KEY_LEN {
            return Err(E::argument(
                "owner",
                format!("must be 1 to {MAX_KEY_LEN} bytes"),
            ));
        }
        let k = ReentrantKeys {
            holds: keys.main.clone(),
            fence: keys.sibling("fence")?,
            channel: keys.sibling("ready")?,
        };
        Ok(LeaseSpec {
            resource: keys.resource.clone(),
            acquire: &scripts::REENTRANT_ACQUIRE,
            extend: &scripts::REENTRANT_EXTEND,
            release: &scripts::REENTRANT_RELEASE,
            acquire_keys: vec![k.holds.clone(), k.fence.clone()],
            lease_keys: vec![k.holds.clone()],
            channel: k.channel,
            fence: FenceTarget {
                lease_key: k.holds,
                counter_key: k.fence,
                owner_field: Some("owner"),
                store_field: Some("fence"),
            },
            eager_fence: true,
            line: None,
            set_nx: false,
        })
    }

    fn attempt(&self, (): (), timing: Timing, acquire: &mut Invocation) -> (String, Holding) {
        let hold = owner_token();
        acquire.arg(&self.owner).arg(timing.ttl_ms()).arg(&hold);
        (self.owner.clone(), Holding::Hold(hold))
    }
}

impl ReentrantLock {
    /// A reentrant lock called `name`, taken on behalf of `owner`.
    ///
    /// The name and owner are checked at the first call: empty or over-long
    /// values are refused then with [`Error::InvalidArgument`] and nothing is
    /// sent.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum, job_id: &str) {
    /// let ledger = quorate::ReentrantLock::new(&q, "ledger", job_id);
    /// # }
    /// ```
    pub fn new(
        quorum: &Quorum,
        name: impl Into<String>,
        owner: impl Into<String>,
    ) -> ReentrantLock {
        let owner = owner.into();
        ReentrantLock {
            leases: Leases::new(quorum, name.into(), Holds { owner }),
        }
    }

    /// Sets the lease TTL of each hold. Defaults to the quorum's
    /// [`Config::ttl`](crate::Config::ttl).
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// let ledger = quorate::ReentrantLock::new(&q, "ledger", "job-17").with_ttl(std::time::Duration::from_secs(30));
    /// # }
    /// ```
    #[must_use]
    pub fn with_ttl(self, ttl: Duration) -> ReentrantLock {
        ReentrantLock {
            leases: self.leases.with_ttl(ttl),
        }
    }

    /// Turns automatic extension on or off. Defaults to on.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// let ledger = quorate::ReentrantLock::new(&q, "ledger", "job-17").auto_extend(false);
    /// # }
    /// ```
    #[must_use]
    pub fn auto_extend(self, on: bool) -> ReentrantLock {
        ReentrantLock {
            leases: self.leases.auto_extend(on),
        }
    }

    /// The resource name.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// assert_eq!(quorate::ReentrantLock::new(&q, "ledger", "job-17").name(), "ledger");
    /// # }
    /// ```
    pub fn name(&self) -> &str {
        self.leases.name()
    }

    /// The owner id.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// assert_eq!(quorate::ReentrantLock::new(&q, "ledger", "job-17").owner(), "job-17");
    /// # }
    /// ```
    pub fn owner(&self) -> &str {
        &self.leases.kind().owner
    }

    /// Takes the lock for the owner, or re-enters it, waiting as long as
    /// another owner holds it.
    ///
    /// # Errors
    ///
    /// Bad input before any I/O; an error reply that retrying will not fix.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped call adds no hold; one its scripts added is
    /// removed from a spawned task.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> quorate::Result<()> {
    /// # let servers = quorate::testkit::ServerGroup::start(1).unwrap();
    /// # let q = quorate::Quorum::connect(servers.urls()).await?;
    /// let ledger = quorate::ReentrantLock::new(&q, "ledger", "job-17");
    /// let outer = ledger.lock().await?;
    /// let inner = ledger.lock().await?; // the same owner: no wait
    /// assert_eq!(ledger.hold_count().await?, 2);
    /// inner.release().await?;
    /// outer.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn lock(&self) -> Result<ReentrantGuard> {
        let lease = self.leases.acquire((), None).await?;
        Ok(ReentrantGuard { lease })
    }

    /// As [`lock`](Self::lock), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when another owner held it until the deadline;
    /// [`Error::Quorum`] when the last attempt failed for want of nodes.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`lock`](Self::lock).
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let ledger = quorate::ReentrantLock::new(&q, "ledger", "job-17");
    /// let hold = ledger.lock_timeout(std::time::Duration::from_secs(5)).await?;
    /// hold.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn lock_timeout(&self, timeout: Duration) -> Result<ReentrantGuard> {
        let lease = self.leases.acquire((), Some(timeout)).await?;
        Ok(ReentrantGuard { lease })
    }

    /// Makes one attempt: `Ok(None)` when another owner holds the lock.
    ///
    /// # Errors
    ///
    /// [`Error::Quorum`] when too few nodes answered to decide.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`lock`](Self::lock).
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let ledger = quorate::ReentrantLock::new(&q, "ledger", "job-17");
    /// match ledger.try_lock().await? {
    ///     Some(hold) => hold.release().await?,
    ///     None => println!("another owner holds the ledger"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn try_lock(&self) -> Result<Option<ReentrantGuard>> {
        let lease = self.leases.try_acquire(()).await?;
        Ok(lease.map(|lease| ReentrantGuard { lease }))
    }

    /// Takes (or re-enters) the lock, runs `body` while the hold lives, and
    /// releases the hold. When it is lost first, `body` is cancelled and the
    /// result is [`Error::LeaseLost`].
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`] when the hold ended before `body` did; as
    /// [`lock`](Self::lock) otherwise.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it drops `body` and releases the hold in the
    /// background.
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// # async fn post(_: u64) -> quorate::Result<()> { Ok(()) }
    /// let ledger = quorate::ReentrantLock::new(&q, "ledger", "job-17");
    /// ledger.run(async |hold| post(hold.fencing_token().await?).await).await??;
    /// # Ok(()) }
    /// ```
    pub async fn run<T>(&self, body: impl AsyncFnOnce(&ReentrantGuard) -> T) -> Result<T> {
        lease::run(self.lock().await?, body).await
    }

    /// How many holds the owner has: 0 when it does not hold the lock.
    ///
    /// # Errors
    ///
    /// [`Error::Quorum`] when no majority of nodes agrees.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let ledger = quorate::ReentrantLock::new(&q, "ledger", "job-17");
    /// assert_eq!(ledger.hold_count().await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn hold_count(&self) -> Result<u32> {
        let plan = self.leases.plan()?;
        let mut inv = invocation(&scripts::REENTRANT_HOLDS, &[&plan.spec.lease_keys[0]]);
        inv.arg(self.owner());
        let nodes = self.leases.quorum().nodes();
        let timeout = plan.timing.node_timeout;
        let holds =
            engine::agree(nodes, Call::new(inv), timeout, self.name(), |p| p.int(0)).await?;
        Ok(holds.unwrap_or(0).max(0) as u32)
    }
}

/// One hold of a [`ReentrantLock`], until [`release`](Self::release) or
/// drop. It derefs to its [`Lease`](crate::Lease), as
/// [`MutexGuard`](crate::MutexGuard) does; releasing it removes this hold
/// only.
///
/// ```no_run
/// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
/// let hold = quorate::ReentrantLock::new(&q, "ledger", "job-17").lock().await?;
/// println!("{:?} left", hold.remaining());
/// hold.release().await?;
/// # Ok(()) }
/// ```
#[must_use = "the hold is released when the guard is dropped"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct ReentrantGuard {
    lease: lease::Lease,
}

lease::guard!(ReentrantGuard);
