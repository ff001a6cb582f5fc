//! A seeded torture run: workers hammer all five primitives through fault
//! proxies while a nemesis kills, pauses, restarts and partitions nodes,
//! then the [`History`] checker looks for any safety violation.
//!
//! The nemesis draws every fault from one seeded generator, so a failing
//! seed replays the same schedule of faults (the interleaving of requests
//! still varies from run to run). It keeps a majority of nodes healthy at all
//! times, so the run also shows that work goes on under minority faults.

mod nemesis;
mod rng;
mod workers;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::history::{History, Spec, Violation};
use super::proxy::FaultProxy;
use super::server::ServerGroup;
use crate::Quorum;

pub use rng::Rng;

/// What to run. Build it with `Torture::default()` and struct update syntax.
#[derive(Debug, Clone)]
pub struct Torture {
    /// Redis nodes. Default: 5.
    pub nodes: usize,
    /// Tasks using the mutex, semaphore and reentrant lock. Default: 6.
    pub workers: usize,
    /// How long the nemesis runs. Default: 60 s.
    pub duration: Duration,
    /// Seed of the fault schedule and of the workers' choices. Default: 1.
    pub seed: u64,
    /// Lease TTL of every primitive (also the restart quarantine).
    /// Default: 1 s.
    pub ttl: Duration,
}

impl Default for Torture {
    fn default() -> Self {
        Torture {
            nodes: 5,
            workers: 6,
            duration: Duration::from_secs(60),
            seed: 1,
            ttl: Duration::from_secs(1),
        }
    }
}

/// What a run did and found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The run's settings.
    pub torture: Torture,
    /// Operations that succeeded, by kind.
    pub ops: BTreeMap<&'static str, u64>,
    /// Operations that failed with an error, by error kind.
    pub errors: BTreeMap<String, u64>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Events recorded in the history.
    pub events: usize,
    /// Safety violations the checker found: empty when all held.
    pub violations: Vec<Violation>,
    /// Barrier generations that did not release all their parties with one
    /// leader (see [`Spec::barrier_safety`]): not a safety violation, a
    /// known limit when faults make nodes see arrivals in different orders.
    pub anomalies: Vec<Violation>,
    /// Everything recorded, to print (`{}`) when looking into a violation.
    pub history: History,
}

impl Report {
    /// Total successful operations.
    pub fn total_ops(&self) -> u64 {
        self.ops.values().sum()
    }

    /// Total faults injected.
    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.torture;
        writeln!(
            f,
            "torture: seed {} | {} nodes | {} workers | {:?} | ttl {:?}",
            t.seed, t.nodes, t.workers, t.duration, t.ttl
        )?;
        writeln!(f, "ops:        {} {}", self.total_ops(), tally(&self.ops))?;
        let errors: u64 = self.errors.values().sum();
        writeln!(f, "errors:     {errors} {}", tally(&self.errors))?;
        writeln!(
            f,
            "faults:     {} {}",
            self.total_faults(),
            tally(&self.faults)
        )?;
        writeln!(f, "events:     {}", self.events)?;
        writeln!(
            f,
            "barrier generations not all-or-none: {}",
            self.anomalies.len()
        )?;
        write!(f, "violations: {}", self.violations.len())?;
        for v in &self.violations {
            write!(f, "\n  {v}")?;
        }
        if !self.violations.is_empty() {
            write!(f, "\nreplay with seed {}", t.seed)?;
        }
        Ok(())
    }
}

fn tally<K: fmt::Display>(counts: &BTreeMap<K, u64>) -> String {
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!("({})", parts.join(", "))
}

/// Counters shared by the workers and the nemesis.
#[derive(Default)]
pub(super) struct Tallies {
    ops: Mutex<BTreeMap<&'static str, u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    faults: Mutex<BTreeMap<&'static str, u64>>,
    /// Critical sections of the mutex canary that counted.
    pub(super) sections: AtomicU64,
    /// The canary: a read-modify-write under the mutex, which loses updates
    /// if two holders overlap.
    pub(super) canary: AtomicU64,
    /// Latches and barriers used so far, to name them in the check.
    pub(super) latches: AtomicU64,
    pub(super) barriers: AtomicU64,
}

impl Tallies {
    pub(super) fn op(&self, kind: &'static str) {
        *self.ops.lock().unwrap().entry(kind).or_default() += 1;
    }

    pub(super) fn error(&self, op: &str, e: &crate::Error) {
        let kind = match e {
            crate::Error::Quorum(_) => "quorum",
            crate::Error::Timeout(_) => "timeout",
            crate::Error::NotHeld => "not held",
            crate::Error::LeaseLost => "lease lost",
            crate::Error::BrokenBarrier => "broken barrier",
            _ => "other",
        };
        *self
            .errors
            .lock()
            .unwrap()
            .entry(format!("{op} {kind}"))
            .or_default() += 1;
    }

    pub(super) fn fault(&self, kind: &'static str) {
        *self.faults.lock().unwrap().entry(kind).or_default() += 1;
    }
}

/// Everything a run shares: servers, per-worker proxies and quorums, the
/// history and the counters.
pub(super) struct Rig {
    pub(super) torture: Torture,
    pub(super) servers: Mutex<ServerGroup>,
    /// `proxies[client][node]`: each client reaches each node through its own
    /// proxy, so partitions can differ per client.
    pub(super) proxies: Vec<Vec<FaultProxy>>,
    pub(super) quorums: Vec<Quorum>,
    pub(super) history: History,
    pub(super) tallies: Tallies,
    pub(super) until: Instant,
}

/// Clients: the workers, plus three for the latch and barrier crews.
pub(super) const CREW: usize = 3;

/// Runs a torture and reports. Fails only if servers or proxies cannot be
/// started.
pub async fn run(torture: Torture) -> std::io::Result<Report> {
    let rig = Arc::new(rig(torture).await?);
    let mut tasks = workers::spawn(&rig);
    nemesis::run(&rig).await;
    for task in tasks.drain(..) {
        let _ = task.await;
    }
    Ok(report(&rig))
}

async fn rig(torture: Torture) -> std::io::Result<Rig> {
    let servers = ServerGroup::start(torture.nodes)?;
    let mut proxies = Vec::new();
    let mut quorums = Vec::new();
    for _ in 0..torture.workers + CREW {
        let mut mine = Vec::new();
        for server in servers.iter() {
            mine.push(FaultProxy::start(server.port()).await?);
        }
        let quorum = Quorum::builder()
            .nodes(mine.iter().map(FaultProxy::url))
            .ttl(torture.ttl)
            .build()
            .await
            .map_err(std::io::Error::other)?;
        proxies.push(mine);
        quorums.push(quorum);
    }
    Ok(Rig {
        until: Instant::now() + torture.duration,
        torture,
        servers: Mutex::new(servers),
        proxies,
        quorums,
        history: History::new(),
        tallies: Tallies::default(),
    })
}

fn report(rig: &Rig) -> Report {
    let mut spec = Spec::new()
        .mutex(workers::MUTEX)
        .semaphore(workers::SEMAPHORE, workers::PERMITS)
        .reentrant(workers::REENTRANT);
    let mut all_or_none = Spec::new();
    for epoch in 0..rig.tallies.latches.load(Ordering::SeqCst) {
        spec = spec.latch(&workers::latch_name(epoch), CREW as u32);
    }
    for era in 0..rig.tallies.barriers.load(Ordering::SeqCst) {
        let name = workers::barrier_name(era);
        spec = spec.barrier_safety(&name, CREW as u32);
        all_or_none = all_or_none.barrier(&name, CREW as u32);
    }
    let mut violations = rig.history.check(&spec);
    let anomalies = rig.history.check(&all_or_none);
    let sections = rig.tallies.sections.load(Ordering::SeqCst);
    let canary = rig.tallies.canary.load(Ordering::SeqCst);
    if canary != sections {
        violations.push(Violation {
            check: "canary",
            resource: workers::MUTEX.into(),
            detail: format!(
                "{sections} critical sections counted, the canary says {canary}: a lost update"
            ),
        });
    }
    Report {
        torture: rig.torture.clone(),
        ops: rig.tallies.ops.lock().unwrap().clone(),
        errors: rig.tallies.errors.lock().unwrap().clone(),
        faults: rig.tallies.faults.lock().unwrap().clone(),
        events: rig.history.len(),
        violations,
        anomalies,
        history: rig.history.clone(),
    }
}
