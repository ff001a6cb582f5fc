//! The fault schedule: what the nemesis does and when, planned before the
//! run as a pure function of the seed and the settings.
//!
//! A nemesis that chooses as it goes depends on wall-clock timing (how long
//! a restart took, when its timer fired), so a failing seed would not replay
//! its faults. The plan instead lays out every action at its offset from the
//! start, and checks the one rule that keeps the run meaningful on that
//! planned timeline: every client reaches a majority of nodes at all times,
//! counting the faults of every node (killed, paused, slow, restarted a
//! moment ago) and the ones of that client (partitions, lost replies, its
//! own view). A node restarted empty counts as faulty for longer than the
//! restart quarantine of the clients that knew it, but not for newcomers
//! that first meet it after the restart: they trust it at once, which is
//! what makes them worth running.
//!
//! The run alternates two kinds of phase. A *storm* opens with a node
//! restarted empty and a newcomer right after, then injects one fault at a
//! time on a free node, as the old nemesis did. A *views* phase gives most
//! clients their own stable partial view of the nodes for seconds, and no
//! node fault: leases then live on exactly a majority, barrier parties and
//! latch readers see different majorities, and newcomers come and go.
//!
//! The text form has one step per line, `<offset ms> <action> <args>`, lists
//! comma-separated, `#` comments; see [`Action`] for the words.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::rng::Rng;
use super::{Layout, NEWCOMER_SLOTS, Torture};

/// One action of the nemesis. Nodes, clients and newcomer slots are
/// indices of the run (see [`Schedule::fits`]).
///
/// ```
/// use quorate::testkit::torture::Action;
/// assert!(Action::Resume(0).heals());
/// assert!(!Action::Kill(0).heals());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `kill N`: SIGKILL node N.
    Kill(usize),
    /// `restart N`: start a killed node again, empty.
    Restart(usize),
    /// `pause N`: SIGSTOP node N.
    Pause(usize),
    /// `resume N`: SIGCONT node N.
    Resume(usize),
    /// `restart-empty N`: kill node N and start it again at once, empty.
    RestartEmpty(usize),
    /// `partition N C,C`: these clients cannot reach node N.
    Partition(usize, Vec<usize>),
    /// `reconnect N C,C`: they can again.
    Reconnect(usize, Vec<usize>),
    /// `latency N MS`: every client's traffic with node N is delayed by MS
    /// (plus up to 5 ms) each way.
    Latency(usize, u64),
    /// `no-latency N`: no more delay.
    NoLatency(usize),
    /// `drop-replies N C,C`: these clients' requests reach node N, its
    /// replies are lost.
    DropReplies(usize, Vec<usize>),
    /// `deliver-replies N C,C`: replies flow again (connections are reset).
    DeliverReplies(usize, Vec<usize>),
    /// `flush-scripts N`: `SCRIPT FLUSH` on node N.
    FlushScripts(usize),
    /// `view C N,N`: client C cannot reach these nodes.
    View(usize, Vec<usize>),
    /// `clear-view C N,N`: it can again.
    ClearView(usize, Vec<usize>),
    /// `newcomer S MS`: a new client connects through newcomer slot S,
    /// works for MS milliseconds and goes away.
    Newcomer(usize, u64),
}

impl Action {
    /// True for actions that end a fault: they still run when the run is
    /// over, to leave everything healed.
    ///
    /// ```
    /// assert!(quorate::testkit::torture::Action::Restart(1).heals());
    /// ```
    pub fn heals(&self) -> bool {
        matches!(
            self,
            Action::Restart(_)
                | Action::Resume(_)
                | Action::Reconnect(..)
                | Action::NoLatency(_)
                | Action::DeliverReplies(..)
                | Action::ClearView(..)
        )
    }

    /// The nodes, clients and slot the action names.
    fn indices(&self) -> (Vec<usize>, Vec<usize>, Option<usize>) {
        match self {
            Action::Kill(n)
            | Action::Restart(n)
            | Action::Pause(n)
            | Action::Resume(n)
            | Action::RestartEmpty(n)
            | Action::Latency(n, _)
            | Action::NoLatency(n)
            | Action::FlushScripts(n) => (vec![*n], vec![], None),
            Action::Partition(n, cs)
            | Action::Reconnect(n, cs)
            | Action::DropReplies(n, cs)
            | Action::DeliverReplies(n, cs) => (vec![*n], cs.clone(), None),
            Action::View(c, ns) | Action::ClearView(c, ns) => (ns.clone(), vec![*c], None),
            Action::Newcomer(slot, _) => (vec![], vec![], Some(*slot)),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Kill(n) => write!(f, "kill {n}"),
            Action::Restart(n) => write!(f, "restart {n}"),
            Action::Pause(n) => write!(f, "pause {n}"),
            Action::Resume(n) => write!(f, "resume {n}"),
            Action::RestartEmpty(n) => write!(f, "restart-empty {n}"),
            Action::Partition(n, cs) => write!(f, "partition {n} {}", list(cs)),
            Action::Reconnect(n, cs) => write!(f, "reconnect {n} {}", list(cs)),
            Action::Latency(n, ms) => write!(f, "latency {n} {ms}"),
            Action::NoLatency(n) => write!(f, "no-latency {n}"),
            Action::DropReplies(n, cs) => write!(f, "drop-replies {n} {}", list(cs)),
            Action::DeliverReplies(n, cs) => write!(f, "deliver-replies {n} {}", list(cs)),
            Action::FlushScripts(n) => write!(f, "flush-scripts {n}"),
            Action::View(c, ns) => write!(f, "view {c} {}", list(ns)),
            Action::ClearView(c, ns) => write!(f, "clear-view {c} {}", list(ns)),
            Action::Newcomer(slot, ms) => write!(f, "newcomer {slot} {ms}"),
        }
    }
}

fn list(items: &[usize]) -> String {
    let items: Vec<String> = items.iter().map(usize::to_string).collect();
    items.join(",")
}

/// An action at its offset from the start of the run.
///
/// ```
/// use quorate::testkit::torture::{Schedule, Torture};
/// let schedule = Schedule::plan(&Torture::default());
/// for step in schedule.steps().iter().take(3) {
///     println!("{:?}: {:?}", step.at, step.action);
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// When, from the start of the run (whole milliseconds).
    pub at: Duration,
    /// What.
    pub action: Action,
}

/// The whole plan of a run, in order of offset. Printed with `{}` in the
/// text form that [`str::parse`] reads back.
///
/// ```
/// use quorate::testkit::torture::{Schedule, Torture};
/// let schedule = Schedule::plan(&Torture::default());
/// let text = schedule.to_string();
/// assert_eq!(text.parse::<Schedule>().unwrap().steps().len(), schedule.steps().len());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schedule {
    steps: Vec<Step>,
}

impl Schedule {
    /// The schedule of `torture`: a pure function of its seed, node and
    /// worker counts, duration and TTL.
    ///
    /// ```
    /// use quorate::testkit::torture::{Schedule, Torture};
    /// let schedule = Schedule::plan(&Torture { seed: 7, ..Torture::default() });
    /// assert!(!schedule.steps().is_empty());
    /// ```
    pub fn plan(torture: &Torture) -> Schedule {
        Planner::new(torture).plan()
    }

    /// The steps, in order of offset.
    ///
    /// ```
    /// use quorate::testkit::torture::{Schedule, Torture};
    /// let schedule = Schedule::plan(&Torture::default());
    /// assert!(schedule.steps().windows(2).all(|w| w[0].at <= w[1].at));
    /// ```
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Checks that every node, client and newcomer slot the schedule names
    /// exists in a run of `torture`'s settings.
    ///
    /// # Errors
    ///
    /// The first step naming something that does not exist.
    ///
    /// ```
    /// use quorate::testkit::torture::{Schedule, Torture};
    /// let torture = Torture::default();
    /// assert!(Schedule::plan(&torture).fits(&torture).is_ok());
    /// ```
    pub fn fits(&self, torture: &Torture) -> Result<(), String> {
        let layout = Layout::of(torture);
        for step in &self.steps {
            let (nodes, clients, slot) = step.action.indices();
            let fits = nodes.iter().all(|&n| n < torture.nodes)
                && clients.iter().all(|&c| c < layout.clients())
                && slot.is_none_or(|s| s < NEWCOMER_SLOTS);
            if !fits {
                return Err(format!(
                    "step `{}` does not fit a run of {} nodes and {} clients",
                    step_line(step),
                    torture.nodes,
                    layout.clients()
                ));
            }
        }
        Ok(())
    }
}

fn step_line(step: &Step) -> String {
    format!("{} {}", step.at.as_millis(), step.action)
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "# quorate torture schedule: <offset ms> <action> <args>")?;
        for step in &self.steps {
            writeln!(f, "{}", step_line(step))?;
        }
        Ok(())
    }
}

/// A line of a schedule file that does not parse.
///
/// ```
/// let e = "oops".parse::<quorate::testkit::torture::Schedule>().unwrap_err();
/// eprintln!("{e}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The line number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "schedule line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for ParseError {}

impl FromStr for Schedule {
    type Err = ParseError;

    /// Reads the text form back; steps must come in order of offset.
    fn from_str(text: &str) -> Result<Schedule, ParseError> {
        let mut steps: Vec<Step> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let error = |reason: String| ParseError {
                line: i + 1,
                reason,
            };
            let step = parse_step(line).map_err(error)?;
            if steps.last().is_some_and(|last| last.at > step.at) {
                return Err(error("steps must come in order of offset".into()));
            }
            steps.push(step);
        }
        Ok(Schedule { steps })
    }
}

fn parse_step(line: &str) -> Result<Step, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (at, verb, args) = match words.as_slice() {
        [at, verb, args @ ..] => (number(at)?, *verb, args),
        _ => return Err(format!("`{line}` is not `<offset ms> <action> <args>`")),
    };
    let action = match (verb, args) {
        ("kill", [n]) => Action::Kill(index(n)?),
        ("restart", [n]) => Action::Restart(index(n)?),
        ("pause", [n]) => Action::Pause(index(n)?),
        ("resume", [n]) => Action::Resume(index(n)?),
        ("restart-empty", [n]) => Action::RestartEmpty(index(n)?),
        ("partition", [n, cs]) => Action::Partition(index(n)?, indices(cs)?),
        ("reconnect", [n, cs]) => Action::Reconnect(index(n)?, indices(cs)?),
        ("latency", [n, ms]) => Action::Latency(index(n)?, number(ms)?),
        ("no-latency", [n]) => Action::NoLatency(index(n)?),
        ("drop-replies", [n, cs]) => Action::DropReplies(index(n)?, indices(cs)?),
        ("deliver-replies", [n, cs]) => Action::DeliverReplies(index(n)?, indices(cs)?),
        ("flush-scripts", [n]) => Action::FlushScripts(index(n)?),
        ("view", [c, ns]) => Action::View(index(c)?, indices(ns)?),
        ("clear-view", [c, ns]) => Action::ClearView(index(c)?, indices(ns)?),
        ("newcomer", [slot, ms]) => Action::Newcomer(index(slot)?, number(ms)?),
        _ => return Err(format!("unknown action or wrong arguments: `{line}`")),
    };
    Ok(Step {
        at: Duration::from_millis(at),
        action,
    })
}

fn number(word: &str) -> Result<u64, String> {
    word.parse()
        .map_err(|_| format!("{word:?} is not a number"))
}

fn index(word: &str) -> Result<usize, String> {
    word.parse()
        .map_err(|_| format!("{word:?} is not an index"))
}

fn indices(word: &str) -> Result<Vec<usize>, String> {
    word.split(',').map(index).collect()
}

/// How long a phase of each kind lasts: views, storm (whose opening
/// restarts keep two nodes busy for a while).
const VIEWS_MS: (u64, u64) = (3000, 6000);
const STORM_MS: (u64, u64) = (5000, 9000);
/// A newcomer's proxies keep its view a little past its last operation.
const NEWCOMER_MARGIN: Duration = Duration::from_millis(300);

/// A planned stretch of faultiness.
#[derive(Debug, Clone)]
struct Span {
    from: Duration,
    to: Duration,
    effect: Effect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Effect {
    /// Every client loses the node: killed, paused or slow.
    Node(usize),
    /// Restarted empty at the span's start: clients that knew the node
    /// quarantine it.
    Restarted(usize),
    /// These clients lose the node: partitioned, or its replies lost.
    Clients(usize, Vec<usize>),
    /// One client's own view: it loses these nodes.
    View(usize, Vec<usize>),
}

impl Span {
    fn overlaps(&self, from: Duration, to: Duration) -> bool {
        self.from < to && from < self.to
    }

    /// The node a node fault occupies (one such fault per node at a time).
    fn node(&self) -> Option<usize> {
        match &self.effect {
            Effect::Node(n) | Effect::Restarted(n) | Effect::Clients(n, _) => Some(*n),
            Effect::View(..) => None,
        }
    }

    /// Nodes this span takes from `client`, born at `born`, at an instant
    /// within the span.
    fn takes(&self, client: usize, born: Duration) -> Vec<usize> {
        match &self.effect {
            Effect::Node(n) => vec![*n],
            Effect::Restarted(n) if self.from >= born => vec![*n],
            Effect::Clients(n, cs) if cs.contains(&client) => vec![*n],
            Effect::View(c, ns) if *c == client => ns.clone(),
            _ => Vec::new(),
        }
    }
}

/// A newcomer's life, during which it is a client like the others.
#[derive(Debug, Clone)]
struct Life {
    slot: usize,
    client: usize,
    from: Duration,
    to: Duration,
}

struct Planner {
    rng: Rng,
    nodes: usize,
    minority: usize,
    layout: Layout,
    duration: Duration,
    /// How long a node restarted empty counts as faulty.
    restarted_for: Duration,
    spans: Vec<Span>,
    lives: Vec<Life>,
    steps: Vec<Step>,
    /// The views of workers in the last views phase.
    worker_views: Vec<Vec<usize>>,
}

impl Planner {
    fn new(torture: &Torture) -> Planner {
        Planner {
            rng: Rng::new(torture.seed ^ 0x5eed_5c4e_d01e),
            nodes: torture.nodes,
            minority: torture.nodes.saturating_sub(1) / 2,
            layout: Layout::of(torture),
            duration: torture.duration,
            restarted_for: restarted_for(torture),
            spans: Vec::new(),
            lives: Vec::new(),
            steps: Vec::new(),
            worker_views: Vec::new(),
        }
    }

    fn plan(mut self) -> Schedule {
        let mut from = Duration::ZERO;
        let mut views = true;
        while from < self.duration {
            let (lo, hi) = if views { VIEWS_MS } else { STORM_MS };
            let to = (from + self.rng.millis(lo, hi)).min(self.duration);
            if views {
                self.views(from, to);
            } else {
                self.storm(from, to);
            }
            views = !views;
            from = to;
        }
        let mut steps = self.steps;
        // Whole milliseconds, as the text form keeps them; stable, so a view
        // still comes before the newcomer it belongs to.
        for step in &mut steps {
            step.at = Duration::from_millis(step.at.as_millis() as u64);
        }
        steps.sort_by_key(|s| s.at);
        Schedule { steps }
    }

    fn step(&mut self, at: Duration, action: Action) {
        self.steps.push(Step { at, action });
    }

    /// Most clients get their own view of the nodes for most of the phase,
    /// most often cut off from a whole minority; newcomers come and go.
    ///
    /// Each barrier crew is often split on purpose: two members cut off
    /// from different minorities, the third seeing every node. The first two
    /// then complete their generation on too few nodes for either to learn
    /// it, and the third arrival lands on every node that still waits.
    fn views(&mut self, from: Duration, to: Duration) {
        if self.minority == 0 {
            return;
        }
        self.worker_views.clear();
        let mut split = Vec::new();
        for crew in 0..super::BARRIER_CREWS {
            if self.rng.chance(85) {
                split.extend(self.barrier_split(crew));
            }
        }
        for client in 0..self.layout.faultable() {
            let start = from + self.rng.millis(0, 600);
            let end = to.saturating_sub(self.rng.millis(0, 500));
            let size = if self.rng.chance(70) {
                self.minority
            } else {
                1 + self.rng.below(self.minority as u64) as usize
            };
            let mut nodes = self.pick(size, &[]);
            let chosen = split.iter().find(|(c, _)| *c == client);
            match chosen {
                Some((_, view)) => nodes.clone_from(view),
                None if !self.rng.chance(85) => continue,
                None => {}
            }
            while end > start && !nodes.is_empty() {
                let span = Span {
                    from: start,
                    to: end,
                    effect: Effect::View(client, nodes.clone()),
                };
                if self.try_add(start, end, vec![span]) {
                    if client < self.layout.workers() {
                        self.worker_views.push(nodes.clone());
                    }
                    self.step(start, Action::View(client, nodes.clone()));
                    self.step(end, Action::ClearView(client, nodes));
                    break;
                }
                nodes.pop();
            }
        }
        let mut t = from + self.rng.millis(300, 1500);
        while t < to {
            self.newcomer(t, false);
            t += self.rng.millis(1000, 3000);
        }
    }

    /// The split views of a barrier crew: one member sees every node, two
    /// are cut off from different minorities.
    fn barrier_split(&mut self, crew: usize) -> Vec<(usize, Vec<usize>)> {
        let crew: Vec<usize> = (0..super::BARRIER_CREW)
            .map(|m| self.layout.barrier(crew, m))
            .collect();
        let sees_all = crew[self.rng.below(crew.len() as u64) as usize];
        let first = self.pick(self.minority, &[]);
        let mut second = self.pick(self.minority, &[]);
        while second.iter().all(|n| first.contains(n)) && self.nodes > self.minority {
            second = self.pick(self.minority, &[]);
        }
        let mut views = vec![first, second].into_iter();
        crew.into_iter()
            .map(|c| {
                (
                    c,
                    if c == sees_all {
                        Vec::new()
                    } else {
                        views.next().unwrap_or_default()
                    },
                )
            })
            .collect()
    }

    /// One fault at a time on a free node, opening with one or two nodes
    /// restarted empty and a newcomer right after each: the leases of the
    /// views phase live on exactly the nodes their holders reached, and a
    /// newcomer trusts whatever it meets first. The opening restarts hit
    /// nodes that one worker reached in the views phase, where its leases
    /// are.
    fn storm(&mut self, from: Duration, to: Duration) {
        let mut t = from + self.rng.millis(50, 300);
        let mut targets = self.opening_targets();
        let first = targets.remove(0);
        if self.restart_empty(t, first) {
            self.after_restart(t);
        }
        if let Some(&second) = targets.first().filter(|_| self.rng.chance(50)) {
            t += self.rng.millis(100, 400);
            if self.restart_empty(t, second) {
                self.after_restart(t);
            }
        }
        loop {
            t += self.rng.millis(150, 600);
            if t >= to {
                return;
            }
            let kind = self.rng.below(7);
            let length = self.rng.millis(300, 2500);
            let occupied = match kind {
                0 => length + self.restarted_for,
                5 => self.restarted_for,
                _ => length,
            };
            let Some(node) = self.free_node(t, t + occupied) else {
                continue;
            };
            match kind {
                0 => self.kill(t, length, node),
                1 => {
                    let (inject, heal) = (Action::Pause(node), Action::Resume(node));
                    self.paired(t, length, Effect::Node(node), inject, heal);
                }
                2 => {
                    let clients = self.some_clients();
                    let (inject, heal) = (
                        Action::Partition(node, clients.clone()),
                        Action::Reconnect(node, clients.clone()),
                    );
                    self.paired(t, length, Effect::Clients(node, clients), inject, heal);
                }
                3 => {
                    let ms = 5 + self.rng.below(35);
                    let (inject, heal) = (Action::Latency(node, ms), Action::NoLatency(node));
                    self.paired(t, length, Effect::Node(node), inject, heal);
                }
                4 => {
                    let clients = self.some_clients();
                    let (inject, heal) = (
                        Action::DropReplies(node, clients.clone()),
                        Action::DeliverReplies(node, clients.clone()),
                    );
                    self.paired(t, length, Effect::Clients(node, clients), inject, heal);
                }
                5 => {
                    if self.restart_empty(t, node) {
                        self.after_restart(t);
                    }
                }
                _ => self.step(t, Action::FlushScripts(node)),
            }
        }
    }

    fn paired(
        &mut self,
        t: Duration,
        length: Duration,
        effect: Effect,
        inject: Action,
        heal: Action,
    ) {
        let span = Span {
            from: t,
            to: t + length,
            effect,
        };
        if self.try_add(t, t + length, vec![span]) {
            self.step(t, inject);
            self.step(t + length, heal);
        }
    }

    /// Killed for `length`, then started again empty: faulty until the
    /// quarantine is over.
    fn kill(&mut self, t: Duration, length: Duration, node: usize) {
        let back = t + length;
        let spans = vec![
            Span {
                from: t,
                to: back,
                effect: Effect::Node(node),
            },
            Span {
                from: back,
                to: back + self.restarted_for,
                effect: Effect::Restarted(node),
            },
        ];
        if self.try_add(t, back + self.restarted_for, spans) {
            self.step(t, Action::Kill(node));
            self.step(back, Action::Restart(node));
            self.after_restart(back);
        }
    }

    /// Restarts `node` empty at `t` if the rule allows; true if planned.
    fn restart_empty(&mut self, t: Duration, node: usize) -> bool {
        let until = t + self.restarted_for;
        if self.busy(node, t, until) {
            return false;
        }
        let span = Span {
            from: t,
            to: until,
            effect: Effect::Restarted(node),
        };
        let planned = self.try_add(t, until, vec![span]);
        if planned {
            self.step(t, Action::RestartEmpty(node));
        }
        planned
    }

    /// Two distinct nodes to restart at a storm's opening: among the nodes a
    /// worker reached in the last views phase when there is such a view of
    /// a whole minority, otherwise any.
    fn opening_targets(&mut self) -> Vec<usize> {
        let cut: Vec<Vec<usize>> = self
            .worker_views
            .iter()
            .filter(|v| v.len() == self.minority)
            .cloned()
            .collect();
        let hidden = match cut.len() {
            0 => Vec::new(),
            n => cut[self.rng.below(n as u64) as usize].clone(),
        };
        let mut nodes = self.pick(self.nodes, &hidden);
        if nodes.len() < 2 {
            nodes = self.pick(self.nodes, &[]);
        }
        nodes
    }

    /// A restart is followed at once by a newcomer (when a slot is free):
    /// until the holders renew, their leases may live on fewer nodes than a
    /// majority, and a newcomer trusts the restarted node.
    fn after_restart(&mut self, t: Duration) {
        let at = t + self.rng.millis(0, 30);
        self.newcomer(at, true);
    }

    /// A newcomer in a free slot at `at`. One that follows a restart
    /// reaches every node (a view could only cost it votes); others are cut
    /// off from up to a minority half the time, fewer if the rule says so.
    fn newcomer(&mut self, at: Duration, after_restart: bool) {
        let life = self.rng.millis(800, 2000);
        let size = if after_restart || self.rng.chance(50) {
            0
        } else {
            1 + self.rng.below(self.minority.max(1) as u64) as usize
        };
        let mut nodes = self.pick(size, &[]);
        let to = at + life + NEWCOMER_MARGIN;
        let free = (0..NEWCOMER_SLOTS).find(|&slot| {
            !self
                .lives
                .iter()
                .any(|l| l.slot == slot && l.from < to && at < l.to)
        });
        let Some(slot) = free.filter(|_| at < self.duration) else {
            return;
        };
        let client = self.layout.newcomer(slot);
        self.lives.push(Life {
            slot,
            client,
            from: at,
            to,
        });
        loop {
            let view = (!nodes.is_empty()).then(|| Span {
                from: at,
                to,
                effect: Effect::View(client, nodes.clone()),
            });
            if self.try_add(at, to, view.into_iter().collect()) {
                if !nodes.is_empty() {
                    self.step(at, Action::View(client, nodes.clone()));
                    self.step(to, Action::ClearView(client, nodes));
                }
                self.step(at, Action::Newcomer(slot, life.as_millis() as u64));
                return;
            }
            if nodes.pop().is_none() {
                self.lives.pop();
                return;
            }
        }
    }

    /// Each faultable client with even odds, at least one.
    fn some_clients(&mut self) -> Vec<usize> {
        let all = self.layout.faultable();
        let picked: Vec<usize> = (0..all).filter(|_| self.rng.chance(50)).collect();
        if picked.is_empty() {
            vec![self.rng.below(all as u64) as usize]
        } else {
            picked
        }
    }

    /// `size` distinct random nodes, none of `spare`.
    fn pick(&mut self, size: usize, spare: &[usize]) -> Vec<usize> {
        let mut nodes: Vec<usize> = (0..self.nodes).filter(|n| !spare.contains(n)).collect();
        for i in (1..nodes.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            nodes.swap(i, j);
        }
        nodes.truncate(size);
        nodes
    }

    /// A random node with no node fault over `[from, to)`.
    fn free_node(&mut self, from: Duration, to: Duration) -> Option<usize> {
        let free: Vec<usize> = (0..self.nodes)
            .filter(|&n| !self.busy(n, from, to))
            .collect();
        (!free.is_empty()).then(|| free[self.rng.below(free.len() as u64) as usize])
    }

    fn busy(&self, node: usize, from: Duration, to: Duration) -> bool {
        self.spans
            .iter()
            .any(|s| s.node() == Some(node) && s.overlaps(from, to))
    }

    /// Adds `spans` (all within `[from, to)`) if every client alive still
    /// reaches a majority over that stretch; otherwise adds nothing.
    fn try_add(&mut self, from: Duration, to: Duration, spans: Vec<Span>) -> bool {
        let kept = self.spans.len();
        self.spans.extend(spans);
        let holds = self.majority_reachable(from, to);
        if !holds {
            self.spans.truncate(kept);
        }
        holds
    }

    /// The rule over `[from, to)`. Faults only begin at span starts, so it
    /// is enough to look at `from` and at every start within the stretch.
    fn majority_reachable(&self, from: Duration, to: Duration) -> bool {
        let spans: Vec<&Span> = self.spans.iter().filter(|s| s.overlaps(from, to)).collect();
        let lives: Vec<&Life> = self
            .lives
            .iter()
            .filter(|l| l.from < to && from < l.to)
            .collect();
        let mut points = vec![from];
        points.extend(spans.iter().map(|s| s.from).filter(|&t| t > from && t < to));
        points.extend(lives.iter().map(|l| l.from).filter(|&t| t > from && t < to));
        points.iter().all(|&x| {
            let fixed = (0..self.layout.faultable()).map(|c| (c, Duration::ZERO));
            let newcomers = lives
                .iter()
                .filter(|l| l.from <= x && x < l.to)
                .map(|l| (l.client, l.from));
            fixed.chain(newcomers).all(|(client, born)| {
                let lost: BTreeSet<usize> = spans
                    .iter()
                    .filter(|s| s.from <= x && x < s.to)
                    .flat_map(|s| s.takes(client, born))
                    .collect();
                lost.len() <= self.minority
            })
        })
    }
}

/// How long a node restarted empty counts as faulty for the clients that
/// knew it: their quarantine (the longest TTL, `max_ttl`, plus drift), plus
/// a second since the server's uptime is counted in whole seconds, plus a
/// margin.
fn restarted_for(torture: &Torture) -> Duration {
    let max_ttl = torture.max_ttl();
    let quarantine = max_ttl + max_ttl.mul_f64(crate::Config::DEFAULT_DRIFT_FACTOR);
    Duration::from_millis(quarantine.as_millis() as u64 + 1201)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn torture(seed: u64) -> Torture {
        Torture {
            seed,
            duration: Duration::from_secs(45),
            ..Torture::default()
        }
    }

    #[test]
    fn the_same_seed_plans_the_same_schedule() {
        let a = Schedule::plan(&torture(7));
        assert_eq!(a, Schedule::plan(&torture(7)));
        assert!(a.steps().len() > 50, "{a}");
        assert_ne!(a, Schedule::plan(&torture(8)));
    }

    #[test]
    fn the_schedule_depends_on_the_settings() {
        let five = Schedule::plan(&torture(7));
        let three = Schedule::plan(&Torture {
            nodes: 3,
            ..torture(7)
        });
        assert_ne!(five, three);
        assert!(three.fits(&torture(7)).is_ok());
        assert!(
            five.fits(&Torture {
                nodes: 3,
                ..torture(7)
            })
            .is_err()
        );
        // One node: no fault may leave it unreachable, only flushes.
        let one = Schedule::plan(&Torture {
            nodes: 1,
            ..torture(7)
        });
        let harmless = |a: &Action| matches!(a, Action::FlushScripts(0) | Action::Newcomer(..));
        assert!(one.steps().iter().all(|s| harmless(&s.action)), "{one}");
    }

    #[test]
    fn a_schedule_reads_back_from_its_text() {
        let planned = Schedule::plan(&torture(3));
        let text = planned.to_string();
        assert_eq!(text.parse::<Schedule>(), Ok(planned));
        let every = "# every action\n\
            1 kill 0\n2 restart 0\n3 pause 1\n4 resume 1\n5 restart-empty 2\n\
            6 partition 3 0,4\n7 reconnect 3 0,4\n8 latency 4 25\n9 no-latency 4\n\
            10 drop-replies 0 1\n11 deliver-replies 0 1\n12 flush-scripts 1\n\
            13 view 5 0,2\n14 clear-view 5 0,2\n15 newcomer 1 900\n";
        let schedule: Schedule = every.parse().unwrap();
        assert_eq!(schedule.steps().len(), 15);
        assert_eq!(schedule.to_string().lines().skip(1).count(), 15);
        assert!(schedule.fits(&torture(1)).is_ok());
    }

    #[test]
    fn bad_schedule_lines_name_their_line() {
        for (text, line) in [
            ("5 kill\n", 1),
            ("# c\n5 explode 1\n", 2),
            ("5 kill x\n", 1),
            ("9 kill 1\n5 kill 2\n", 2),
        ] {
            let e = text.parse::<Schedule>().unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
        }
    }

    #[test]
    fn every_heal_follows_its_fault() {
        let schedule = Schedule::plan(&torture(11));
        let steps = schedule.steps();
        for (i, step) in steps.iter().enumerate() {
            let opener = match &step.action {
                Action::Restart(n) => Action::Kill(*n),
                Action::Resume(n) => Action::Pause(*n),
                Action::Reconnect(n, cs) => Action::Partition(*n, cs.clone()),
                Action::DeliverReplies(n, cs) => Action::DropReplies(*n, cs.clone()),
                Action::ClearView(c, ns) => Action::View(*c, ns.clone()),
                Action::NoLatency(_) => continue,
                _ => continue,
            };
            assert!(
                steps[..i].iter().any(|s| s.action == opener),
                "{} has no opener",
                step_line(step)
            );
        }
    }

    /// The faults in force, replayed from the steps alone.
    #[derive(Default)]
    struct World {
        /// Killed, paused or slow.
        down: BTreeSet<usize>,
        restarts: Vec<(usize, Duration)>,
        /// Nodes each client is cut off from (partitions, lost replies,
        /// views), with repeats.
        cut: std::collections::BTreeMap<usize, Vec<usize>>,
        /// Newcomers: client, born, gone.
        newcomers: Vec<(usize, Duration, Duration)>,
    }

    impl World {
        fn apply(&mut self, layout: Layout, step: &Step) {
            let uncut = |cut: &mut Vec<usize>, n: usize| {
                let i = cut
                    .iter()
                    .position(|&m| m == n)
                    .expect("healed what was cut");
                cut.remove(i);
            };
            match &step.action {
                Action::Kill(n) | Action::Pause(n) | Action::Latency(n, _) => {
                    assert!(self.down.insert(*n), "one fault per node");
                }
                Action::Resume(n) | Action::NoLatency(n) => {
                    self.down.remove(n);
                }
                Action::Restart(n) => {
                    self.down.remove(n);
                    self.restarts.push((*n, step.at));
                }
                Action::RestartEmpty(n) => self.restarts.push((*n, step.at)),
                Action::Partition(n, cs) | Action::DropReplies(n, cs) => {
                    cs.iter()
                        .for_each(|c| self.cut.entry(*c).or_default().push(*n));
                }
                Action::Reconnect(n, cs) | Action::DeliverReplies(n, cs) => {
                    cs.iter()
                        .for_each(|c| uncut(self.cut.get_mut(c).unwrap(), *n));
                }
                Action::View(c, ns) => self.cut.entry(*c).or_default().extend(ns),
                Action::ClearView(c, ns) => {
                    ns.iter()
                        .for_each(|n| uncut(self.cut.get_mut(c).unwrap(), *n));
                }
                Action::Newcomer(slot, ms) => {
                    let gone = step.at + Duration::from_millis(*ms) + NEWCOMER_MARGIN;
                    self.newcomers.push((layout.newcomer(*slot), step.at, gone));
                }
                Action::FlushScripts(_) => {}
            }
        }

        fn lost(&self, client: usize, born: Duration, x: Duration, quarantine: Duration) -> usize {
            let mut lost = self.down.clone();
            for &(n, at) in &self.restarts {
                if at >= born && at <= x && x < at + quarantine {
                    lost.insert(n);
                }
            }
            lost.extend(self.cut.get(&client).into_iter().flatten());
            lost.len()
        }
    }

    #[test]
    fn every_client_reaches_a_majority_on_the_planned_timeline() {
        for seed in 1..8 {
            let t = torture(seed);
            let layout = Layout::of(&t);
            let quarantine = restarted_for(&t);
            let schedule = Schedule::plan(&t);
            let mut world = World::default();
            let steps = schedule.steps();
            for (i, step) in steps.iter().enumerate() {
                world.apply(layout, step);
                if steps.get(i + 1).is_some_and(|next| next.at == step.at) {
                    continue;
                }
                let x = step.at;
                let fixed = (0..layout.faultable()).map(|c| (c, Duration::ZERO));
                let newcomers = world
                    .newcomers
                    .iter()
                    .filter(|&&(_, born, gone)| born <= x && x < gone)
                    .map(|&(c, born, _)| (c, born));
                for (client, born) in fixed.chain(newcomers).collect::<Vec<_>>() {
                    let lost = world.lost(client, born, x, quarantine);
                    assert!(
                        lost <= (t.nodes - 1) / 2,
                        "seed {seed}: client {client} cut off from {lost} nodes at {}",
                        step_line(step)
                    );
                }
            }
        }
    }

    #[test]
    fn storms_open_with_a_restart_and_newcomers_follow_restarts() {
        let schedule = Schedule::plan(&torture(5));
        let steps = schedule.steps();
        let restarts = steps
            .iter()
            .filter(|s| matches!(s.action, Action::RestartEmpty(_)))
            .count();
        let newcomers = steps
            .iter()
            .filter(|s| matches!(s.action, Action::Newcomer(..)))
            .count();
        let views = steps
            .iter()
            .filter(|s| matches!(s.action, Action::View(..)))
            .count();
        assert!(restarts >= 3 && newcomers >= 5 && views >= 10, "{schedule}");
    }
}
