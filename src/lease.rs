//! Leases: what the mutex, the semaphore and the reentrant lock hand out,
//! and the one handle they acquire them through.
//!
//! A primitive supplies a [`Kind`]: how its keys are named and its leases
//! kept (a [`LeaseSpec`]), and what one acquisition sends. Everything else
//! is written once here: the settings (`with_ttl`, `auto_extend`), the keys
//! and timing checked when the handle is made, acquisition with waiting,
//! the [`Lease`] every guard derefs to, and `run`.
//!
//! A lease knows its owner token, fencing token and local deadline. With
//! auto-extension its quorum's renewal task (`engine::renew`, one for all
//! leases) renews it at about a third of its TTL; a definite "not yours"
//! from a quorum, or the deadline passing without a renewal, marks it lost,
//! for good: a renewal answered after the deadline does not revive it. A
//! released lease asks for no more renewals; one in flight may still reach a
//! node after the release, where it finds no key and does nothing: extend
//! scripts never re-create a key.
//!
//! Extend scripts never shorten a TTL either, so extensions commute: on
//! each node the key lives at least as long as the longest extension that
//! landed there asked, and the local deadline, the latest of the
//! extensions a quorum confirmed, never lies past it.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OnceCell, watch};

use crate::config::Timing;
use crate::engine::{
    self, Attempt, Call, Claim, Fence, Grant, Holding, Invocation, LeaseSpec, Line, Renewable,
    Waiter, random_unit, renew_itself,
};
use crate::error::{Error, Result};
use crate::key::Keys;
use crate::observe;
use crate::quorum::Quorum;

/// What a lease primitive supplies to [`Leases`].
pub(crate) trait Kind: Send + Sync + 'static {
    /// What one acquisition asks for (a number of permits), if anything.
    type Ask: Copy + Send + Sync;

    /// Names the keys and says how the leases are kept. Runs when the
    /// handle is made; errors surface at the first call, before any I/O.
    fn spec(&self, keys: &Keys) -> Result<LeaseSpec>;

    /// Checks what an acquisition asks for, before any I/O.
    fn check(&self, _ask: Self::Ask) -> Result<()> {
        Ok(())
    }

    /// One attempt: adds the acquire script's arguments (before the fencing
    /// tail) and returns the owner token and what the lease will hold.
    fn attempt(
        &self,
        ask: Self::Ask,
        timing: Timing,
        acquire: &mut Invocation,
    ) -> (String, Holding);
}

/// A fresh 128-bit random owner token.
pub(crate) fn owner_token() -> String {
    let mut hex = [0u8; uuid::fmt::Simple::LENGTH];
    uuid::Uuid::new_v4()
        .simple()
        .encode_lower(&mut hex)
        .to_owned()
}

/// The handle a lease primitive is made of: its quorum, name, kind and
/// settings, with the keys and timing checked once.
pub(crate) struct Leases<K> {
    quorum: Quorum,
    name: String,
    kind: Arc<K>,
    ttl: Option<Duration>,
    auto_extend: bool,
    fair: bool,
    plan: Result<Plan>,
}

/// The keys and timing of a handle's leases, checked.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) spec: Arc<LeaseSpec>,
    pub(crate) timing: Timing,
}

impl<K> Clone for Leases<K> {
    fn clone(&self) -> Self {
        Leases {
            quorum: self.quorum.clone(),
            name: self.name.clone(),
            kind: self.kind.clone(),
            ttl: self.ttl,
            auto_extend: self.auto_extend,
            fair: self.fair,
            plan: self.plan.clone(),
        }
    }
}

impl<K> fmt::Debug for Leases<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leases")
            .field("name", &self.name)
            .field("ttl", &self.ttl)
            .field("auto_extend", &self.auto_extend)
            .field("fair", &self.fair)
            .finish_non_exhaustive()
    }
}

impl<K: Kind> Leases<K> {
    pub(crate) fn new(quorum: &Quorum, name: String, kind: K) -> Leases<K> {
        let plan = make_plan(quorum, &name, None, false, &kind);
        Leases {
            quorum: quorum.clone(),
            name,
            kind: Arc::new(kind),
            ttl: None,
            auto_extend: true,
            fair: false,
            plan,
        }
    }

    pub(crate) fn with_ttl(mut self, ttl: Duration) -> Leases<K> {
        self.ttl = Some(ttl);
        self.replan()
    }

    /// Fair mode: acquisitions wait in a queue in Redis, in arrival order
    /// across processes (see `engine/line.rs`).
    pub(crate) fn fair(mut self) -> Leases<K> {
        self.fair = true;
        self.replan()
    }

    fn replan(mut self) -> Leases<K> {
        self.plan = make_plan(&self.quorum, &self.name, self.ttl, self.fair, &*self.kind);
        self
    }

    pub(crate) fn auto_extend(mut self, on: bool) -> Leases<K> {
        self.auto_extend = on;
        self
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn quorum(&self) -> &Quorum {
        &self.quorum
    }

    pub(crate) fn kind(&self) -> &K {
        &self.kind
    }

    /// The keys and timing, or why they were refused.
    pub(crate) fn plan(&self) -> Result<&Plan> {
        self.plan.as_ref().map_err(Clone::clone)
    }

    /// Waits for a lease, at most `timeout` if given.
    pub(crate) async fn acquire(&self, ask: K::Ask, timeout: Option<Duration>) -> Result<Lease> {
        let plan = self.plan()?;
        self.kind.check(ask)?;
        let nodes = self.quorum.nodes();
        let channel = &plan.spec.channel;
        let subject = plan.spec.subject();
        match &plan.spec.line {
            Some(line) => {
                let wait = engine::wait_in_line(nodes, line, channel, timeout, |waiter| {
                    self.attempt(plan, ask, Some(waiter))
                });
                // Boxed: room for the line's work would grow every
                // default-mode waiter too.
                Box::pin(observe::waiting(subject, wait)).await
            }
            None => {
                engine::wait_for(nodes, subject, channel, timeout, || {
                    self.attempt(plan, ask, None)
                })
                .await
            }
        }
    }

    /// One attempt: `None` when the resource is busy.
    pub(crate) async fn try_acquire(&self, ask: K::Ask) -> Result<Option<Lease>> {
        let plan = self.plan()?;
        self.kind.check(ask)?;
        let waiter = plan.spec.line.as_ref().map(|_| Waiter::once());
        match self.attempt(plan, ask, waiter).await? {
            Attempt::Done(lease) => Ok(Some(lease)),
            Attempt::Busy { .. } => Ok(None),
            Attempt::Unavailable(e) => Err(e),
        }
    }

    async fn attempt(
        &self,
        plan: &Plan,
        ask: K::Ask,
        waiter: Option<Waiter>,
    ) -> Result<Attempt<Lease>> {
        let mut acquire = plan.spec.acquire_invocation();
        let (token, holding) = self.kind.attempt(ask, plan.timing, &mut acquire);
        let claim = Claim {
            spec: plan.spec.clone(),
            token: token.clone(),
            acquire,
            holding,
            timing: plan.timing,
            waiter,
        };
        let attempt = engine::claim(self.quorum.nodes(), claim).await?;
        Ok(attempt.map(|grant| Lease::new(&self.quorum, plan, token, grant, self.auto_extend)))
    }
}

/// The keys and timing of a handle, checked.
fn make_plan<K: Kind>(
    quorum: &Quorum,
    name: &str,
    ttl: Option<Duration>,
    fair: bool,
    kind: &K,
) -> Result<Plan> {
    let config = quorum.config();
    let timing = config.timing(ttl.unwrap_or(config.ttl))?;
    let keys = Keys::new(&config.key_prefix, name)?;
    let mut spec = kind.spec(&keys)?;
    if fair {
        spec.line = Some(Line::of(&keys)?);
    }
    Ok(Plan {
        spec: Arc::new(spec),
        timing,
    })
}

/// Runs `body` while `guard`'s lease lives, then releases it. When the
/// lease is lost first, the body is cancelled (dropped) and the result is
/// [`Error::LeaseLost`]; so it is when the body finished after the
/// deadline, since it may have acted without the lease.
pub(crate) async fn run<G, T>(guard: G, body: impl AsyncFnOnce(&G) -> T) -> Result<T>
where
    G: Deref<Target = Lease> + Into<Lease>,
{
    let lost = guard.lost();
    let outcome = tokio::select! {
        biased;
        out = body(&guard) => Some(out),
        () = lost => None,
    };
    let lease: Lease = guard.into();
    match outcome {
        Some(out) if lease.is_valid() => {
            if let Err(e) = lease.release().await {
                tracing::debug!(error = %e, "release after run failed; the TTL frees the lease");
            }
            Ok(out)
        }
        _ => Err(Error::LeaseLost),
    }
}

#[derive(Debug, Clone, Copy)]
struct State {
    deadline: Instant,
    timing: Timing,
    /// When the renewal task renews it next, if it renews itself.
    renew_at: Option<Instant>,
    /// Lost, released, or taken away: never valid again.
    ended: bool,
}

struct Shared {
    quorum: Quorum,
    spec: Arc<LeaseSpec>,
    token: String,
    /// The token once issued; a pending one is committed on first use.
    fence: OnceCell<u64>,
    pending_fence: Option<u64>,
    /// Round one's answers still in flight at the grant (see `Grant`).
    stragglers: Option<engine::Stragglers>,
    granted: Instant,
    holding: Holding,
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
        if renewed {
            observe::extended(self.spec.subject());
        }
        renewed
    }

    fn end(&self) {
        self.state.send_modify(|s| s.ended = true);
    }

    /// The fencing token: issued at the grant, or committed now on a quorum
    /// (fencing round two, after round one when the claim read no counter)
    /// while the lease is valid.
    async fn fencing_token(&self) -> Result<u64> {
        let commit = || async {
            // A round that fell short for want of answers is tried again
            // while the lease lives: both rounds may run twice harmlessly
            // (a token committed on too few nodes was never issued).
            let mut tries = 0;
            loop {
                match self.fence_rounds().await {
                    Err(Error::Quorum(_)) if tries < 2 && self.is_valid() => tries += 1,
                    other => return other,
                }
            }
        };
        self.fence.get_or_try_init(commit).await.copied()
    }

    /// Fencing round one if the claim read no counter, then round two.
    async fn fence_rounds(&self) -> Result<u64> {
        if !self.is_valid() {
            return Err(Error::NotHeld);
        }
        let timing = self.snapshot().timing;
        let nodes = self.quorum.nodes();
        let token = match self.pending_fence {
            Some(token) => token,
            None => engine::read_fence(nodes, &self.spec, &self.token, timing).await?,
        };
        engine::commit_fence(nodes, &self.spec, &self.token, &self.holding, token, timing).await?;
        // The token counts only if it was committed while the lease held.
        if self.is_valid() {
            Ok(token)
        } else {
            Err(Error::NotHeld)
        }
    }

    async fn extend(&self, timing: Timing) -> Result<()> {
        if !self.is_valid() {
            self.lose("its deadline passed");
            return Err(Error::NotHeld);
        }
        let nodes = self.quorum.nodes();
        let result = engine::extend(nodes, &self.spec, &self.token, &self.holding, timing).await;
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
            observe::lost(self.spec.subject(), why);
        }
    }

    /// Releases on every node: `Ok` when a quorum deleted our keys,
    /// [`Error::NotHeld`] when the lease had expired or a quorum no longer
    /// held it.
    async fn release(&self) -> Result<()> {
        let valid = self.is_valid();
        self.end();
        observe::released(self.spec.subject(), self.granted.elapsed());
        if let Some(stragglers) = self.stragglers.clone() {
            stragglers.await;
        }
        let timeout = self.snapshot().timing.node_timeout;
        let nodes = self.quorum.nodes();
        engine::release(
            nodes,
            &self.spec,
            &self.token,
            &self.holding,
            timeout,
            valid,
        )
        .await
    }
}

impl Renewable for Shared {
    fn due(&self) -> Option<(Instant, Duration)> {
        let s = self.snapshot();
        let at = s.renew_at.filter(|_| !s.ended)?;
        Some((at, s.timing.ttl / 3))
    }

    fn renewal(&self) -> (Call, Timing) {
        let timing = self.snapshot().timing;
        let call = self
            .spec
            .extend_call(&self.token, timing.ttl_ms(), &self.holding);
        (call, timing)
    }

    /// Renewed: due again a third of the TTL on (less a jitter, so leases
    /// taken together spread out). Failed: retried soon, until the deadline.
    fn renewed(&self, t1: Instant, outcome: Result<Instant>) {
        let timing = self.snapshot().timing;
        let next = match outcome {
            Ok(deadline) if self.renewed(deadline, timing) => {
                let period = timing.ttl / 3;
                t1 + period - period.mul_f64(0.1 * random_unit())
            }
            Ok(_) => return self.lose("its renewal came after the deadline"),
            Err(Error::NotHeld) => return self.lose("a quorum of nodes no longer holds it"),
            Err(e) => {
                let left = self
                    .snapshot()
                    .deadline
                    .saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return self.lose("no renewal reached a quorum before the deadline");
                }
                observe::renewal_failed(self.spec.subject(), &e);
                Instant::now() + self.quorum.config().retry_delay.min(left / 2)
            }
        };
        self.state.send_modify(|s| s.renew_at = Some(next));
    }
}

/// A held lease: what every guard of a [`Mutex`](crate::Mutex),
/// [`Semaphore`](crate::Semaphore) and [`ReentrantLock`](crate::ReentrantLock)
/// derefs to, so code that only needs the lease works with any of them
/// (`fn write(lease: &Lease)`, called with `&guard`).
///
/// Dropping it without [`release`](Self::release) releases it in a spawned
/// task (when a tokio runtime is running; otherwise the TTL frees it).
///
/// ```no_run
/// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
/// fn write(lease: &quorate::Lease) {
///     assert!(lease.is_valid());
/// }
/// let guard = quorate::Mutex::new(&q, "orders:42").lock().await?;
/// write(&guard);
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[must_use = "the lease is released when it is dropped"]
#[clippy::has_significant_drop]
pub struct Lease {
    shared: Arc<Shared>,
    /// Cleared once released, so `Drop` does nothing more.
    live: bool,
}

impl Lease {
    fn new(quorum: &Quorum, plan: &Plan, token: String, grant: Grant, auto_extend: bool) -> Lease {
        let period = plan.timing.ttl / 3;
        let (state, _) = watch::channel(State {
            deadline: grant.deadline,
            timing: plan.timing,
            renew_at: auto_extend.then(|| grant.granted + period),
            ended: false,
        });
        let (fence, pending_fence) = match grant.fence {
            Fence::Issued(token) => (OnceCell::new_with(Some(token)), None),
            Fence::Pending(token) => (OnceCell::new(), Some(token)),
            Fence::Unread => (OnceCell::new(), None),
        };
        let shared = Arc::new(Shared {
            quorum: quorum.clone(),
            spec: plan.spec.clone(),
            token,
            fence,
            pending_fence,
            stragglers: grant.stragglers,
            granted: grant.granted,
            holding: grant.holding,
            state,
        });
        if auto_extend {
            let weak = Arc::downgrade(&shared);
            renew_itself(quorum.nodes(), weak);
        }
        Lease { shared, live: true }
    }

    /// The resource name.
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let guard = quorate::Mutex::new(&q, "orders:42").lock().await?;
    /// assert_eq!(guard.name(), "orders:42");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &str {
        &self.shared.spec.resource
    }

    /// This lease's fencing token: strictly greater than the token of every
    /// earlier lease of the same resource. Hand it to the resource you
    /// protect and have it refuse writes carrying a smaller token than one
    /// it has seen.
    ///
    /// The first call issues it while the lease is held, and later calls
    /// return it at once: holders that never ask pay nothing for it. A
    /// mutex's first call takes two rounds (read the counters, commit the
    /// next token on a majority); a semaphore permit's one round (its
    /// acquisition read them), none on one node; a reentrant lock's token
    /// is issued with the lease. A round that falls short for want of
    /// answers is tried twice more while the lease lives.
    ///
    /// Tokens are floored at the nodes' clocks (milliseconds × 1024), so they
    /// keep increasing even after a node restarts without persistence, as
    /// long as node clocks differ by less than the restart quarantine
    /// ([`Config::max_ttl`](crate::Config::max_ttl)).
    ///
    /// # Errors
    ///
    /// [`Error::NotHeld`] when the lease ended before the token could be
    /// committed; [`Error::Quorum`] when too few nodes took it (a later call
    /// tries again).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped call commits nothing that counts, and the next
    /// one tries again.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> quorate::Result<()> {
    /// # let servers = quorate::testkit::ServerGroup::start(1).unwrap();
    /// # let q = quorate::Quorum::connect(servers.urls()).await?;
    /// let lock = quorate::Mutex::new(&q, "orders:42");
    /// let first = lock.lock().await?;
    /// let a = first.fencing_token().await?;
    /// first.release().await?;
    /// let second = lock.lock().await?;
    /// assert!(second.fencing_token().await? > a);
    /// second.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn fencing_token(&self) -> Result<u64> {
        self.shared.fencing_token().await
    }

    /// Time left before the lease must be treated as gone, by the local
    /// clock; zero once lost.
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let guard = quorate::Mutex::new(&q, "orders:42").lock().await?;
    /// if guard.remaining() < std::time::Duration::from_secs(1) {
    ///     // too little left to start another write
    /// }
    /// # Ok(()) }
    /// ```
    pub fn remaining(&self) -> Duration {
        let s = self.shared.snapshot();
        if s.ended {
            Duration::ZERO
        } else {
            s.deadline.saturating_duration_since(Instant::now())
        }
    }

    /// The local instant the lease ends unless extended.
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let guard = quorate::Mutex::new(&q, "orders:42").lock().await?;
    /// assert!(guard.deadline() > guard.acquired_at());
    /// # Ok(()) }
    /// ```
    pub fn deadline(&self) -> Instant {
        self.shared.snapshot().deadline
    }

    /// The local instant the lease was granted: when the votes were in.
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let guard = quorate::Mutex::new(&q, "orders:42").lock().await?;
    /// println!("held for {:?}", guard.acquired_at().elapsed());
    /// # Ok(()) }
    /// ```
    pub fn acquired_at(&self) -> Instant {
        self.shared.granted
    }

    /// True while the lease is held: not lost, and before its deadline.
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let guard = quorate::Mutex::new(&q, "orders:42").lock().await?;
    /// while guard.is_valid() {
    ///     // one step of the work at a time
    /// #   break;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn is_valid(&self) -> bool {
        self.shared.is_valid()
    }

    /// Extends the lease to at least `ttl` from now on a quorum of nodes. An
    /// extension never shortens a lease: with more than `ttl` left, the lease
    /// keeps its deadline (release it to give it up early). A lease that has
    /// expired or changed hands is never revived. With auto-extension on,
    /// later renewals use this TTL.
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
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let guard = quorate::Mutex::new(&q, "migration").auto_extend(false).lock().await?;
    /// guard.extend(std::time::Duration::from_secs(60)).await?;
    /// assert!(guard.remaining() > std::time::Duration::from_secs(50));
    /// # Ok(()) }
    /// ```
    pub async fn extend(&self, ttl: Duration) -> Result<()> {
        let timing = self.shared.quorum.config().timing(ttl)?;
        self.shared.extend(timing).await
    }

    /// Completes when the lease is lost: its deadline passed without a
    /// renewal, or a quorum of nodes said it is no longer ours (the key was
    /// deleted or taken over). Race it against the protected work.
    ///
    /// The future owns what it needs: it may outlive the lease, and then
    /// completes at release.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// # async fn work() {}
    /// let guard = quorate::Mutex::new(&q, "orders:42").lock().await?;
    /// tokio::select! {
    ///     () = work() => guard.release().await?,
    ///     () = guard.lost() => eprintln!("lost the lock; the work was stopped"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static + use<> {
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

    /// Releases on every node and wakes the waiters. It asks for no more
    /// renewals first; one in flight cannot revive the released lease.
    ///
    /// # Errors
    ///
    /// [`Error::NotHeld`] when the lease had already expired or a quorum of
    /// nodes no longer held it (whatever others hold is left alone);
    /// [`Error::Quorum`] when too few nodes answered (the rest expire by
    /// TTL).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped midway, the release may have reached only
    /// some nodes; the others free the resource when the TTL runs out.
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let lease: quorate::Lease = quorate::Mutex::new(&q, "orders:42").lock().await?.into();
    /// lease.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn release(mut self) -> Result<()> {
        self.live = false;
        let shared = self.shared.clone();
        shared.release().await
    }

    /// The fencing token if it is issued already (always, for a reentrant
    /// hold): for the testkit's records.
    #[allow(dead_code, reason = "read by the testkit")]
    pub(crate) fn issued_fencing_token(&self) -> Option<u64> {
        self.shared.fence.get().copied()
    }

    /// What this lease holds beyond its token (semaphore slots).
    pub(crate) fn holding(&self) -> &Holding {
        &self.shared.holding
    }

    /// The owner token stored on the nodes: for the testkit's checks of
    /// what the servers hold, never shown to users.
    #[allow(dead_code, reason = "read by the testkit")]
    pub(crate) fn owner_token(&self) -> &str {
        &self.shared.token
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.live {
            return;
        }
        // Best effort: without a runtime the TTL is the backstop.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let shared = self.shared.clone();
            rt.spawn(async move {
                if let Err(e) = shared.release().await {
                    tracing::debug!(resource = %shared.spec.resource, error = %e, "release on drop failed");
                }
            });
        } else {
            self.shared.end();
        }
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("resource", &self.name())
            .field("fencing_token", &self.shared.fence.get())
            .field("remaining", &self.remaining())
            .field("auto_extend", &self.shared.snapshot().renew_at.is_some())
            .finish()
    }
}

/// The guard plumbing every lease primitive shares: `Deref` to [`Lease`],
/// the conversion into it, and `release`. One line per guard type, so the
/// guards keep their own names and docs.
macro_rules! guard {
    ($guard:ident) => {
        impl std::ops::Deref for $guard {
            type Target = crate::lease::Lease;

            fn deref(&self) -> &crate::lease::Lease {
                &self.lease
            }
        }

        impl From<$guard> for crate::lease::Lease {
            fn from(guard: $guard) -> crate::lease::Lease {
                guard.lease
            }
        }

        impl $guard {
            /// Releases on every node and wakes the waiters; see
            /// [`Lease::release`](crate::Lease::release).
            ///
            /// # Errors
            ///
            /// As [`Lease::release`](crate::Lease::release).
            ///
            /// # Cancel safety
            ///
            /// Not cancel safe, as [`Lease::release`](crate::Lease::release).
            ///
            /// ```no_run
            /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
            /// let guard = quorate::Mutex::new(&q, "orders:42").lock().await?;
            /// guard.release().await?;
            /// # Ok(()) }
            /// ```
            pub async fn release(self) -> crate::Result<()> {
                self.lease.release().await
            }
        }
    };
}

pub(crate) use guard;
