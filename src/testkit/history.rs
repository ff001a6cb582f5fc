//! A history checker: record what the primitives did, then check safety.
//!
//! Torture runs and fault scenarios record every grant, extension, release,
//! count-down, observation, arrival and barrier outcome in a [`History`],
//! then call [`History::check`] with a [`Spec`] naming each resource and
//! what it is. Each check is a pure function over the recorded events:
//!
//! - **mutex**: the windows of two leases never overlap.
//! - **reentrant**: the windows of two different owners never overlap.
//! - **semaphore**: the permits of the leases valid at one instant never
//!   sum to more than the limit.
//! - **fencing**: a later lease never carries a smaller or equal token
//!   (reentrant: the holds of one holding share their token; a semaphore of
//!   several permits: only against leases granted before the acquire was
//!   invoked, see [`History::acquire_invoked`]).
//! - **latch**: it opens only after `count` distinct count-downs were
//!   invoked, and once seen open is never seen closed again.
//! - **barrier**: each generation releases exactly `parties` waiters, with
//!   one leader, none before the last of them arrived; a broken wait is
//!   never also released. Waits that ended without a known outcome may
//!   account for missing releases or a missing leader, never for extra ones.
//! - **claim**: what a guard said matches what the servers held. A lease's
//!   window is only as good as the keys behind it: a guard that says it is
//!   valid until `D` while fewer than a majority of nodes keep its key that
//!   long lets a second holder in, even if the run never shows the overlap.
//!   [`sampled`](History::sampled) records the guard's deadline next to
//!   each node's expiry of the key, read straight from the servers.
//! - **lost**: once [`lost()`](crate::Lease::lost) fired, the lease is
//!   never reported valid again.
//!
//! # Times come from the library
//!
//! All times are [`Instant`]s of the one monotonic clock, and a lease's
//! window is what the library said, not when a worker got round to logging:
//! record `granted` right after the acquire returned and the guard's own
//! [`deadline()`](crate::Lease::deadline). A worker paused before it
//! logs then cannot fake an overlap (its deadline does not move) nor hide
//! one (the deadline says how long the library let it act). The window of a
//! lease is `[granted, min(latest deadline, release))`, half-open like
//! [`is_valid`](crate::Lease::is_valid).
//!
//! Two habits keep the record honest:
//!
//! - The keeper task of an auto-extended lease renews it unseen: record
//!   [`extended`](History::extended) with `guard.deadline()` before
//!   releasing, or the window looks shorter than it was.
//! - Record [`released`](History::released) with the instant *before*
//!   calling `release()`: the holder stops acting there.
//!
//! For the same reason observations take the instant that makes a check
//! sound: an *open* latch observation the instant the call returned, a
//! *closed* one the instant it was invoked (see
//! [`latch_observed`](History::latch_observed)).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

mod barrier;
mod claims;
mod latch;
mod leases;
#[cfg(test)]
mod tests;
mod timeline;

/// A thread-safe record of what the primitives did, cheap to clone: clones
/// share one record. Use one per run, from every task. Printed with `{}`,
/// it is a timeline of every event, for a failing test to show.
///
/// ```
/// use quorate::testkit::{History, LeaseKind, Spec};
/// use std::time::{Duration, Instant};
///
/// let history = History::new();
/// let now = Instant::now();
/// let id = history.lease(LeaseKind::Mutex, "orders", "a", 7, 1, now, now + Duration::from_secs(1));
/// history.released(id, now + Duration::from_millis(500));
/// assert!(history.check(&Spec::new().mutex("orders")).is_empty());
/// ```
#[derive(Clone, Default)]
pub struct History {
    log: Arc<Mutex<Log>>,
}

#[derive(Debug, Default)]
struct Log {
    events: Vec<Event>,
    /// Leases recorded so far: the next [`LeaseId`].
    leases: usize,
}

/// Identifies a lease recorded in a [`History`], to record its extensions
/// and release.
///
/// ```
/// use quorate::testkit::{History, LeaseKind, Spec};
/// use std::time::{Duration, Instant};
///
/// let history = History::new();
/// let now = Instant::now();
/// let id = history.lease(LeaseKind::Mutex, "orders", "a", None, 1, now, now + Duration::from_secs(1));
/// history.released(id, now);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(usize);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What kind of guard a lease came from.
///
/// ```
/// use quorate::testkit::{History, LeaseKind, Spec};
/// use std::time::{Duration, Instant};
///
/// let history = History::new();
/// let now = Instant::now();
/// history.lease(LeaseKind::Semaphore, "exports", "a", None, 2, now, now + Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseKind {
    /// A [`MutexGuard`](crate::MutexGuard).
    Mutex,
    /// A [`SemaphorePermit`](crate::SemaphorePermit), of one or more permits.
    Semaphore,
    /// A [`ReentrantGuard`](crate::ReentrantGuard): one hold of an owner.
    Reentrant,
}

/// What one node held for a lease, read straight from the server (not
/// through a client's proxies), for [`History::sampled`].
///
/// ```
/// use quorate::testkit::NodeHold;
/// let gone = NodeHold::Missing;
/// assert_ne!(gone, NodeHold::Unreachable);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeHold {
    /// The node holds the lease for its owner until this instant: the key's
    /// expiry (`PEXPIRETIME`, or the earliest slot score of a semaphore)
    /// turned into an [`Instant`]. `None`: the key has no expiry.
    Until(Option<Instant>),
    /// The node does not hold it: the key is missing or names another owner.
    Missing,
    /// The node did not answer (killed, paused): it may still hold it, and
    /// it counts as holding it, since it grants nothing to anyone meanwhile.
    Unreachable,
}

/// A guard's claim next to what the servers held, for
/// [`History::sampled`].
///
/// Take it in this order, or the sampling itself makes false alarms: read
/// the guard's [`deadline()`](crate::Lease::deadline), check
/// [`is_valid()`](crate::Lease::is_valid), and only then read the
/// nodes. A renewal landing in between then only makes the servers look
/// better than the claim, never worse.
///
/// ```
/// use quorate::testkit::{History, LeaseKind, Spec};
/// use std::time::{Duration, Instant};
///
/// let history = History::new();
/// let now = Instant::now();
/// use quorate::testkit::{NodeHold, Sample};
/// let deadline = now + Duration::from_secs(1);
/// let id = history.lease(LeaseKind::Mutex, "orders", "a", None, 1, now, deadline);
/// history.sampled(id, Sample { deadline, at: now, read_by: now, nodes: vec![NodeHold::Until(Some(deadline))] });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The guard's deadline, read first, while the guard was valid.
    pub deadline: Instant,
    /// When the deadline was read.
    pub at: Instant,
    /// When the last node answered (or timed out). A sample read after its
    /// deadline is not checked: a missing key may then have expired in time.
    pub read_by: Instant,
    /// What each node held, by node index.
    pub nodes: Vec<NodeHold>,
}

/// One recorded call. Private: checks read it, tests see [`Violation`]s.
#[derive(Debug, Clone)]
enum Event {
    Lease(LeaseRecord),
    Invoked {
        id: LeaseId,
        at: Instant,
    },
    Extended {
        id: LeaseId,
        deadline: Instant,
    },
    Released {
        id: LeaseId,
        at: Instant,
    },
    Lost {
        id: LeaseId,
        at: Instant,
    },
    Sampled {
        id: LeaseId,
        sample: Sample,
    },
    NodeLost {
        node: usize,
        at: Instant,
    },
    Failed {
        resource: String,
        op: String,
        error: String,
        at: Instant,
    },
    CountDown {
        resource: String,
        id: String,
        invoked: Instant,
        ok: bool,
    },
    LatchObserved {
        resource: String,
        open: bool,
        at: Instant,
    },
    Arrived {
        resource: String,
        party: String,
        invoked: Instant,
    },
    BarrierReleased {
        resource: String,
        party: String,
        generation: u64,
        leader: bool,
        at: Instant,
    },
    BarrierBroken {
        resource: String,
        party: String,
        at: Instant,
    },
    BarrierUnknown {
        resource: String,
        party: String,
        at: Instant,
    },
}

#[derive(Debug, Clone)]
struct LeaseRecord {
    id: LeaseId,
    kind: LeaseKind,
    resource: String,
    holder: String,
    token: Option<u64>,
    permits: u32,
    granted: Instant,
    deadline: Instant,
}

impl Event {
    /// The latch or barrier the event is about; `None` for lease events,
    /// which are matched through their lease ids.
    fn latch_or_barrier(&self) -> Option<&str> {
        match self {
            Event::CountDown { resource, .. }
            | Event::LatchObserved { resource, .. }
            | Event::Arrived { resource, .. }
            | Event::BarrierReleased { resource, .. }
            | Event::BarrierBroken { resource, .. }
            | Event::BarrierUnknown { resource, .. } => Some(resource),
            _ => None,
        }
    }

    /// The earliest instant the event mentions, for the report's time base.
    fn earliest(&self) -> Instant {
        match self {
            Event::Lease(l) => l.granted.min(l.deadline),
            Event::Extended { deadline, .. } => *deadline,
            Event::Sampled { sample, .. } => sample.at.min(sample.deadline),
            Event::Invoked { at, .. }
            | Event::Released { at, .. }
            | Event::Lost { at, .. }
            | Event::NodeLost { at, .. }
            | Event::Failed { at, .. }
            | Event::LatchObserved { at, .. }
            | Event::BarrierReleased { at, .. }
            | Event::BarrierBroken { at, .. }
            | Event::BarrierUnknown { at, .. } => *at,
            Event::CountDown { invoked, .. } | Event::Arrived { invoked, .. } => *invoked,
        }
    }
}

impl History {
    /// An empty history.
    ///
    /// ```
    /// let history = quorate::testkit::History::new();
    /// assert!(history.is_empty());
    /// ```
    pub fn new() -> History {
        History::default()
    }

    /// Records a lease at its grant: `token` is the guard's fencing token
    /// (`None` when the holder never asked for it: it was never issued, and
    /// the fencing check leaves the lease out), `permits` how many it holds
    /// (1 for a mutex or a reentrant hold),
    /// `granted` the instant the acquire returned and `deadline` the
    /// guard's [`deadline()`](crate::Lease::deadline). `holder` names
    /// the holder; for a reentrant lock it must be the owner id, since holds
    /// of one owner may overlap.
    ///
    /// ```
    /// use quorate::testkit::{History, LeaseKind, Spec};
    /// use std::time::{Duration, Instant};
    ///
    /// let history = History::new();
    /// let now = Instant::now();
    /// let id = history.lease(LeaseKind::Mutex, "orders", "worker-1", 41, 1, now, now + Duration::from_secs(10));
    /// assert_eq!(history.len(), 1);
    /// ```
    #[expect(
        clippy::too_many_arguments,
        reason = "one flat call per grant keeps worker code short"
    )]
    pub fn lease(
        &self,
        kind: LeaseKind,
        resource: &str,
        holder: &str,
        token: impl Into<Option<u64>>,
        permits: u32,
        granted: Instant,
        deadline: Instant,
    ) -> LeaseId {
        let token = token.into();
        let mut log = self.lock();
        let id = LeaseId(log.leases);
        log.leases += 1;
        log.events.push(Event::Lease(LeaseRecord {
            id,
            kind,
            resource: resource.to_owned(),
            holder: holder.to_owned(),
            token,
            permits,
            granted,
            deadline,
        }));
        id
    }

    /// Records when the acquire call that produced lease `id` was invoked.
    /// Optional; a semaphore of several permits needs it to check fencing,
    /// since concurrent acquisitions may get their tokens in either order.
    ///
    /// ```
    /// use quorate::testkit::{History, LeaseKind, Spec};
    /// use std::time::{Duration, Instant};
    ///
    /// let history = History::new();
    /// let now = Instant::now();
    /// let id = history.lease(LeaseKind::Mutex, "orders", "a", None, 1, now, now + Duration::from_secs(1));
    /// history.acquire_invoked(id, now - Duration::from_millis(2));
    /// ```
    pub fn acquire_invoked(&self, id: LeaseId, at: Instant) {
        self.push(Event::Invoked { id, at });
    }

    /// Records a successful extension: the lease is valid until `deadline`
    /// (the guard's [`deadline()`](crate::Lease::deadline) after it).
    /// The window ends at the latest deadline recorded, as the library
    /// keeps the later deadline when renewals overlap.
    ///
    /// ```
    /// use quorate::testkit::{History, LeaseKind, Spec};
    /// use std::time::{Duration, Instant};
    ///
    /// let history = History::new();
    /// let now = Instant::now();
    /// let id = history.lease(LeaseKind::Mutex, "orders", "a", None, 1, now, now + Duration::from_secs(1));
    /// history.extended(id, now + Duration::from_secs(2));
    /// ```
    pub fn extended(&self, id: LeaseId, deadline: Instant) {
        self.push(Event::Extended { id, deadline });
    }

    /// Records that release was invoked at `at`: the window ends at the
    /// earlier of `at` and the deadline.
    ///
    /// ```
    /// use quorate::testkit::{History, LeaseKind, Spec};
    /// use std::time::{Duration, Instant};
    ///
    /// let history = History::new();
    /// let now = Instant::now();
    /// let id = history.lease(LeaseKind::Mutex, "orders", "a", None, 1, now, now + Duration::from_secs(1));
    /// history.released(id, Instant::now());
    /// ```
    pub fn released(&self, id: LeaseId, at: Instant) {
        self.push(Event::Released { id, at });
    }

    /// Records that the guard's [`lost()`](crate::Lease::lost) future
    /// completed at `at` (take the instant when it completes). The window
    /// ends there: the library told the holder to stop. Stop watching before
    /// releasing, since `lost()` also completes at release.
    ///
    /// ```
    /// use quorate::testkit::{History, LeaseKind, Spec};
    /// use std::time::{Duration, Instant};
    ///
    /// let history = History::new();
    /// let now = Instant::now();
    /// let id = history.lease(LeaseKind::Mutex, "orders", "a", None, 1, now, now + Duration::from_secs(1));
    /// history.lost(id, now + Duration::from_secs(1));
    /// ```
    pub fn lost(&self, id: LeaseId, at: Instant) {
        self.push(Event::Lost { id, at });
    }

    /// Records what the servers held for lease `id` against what its guard
    /// claimed (see [`Sample`] for the order to read them in). The `claim`
    /// check fails when fewer than a majority of nodes hold the key until
    /// the claimed deadline; nodes that lost their data since the acquire
    /// was invoked ([`node_lost`](Self::node_lost)) count as holding it,
    /// since the restart quarantine keeps them out of other clients' votes.
    ///
    /// ```
    /// use quorate::testkit::{History, LeaseKind, Spec};
    /// use std::time::{Duration, Instant};
    ///
    /// let history = History::new();
    /// let now = Instant::now();
    /// use quorate::testkit::{NodeHold, Sample};
    /// let deadline = now + Duration::from_secs(1);
    /// let id = history.lease(LeaseKind::Mutex, "orders", "a", None, 1, now, deadline);
    /// history.sampled(id, Sample { deadline, at: now, read_by: now, nodes: vec![NodeHold::Missing] });
    /// ```
    pub fn sampled(&self, id: LeaseId, sample: Sample) {
        self.push(Event::Sampled { id, sample });
    }

    /// Records that node `node` (its index in the samples) lost its data at
    /// `at`: killed, or restarted without persistence. Take the instant
    /// before the kill.
    ///
    /// ```
    /// use quorate::testkit::{History, LeaseKind, Spec};
    /// use std::time::{Duration, Instant};
    ///
    /// let history = History::new();
    /// let now = Instant::now();
    /// history.node_lost(0, now); // node 0 restarted empty
    /// ```
    pub fn node_lost(&self, node: usize, at: Instant) {
        self.push(Event::NodeLost { node, at });
    }

    /// Records a failed operation. Informational: no check reads it, but it
    /// shows in the history's [`Display`](fmt::Display) timeline.
    ///
    /// ```
    /// use quorate::testkit::{History, LeaseKind, Spec};
    /// use std::time::{Duration, Instant};
    ///
    /// let history = History::new();
    /// let now = Instant::now();
    /// history.failed("orders", "lock", "quorum not reached".into(), now);
    /// ```
    pub fn failed(&self, resource: &str, op: &str, error: String, at: Instant) {
        self.push(Event::Failed {
            resource: resource.to_owned(),
            op: op.to_owned(),
            error,
            at,
        });
    }

    /// Records a latch count-down under operation `id`, invoked at
    /// `invoked`; `ok` tells whether it returned `Ok`.
    ///
    /// ```
    /// use quorate::testkit::{History, LeaseKind, Spec};
    /// use std::time::{Duration, Instant};
    ///
    /// let history = History::new();
    /// let now = Instant::now();
    /// history.count_down("boot", "shard-1", now, true);
    /// assert!(history.check(&Spec::new().latch("boot", 2)).is_empty());
    /// ```
    pub fn count_down(&self, resource: &str, id: &str, invoked: Instant, ok: bool) {
        self.push(Event::CountDown {
            resource: resource.to_owned(),
            id: id.to_owned(),
            invoked,
            ok,
        });
    }

    /// Records a latch observation: `open` when a `wait()` returned `Ok` or
    /// `count()` read 0, closed when `count()` read more.
    ///
    /// Pass as `at` the instant the call **returned** for an open
    /// observation and the instant it was **invoked** for a closed one: a
    /// read that started before the latch opened may return closed after
    /// someone saw it open, and that is no violation.
    ///
    /// ```
    /// use quorate::testkit::{History, LeaseKind, Spec};
    /// use std::time::{Duration, Instant};
    ///
    /// let history = History::new();
    /// let now = Instant::now();
    /// history.latch_observed("boot", false, now);
    /// ```
    pub fn latch_observed(&self, resource: &str, open: bool, at: Instant) {
        self.push(Event::LatchObserved {
            resource: resource.to_owned(),
            open,
            at,
        });
    }

    /// Records that `party` invoked a barrier wait at `invoked`.
    ///
    /// ```
    /// use quorate::testkit::{History, LeaseKind, Spec};
    /// use std::time::{Duration, Instant};
    ///
    /// let history = History::new();
    /// let now = Instant::now();
    /// history.arrived("phase", "p1", now);
    /// ```
    pub fn arrived(&self, resource: &str, party: &str, invoked: Instant) {
        self.push(Event::Arrived {
            resource: resource.to_owned(),
            party: party.to_owned(),
            invoked,
        });
    }

    /// Records that `party`'s barrier wait returned `Ok` at `at`, for
    /// `generation`, as leader or not.
    ///
    /// ```
    /// use quorate::testkit::{History, LeaseKind, Spec};
    /// use std::time::{Duration, Instant};
    ///
    /// let history = History::new();
    /// let now = Instant::now();
    /// history.arrived("phase", "p1", now);
    /// history.arrived("phase", "p2", now);
    /// history.barrier_released("phase", "p1", 0, true, now + Duration::from_millis(1));
    /// history.barrier_released("phase", "p2", 0, false, now + Duration::from_millis(1));
    /// assert!(history.check(&Spec::new().barrier("phase", 2)).is_empty());
    /// ```
    pub fn barrier_released(
        &self,
        resource: &str,
        party: &str,
        generation: u64,
        leader: bool,
        at: Instant,
    ) {
        self.push(Event::BarrierReleased {
            resource: resource.to_owned(),
            party: party.to_owned(),
            generation,
            leader,
            at,
        });
    }

    /// Records that `party`'s barrier wait returned
    /// [`Error::BrokenBarrier`](crate::Error::BrokenBarrier) at `at`.
    ///
    /// ```
    /// use quorate::testkit::{History, LeaseKind, Spec};
    /// use std::time::{Duration, Instant};
    ///
    /// let history = History::new();
    /// let now = Instant::now();
    /// history.arrived("phase", "p1", now);
    /// history.barrier_broken("phase", "p1", now + Duration::from_secs(1));
    /// ```
    pub fn barrier_broken(&self, resource: &str, party: &str, at: Instant) {
        self.push(Event::BarrierBroken {
            resource: resource.to_owned(),
            party: party.to_owned(),
            at,
        });
    }

    /// Records that `party`'s barrier wait ended at `at` without a known
    /// outcome (an error other than a broken barrier, such as too few nodes
    /// to learn it): it may have been released. A generation may then show
    /// one release or leader fewer, never more.
    ///
    /// ```
    /// use quorate::testkit::{History, LeaseKind, Spec};
    /// use std::time::{Duration, Instant};
    ///
    /// let history = History::new();
    /// let now = Instant::now();
    /// history.arrived("phase", "p1", now);
    /// history.barrier_unknown("phase", "p1", now + Duration::from_secs(1));
    /// ```
    pub fn barrier_unknown(&self, resource: &str, party: &str, at: Instant) {
        self.push(Event::BarrierUnknown {
            resource: resource.to_owned(),
            party: party.to_owned(),
            at,
        });
    }

    /// The number of events recorded (every call above counts one).
    ///
    /// ```
    /// use quorate::testkit::{History, LeaseKind, Spec};
    /// use std::time::{Duration, Instant};
    ///
    /// let history = History::new();
    /// let now = Instant::now();
    /// history.node_lost(0, now);
    /// assert_eq!(history.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    /// True when nothing was recorded.
    ///
    /// ```
    /// assert!(quorate::testkit::History::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs every check the spec asks for and returns what failed; empty
    /// when the history is safe. Resources the spec does not name are not
    /// checked. References to leases this history never granted, and leases
    /// of another kind than the spec gives their resource, are reported
    /// under the check `"history"`.
    ///
    /// ```
    /// use quorate::testkit::{History, LeaseKind, Spec};
    /// use std::time::{Duration, Instant};
    ///
    /// let history = History::new();
    /// let now = Instant::now();
    /// let a = history.lease(LeaseKind::Mutex, "orders", "a", None, 1, now, now + Duration::from_secs(1));
    /// let b = history.lease(LeaseKind::Mutex, "orders", "b", None, 1, now, now + Duration::from_secs(1));
    /// let violations = history.check(&Spec::new().mutex("orders"));
    /// assert_eq!(violations[0].check, "mutex"); // two holders at once
    /// ```
    pub fn check(&self, spec: &Spec) -> Vec<Violation> {
        // A snapshot, so that recording goes on while the checks run.
        let events = self.lock().events.clone();
        check_events(&events, spec)
    }

    fn push(&self, event: Event) {
        self.lock().events.push(event);
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        // A recorder that panicked mid-push left no half-written event.
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for History {
    /// Only the size: a run records thousands of events. Print the history
    /// with `{}` for its timeline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("History").field("len", &self.len()).finish()
    }
}

/// What to check, per resource. Built in steps:
///
/// ```
/// use quorate::testkit::Spec;
///
/// let spec = Spec::new().mutex("m").semaphore("s", 3).latch("l", 2).barrier("b", 4);
/// ```
///
/// Naming a resource again replaces what was said about it before.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    resources: BTreeMap<String, Expect>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Mutex,
    Semaphore { limit: u32 },
    Reentrant,
    Latch { count: u32, ttl: Option<Duration> },
    Barrier { parties: u32, all_or_none: bool },
}

impl Expect {
    /// The lease kind this resource hands out, if any.
    fn lease_kind(self) -> Option<LeaseKind> {
        match self {
            Expect::Mutex => Some(LeaseKind::Mutex),
            Expect::Semaphore { .. } => Some(LeaseKind::Semaphore),
            Expect::Reentrant => Some(LeaseKind::Reentrant),
            Expect::Latch { .. } | Expect::Barrier { .. } => None,
        }
    }
}

impl Spec {
    /// An empty spec: checks nothing.
    ///
    /// ```
    /// let spec = quorate::testkit::Spec::new().mutex("orders").semaphore("exports", 8);
    /// ```
    pub fn new() -> Spec {
        Spec::default()
    }

    /// `resource` is a mutex: mutual exclusion and fencing.
    ///
    /// ```
    /// let spec = quorate::testkit::Spec::new().mutex("orders");
    /// ```
    #[must_use]
    pub fn mutex(self, resource: &str) -> Spec {
        self.with(resource, Expect::Mutex)
    }

    /// `resource` is a semaphore of `limit` permits: capacity and fencing.
    ///
    /// ```
    /// let spec = quorate::testkit::Spec::new().semaphore("exports", 8);
    /// ```
    #[must_use]
    pub fn semaphore(self, resource: &str, limit: u32) -> Spec {
        self.with(resource, Expect::Semaphore { limit })
    }

    /// `resource` is a reentrant lock: exclusion between owners and fencing.
    ///
    /// ```
    /// let spec = quorate::testkit::Spec::new().reentrant("ledger");
    /// ```
    #[must_use]
    pub fn reentrant(self, resource: &str) -> Spec {
        self.with(resource, Expect::Reentrant)
    }

    /// `resource` is a latch opening after `count` distinct count-downs.
    ///
    /// ```
    /// let spec = quorate::testkit::Spec::new().latch("boot", 3);
    /// ```
    #[must_use]
    pub fn latch(self, resource: &str, count: u32) -> Spec {
        self.with(resource, Expect::Latch { count, ttl: None })
    }

    /// `resource` is a latch as [`latch`](Self::latch) whose state lives
    /// `ttl` after each count-down ([`Latch::with_ttl`](crate::Latch::with_ttl)).
    /// Every node that got a count-down keeps its state at least until the
    /// first count-down was invoked plus `ttl`; closed observations invoked
    /// later are not checked, since the state may have expired by then.
    ///
    /// ```
    /// let spec = quorate::testkit::Spec::new().expiring_latch("boot", 3, std::time::Duration::from_secs(60));
    /// ```
    #[must_use]
    pub fn expiring_latch(self, resource: &str, count: u32, ttl: Duration) -> Spec {
        let ttl = Some(ttl);
        self.with(resource, Expect::Latch { count, ttl })
    }

    /// `resource` is a barrier of `parties` parties.
    ///
    /// ```
    /// let spec = quorate::testkit::Spec::new().barrier("phase", 4);
    /// ```
    #[must_use]
    pub fn barrier(self, resource: &str, parties: u32) -> Spec {
        let all_or_none = true;
        self.with(
            resource,
            Expect::Barrier {
                parties,
                all_or_none,
            },
        )
    }

    /// `resource` is a barrier of `parties` parties, checked for safety
    /// only: no generation releases more than `parties` waiters or has two
    /// leaders, none releases a waiter before the last arrival, no wait is
    /// both broken and released. It does not require every generation to
    /// release all its parties with a leader, which nodes that saw arrivals
    /// in different orders (faults during arrival) may prevent.
    ///
    /// ```
    /// let spec = quorate::testkit::Spec::new().barrier_safety("phase", 4);
    /// ```
    pub fn barrier_safety(self, resource: &str, parties: u32) -> Spec {
        let all_or_none = false;
        self.with(
            resource,
            Expect::Barrier {
                parties,
                all_or_none,
            },
        )
    }

    fn with(mut self, resource: &str, expect: Expect) -> Spec {
        self.resources.insert(resource.to_owned(), expect);
        self
    }
}

/// A safety property the history breaks.
///
/// ```
/// use quorate::testkit::{History, LeaseKind, Spec};
/// use std::time::{Duration, Instant};
///
/// let history = History::new();
/// let now = Instant::now();
/// let a = history.lease(LeaseKind::Mutex, "orders", "a", None, 1, now, now + Duration::from_secs(1));
/// let b = history.lease(LeaseKind::Mutex, "orders", "b", None, 1, now, now + Duration::from_secs(1));
/// for v in history.check(&Spec::new().mutex("orders")) {
///     eprintln!("{} on {}: {}", v.check, v.resource, v.detail);
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which check failed: `"mutex"`, `"reentrant"`, `"semaphore"`,
    /// `"fencing"`, `"claim"`, `"lost"`, `"latch"`, `"barrier"`, or
    /// `"history"` for a record that does not add up (an unknown lease, a
    /// lease of the wrong kind).
    pub check: &'static str,
    /// The resource concerned; empty when unknown.
    pub resource: String,
    /// What happened, with times in milliseconds from the first event.
    pub detail: String,
}

impl Violation {
    fn new(check: &'static str, resource: &str, detail: String) -> Violation {
        Violation {
            check,
            resource: resource.to_owned(),
            detail,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}: {}", self.check, self.resource, self.detail)
    }
}

/// Times in reports, as milliseconds since the history's first instant:
/// an [`Instant`] alone prints as nothing readable.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    base: Instant,
}

impl Timeline {
    fn of(events: &[Event]) -> Timeline {
        let base = events.iter().map(Event::earliest).min();
        Timeline {
            base: base.unwrap_or_else(Instant::now),
        }
    }

    fn at(self, t: Instant) -> String {
        format!("t+{}", ms(t.saturating_duration_since(self.base)))
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1000.0)
}

/// Every check the spec asks for, over a snapshot of the events.
fn check_events(events: &[Event], spec: &Spec) -> Vec<Violation> {
    let time = Timeline::of(events);
    let (windows, mut out) = leases::windows(events);
    let losses = claims::node_losses(events);
    // Grouped once: a run may name thousands of latches and barriers.
    let mut windows_of: BTreeMap<&str, Vec<&leases::Window<'_>>> = BTreeMap::new();
    for w in &windows {
        windows_of.entry(w.resource).or_default().push(w);
    }
    let mut events_of: BTreeMap<&str, Vec<Event>> = BTreeMap::new();
    for event in events {
        if let Some(resource) = event.latch_or_barrier() {
            events_of.entry(resource).or_default().push(event.clone());
        }
    }
    for (resource, &expect) in &spec.resources {
        let mine = windows_of
            .get(resource.as_str())
            .map_or(&[][..], Vec::as_slice);
        let theirs = events_of
            .get(resource.as_str())
            .map_or(&[][..], Vec::as_slice);
        out.extend(leases::kinds(resource, expect.lease_kind(), mine));
        if expect.lease_kind().is_some() {
            out.extend(claims::claims(resource, mine, &losses, time));
            out.extend(claims::revived(resource, mine, time));
        }
        out.extend(match expect {
            Expect::Mutex => leases::mutex(resource, mine, time),
            Expect::Semaphore { limit } => leases::semaphore(resource, limit, mine, time),
            Expect::Reentrant => leases::reentrant(resource, mine, time),
            Expect::Latch { count, ttl } => latch::check(resource, count, ttl, theirs, time),
            Expect::Barrier {
                parties,
                all_or_none,
            } => barrier::check(resource, parties, all_or_none, theirs, time),
        });
    }
    out
}
