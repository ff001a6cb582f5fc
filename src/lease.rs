//! Leases: what every primitive hands out.
//!
//! A lease knows its owner token, fencing token and local deadline. With
//! auto-extension a keeper task renews it at about a third of its TTL through
//! the engine; a definite "not yours" from a quorum, or the deadline passing
//! without a renewal, marks it lost, for good: a renewal answered after the
//! deadline does not revive it. The keeper is aborted at release; a renewal
//! it had in flight may still reach a node after the release, where it finds
//! no key and does nothing: extend scripts never re-create a key.
//!
//! Extend scripts never shorten a TTL either, so extensions commute: on
//! each node the key lives at least as long as the longest extension that
//! landed there asked, and the local deadline, the latest of the
//! extensions a quorum confirmed, never lies past it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use redis::ScriptInvocation;

use crate::client::Quorum;
use crate::config::Timing;
use crate::error::{Error, Result};
use crate::quorum::{Attempt, Call, Claim, FenceTarget, Grant, LeaseSpec, fence_ttl_ms};
use crate::wait::wait_for;

/// How a primitive acquires its leases: everything but the acquire script's
/// arguments, which `build` makes per attempt.
pub(crate) struct Acquirer<F> {
    pub(crate) quorum: Quorum,
    pub(crate) spec: Arc<LeaseSpec>,
    pub(crate) timing: Timing,
    pub(crate) fence: FenceTarget,
    pub(crate) auto_extend: bool,
    /// Makes one attempt's owner token, acquire call and extra arguments.
    pub(crate) build: F,
}

/// A fresh 128-bit random owner token.
pub(crate) fn owner_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// One attempt's owner token, acquire call (without the fencing arguments,
/// which the [`Acquirer`] adds) and extra lease arguments.
pub(crate) struct Request {
    pub(crate) token: String,
    pub(crate) acquire: ScriptInvocation<'static>,
    pub(crate) extra: Vec<String>,
}

impl<F: Fn() -> Request> Acquirer<F> {
    /// Waits for the lease, at most `timeout` if given.
    pub(crate) async fn acquire(&self, timeout: Option<Duration>) -> Result<Lease> {
        wait_for(&self.quorum, &self.spec.channel, timeout, || self.attempt()).await
    }

    /// One attempt: `None` when the resource is busy.
    pub(crate) async fn try_acquire(&self) -> Result<Option<Lease>> {
        match self.attempt().await? {
            Attempt::Done(lease) => Ok(Some(lease)),
            Attempt::Busy { .. } => Ok(None),
            Attempt::Unavailable(e) => Err(e),
        }
    }

    async fn attempt(&self) -> Result<Attempt<Lease>> {
        let mut request = (self.build)();
        // Every acquire script ends with the fencing arguments: whether to
        // issue the token on the node (one node) or report the counter for
        // round two (several), and the counter's TTL.
        let one_node = self.quorum.node_count() == 1;
        request
            .acquire
            .arg(if one_node { "1" } else { "0" })
            .arg(fence_ttl_ms(self.timing));
        let token = request.token.clone();
        let claim = Claim {
            acquire: Call::grant(request.acquire),
            lease: self.spec.clone(),
            token: request.token,
            extra: request.extra,
            timing: self.timing,
            fence: self.fence.clone(),
        };
        let attempt = self.quorum.claim(claim).await?;
        Ok(attempt.map(|grant| {
            Lease::new(
                &self.quorum,
                self.spec.clone(),
                token,
                grant,
                self.timing,
                self.auto_extend,
            )
        }))
    }
}

#[derive(Debug, Clone, Copy)]
struct State {
    deadline: Instant,
    timing: Timing,
    /// Lost, released, or taken away: never valid again.
    ended: bool,
}

struct Shared {
    quorum: Quorum,
    spec: Arc<LeaseSpec>,
    token: String,
    fence: u64,
    granted: Instant,
    /// What this lease holds beyond its token (see `LeaseSpec`).
    extra: Vec<String>,
    state: watch::Sender<State>,
}

impl Shared {
    fn snapshot(&self) -> State {
        *self.state.borrow()
    }

    fn is_valid(&self) -> bool {
        let s = self.snapshot();
        !s.ended && Instant::now() < s.deadline
    }

    /// Records a renewal. Extensions never shorten a lease on the nodes, so
    /// the later deadline stands whatever order they land in. A renewal
    /// answered after the deadline passed comes too late: the lease was
    /// lost at the deadline and stays lost.
    fn renewed(&self, deadline: Instant, timing: Timing) -> bool {
        let mut renewed = false;
        self.state.send_modify(|s| {
            if !s.ended && Instant::now() >= s.deadline {
                s.ended = true;
            }
            if !s.ended {
                s.deadline = s.deadline.max(deadline);
                s.timing = timing;
                renewed = true;
            }
        });
        renewed
    }

    fn end(&self) {
        self.state.send_modify(|s| s.ended = true);
    }

    async fn extend(&self, timing: Timing) -> Result<()> {
        if !self.is_valid() {
            self.lose("its deadline passed");
            return Err(Error::NotHeld);
        }
        let result = self
            .quorum
            .extend(&self.spec, &self.token, &self.extra, timing)
            .await;
        match result {
            Ok(deadline) if self.renewed(deadline, timing) => Ok(()),
            Ok(_) => {
                self.lose("its renewal came after the deadline");
                Err(Error::NotHeld)
            }
            Err(Error::NotHeld) => {
                self.lose("a quorum of nodes no longer holds it");
                Err(Error::NotHeld)
            }
            Err(other) => Err(other),
        }
    }

    fn lose(&self, why: &str) {
        let mut lost = false;
        self.state.send_modify(|s| {
            lost = !s.ended || Instant::now() >= s.deadline;
            s.ended = true;
        });
        if lost {
            tracing::warn!(resource = %self.spec.resource, why, "lease lost");
        }
    }
}

/// A held lease. Primitives wrap it in their guard types.
pub(crate) struct Lease {
    shared: Arc<Shared>,
    keeper: Option<JoinHandle<()>>,
    /// Cleared once released, so `Drop` does nothing more.
    live: bool,
}

impl Lease {
    pub(crate) fn new(
        quorum: &Quorum,
        spec: Arc<LeaseSpec>,
        token: String,
        grant: Grant,
        timing: Timing,
        auto_extend: bool,
    ) -> Lease {
        let (state, _) = watch::channel(State {
            deadline: grant.deadline,
            timing,
            ended: false,
        });
        let shared = Arc::new(Shared {
            quorum: quorum.clone(),
            spec,
            token,
            fence: grant.fence,
            granted: grant.granted,
            extra: grant.extra,
            state,
        });
        let keeper = auto_extend.then(|| tokio::spawn(keep(shared.clone())));
        Lease {
            shared,
            keeper,
            live: true,
        }
    }

    pub(crate) fn resource(&self) -> &str {
        &self.shared.spec.resource
    }

    pub(crate) fn fencing_token(&self) -> u64 {
        self.shared.fence
    }

    /// The owner token the nodes store: for the testkit's checks of what
    /// the servers hold, never shown to users.
    pub(crate) fn owner_token(&self) -> &str {
        &self.shared.token
    }

    /// What this lease holds beyond its token (semaphore slots, a hold id).
    pub(crate) fn extra(&self) -> &[String] {
        &self.shared.extra
    }

    pub(crate) fn remaining(&self) -> Duration {
        let s = self.shared.snapshot();
        if s.ended {
            Duration::ZERO
        } else {
            s.deadline.saturating_duration_since(Instant::now())
        }
    }

    pub(crate) fn is_valid(&self) -> bool {
        self.shared.is_valid()
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.shared.snapshot().deadline
    }

    pub(crate) fn acquired_at(&self) -> Instant {
        self.shared.granted
    }

    pub(crate) async fn extend(&self, ttl: Duration) -> Result<()> {
        let timing = self.shared.quorum.config().timing(ttl)?;
        self.shared.extend(timing).await
    }

    /// Completes when the lease is lost; owns what it needs, so it may be
    /// spawned or kept past the guard.
    pub(crate) fn lost(&self) -> impl Future<Output = ()> + Send + 'static + use<> {
        let mut rx = self.shared.state.subscribe();
        async move {
            loop {
                let s = *rx.borrow_and_update();
                if s.ended {
                    return;
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep_until(s.deadline.into()) => {
                        if Instant::now() >= rx.borrow().deadline {
                            return;
                        }
                    }
                }
            }
        }
    }

    pub(crate) async fn release(mut self) -> Result<()> {
        self.stop_keeper();
        self.live = false;
        let shared = self.shared.clone();
        release(&shared).await
    }

    fn stop_keeper(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop_keeper();
        if !self.live {
            return;
        }
        // Best effort: without a runtime the TTL is the backstop.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let shared = self.shared.clone();
            rt.spawn(async move {
                if let Err(e) = release(&shared).await {
                    tracing::debug!(resource = %shared.spec.resource, error = %e, "release on drop failed");
                }
            });
        } else {
            self.shared.end();
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("resource", &self.resource())
            .field("fencing_token", &self.fencing_token())
            .field("remaining", &self.remaining())
            .field("auto_extend", &self.keeper.is_some())
            .finish()
    }
}

/// Releases on every node. `Ok` when a quorum deleted our keys;
/// [`Error::NotHeld`] when the lease had expired or a quorum no longer held
/// it (their keys are left alone).
async fn release(shared: &Shared) -> Result<()> {
    let was_valid = shared.is_valid();
    shared.end();
    let timing = shared.snapshot().timing;
    let inv = shared.spec.release_call(&shared.token, &shared.extra);
    let round = shared.quorum.round_all(inv, timing.node_timeout).await;
    if !was_valid {
        return Err(Error::NotHeld);
    }
    if round.granted() >= shared.quorum.majority() {
        return Ok(());
    }
    if round.definitely_refused() {
        return Err(Error::NotHeld);
    }
    Err(Error::Quorum(round.tally(&shared.quorum, false)))
}

/// The keeper: renews at about a third of the TTL, retries transient
/// failures until the deadline, and gives up on a definite loss.
async fn keep(shared: Arc<Shared>) {
    let mut last_renewal = Instant::now();
    loop {
        let s = shared.snapshot();
        if s.ended {
            return;
        }
        let period = s.timing.ttl / 3;
        let jitter = period.mul_f64(0.1 * crate::wait::random_unit());
        let at = last_renewal + period - jitter;
        tokio::time::sleep_until(at.into()).await;
        match renew(&shared).await {
            Some(t) => last_renewal = t,
            None => return,
        }
    }
}

/// One renewal, retried until it succeeds, the lease is definitely lost, or
/// the deadline passes. Returns when the successful attempt started.
async fn renew(shared: &Shared) -> Option<Instant> {
    loop {
        let started = Instant::now();
        let s = shared.snapshot();
        match shared.extend(s.timing).await {
            Ok(()) => return Some(started),
            Err(Error::NotHeld) => return None,
            Err(e) => {
                let left = shared
                    .snapshot()
                    .deadline
                    .saturating_duration_since(Instant::now());
                if left.is_zero() {
                    shared.lose("no renewal reached a quorum before the deadline");
                    return None;
                }
                tracing::debug!(resource = %shared.spec.resource, error = %e, "renewal failed; retrying");
                let pause = shared.quorum.config().retry_delay.min(left / 2);
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// The lease API every guard shares, written once: expands to methods
/// delegating to a `lease: Lease` field.
macro_rules! lease_methods {
    () => {
        /// The resource name.
        pub fn name(&self) -> &str {
            self.lease.resource()
        }

        /// This lease's fencing token: strictly greater than the token of
        /// every earlier lease of the same resource. Hand it to the resource
        /// you protect and have it refuse writes carrying a smaller token
        /// than one it has seen.
        ///
        /// Tokens are floored at the nodes' clocks (milliseconds × 1024), so
        /// they keep increasing even after a node restarts without
        /// persistence, unless its clock went back.
        pub fn fencing_token(&self) -> u64 {
            self.lease.fencing_token()
        }

        /// Time left before the lease must be treated as gone, by the local
        /// clock; zero once lost.
        pub fn remaining(&self) -> std::time::Duration {
            self.lease.remaining()
        }

        /// The local instant the lease ends unless extended.
        pub fn deadline(&self) -> std::time::Instant {
            self.lease.deadline()
        }

        /// The local instant the lease was granted: when the votes were in.
        pub fn acquired_at(&self) -> std::time::Instant {
            self.lease.acquired_at()
        }

        /// The owner token stored on the nodes (testkit checks only).
        #[allow(dead_code, reason = "read by the testkit")]
        pub(crate) fn owner_token(&self) -> &str {
            self.lease.owner_token()
        }

        /// True while the lease is held: not lost, and before its deadline.
        pub fn is_valid(&self) -> bool {
            self.lease.is_valid()
        }

        /// Extends the lease to at least `ttl` from now on a quorum of nodes.
        /// An extension never shortens a lease: with more than `ttl` left,
        /// the lease keeps its deadline (release it to give it up early).
        /// A lease that has expired or changed hands is never revived. With
        /// auto-extension on, later renewals use this TTL.
        ///
        /// # Errors
        ///
        /// [`Error::NotHeld`](crate::Error::NotHeld) when the lease is gone
        /// (it is then lost for good); [`Error::Quorum`](crate::Error::Quorum)
        /// when too few nodes answered (the lease keeps its old deadline);
        /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for a TTL out
        /// of range.
        ///
        /// # Cancel safety
        ///
        /// Cancel safe: the lease keeps its old deadline, or a new one if the
        /// extension landed before the drop.
        pub async fn extend(&self, ttl: std::time::Duration) -> crate::Result<()> {
            self.lease.extend(ttl).await
        }

        /// Completes when the lease is lost: its deadline passed without a
        /// renewal, or a quorum of nodes said it is no longer ours (the key
        /// was deleted or taken over). Race it against the protected work.
        ///
        /// The future owns what it needs: it may outlive the guard, and then
        /// completes at release.
        ///
        /// # Cancel safety
        ///
        /// Cancel safe.
        pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static + use<> {
            self.lease.lost()
        }

        /// Releases on every node and wakes the waiters. The keeper task, if
        /// any, is stopped first; a renewal it had in flight cannot revive
        /// the released lease.
        ///
        /// # Errors
        ///
        /// [`Error::NotHeld`](crate::Error::NotHeld) when the lease had
        /// already expired or a quorum of nodes no longer held it (whatever
        /// others hold is left alone); [`Error::Quorum`](crate::Error::Quorum)
        /// when too few nodes answered (the rest expire by TTL).
        ///
        /// # Cancel safety
        ///
        /// Not cancel safe: dropped midway, the release may have reached only
        /// some nodes; the others free the resource when the TTL runs out.
        pub async fn release(self) -> crate::Result<()> {
            self.lease.release().await
        }
    };
}

pub(crate) use lease_methods;
