//! The Redlock mutex.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::Quorum;
use crate::config::Timing;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::key::Keys;
use crate::lease::Lease;
use crate::quorum::{Attempt, Claim, LeaseSpec, fence_ttl_ms};
use crate::scripts;
use crate::wait::wait_for;

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

/// What a lock attempt needs, checked before any I/O.
struct Plan {
    spec: Arc<LeaseSpec>,
    fence_key: String,
    timing: Timing,
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
        self.wait(None).await
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
        self.wait(Some(timeout)).await
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
        let plan = self.plan()?;
        match self.attempt(&plan).await? {
            Attempt::Done(guard) => Ok(Some(guard)),
            Attempt::Busy { .. } => Ok(None),
            Attempt::Unavailable(e) => Err(e),
        }
    }

    async fn wait(&self, timeout: Option<Duration>) -> Result<MutexGuard> {
        let plan = self.plan()?;
        wait_for(&self.quorum, &plan.spec.channel, timeout, || {
            self.attempt(&plan)
        })
        .await
    }

    fn plan(&self) -> Result<Plan> {
        let config = self.quorum.config();
        let timing = config.timing(self.ttl.unwrap_or(config.ttl))?;
        let keys = Keys::new(&config.key_prefix, &self.name)?;
        let spec = LeaseSpec {
            resource: self.name.clone(),
            extend: &scripts::MUTEX_EXTEND,
            release: &scripts::MUTEX_RELEASE,
            channel: keys.sibling("ready")?,
            keys: vec![keys.main.clone()],
        };
        Ok(Plan {
            fence_key: keys.sibling("fence")?,
            spec: Arc::new(spec),
            timing,
        })
    }

    fn attempt(&self, plan: &Plan) -> impl Future<Output = Result<Attempt<MutexGuard>>> + '_ {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let one_node = self.quorum.node_count() == 1;
        let lock_key = &plan.spec.keys[0];
        let mut acquire = scripts::MUTEX_ACQUIRE.prepare_invoke();
        acquire.key(lock_key).key(&plan.fence_key);
        acquire
            .arg(&token)
            .arg(plan.timing.ttl_ms())
            .arg(if one_node { "1" } else { "0" })
            .arg(fence_ttl_ms(plan.timing));
        let claim = Claim {
            acquire,
            lease: plan.spec.clone(),
            token: token.clone(),
            timing: plan.timing,
            fence_keys: (!one_node).then(|| (lock_key.clone(), plan.fence_key.clone())),
        };
        let spec = plan.spec.clone();
        let timing = plan.timing;
        async move {
            let attempt = self.quorum.claim(claim).await?;
            Ok(attempt.map(|grant| MutexGuard {
                lease: Lease::new(&self.quorum, spec, token, grant, timing, self.auto_extend),
            }))
        }
    }
}

/// Proof of holding a [`Mutex`], until [`release`](Self::release) or drop.
///
/// Dropping it without `release` releases in a spawned task (when a tokio
/// runtime is running; otherwise the TTL frees the lock). Prefer `release`:
/// it reports whether the lease was still held.
#[must_use = "the lock is released when the guard is dropped"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct MutexGuard {
    lease: Lease,
}

impl MutexGuard {
    /// The resource name.
    pub fn name(&self) -> &str {
        self.lease.resource()
    }

    /// This lease's fencing token: strictly greater than the token of every
    /// earlier lease of the same name. Hand it to the resource you protect
    /// and have it refuse writes carrying a smaller token than it has seen.
    ///
    /// Tokens are floored at the nodes' clocks (milliseconds × 1024), so they
    /// stay increasing even after a node restarts without persistence,
    /// unless its clock went back.
    pub fn fencing_token(&self) -> u64 {
        self.lease.fencing_token()
    }

    /// Time left before the lease must be treated as gone, from the local
    /// clock; zero once lost.
    pub fn remaining(&self) -> Duration {
        self.lease.remaining()
    }

    /// The local instant the lease ends unless extended.
    pub fn deadline(&self) -> Instant {
        self.lease.deadline()
    }

    /// True while the lease is held: not lost, and before its deadline.
    pub fn is_valid(&self) -> bool {
        self.lease.is_valid()
    }

    /// Extends the lease to `ttl` from now on a quorum of nodes. A lease
    /// that has expired or changed hands is never revived.
    ///
    /// With auto-extension on, later renewals use this TTL.
    ///
    /// # Errors
    ///
    /// [`Error::NotHeld`] when the lease is gone (it is then lost for good);
    /// [`Error::Quorum`] when too few nodes answered (the lease keeps its
    /// old deadline); [`Error::InvalidConfig`] for a TTL out of range.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the lease keeps its old deadline, or a new one if the
    /// extension landed before the drop.
    pub async fn extend(&self, ttl: Duration) -> Result<()> {
        self.lease.extend(ttl).await
    }

    /// Completes when the lease is lost: its deadline passed without a
    /// renewal, or a quorum of nodes said it is no longer ours (the key was
    /// deleted or taken over). Race it against the work the lock protects.
    ///
    /// The future owns what it needs: it may outlive the guard, and then
    /// completes at release.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.lease.lost()
    }

    /// Releases the lock on every node and wakes the waiters. The keeper
    /// task, if any, is stopped first.
    ///
    /// # Errors
    ///
    /// [`Error::NotHeld`] when the lease had already expired or a quorum of
    /// nodes held someone else's key (those keys are left alone);
    /// [`Error::Quorum`] when too few nodes answered (the rest expire by
    /// TTL).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped midway, the release may have reached only
    /// some nodes; the others free the lock when its TTL runs out.
    pub async fn release(self) -> Result<()> {
        self.lease.release().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn guards_and_handles_are_send_and_static() {
        assert_send_sync::<Mutex>();
        assert_send_sync::<MutexGuard>();
        assert_send_sync::<Quorum>();
        assert_send_sync::<Error>();
    }
}
