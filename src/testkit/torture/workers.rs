//! The workers: random operations on every primitive, each recorded in the
//! history with the library's own instants.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::task::JoinHandle;

use super::rng::Rng;
use super::{CREW, Rig};
use crate::testkit::history::{LeaseId, LeaseKind};
use crate::{Barrier, Latch, Mutex, ReentrantLock, Semaphore};

pub(super) const MUTEX: &str = "torture:mutex";
pub(super) const SEMAPHORE: &str = "torture:semaphore";
pub(super) const PERMITS: u32 = 2;
pub(super) const REENTRANT: &str = "torture:reentrant";
/// Waits each crew member makes on one barrier before moving to the next.
/// A barrier's generation numbers start again from 0 when a majority of
/// nodes lost its state (restarts without persistence), so each barrier
/// lives only a short era, in which they name generations uniquely.
const WAITS_PER_BARRIER: u64 = 4;

pub(super) fn latch_name(epoch: u64) -> String {
    format!("torture:latch:{epoch}")
}

pub(super) fn barrier_name(era: u64) -> String {
    format!("torture:barrier:{era}")
}

/// Starts every worker and crew member; they stop at the end of the run.
pub(super) fn spawn(rig: &Arc<Rig>) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for w in 0..rig.torture.workers {
        tasks.push(tokio::spawn(worker(rig.clone(), w)));
    }
    for member in 0..CREW {
        tasks.push(tokio::spawn(latch_member(rig.clone(), member)));
        tasks.push(tokio::spawn(barrier_member(rig.clone(), member)));
    }
    tasks
}

async fn worker(rig: Arc<Rig>, w: usize) {
    let mut rng = Rng::new(rig.torture.seed.wrapping_mul(31).wrapping_add(w as u64 + 1));
    let q = &rig.quorums[w];
    let mutex = Mutex::new(q, MUTEX);
    let semaphore = Semaphore::new(q, SEMAPHORE, PERMITS);
    let reentrant = ReentrantLock::new(q, REENTRANT, format!("owner-{w}"));
    while Instant::now() < rig.until {
        match rng.below(3) {
            0 => mutex_section(&rig, &mutex, &mut rng, w).await,
            1 => semaphore_section(&rig, &semaphore, &mut rng, w).await,
            _ => reentrant_section(&rig, &reentrant, &mut rng).await,
        }
    }
}

/// Records the end of a lease and releases it.
async fn finish(
    rig: &Rig,
    op: &'static str,
    id: LeaseId,
    deadline: Instant,
    release: impl Future<Output = crate::Result<()>>,
) {
    rig.history.extended(id, deadline);
    rig.history.released(id, Instant::now());
    match release.await {
        Ok(()) => rig.tallies.op(op),
        Err(e) => rig.tallies.error(&format!("{op} release"), &e),
    }
}

async fn mutex_section(rig: &Rig, mutex: &Mutex, rng: &mut Rng, w: usize) {
    let guard = match mutex.lock_timeout(rig.torture.ttl * 2).await {
        Ok(guard) => guard,
        Err(e) => return rig.tallies.error("mutex", &e),
    };
    let holder = format!("worker-{w}");
    let token = match guard.fencing_token().await {
        Ok(token) => token,
        Err(e) => return rig.tallies.error("mutex token", &e),
    };
    let id = rig.history.lease(
        LeaseKind::Mutex,
        MUTEX,
        &holder,
        token,
        1,
        guard.acquired_at(),
        guard.deadline(),
    );
    let seen = rig.tallies.canary.load(Ordering::SeqCst);
    tokio::time::sleep(rng.millis(0, 5)).await;
    // The holder stops acting when its lease ends, as the library asks.
    if guard.is_valid() {
        rig.tallies.canary.store(seen + 1, Ordering::SeqCst);
        rig.tallies.sections.fetch_add(1, Ordering::SeqCst);
    }
    finish(rig, "mutex", id, guard.deadline(), guard.release()).await;
}

async fn semaphore_section(rig: &Rig, semaphore: &Semaphore, rng: &mut Rng, w: usize) {
    let k = 1 + rng.below(u64::from(PERMITS)) as u32;
    let invoked = Instant::now();
    let permit = match semaphore.acquire_many_timeout(k, rig.torture.ttl * 2).await {
        Ok(permit) => permit,
        Err(e) => return rig.tallies.error("semaphore", &e),
    };
    let holder = format!("worker-{w}");
    let token = match permit.fencing_token().await {
        Ok(token) => token,
        Err(e) => return rig.tallies.error("semaphore token", &e),
    };
    let id = rig.history.lease(
        LeaseKind::Semaphore,
        SEMAPHORE,
        &holder,
        token,
        k,
        permit.acquired_at(),
        permit.deadline(),
    );
    rig.history.acquire_invoked(id, invoked);
    tokio::time::sleep(rng.millis(0, 5)).await;
    finish(rig, "semaphore", id, permit.deadline(), permit.release()).await;
}

async fn reentrant_section(rig: &Rig, lock: &ReentrantLock, rng: &mut Rng) {
    let outer = match lock.lock_timeout(rig.torture.ttl * 2).await {
        Ok(guard) => guard,
        Err(e) => return rig.tallies.error("reentrant", &e),
    };
    // Reentrant tokens are committed at the grant: at once, never failing.
    let record = |g: &crate::ReentrantGuard| {
        let token = g.issued_fencing_token().unwrap_or_default();
        rig.history.lease(
            LeaseKind::Reentrant,
            REENTRANT,
            lock.owner(),
            token,
            1,
            g.acquired_at(),
            g.deadline(),
        )
    };
    let outer_id = record(&outer);
    if rng.chance(50) {
        match lock.try_lock().await {
            Ok(Some(inner)) => {
                let inner_id = record(&inner);
                tokio::time::sleep(rng.millis(0, 3)).await;
                finish(
                    rig,
                    "reentrant",
                    inner_id,
                    inner.deadline(),
                    inner.release(),
                )
                .await;
            }
            Ok(None) => rig.tallies.op("reentrant refused re-entry"),
            Err(e) => rig.tallies.error("reentrant re-entry", &e),
        }
    }
    finish(
        rig,
        "reentrant",
        outer_id,
        outer.deadline(),
        outer.release(),
    )
    .await;
}

/// Counts down one latch per epoch, then waits for the others' count-downs.
async fn latch_member(rig: Arc<Rig>, member: usize) {
    let q = &rig.quorums[rig.torture.workers + member];
    let me = format!("member-{member}");
    for epoch in 0u64.. {
        if Instant::now() >= rig.until {
            return;
        }
        let name = latch_name(epoch);
        rig.tallies.latches.fetch_max(epoch + 1, Ordering::SeqCst);
        let latch = Latch::new(q, name.clone(), CREW as u32);
        let invoked = Instant::now();
        let counted = latch.count_down_as(&me).await;
        rig.history.count_down(&name, &me, invoked, counted.is_ok());
        if let Err(e) = counted {
            rig.tallies.error("latch count-down", &e);
        }
        let invoked = Instant::now();
        match latch.wait_timeout(rig.torture.ttl * 3).await {
            Ok(()) => {
                rig.history.latch_observed(&name, true, Instant::now());
                rig.tallies.op("latch");
            }
            Err(e) => {
                if e.is_timeout() {
                    rig.history.latch_observed(&name, false, invoked);
                }
                rig.tallies.error("latch wait", &e);
            }
        }
    }
}

/// Waits at the barrier in a loop with the other crew members, moving to the
/// next barrier after a fixed number of waits (members stay in step by
/// count, whatever each wait's outcome).
async fn barrier_member(rig: Arc<Rig>, member: usize) {
    let q = &rig.quorums[rig.torture.workers + member];
    let me = format!("member-{member}");
    for wait in 0u64.. {
        if Instant::now() >= rig.until {
            return;
        }
        let era = wait / WAITS_PER_BARRIER;
        rig.tallies.barriers.fetch_max(era + 1, Ordering::SeqCst);
        let name = barrier_name(era);
        let barrier = Barrier::new(q, name.clone(), CREW as u32);
        rig.history.arrived(&name, &me, Instant::now());
        match barrier.wait_timeout(rig.torture.ttl * 3).await {
            Ok(done) => {
                let at = Instant::now();
                rig.history
                    .barrier_released(&name, &me, done.generation(), done.is_leader(), at);
                rig.tallies.op("barrier");
            }
            Err(crate::Error::BrokenBarrier) => {
                rig.history.barrier_broken(&name, &me, Instant::now());
                rig.tallies.op("barrier broken");
            }
            Err(e) => {
                // Too few nodes to learn the outcome: it may have been a release.
                rig.history.barrier_unknown(&name, &me, Instant::now());
                rig.tallies.error("barrier", &e);
            }
        }
    }
}
