//! Restart safety: whether a node's grants count yet.
//!
//! A node that restarts without durable persistence forgets the leases it
//! granted and could grant them again while their holders still act. The
//! Redlock specification's answer is a delayed restart: such a node must not
//! vote until every lease it may have forgotten has expired. No lease lives
//! longer than the deployment's `max_ttl` (every process records its own on
//! every node at connect, and each takes the largest recorded), so a node
//! presumed restarted sits out `max_ttl` plus drift from its start. Its
//! scripts still run; only its grants of new leases do not count. Its other
//! answers stand: a node that still holds our key (an extension) blocks
//! everyone else there, and a refusal is true whatever it forgot.
//!
//! A restart breaks every TCP connection, so it is detected when a
//! connection is (re)established, never in the scripts themselves. The
//! handshake reads the server's `run_id` and uptime, and a node is presumed
//! restarted when:
//!
//! - its `run_id` differs from the one this process saw before (a restart
//!   seen through a reconnect);
//! - at first contact, it started at least [`YOUTH`] after the oldest node of
//!   the quorum this process reached: a node much younger than the nodes
//!   beside it restarted, or joined late, and either way may have missed
//!   leases its peers granted;
//! - its own record says so: whoever quarantined it wrote the end of the
//!   quarantine onto the node, under its current `run_id`, so a client that
//!   reaches none of the older nodes still honours it.
//!
//! A node whose persistence cannot lose an acknowledged write (`appendonly
//! yes` with `appendfsync always`) is trusted at once. A fresh deployment,
//! whose nodes started together, locks at once: none is younger than
//! another.
//!
//! Interleavings considered, and what remains:
//!
//! - *Restart seen by this client*: the reconnect's handshake sees a new
//!   `run_id`: quarantined from the server's start (uptime counts in whole
//!   seconds, so the latest possible start is taken).
//! - *First contact after the restart, reaching an older peer*: younger by
//!   at least [`YOUTH`]: quarantined.
//! - *First contact reaching only nodes that restarted*: only a record on
//!   the node tells, if some client that saw the restart wrote one.
//! - *Limits.* A restart within about [`YOUTH`] of the oldest visible node's
//!   start (for instance the whole deployment restarting together), or one
//!   that no client saw and whose peers are out of reach, looks like a fresh
//!   start. A single node has no peers: only a restart this process saw
//!   counts. A proxy that hides a server restart behind a live connection
//!   hides it from quorate too. Uptime follows the server's wall clock, so a
//!   clock stepped forward can make a restarted node look older. A process
//!   whose `max_ttl` is below another's, reaching no node that recorded the
//!   larger, quarantines for its own.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How much later than the oldest node of its quorum a node must have
/// started, at first contact, to be presumed restarted. Uptime is reported
/// in whole seconds, so two nodes started at the same instant may seem up
/// to a second apart, and a margin of 2 s never mistakes them.
pub(crate) const YOUTH: Duration = Duration::from_secs(2);

/// Why a node's grants do not count yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Suspicion {
    /// Its `run_id` changed since this process last saw it.
    Restarted,
    /// At first contact it had started this much later than the oldest
    /// other node.
    Younger(Duration),
    /// A client that quarantined it left a record on it.
    Recorded,
}

/// What the handshake tells about a node's incarnation.
#[derive(Debug, Clone)]
pub(crate) struct Seen<'a> {
    pub(crate) run_id: &'a str,
    pub(crate) uptime: Duration,
    /// When the handshake's answers arrived.
    pub(crate) at: Instant,
    /// Its persistence cannot lose an acknowledged write.
    pub(crate) durable: bool,
    /// What is left of a quarantine recorded on it for its current process.
    pub(crate) recorded: Option<Duration>,
}

/// Until when a node's grants do not count, and why; `None` when they count
/// at once.
///
/// `previous` is the `run_id` this process saw before (none at first
/// contact), `younger_by` how much later than the oldest other node it
/// started, and `period` the quarantine (none when switched off).
pub(crate) fn quarantine_until(
    seen: &Seen<'_>,
    previous: Option<&str>,
    younger_by: Option<Duration>,
    period: Option<Duration>,
) -> Option<(Instant, Suspicion)> {
    let period = period?;
    if seen.durable {
        return None;
    }
    let suspicion = match previous {
        Some(known) if known != seen.run_id => Some(Suspicion::Restarted),
        Some(_) => None,
        None => younger_by.filter(|&d| d >= YOUTH).map(Suspicion::Younger),
    };
    // Uptime is a difference of whole wall-clock seconds: the server may
    // have started up to a second later than it says. Count from the latest
    // start, so the quarantine never ends early.
    let from_start = suspicion.and_then(|s| {
        let left = (period + Duration::from_secs(1)).checked_sub(seen.uptime)?;
        Some((seen.at + left, s))
    });
    let recorded = seen
        .recorded
        .filter(|left| !left.is_zero())
        .map(|left| (seen.at + left, Suspicion::Recorded));
    let end = match (from_start, recorded) {
        (Some(a), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
        (a, b) => a.or(b),
    };
    end.filter(|(until, _)| *until > seen.at)
}

/// What admission knows of a whole quorum: when each node started, and the
/// deployment's longest lease.
#[derive(Debug)]
pub(crate) struct Deployment {
    /// The largest `max_ttl` recorded on any node seen, in ms.
    bound_ms: AtomicU64,
    /// Reference instant for the starts below.
    epoch: Instant,
    /// Each node's estimated start, in ms after `epoch` (negative: before).
    starts: Mutex<Vec<Option<i128>>>,
}

impl Deployment {
    pub(crate) fn new(max_ttl: Duration, nodes: usize) -> Deployment {
        Deployment {
            bound_ms: AtomicU64::new(millis(max_ttl)),
            epoch: Instant::now(),
            starts: Mutex::new(vec![None; nodes]),
        }
    }

    /// The deployment's longest lease, as far as seen.
    pub(crate) fn bound(&self) -> Duration {
        Duration::from_millis(self.bound_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn raise_bound(&self, recorded: Duration) {
        self.bound_ms.fetch_max(millis(recorded), Ordering::Relaxed);
    }

    fn start_of(&self, at: Instant, uptime: Duration) -> i128 {
        at.saturating_duration_since(self.epoch).as_millis() as i128 - uptime.as_millis() as i128
    }

    /// Notes when a node started, from a handshake's uptime.
    pub(crate) fn note_start(&self, node: usize, at: Instant, uptime: Duration) {
        self.starts.lock().unwrap()[node] = Some(self.start_of(at, uptime));
    }

    /// How much later than the oldest other node this one started, if it
    /// started later.
    pub(crate) fn younger_by(
        &self,
        node: usize,
        at: Instant,
        uptime: Duration,
    ) -> Option<Duration> {
        let mine = self.start_of(at, uptime);
        let starts = self.starts.lock().unwrap();
        let oldest = starts
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != node)
            .filter_map(|(_, s)| *s)
            .min()?;
        u64::try_from(mine - oldest).ok().map(Duration::from_millis)
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn seen(run_id: &str, uptime_s: u64, at: Instant) -> Seen<'_> {
        Seen {
            run_id,
            uptime: Duration::from_secs(uptime_s),
            at,
            durable: false,
            recorded: None,
        }
    }

    #[test]
    fn a_known_run_id_counts_at_once() {
        let at = Instant::now();
        let s = seen("a", 0, at);
        assert_eq!(quarantine_until(&s, Some("a"), None, Some(MINUTE)), None);
    }

    #[test]
    fn a_new_run_id_sits_out_the_period_from_the_latest_possible_start() {
        let at = Instant::now();
        let s = seen("b", 3, at);
        let (until, why) = quarantine_until(&s, Some("a"), None, Some(MINUTE)).unwrap();
        assert_eq!(why, Suspicion::Restarted);
        // Up 3 s in whole seconds: it may have started 2 s ago.
        assert_eq!(until, at + MINUTE - Duration::from_secs(2));
    }

    #[test]
    fn a_restart_long_ago_counts_at_once() {
        let at = Instant::now();
        let s = seen("b", 120, at);
        assert_eq!(quarantine_until(&s, Some("a"), None, Some(MINUTE)), None);
    }

    #[test]
    fn at_first_contact_a_node_younger_than_its_peers_sits_out() {
        let at = Instant::now();
        let s = seen("b", 1, at);
        let younger = Some(Duration::from_secs(3));
        let (_, why) = quarantine_until(&s, None, younger, Some(MINUTE)).unwrap();
        assert_eq!(why, Suspicion::Younger(Duration::from_secs(3)));
    }

    #[test]
    fn nodes_started_together_count_at_once() {
        let at = Instant::now();
        let s = seen("b", 0, at);
        let younger = Some(Duration::from_millis(1999));
        assert_eq!(quarantine_until(&s, None, younger, Some(MINUTE)), None);
        assert_eq!(quarantine_until(&s, None, None, Some(MINUTE)), None);
    }

    #[test]
    fn a_recorded_quarantine_is_honoured_and_may_only_lengthen_one() {
        let at = Instant::now();
        let mut s = seen("b", 1, at);
        s.recorded = Some(Duration::from_secs(5));
        let (until, why) = quarantine_until(&s, None, None, Some(MINUTE)).unwrap();
        assert_eq!(
            (until, why),
            (at + Duration::from_secs(5), Suspicion::Recorded)
        );
        let (until, why) = quarantine_until(&s, Some("a"), None, Some(MINUTE)).unwrap();
        assert_eq!((until, why), (at + MINUTE, Suspicion::Restarted));
    }

    #[test]
    fn durable_nodes_and_a_switched_off_quarantine_count_at_once() {
        let at = Instant::now();
        let mut s = seen("b", 0, at);
        assert_eq!(quarantine_until(&s, Some("a"), None, None), None);
        s.durable = true;
        s.recorded = Some(MINUTE);
        assert_eq!(quarantine_until(&s, Some("a"), None, Some(MINUTE)), None);
    }

    #[test]
    fn starts_compare_handshakes_taken_at_different_times() {
        let d = Deployment::new(MINUTE, 3);
        let t0 = Instant::now();
        d.note_start(0, t0, Duration::from_secs(10));
        d.note_start(1, t0 + Duration::from_secs(5), Duration::from_secs(15));
        // Read 5 s later and up 3 s: started 12 s after the others.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(
            d.younger_by(2, later, Duration::from_secs(3)),
            Some(Duration::from_secs(12))
        );
        // Older than the oldest: not younger at all.
        assert_eq!(d.younger_by(2, t0, Duration::from_secs(20)), None);
    }

    #[test]
    fn the_bound_only_rises() {
        let d = Deployment::new(Duration::from_secs(10), 1);
        d.raise_bound(Duration::from_secs(5));
        assert_eq!(d.bound(), Duration::from_secs(10));
        d.raise_bound(MINUTE);
        assert_eq!(d.bound(), MINUTE);
    }
}
