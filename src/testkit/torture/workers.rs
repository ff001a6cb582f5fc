//! The workers: random sections on the mutex, semaphore and reentrant
//! lock, each recorded in the history with the library's own instants, and
//! the newcomers that connect in the middle of the run.
//!
//! Short sections alone only test the grant. Each section here picks a
//! handle of its own (a TTL of half, once or twice the base one, renewed in
//! the background or not), holds for a moment or for longer than its TTL,
//! and meanwhile extends it explicitly to TTLs both shorter and longer than
//! its own, re-enters a reentrant lock at depth 3 with shorter inner holds,
//! and has the sampler compare the guard's claim with the servers after
//! each extension and now and then. A lease without renewals is sometimes
//! extended at the last moment, where a late answer meets `lost()`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::Rig;
use super::rng::Rng;
use super::sampler::Claims;
use crate::testkit::history::{LeaseId, LeaseKind};
use crate::{Lease, Mutex, Quorum, ReentrantGuard, ReentrantLock, Semaphore};

pub(super) const MUTEX: &str = "torture:mutex";
pub(super) const SEMAPHORE: &str = "torture:semaphore";
pub(super) const PERMITS: u32 = 2;
pub(super) const REENTRANT: &str = "torture:reentrant";
/// Holds at least this long watch `lost()` and are sampled.
const WATCHED: Duration = Duration::from_millis(20);

/// Starts every worker; they stop at the end of the run.
pub(super) fn spawn(rig: &Arc<Rig>) -> Vec<JoinHandle<()>> {
    (0..rig.layout.workers())
        .map(|w| tokio::spawn(worker(rig.clone(), w)))
        .collect()
}

async fn worker(rig: Arc<Rig>, w: usize) {
    let mut rng = Rng::new(rig.torture.seed.wrapping_mul(31).wrapping_add(w as u64 + 1));
    let q = rig.quorums[w].clone();
    let me = format!("worker-{w}");
    while Instant::now() < rig.until {
        let shape = Shape::draw(&mut rng, rig.torture.ttl, true);
        let wait = Wait::For(rig.torture.ttl * 2);
        section(&rig, &q, &me, &shape, &mut rng, wait).await;
    }
}

/// How an acquire waits.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// The library's own wait, at most this long.
    For(Duration),
    /// A few attempts in quick succession: a newcomer's first contact,
    /// which has a short window before the holders notice a restart.
    Eager,
}

/// Attempts of [`Wait::Eager`], and the pause between them.
const EAGER_TRIES: usize = 8;
const EAGER_PAUSE_MS: (u64, u64) = (5, 15);

/// Tries until granted, at most [`EAGER_TRIES`] times; the last answer.
async fn eagerly<G, Fut>(rng: &mut Rng, attempt: impl Fn() -> Fut) -> crate::Result<Option<G>>
where
    Fut: Future<Output = crate::Result<Option<G>>>,
{
    let mut last = attempt().await;
    for _ in 1..EAGER_TRIES {
        if matches!(last, Ok(Some(_))) {
            break;
        }
        tokio::time::sleep(rng.millis(EAGER_PAUSE_MS.0, EAGER_PAUSE_MS.1)).await;
        last = attempt().await;
    }
    last
}

/// One section on a random primitive.
async fn section(rig: &Rig, q: &Quorum, me: &str, shape: &Shape, rng: &mut Rng, wait: Wait) {
    match rng.below(3) {
        0 => mutex_section(rig, q, me, shape, rng, wait).await,
        1 => semaphore_section(rig, q, me, shape, rng, wait).await,
        _ => reentrant_section(rig, q, me, shape, rng, wait).await,
    }
}

/// How a section holds its lease.
#[derive(Debug, Clone, Copy)]
struct Shape {
    ttl: Duration,
    auto_extend: bool,
    hold: Duration,
    /// Without auto-extension: keeps the lease only by extending it to its
    /// own TTL at the last moment, nothing else.
    last_moment: bool,
}

impl Shape {
    /// Mostly short holds, some of a few hundred milliseconds and, with
    /// `long`, some past the TTL and a few of several TTLs (those carry the
    /// keys they got under one view of the nodes into the next phase).
    fn draw(rng: &mut Rng, base: Duration, long: bool) -> Shape {
        let ttl = pick(rng, &[base / 2, base, base * 2]);
        let auto_extend = !rng.chance(30);
        let hold = match rng.below(100) {
            0..50 => rng.millis(0, 5),
            50..78 => rng.millis(20, 400),
            _ if !long => rng.millis(20, 300),
            78..95 => base.mul_f64(0.5 + rng.below(200) as f64 / 100.0),
            _ => base.mul_f64(3.0 + rng.below(300) as f64 / 100.0),
        };
        let last_moment = !auto_extend && rng.chance(80);
        Shape {
            ttl,
            auto_extend,
            hold,
            last_moment,
        }
    }
}

fn pick(rng: &mut Rng, choices: &[Duration]) -> Duration {
    choices[rng.below(choices.len() as u64) as usize]
}

/// Waits until `at` more precisely than a timer, whose ticks are whole
/// milliseconds: a timer to shortly before, then yielding.
async fn until(at: Instant) {
    if let Some(early) = at.checked_sub(Duration::from_millis(2)) {
        tokio::time::sleep_until(early.into()).await;
    }
    while Instant::now() < at {
        tokio::task::yield_now().await;
    }
}

/// The TTLs of explicit extensions: shorter and longer than most leases'.
fn extension(rng: &mut Rng, base: Duration) -> Duration {
    pick(rng, &[base / 4, base / 2, base, base * 2])
}

/// What the sections need of a guard, whatever its kind: its lease (by
/// `Deref`), its keys for the sampler, and the lease it turns into to be
/// released.
trait Guard: Claims + Into<Lease> + Send + Sync + 'static {}

impl<G: Claims + Into<Lease> + Send + Sync + 'static> Guard for G {}

/// The guard of a successful acquire; tallies the others, and records them
/// in the history's timeline (`resource`, by `holder`, invoked at `at`).
fn granted<G>(
    rig: &Rig,
    kind: LeaseKind,
    holder: &str,
    at: Instant,
    got: crate::Result<Option<G>>,
) -> Option<G> {
    let (op, resource) = what(kind);
    let error = match got {
        Ok(Some(guard)) => return Some(guard),
        Ok(None) => {
            rig.tallies.op("newcomer found it busy");
            "busy".to_owned()
        }
        Err(e) => {
            rig.tallies.error(op, &e);
            e.to_string()
        }
    };
    let op = format!("acquire by {holder}");
    rig.history.failed(resource, &op, error, at);
    None
}

/// The tally name and resource of a lease kind.
fn what(kind: LeaseKind) -> (&'static str, &'static str) {
    match kind {
        LeaseKind::Mutex => ("mutex", MUTEX),
        LeaseKind::Semaphore => ("semaphore", SEMAPHORE),
        LeaseKind::Reentrant => ("reentrant", REENTRANT),
    }
}

/// A guard with its lease in the history and, for longer holds, a task
/// recording when `lost()` fires.
struct Held<G> {
    guard: G,
    id: LeaseId,
    op: &'static str,
    watch: Option<JoinHandle<()>>,
    /// How long the last extension took, in microseconds.
    extend_us: AtomicU64,
}

impl<G: Guard> Held<G> {
    /// Records the lease of `guard`, whose acquire was invoked at
    /// `invoked`, on the resource of its kind. With `fenced` it asks for
    /// the fencing token first (on several nodes, the round that commits
    /// it); without, the lease has none, as for holders that never use it.
    async fn record(
        rig: &Rig,
        kind: LeaseKind,
        holder: &str,
        permits: u32,
        invoked: Instant,
        guard: G,
        fenced: bool,
    ) -> Held<G> {
        let (op, resource) = what(kind);
        let token = if fenced {
            match guard.fencing_token().await {
                Ok(token) => Some(token),
                Err(e) => {
                    rig.tallies.error(&format!("{op} token"), &e);
                    None
                }
            }
        } else {
            None
        };
        let id = rig.history.lease(
            kind,
            resource,
            holder,
            token,
            permits,
            guard.acquired_at(),
            guard.deadline(),
        );
        rig.history.acquire_invoked(id, invoked);
        Held {
            guard,
            id,
            op,
            watch: None,
            extend_us: AtomicU64::new(1000),
        }
    }

    /// Records `lost()` firing from now on.
    fn watch(&mut self, rig: &Rig) {
        let (lost, history, id) = (self.guard.lost(), rig.history.clone(), self.id);
        self.watch = Some(tokio::spawn(async move {
            lost.await;
            history.lost(id, Instant::now());
        }));
    }

    async fn sample(&self, rig: &Rig) {
        rig.sampler.sample(&rig.history, self.id, &self.guard).await;
    }

    /// Extends to `ttl`; records the new deadline and samples on success.
    async fn extend(&self, rig: &Rig, ttl: Duration) {
        let started = Instant::now();
        let extended = self.guard.extend(ttl).await;
        let took = started.elapsed().as_micros() as u64;
        self.extend_us.store(took, Ordering::Relaxed);
        match extended {
            Ok(()) => {
                rig.history.extended(self.id, self.guard.deadline());
                rig.tallies.op("extend");
                self.sample(rig).await;
            }
            Err(e) => rig.tallies.error(&format!("{} extend", self.op), &e),
        }
    }

    /// Holds for `shape.hold`, extending and sampling along the way.
    async fn hold(&self, rig: &Rig, shape: &Shape, rng: &mut Rng) {
        let end = (Instant::now() + shape.hold).min(rig.until);
        if shape.hold >= WATCHED {
            self.sample(rig).await;
        }
        loop {
            let now = Instant::now();
            // The holder stops acting when its lease ends, as the library asks.
            if now >= end || !self.guard.is_valid() {
                return;
            }
            let step = rng.millis(10, 150).min(end - now);
            let deadline = self.guard.deadline();
            let near = deadline < now + step;
            if !shape.auto_extend && near && (shape.last_moment || rng.chance(70)) {
                // At the last moment, less than half an extension's time
                // before the deadline: the answer comes just after it,
                // around when lost() fires.
                let took = Duration::from_micros(self.extend_us.load(Ordering::Relaxed));
                let lead = took.mul_f64(rng.below(50) as f64 / 100.0);
                until(deadline.checked_sub(lead).unwrap_or(now)).await;
                self.extend(rig, shape.ttl).await;
                continue;
            }
            tokio::time::sleep(step).await;
            match rng.below(10) {
                0..3 if !shape.last_moment => {
                    self.extend(rig, extension(rng, rig.torture.ttl)).await;
                }
                3..5 => self.sample(rig).await,
                _ => {}
            }
        }
    }

    fn stop_watching(&mut self) {
        if let Some(watch) = self.watch.take() {
            watch.abort();
        }
    }

    /// Records the end of the lease and releases it.
    async fn finish(mut self, rig: &Rig) {
        self.stop_watching();
        rig.history.extended(self.id, self.guard.deadline());
        rig.history.released(self.id, Instant::now());
        let lease: Lease = self.guard.into();
        match lease.release().await {
            Ok(()) => rig.tallies.op(self.op),
            Err(e) => rig.tallies.error(&format!("{} release", self.op), &e),
        }
    }

    /// Records the end of the lease and drops the guard, which releases in
    /// the background.
    fn drop_guard(mut self, rig: &Rig) {
        self.stop_watching();
        rig.history.extended(self.id, self.guard.deadline());
        rig.history.released(self.id, Instant::now());
        rig.tallies.op(self.op);
    }
}

async fn mutex_section(rig: &Rig, q: &Quorum, me: &str, shape: &Shape, rng: &mut Rng, wait: Wait) {
    let mut mutex = Mutex::new(q, MUTEX)
        .with_ttl(shape.ttl)
        .auto_extend(shape.auto_extend);
    // Fair and default handles share the name: exclusion must not rest on
    // the queue.
    if rng.chance(33) {
        mutex = mutex.fair();
    }
    let invoked = Instant::now();
    let got = match wait {
        Wait::For(wait) => mutex.lock_timeout(wait).await.map(Some),
        Wait::Eager => eagerly(rng, || mutex.try_lock()).await,
    };
    let Some(guard) = granted(rig, LeaseKind::Mutex, me, invoked, got) else {
        return;
    };
    let fenced = rng.chance(50);
    let mut held = Held::record(rig, LeaseKind::Mutex, me, 1, invoked, guard, fenced).await;
    if shape.hold >= WATCHED {
        held.watch(rig);
    }
    let seen = rig.tallies.canary.load(Ordering::SeqCst);
    tokio::time::sleep(rng.millis(0, 5)).await;
    // The holder stops acting when its lease ends, as the library asks.
    if held.guard.is_valid() {
        rig.tallies.canary.store(seen + 1, Ordering::SeqCst);
        rig.tallies.sections.fetch_add(1, Ordering::SeqCst);
    }
    held.hold(rig, shape, rng).await;
    held.finish(rig).await;
}

async fn semaphore_section(
    rig: &Rig,
    q: &Quorum,
    me: &str,
    shape: &Shape,
    rng: &mut Rng,
    wait: Wait,
) {
    let k = 1 + rng.below(u64::from(PERMITS)) as u32;
    let mut semaphore = Semaphore::new(q, SEMAPHORE, PERMITS)
        .with_ttl(shape.ttl)
        .auto_extend(shape.auto_extend);
    if rng.chance(33) {
        semaphore = semaphore.fair();
    }
    let invoked = Instant::now();
    let got = match wait {
        Wait::For(wait) => semaphore.acquire_many_timeout(k, wait).await.map(Some),
        Wait::Eager => eagerly(rng, || semaphore.try_acquire_many(k)).await,
    };
    let Some(permit) = granted(rig, LeaseKind::Semaphore, me, invoked, got) else {
        return;
    };
    let fenced = rng.chance(50);
    let mut held = Held::record(rig, LeaseKind::Semaphore, me, k, invoked, permit, fenced).await;
    if shape.hold >= WATCHED {
        held.watch(rig);
    }
    held.hold(rig, shape, rng).await;
    held.finish(rig).await;
}

/// An outer hold, up to two inner ones with TTLs no longer than the outer
/// one's (some not renewed), sampled as they come; inner holds end first,
/// released or dropped, and the outer one holds on a while after them.
async fn reentrant_section(
    rig: &Rig,
    q: &Quorum,
    me: &str,
    shape: &Shape,
    rng: &mut Rng,
    wait: Wait,
) {
    let Some(outer) = reenter(rig, q, me, shape, rng, wait).await else {
        return;
    };
    let mut outer = outer;
    if shape.hold >= WATCHED {
        outer.watch(rig);
    }
    let mut inner = Vec::new();
    for _ in 0..rng.below(3) {
        let shorter: Vec<Duration> = [shape.ttl / 4, shape.ttl / 2, shape.ttl]
            .into_iter()
            .filter(|&t| t >= crate::Config::MIN_TTL)
            .collect();
        let inner_shape = Shape {
            ttl: pick(rng, &shorter),
            auto_extend: rng.chance(50),
            hold: shape.hold / 3,
            last_moment: false,
        };
        let wait = Wait::For(rig.torture.ttl);
        if let Some(held) = reenter(rig, q, me, &inner_shape, rng, wait).await {
            outer.sample(rig).await;
            inner.push((held, inner_shape));
        }
    }
    while let Some((held, inner_shape)) = inner.pop() {
        held.hold(rig, &inner_shape, rng).await;
        if rng.chance(50) {
            held.finish(rig).await;
        } else {
            held.drop_guard(rig);
        }
        outer.sample(rig).await;
    }
    outer.hold(rig, shape, rng).await;
    outer.finish(rig).await;
}

/// One hold of the reentrant lock for `me`, through a handle of its own.
async fn reenter(
    rig: &Rig,
    q: &Quorum,
    me: &str,
    shape: &Shape,
    rng: &mut Rng,
    wait: Wait,
) -> Option<Held<ReentrantGuard>> {
    let lock = ReentrantLock::new(q, REENTRANT, me)
        .with_ttl(shape.ttl)
        .auto_extend(shape.auto_extend);
    let invoked = Instant::now();
    let got = match wait {
        Wait::For(wait) => lock.lock_timeout(wait).await.map(Some),
        Wait::Eager => eagerly(rng, || lock.try_lock()).await,
    };
    let guard = granted(rig, LeaseKind::Reentrant, me, invoked, got)?;
    // Reentrant tokens are committed at the grant: asking costs nothing.
    Some(Held::record(rig, LeaseKind::Reentrant, me, 1, invoked, guard, true).await)
}

/// A newcomer: a client that connects in the middle of the run through
/// newcomer slot `slot` (whose proxies the nemesis set to its view), tries
/// every primitive at once, works on for `life` and goes away. It trusts
/// whatever it meets first, restarted nodes included.
pub(super) async fn newcomer(rig: Arc<Rig>, slot: usize, ordinal: u64, life: Duration) {
    let until = (Instant::now() + life).min(rig.until);
    let client = rig.layout.newcomer(slot);
    let q = match rig.connect(client).await {
        Ok(q) => q,
        Err(e) => {
            let at = Instant::now();
            rig.history.failed(
                "",
                &format!("connect of newcomer-{ordinal}"),
                e.to_string(),
                at,
            );
            return rig.tallies.error("newcomer connect", &e);
        }
    };
    rig.tallies.op("newcomer");
    let seed = rig.torture.seed.wrapping_mul(131).wrapping_add(ordinal);
    let mut rng = Rng::new(seed ^ 0x6e65_7763_6f6d_6572);
    let me = format!("newcomer-{ordinal}");
    let base = rig.torture.ttl;
    // First contact: a few quick attempts on all three at once.
    let first = [0, 1, 2].map(|_| Shape::draw(&mut rng, base, false));
    let mut rngs = [1, 2, 3].map(|i| Rng::new(seed.wrapping_add(i)));
    let [r0, r1, r2] = &mut rngs;
    tokio::join!(
        mutex_section(&rig, &q, &me, &first[0], r0, Wait::Eager),
        semaphore_section(&rig, &q, &me, &first[1], r1, Wait::Eager),
        reentrant_section(&rig, &q, &me, &first[2], r2, Wait::Eager),
    );
    while Instant::now() < until {
        let shape = Shape::draw(&mut rng, base, false);
        section(&rig, &q, &me, &shape, &mut rng, Wait::For(base / 2)).await;
        tokio::time::sleep(rng.millis(20, 150)).await;
    }
}
