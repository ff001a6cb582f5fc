//! The reentrant lock.

use std::sync::Arc;
use std::time::Duration;

use crate::client::Quorum;
#[cfg(doc)]
use crate::error::Error;
use crate::error::{Error as E, Result};
use crate::key::{Keys, MAX_KEY_LEN};
use crate::lease::{Acquirer, Lease, Request, owner_token};
use crate::quorum::{FenceTarget, LeaseSpec, invocation};
use crate::scripts;

/// A distributed lock that its owner may take again while holding it.
///
/// The owner is an id the caller chooses (a job id, a request id), not a
/// thread or task, so re-entry works across tasks and processes: whoever
/// presents the same owner id re-enters. Each [`lock`](Self::lock) returns a
/// guard; the lock is free once every guard of the owner is released (or has
/// expired). Other owners wait meanwhile; only the owner's guards release.
///
/// On each node the lock is a hash naming the owner, its fencing token and
/// one field per hold, with a TTL that every hold refreshes.
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
/// assert_eq!(outer.fencing_token(), inner.fencing_token());
/// inner.release().await?;
/// outer.release().await?; // now free for other owners
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ReentrantLock {
    quorum: Quorum,
    name: String,
    owner: String,
    ttl: Option<Duration>,
    auto_extend: bool,
}

impl ReentrantLock {
    /// A reentrant lock called `name`, taken on behalf of `owner`.
    ///
    /// The name and owner are checked at the first call: empty or over-long
    /// values are refused then with [`Error::InvalidArgument`] and nothing is
    /// sent.
    pub fn new(
        quorum: &Quorum,
        name: impl Into<String>,
        owner: impl Into<String>,
    ) -> ReentrantLock {
        ReentrantLock {
            quorum: quorum.clone(),
            name: name.into(),
            owner: owner.into(),
            ttl: None,
            auto_extend: true,
        }
    }

    /// Sets the lease TTL of each hold. Defaults to the quorum's
    /// [`Config::ttl`](crate::Config::ttl).
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> ReentrantLock {
        self.ttl = Some(ttl);
        self
    }

    /// Turns automatic extension on or off. Defaults to on.
    #[must_use]
    pub fn auto_extend(mut self, on: bool) -> ReentrantLock {
        self.auto_extend = on;
        self
    }

    /// The resource name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The owner id.
    pub fn owner(&self) -> &str {
        &self.owner
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
    pub async fn lock(&self) -> Result<ReentrantGuard> {
        let lease = self.acquirer()?.acquire(None).await?;
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
    pub async fn lock_timeout(&self, timeout: Duration) -> Result<ReentrantGuard> {
        let lease = self.acquirer()?.acquire(Some(timeout)).await?;
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
    pub async fn try_lock(&self) -> Result<Option<ReentrantGuard>> {
        let lease = self.acquirer()?.try_acquire().await?;
        Ok(lease.map(|lease| ReentrantGuard { lease }))
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
    pub async fn hold_count(&self) -> Result<u32> {
        let (keys, timing) = self.keys()?;
        let mut inv = invocation(&scripts::REENTRANT_HOLDS, &keys[..1]);
        inv.arg(&self.owner);
        let round = self.quorum.round_majority(inv, timing.node_timeout).await;
        match round.agreed(|p| p.int(0)) {
            Some((holds, _)) => Ok(holds.unwrap_or(0).max(0) as u32),
            None => Err(round.shortfall(&self.quorum, &self.name)),
        }
    }

    /// The keys (hash, fence, channel) and timing, checked.
    fn keys(&self) -> Result<([String; 3], crate::config::Timing)> {
        if self.owner.is_empty() || self.owner.len() > MAX_KEY_LEN {
            return Err(E::argument(
                "owner",
                format!("must be 1 to {MAX_KEY_LEN} bytes"),
            ));
        }
        let config = self.quorum.config();
        let timing = config.timing(self.ttl.unwrap_or(config.ttl))?;
        let keys = Keys::new(&config.key_prefix, &self.name)?;
        let names = [
            keys.main.clone(),
            keys.sibling("fence")?,
            keys.sibling("ready")?,
        ];
        Ok((names, timing))
    }

    fn acquirer(&self) -> Result<Acquirer<impl Fn() -> Request + '_>> {
        let ([hash, counter, channel], timing) = self.keys()?;
        let fence = FenceTarget {
            lease_key: hash.clone(),
            counter_key: counter.clone(),
            owner_field: Some("owner".into()),
            store_field: Some("fence".into()),
        };
        let keys = [hash, counter];
        let spec = LeaseSpec {
            resource: self.name.clone(),
            extend: &scripts::REENTRANT_EXTEND,
            release: &scripts::REENTRANT_RELEASE,
            channel,
            keys: keys[..1].to_vec(),
        };
        let build = move || {
            let hold = owner_token();
            let mut acquire = invocation(&scripts::REENTRANT_ACQUIRE, &keys);
            acquire.arg(&self.owner).arg(timing.ttl_ms()).arg(&hold);
            Request {
                token: self.owner.clone(),
                acquire,
                extra: vec![hold],
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

/// One hold of a [`ReentrantLock`], until [`release`](Self::release) or
/// drop. The same lease API as [`MutexGuard`](crate::MutexGuard); releasing
/// it removes this hold only.
#[must_use = "the hold is released when the guard is dropped"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct ReentrantGuard {
    lease: Lease,
}

impl ReentrantGuard {
    crate::lease::lease_methods!();
}
