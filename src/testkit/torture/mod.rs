//! A seeded torture run: workers hammer all five primitives through fault
//! proxies while a nemesis kills, pauses, restarts and partitions nodes and
//! cuts clients off from some of them, then the [`History`] checker looks
//! for any safety violation.
//!
//! Faults are not enough to find every bug: the workers use the whole API
//! (explicit extensions shorter and longer than the lease, handles with
//! different TTLs on one resource, re-entry at depth 3), clients keep their
//! own partial view of the nodes for seconds at a time, newcomers connect in
//! the middle of the run, a latch writer counts down from a minority, and a
//! sampler compares what each guard claims with the keys on the servers.
//!
//! The fault schedule is a pure function of the seed and the settings
//! ([`Schedule::plan`]), planned before the run and carried out at its
//! offsets, so a seed replays the same faults at the same times (the
//! interleaving of requests still varies from run to run). It can be
//! written to a file and replayed from one. On the planned timeline every
//! client reaches a majority of nodes at all times, so the run also shows
//! that work goes on under minority faults.

mod crews;
mod nemesis;
mod rng;
mod sampler;
mod schedule;
mod workers;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::history::{History, Spec, Violation};
use super::proxy::FaultProxy;
use super::server::ServerGroup;
use crate::{Config, Quorum};

pub use rng::Rng;
pub use schedule::{Action, ParseError, Schedule, Step};

/// What to run. Build it with `Torture::default()` and struct update syntax.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use quorate::testkit::torture::{self, Torture};
/// let report = torture::run(Torture { seed: 7, ..Torture::default() }).await?;
/// assert!(report.violations.is_empty());
/// # Ok(()) }
/// ```
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
    /// The base lease TTL: sections use half of it, it, or twice it, and
    /// twice it is the longest TTL allowed ([`Torture::config`]).
    /// Default: 1 s.
    pub ttl: Duration,
    /// Write the fault schedule to this file before the run starts.
    /// Default: none.
    pub write_schedule: Option<PathBuf>,
    /// Carry out the schedule in this file (as written by `write_schedule`)
    /// instead of planning one from the seed. Default: none.
    pub replay_schedule: Option<PathBuf>,
}

impl Default for Torture {
    fn default() -> Self {
        Torture {
            nodes: 5,
            workers: 6,
            duration: Duration::from_secs(60),
            seed: 1,
            ttl: Duration::from_secs(1),
            write_schedule: None,
            replay_schedule: None,
        }
    }
}

impl Torture {
    /// The settings of every client of the run: the base TTL, and a
    /// `max_ttl` of twice it, so a restarted node sits out only a short
    /// quarantine. Every lease, latch and barrier TTL of the run is at most
    /// `max_ttl`.
    ///
    /// ```
    /// let config = quorate::testkit::torture::Torture::default().config();
    /// assert!(config.ttl <= config.max_ttl);
    /// ```
    pub fn config(&self) -> Config {
        Config {
            ttl: self.ttl,
            max_ttl: self.max_ttl(),
            connect_timeout: Duration::from_millis(250),
            ..Config::default()
        }
    }

    fn max_ttl(&self) -> Duration {
        self.ttl * 2
    }
}

/// What a run did and found.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use quorate::testkit::torture::{self, Torture};
/// let report = torture::run(Torture::default()).await?;
/// println!("{} operations, {} faults", report.total_ops(), report.total_faults());
/// # Ok(()) }
/// ```
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
    /// The fault schedule carried out.
    pub schedule: Schedule,
}

impl Report {
    /// Total successful operations.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use quorate::testkit::torture::{self, Torture};
    /// let report = torture::run(Torture::default()).await?;
    /// assert!(report.total_ops() > 0);
    /// # Ok(()) }
    /// ```
    pub fn total_ops(&self) -> u64 {
        self.ops.values().sum()
    }

    /// Total faults injected.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use quorate::testkit::torture::{self, Torture};
    /// let report = torture::run(Torture::default()).await?;
    /// println!("{} faults injected", report.total_faults());
    /// # Ok(()) }
    /// ```
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
        writeln!(f, "schedule:   {} steps", self.schedule.steps().len())?;
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
            crate::Error::Connect { .. } => "connect",
            crate::Error::InvalidConfig { .. } => "config",
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

/// Which client does what. Every client is one [`Quorum`] with its own
/// proxy per node, so that faults can differ per client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    workers: usize,
}

/// Members of the latch crew: all read, the first two count down.
pub(super) const LATCH_CREW: usize = 3;
/// Members of each barrier crew, one more than the barrier's parties.
pub(super) const BARRIER_CREW: usize = 3;
/// Barrier crews, each on barriers of its own.
pub(super) const BARRIER_CREWS: usize = 2;
/// Newcomers alive at once, each in its own slot of proxies.
pub(super) const NEWCOMER_SLOTS: usize = 3;

impl Layout {
    pub(super) fn of(torture: &Torture) -> Layout {
        Layout {
            workers: torture.workers,
        }
    }

    pub(super) fn workers(self) -> usize {
        self.workers
    }

    pub(super) fn latch(self, member: usize) -> usize {
        self.workers + member
    }

    pub(super) fn barrier(self, crew: usize, member: usize) -> usize {
        self.workers + LATCH_CREW + crew * BARRIER_CREW + member
    }

    /// The latch writer cut off from a majority.
    pub(super) fn stray(self) -> usize {
        self.workers + LATCH_CREW + BARRIER_CREWS * BARRIER_CREW
    }

    pub(super) fn newcomer(self, slot: usize) -> usize {
        self.stray() + 1 + slot
    }

    /// Clients the nemesis may cut off from nodes: the workers and crews
    /// (`0..faultable()`), not the stray writer, not newcomers (they get
    /// their view when they connect).
    pub(super) fn faultable(self) -> usize {
        self.stray()
    }

    /// Every client, newcomer slots included.
    pub(super) fn clients(self) -> usize {
        self.newcomer(NEWCOMER_SLOTS)
    }
}

/// Everything a run shares: servers, per-client proxies and quorums, the
/// sampler, the history and the counters.
pub(super) struct Rig {
    pub(super) torture: Torture,
    pub(super) layout: Layout,
    pub(super) servers: Mutex<ServerGroup>,
    /// `proxies[client][node]`: each client reaches each node through its own
    /// proxy, so partitions can differ per client.
    pub(super) proxies: Vec<Vec<FaultProxy>>,
    /// The quorums of every client but the newcomer slots, by client index.
    pub(super) quorums: Vec<Quorum>,
    /// Private: visible to this module and its children, as `Sampler` is.
    sampler: sampler::Sampler,
    pub(super) history: History,
    pub(super) tallies: Tallies,
    /// When the schedule's offsets count from.
    pub(super) start: Instant,
    pub(super) until: Instant,
}

impl Rig {
    /// A fresh quorum through `client`'s proxies, with the run's settings.
    pub(super) async fn connect(&self, client: usize) -> crate::Result<Quorum> {
        connect(&self.proxies[client], &self.torture).await
    }

    /// The TTL of latch and barrier state: as long as the settings allow.
    pub(super) fn state_ttl(&self) -> Duration {
        self.torture.max_ttl()
    }
}

/// Runs a torture and reports.
///
/// # Errors
///
/// Fails only if servers or proxies cannot be started, or a schedule file
/// cannot be read or written.
///
/// # Cancel safety
///
/// Not cancel safe: dropped midway, it reports nothing, and its workers
/// run on until the run's end time, keeping its servers up until then.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use quorate::testkit::torture::{self, Torture};
/// use std::time::Duration;
/// let report = torture::run(Torture { duration: Duration::from_secs(60), seed: 42, ..Torture::default() }).await?;
/// for v in &report.violations {
///     eprintln!("{}: {}", v.check, v.detail);
/// }
/// # Ok(()) }
/// ```
pub async fn run(torture: Torture) -> std::io::Result<Report> {
    let schedule = schedule(&torture)?;
    let rig = Arc::new(rig(torture).await?);
    let mut tasks = workers::spawn(&rig);
    tasks.extend(crews::spawn(&rig));
    nemesis::run(&rig, &schedule).await;
    for task in tasks.drain(..) {
        let _ = task.await;
    }
    Ok(report(&rig, schedule))
}

/// The schedule to carry out: replayed from a file, or planned from the
/// seed; written out if asked.
fn schedule(torture: &Torture) -> std::io::Result<Schedule> {
    let schedule = match &torture.replay_schedule {
        Some(path) => {
            let text = std::fs::read_to_string(path)?;
            let schedule: Schedule = text.parse().map_err(std::io::Error::other)?;
            schedule
                .fits(torture)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            schedule
        }
        None => Schedule::plan(torture),
    };
    if let Some(path) = &torture.write_schedule {
        std::fs::write(path, schedule.to_string())?;
    }
    Ok(schedule)
}

async fn connect(proxies: &[FaultProxy], torture: &Torture) -> crate::Result<Quorum> {
    Quorum::builder()
        .nodes(proxies.iter().map(FaultProxy::url))
        .config(torture.config())
        .build()
        .await
}

async fn rig(torture: Torture) -> std::io::Result<Rig> {
    let servers = ServerGroup::start(torture.nodes)?;
    let layout = Layout::of(&torture);
    let mut proxies = Vec::new();
    let mut quorums = Vec::new();
    for client in 0..layout.clients() {
        let mut mine = Vec::new();
        for server in servers.iter() {
            mine.push(FaultProxy::start(server.port()).await?);
        }
        if client < layout.newcomer(0) {
            let quorum = connect(&mine, &torture)
                .await
                .map_err(std::io::Error::other)?;
            quorums.push(quorum);
        }
        proxies.push(mine);
    }
    let sampler = sampler::Sampler::new(&servers, &torture.config())?;
    let start = Instant::now();
    Ok(Rig {
        until: start + torture.duration,
        start,
        torture,
        layout,
        servers: Mutex::new(servers),
        proxies,
        quorums,
        sampler,
        history: History::new(),
        tallies: Tallies::default(),
    })
}

fn report(rig: &Rig, schedule: Schedule) -> Report {
    let mut spec = Spec::new()
        .mutex(workers::MUTEX)
        .semaphore(workers::SEMAPHORE, workers::PERMITS)
        .reentrant(workers::REENTRANT);
    let mut all_or_none = Spec::new();
    for epoch in 0..rig.tallies.latches.load(Ordering::SeqCst) {
        let name = crews::latch_name(epoch);
        spec = spec.expiring_latch(&name, crews::LATCH_COUNT, rig.state_ttl());
    }
    for era in 0..rig.tallies.barriers.load(Ordering::SeqCst) {
        for crew in 0..BARRIER_CREWS {
            let name = crews::barrier_name(crew, era);
            spec = spec.barrier_safety(&name, crews::PARTIES);
            all_or_none = all_or_none.barrier(&name, crews::PARTIES);
        }
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
        schedule,
    }
}
