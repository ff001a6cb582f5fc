//! The latch and barrier crews: clients that each keep their own view of
//! the nodes (the schedule cuts them off from some nodes for seconds), so
//! that they read and arrive through different majorities.
//!
//! Each latch epoch has a count of two: one writer counts down, then, every
//! other epoch or so, the *stray* writer counts down from a minority of
//! nodes (its count-down fails, and may have landed there), then a second
//! writer completes the count. Readers read all along. A latch that opens
//! for whoever reads one node of that minority must never close again for a
//! later reader that misses it.
//!
//! Each barrier crew has one member more than the barrier has parties, and
//! members pause a random while between waits, so arrivals come one by one
//! and some generation always has a member left out of it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::rng::Rng;
use super::{BARRIER_CREW, BARRIER_CREWS, LATCH_CREW, Rig};
use crate::{Barrier, Latch};

/// Distinct count-downs that open each latch.
pub(super) const LATCH_COUNT: u32 = 2;
/// Parties of each barrier: one fewer than the crew.
pub(super) const PARTIES: u32 = BARRIER_CREW as u32 - 1;
/// How long members use one barrier before moving to the next. A barrier's
/// generation numbers start again from 0 when a majority of nodes lost its
/// state (restarts without persistence, state expiry), so each barrier
/// lives only a short era, shorter than its state's TTL, in which they name
/// generations uniquely. Short eras also start often from a clean state:
/// once split views made the nodes' generations diverge, arrivals can no
/// longer agree on one, and the interesting first generations are over.
///
/// Eras go by time, not by a count of waits: with one member more than the
/// parties, a member that had made its count would leave the others
/// waiting for a third arrival that never comes.
const ERA: Duration = Duration::from_millis(1000);

pub(super) fn latch_name(epoch: u64) -> String {
    format!("torture:latch:{epoch}")
}

pub(super) fn barrier_name(crew: usize, era: u64) -> String {
    format!("torture:barrier:{crew}:{era}")
}

/// Starts the latch crew and every barrier member; they stop at the end of
/// the run.
pub(super) fn spawn(rig: &Arc<Rig>) -> Vec<JoinHandle<()>> {
    let mut tasks = vec![tokio::spawn(latch_epochs(rig.clone()))];
    for crew in 0..BARRIER_CREWS {
        for member in 0..BARRIER_CREW {
            tasks.push(tokio::spawn(barrier_member(rig.clone(), crew, member)));
        }
    }
    tasks
}

fn seeded(rig: &Rig, role: u64) -> Rng {
    Rng::new(rig.torture.seed.wrapping_mul(0x9e37).wrapping_add(role))
}

/// One latch per epoch: readers all along, the count-downs in turn.
async fn latch_epochs(rig: Arc<Rig>) {
    let mut rng = seeded(&rig, 100);
    for epoch in 0u64.. {
        if Instant::now() >= rig.until {
            return;
        }
        rig.tallies.latches.fetch_max(epoch + 1, Ordering::SeqCst);
        let name = latch_name(epoch);
        let stop = Instant::now() + rng.millis(500, 1000);
        let readers: Vec<JoinHandle<()>> = (0..LATCH_CREW)
            .map(|m| {
                let reader_rng = seeded(&rig, 200 + epoch * 8 + m as u64);
                tokio::spawn(latch_reader(rig.clone(), m, name.clone(), stop, reader_rng))
            })
            .collect();
        count_down(&rig, rig.layout.latch(0), &name, "first").await;
        if rng.chance(60) {
            stray_count_down(&rig, &mut rng, &name).await;
        }
        tokio::time::sleep(rng.millis(100, 400)).await;
        count_down(&rig, rig.layout.latch(1), &name, "second").await;
        for reader in readers {
            let _ = reader.await;
        }
    }
}

fn latch(rig: &Rig, client: usize, name: &str) -> Latch {
    Latch::new(&rig.quorums[client], name, LATCH_COUNT).with_ttl(rig.state_ttl())
}

async fn count_down(rig: &Rig, client: usize, name: &str, id: &str) {
    let invoked = Instant::now();
    let counted = latch(rig, client, name).count_down_as(id).await;
    rig.history.count_down(name, id, invoked, counted.is_ok());
    if let Err(e) = counted {
        rig.tallies.error("latch count-down", &e);
    }
}

/// A count-down from a writer that reaches a minority of nodes only: it
/// fails, and may have landed on those nodes.
async fn stray_count_down(rig: &Rig, rng: &mut Rng, name: &str) {
    let client = rig.layout.stray();
    let nodes = rig.torture.nodes;
    let reach = 1 + rng.below(((nodes - 1) / 2).max(1) as u64) as usize;
    let first = rng.below(nodes as u64) as usize;
    for n in 0..nodes {
        let reached = (n + nodes - first) % nodes < reach;
        rig.proxies[client][n].refuse(!reached);
    }
    let invoked = Instant::now();
    let latch = latch(rig, client, name);
    let counted = tokio::time::timeout(rng.millis(150, 400), latch.count_down_as("stray")).await;
    let ok = matches!(counted, Ok(Ok(())));
    rig.history.count_down(name, "stray", invoked, ok);
    rig.tallies.op(if ok {
        "latch stray count-down landed"
    } else {
        "latch stray count-down failed"
    });
}

/// Reads the latch until `stop`: mostly `count()`, sometimes a short
/// `wait_timeout`.
async fn latch_reader(rig: Arc<Rig>, member: usize, name: String, stop: Instant, mut rng: Rng) {
    let latch = latch(&rig, rig.layout.latch(member), &name);
    let mut opened = false;
    while Instant::now() < stop && Instant::now() < rig.until {
        let invoked = Instant::now();
        let open = if rng.chance(70) {
            match latch.count().await {
                Ok(n) => Some(n == 0),
                Err(e) => {
                    rig.tallies.error("latch count", &e);
                    None
                }
            }
        } else {
            match latch.wait_timeout(rng.millis(20, 150)).await {
                Ok(()) => Some(true),
                Err(e) if e.is_timeout() => Some(false),
                Err(e) => {
                    rig.tallies.error("latch wait", &e);
                    None
                }
            }
        };
        match open {
            // An open read counts when it returned, a closed one when it
            // was invoked (see `History::latch_observed`).
            Some(true) => rig.history.latch_observed(&name, true, Instant::now()),
            Some(false) => rig.history.latch_observed(&name, false, invoked),
            None => {}
        }
        if open == Some(true) && !opened {
            opened = true;
            rig.tallies.op("latch");
        }
        tokio::time::sleep(rng.millis(5, 40)).await;
    }
}

/// Waits at its crew's barrier of the current era in a loop, pausing a
/// random while between waits.
async fn barrier_member(rig: Arc<Rig>, crew: usize, member: usize) {
    let mut rng = seeded(&rig, 300 + (crew * BARRIER_CREW + member) as u64);
    let q = &rig.quorums[rig.layout.barrier(crew, member)];
    let me = format!("party-{member}");
    loop {
        let now = Instant::now();
        if now >= rig.until {
            return;
        }
        let era = (now - rig.start).as_millis() as u64 / ERA.as_millis() as u64;
        rig.tallies.barriers.fetch_max(era + 1, Ordering::SeqCst);
        let name = barrier_name(crew, era);
        let barrier = Barrier::new(q, name.clone(), PARTIES).with_ttl(rig.state_ttl());
        rig.history.arrived(&name, &me, Instant::now());
        match barrier.wait_timeout(rig.torture.ttl).await {
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
                let at = Instant::now();
                rig.history.barrier_unknown(&name, &me, at);
                rig.history
                    .failed(&name, &format!("wait by {me}"), e.to_string(), at);
                rig.tallies.error("barrier", &e);
            }
        }
        tokio::time::sleep(rng.millis(0, 400)).await;
    }
}
