//! What the renewal task (`renew.rs`) renews: leases that say when they
//! are due, kept per quorum. Apart from the task so the quorum's nodes can
//! hold the registry without depending on the task.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::node::Call;
use crate::config::Timing;
use crate::error::Result;

/// A lease as the renewal task sees it.
pub(crate) trait Renewable: Send + Sync {
    /// When it is next due, and the period it renews at; `None` once it no
    /// longer wants renewals (released, lost).
    fn due(&self) -> Option<(Instant, Duration)>;

    /// What a renewal now sends: its spec, owner token, holding and timing.
    fn renewal(&self) -> (Call, Timing);

    /// The outcome of a renewal that started at `t1`: the new deadline, or
    /// why not.
    fn renewed(&self, t1: Instant, outcome: Result<Instant>);
}

/// The leases of one quorum that renew themselves.
#[derive(Default)]
pub(crate) struct Renewals {
    leases: Mutex<Vec<Weak<dyn Renewable>>>,
    /// Wakes the task for a lease due sooner than it sleeps.
    registered: Arc<Notify>,
    started: OnceLock<()>,
}

impl std::fmt::Debug for Renewals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renewals")
            .field("leases", &self.leases.lock().unwrap().len())
            .finish()
    }
}

impl Renewals {
    /// Takes a lease in; `start` runs once, for the first.
    pub(crate) fn add(&self, lease: Weak<dyn Renewable>, start: impl FnOnce()) {
        self.leases.lock().unwrap().push(lease);
        self.started.get_or_init(start);
        self.registered.notify_one();
    }

    /// Woken when a lease is added.
    pub(crate) fn added(&self) -> Arc<Notify> {
        self.registered.clone()
    }

    /// The leases due now (within `slack` of their renewal period), and
    /// when the next one is due; forgets the leases that ended.
    pub(crate) fn due(
        &self,
        slack: impl Fn(Duration) -> Duration,
    ) -> (Vec<Arc<dyn Renewable>>, Option<Instant>) {
        let now = Instant::now();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        self.leases.lock().unwrap().retain(|weak| {
            let Some(lease) = weak.upgrade() else {
                return false;
            };
            let Some((at, period)) = lease.due() else {
                return false;
            };
            if at <= now + slack(period) {
                due.push(lease);
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
            true
        });
        (due, next)
    }
}
