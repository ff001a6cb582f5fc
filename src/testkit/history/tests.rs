//! Hand-made histories: for each check one that passes and ones that must
//! fail.

use std::thread;
use std::time::{Duration, Instant};

use super::{History, LeaseId, LeaseKind, NodeHold, Sample, Spec, Violation};

/// Instants as milliseconds after one base.
struct Clock(Instant);

impl Clock {
    fn new() -> Clock {
        Clock(Instant::now())
    }

    fn at(&self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
    }
}

impl Clock {
    /// Records a lease of one permit held over `[from, to)` milliseconds,
    /// on "m", "s" or "r" by its kind.
    fn hold(
        &self,
        h: &History,
        kind: LeaseKind,
        who: &str,
        token: u64,
        from: u64,
        to: u64,
    ) -> LeaseId {
        let resource = match kind {
            LeaseKind::Mutex => "m",
            LeaseKind::Semaphore => "s",
            LeaseKind::Reentrant => "r",
        };
        h.lease(kind, resource, who, token, 1, self.at(from), self.at(to))
    }
}

impl Clock {
    /// A sample taken at `at` claiming `deadline`, read 1 ms later, with
    /// each node's expiry (`None`: the key is missing).
    fn sample(&self, at: u64, deadline: u64, expiries: &[Option<u64>]) -> Sample {
        let nodes = expiries
            .iter()
            .map(|e| e.map_or(NodeHold::Missing, |ms| NodeHold::Until(Some(self.at(ms)))))
            .collect();
        Sample {
            deadline: self.at(deadline),
            at: self.at(at),
            read_by: self.at(at + 1),
            nodes,
        }
    }
}

fn checks(violations: &[Violation]) -> Vec<&'static str> {
    violations.iter().map(|v| v.check).collect()
}

// ---- mutex -------------------------------------------------------------

#[test]
fn mutex_disjoint_windows_pass() {
    let (h, t) = (History::new(), Clock::new());
    t.hold(&h, LeaseKind::Mutex, "a", 1, 0, 50);
    t.hold(&h, LeaseKind::Mutex, "b", 2, 50, 100);
    t.hold(&h, LeaseKind::Mutex, "c", 3, 120, 130);
    assert_eq!(h.check(&Spec::new().mutex("m")), vec![]);
}

#[test]
fn mutex_overlap_fails() {
    let (h, t) = (History::new(), Clock::new());
    t.hold(&h, LeaseKind::Mutex, "a", 1, 0, 50);
    t.hold(&h, LeaseKind::Mutex, "b", 2, 40, 100);
    let v = h.check(&Spec::new().mutex("m"));
    assert_eq!(checks(&v), ["mutex"], "{v:?}");
    assert!(v[0].detail.contains("overlap by 10.0ms"), "{}", v[0]);
    assert!(v[0].detail.contains("holder a") && v[0].detail.contains("holder b"));
    assert_eq!(v[0].resource, "m");
}

#[test]
fn mutex_release_ends_window_early_passes() {
    let (h, t) = (History::new(), Clock::new());
    let a = t.hold(&h, LeaseKind::Mutex, "a", 1, 0, 50);
    h.released(a, t.at(30));
    t.hold(&h, LeaseKind::Mutex, "b", 2, 30, 80);
    assert_eq!(h.check(&Spec::new().mutex("m")), vec![]);
}

#[test]
fn mutex_extension_into_next_window_fails() {
    let (h, t) = (History::new(), Clock::new());
    let a = t.hold(&h, LeaseKind::Mutex, "a", 1, 0, 50);
    t.hold(&h, LeaseKind::Mutex, "b", 2, 60, 100);
    assert_eq!(h.check(&Spec::new().mutex("m")), vec![]);
    h.extended(a, t.at(70));
    let v = h.check(&Spec::new().mutex("m"));
    assert_eq!(checks(&v), ["mutex"], "{v:?}");
    assert!(v[0].detail.contains("overlap by 10.0ms"), "{}", v[0]);
}

#[test]
fn mutex_release_after_deadline_does_not_extend() {
    let (h, t) = (History::new(), Clock::new());
    let a = t.hold(&h, LeaseKind::Mutex, "a", 1, 0, 50);
    h.released(a, t.at(90));
    t.hold(&h, LeaseKind::Mutex, "b", 2, 50, 100);
    assert_eq!(h.check(&Spec::new().mutex("m")), vec![]);
}

// ---- fencing -----------------------------------------------------------

#[test]
fn fencing_tokens_going_down_fail() {
    let (h, t) = (History::new(), Clock::new());
    t.hold(&h, LeaseKind::Mutex, "a", 7, 0, 10);
    t.hold(&h, LeaseKind::Mutex, "b", 5, 20, 30);
    t.hold(&h, LeaseKind::Mutex, "c", 7, 40, 50);
    t.hold(&h, LeaseKind::Mutex, "d", 8, 60, 70);
    let v = h.check(&Spec::new().mutex("m"));
    // b is below a, and c repeats a's token; d is fine.
    assert_eq!(checks(&v), ["fencing", "fencing"], "{v:?}");
    assert!(v[0].detail.contains("holder b") && v[0].detail.contains("higher"));
    assert!(v[1].detail.contains("holder c") && v[1].detail.contains("repeats"));
}

#[test]
fn fencing_orders_a_late_logged_grant_by_its_deadline() {
    // a's worker was paused before it took `granted`: past its deadline,
    // and after b's grant. a's grant still came first.
    let (h, t) = (History::new(), Clock::new());
    t.hold(&h, LeaseKind::Mutex, "a", 1, 80, 50);
    t.hold(&h, LeaseKind::Mutex, "b", 2, 60, 100);
    assert_eq!(h.check(&Spec::new().mutex("m")), vec![]);
}

// ---- reentrant ---------------------------------------------------------

#[test]
fn reentrant_same_owner_overlap_passes() {
    let (h, t) = (History::new(), Clock::new());
    t.hold(&h, LeaseKind::Reentrant, "job-1", 4, 0, 50);
    t.hold(&h, LeaseKind::Reentrant, "job-1", 4, 10, 40);
    t.hold(&h, LeaseKind::Reentrant, "job-1", 4, 45, 70);
    t.hold(&h, LeaseKind::Reentrant, "job-2", 5, 70, 90);
    // The same owner again after a gap may keep its token.
    t.hold(&h, LeaseKind::Reentrant, "job-2", 5, 95, 99);
    t.hold(&h, LeaseKind::Reentrant, "job-1", 6, 100, 120);
    assert_eq!(h.check(&Spec::new().reentrant("r")), vec![]);
}

#[test]
fn reentrant_different_owners_overlap_fails() {
    let (h, t) = (History::new(), Clock::new());
    t.hold(&h, LeaseKind::Reentrant, "job-1", 4, 0, 50);
    t.hold(&h, LeaseKind::Reentrant, "job-2", 5, 30, 60);
    let v = h.check(&Spec::new().reentrant("r"));
    assert_eq!(checks(&v), ["reentrant"], "{v:?}");
    assert!(v[0].detail.contains("overlap by 20.0ms"), "{}", v[0]);
}

#[test]
fn reentrant_holding_with_two_tokens_fails() {
    let (h, t) = (History::new(), Clock::new());
    t.hold(&h, LeaseKind::Reentrant, "job-1", 4, 0, 50);
    t.hold(&h, LeaseKind::Reentrant, "job-1", 5, 10, 40);
    let v = h.check(&Spec::new().reentrant("r"));
    assert_eq!(checks(&v), ["fencing"], "{v:?}");
    assert!(v[0].detail.contains("different tokens"), "{}", v[0]);
}

#[test]
fn reentrant_new_holding_not_above_other_owner_fails() {
    let (h, t) = (History::new(), Clock::new());
    t.hold(&h, LeaseKind::Reentrant, "job-1", 4, 0, 50);
    t.hold(&h, LeaseKind::Reentrant, "job-2", 4, 60, 70);
    t.hold(&h, LeaseKind::Reentrant, "job-1", 3, 80, 90);
    let v = h.check(&Spec::new().reentrant("r"));
    assert_eq!(checks(&v), ["fencing", "fencing"], "{v:?}");
}

// ---- semaphore ---------------------------------------------------------

#[test]
fn semaphore_at_limit_passes() {
    let (h, t) = (History::new(), Clock::new());
    h.lease(LeaseKind::Semaphore, "s", "a", 1, 2, t.at(0), t.at(50));
    t.hold(&h, LeaseKind::Semaphore, "b", 2, 10, 60);
    // Starts as a ends: half-open windows do not overlap.
    t.hold(&h, LeaseKind::Semaphore, "c", 3, 50, 90);
    h.lease(LeaseKind::Semaphore, "s", "d", 4, 2, t.at(60), t.at(90));
    assert_eq!(h.check(&Spec::new().semaphore("s", 3)), vec![]);
}

#[test]
fn semaphore_over_limit_fails() {
    let (h, t) = (History::new(), Clock::new());
    h.lease(LeaseKind::Semaphore, "s", "a", 1, 2, t.at(0), t.at(50));
    t.hold(&h, LeaseKind::Semaphore, "b", 2, 10, 60);
    t.hold(&h, LeaseKind::Semaphore, "c", 3, 40, 90);
    let v = h.check(&Spec::new().semaphore("s", 3));
    assert_eq!(checks(&v), ["semaphore"], "{v:?}");
    assert!(
        v[0].detail.contains("at t+40.0ms, 4 permits held of 3"),
        "{}",
        v[0]
    );
}

#[test]
fn semaphore_release_frees_permits() {
    let (h, t) = (History::new(), Clock::new());
    let a = h.lease(LeaseKind::Semaphore, "s", "a", 1, 2, t.at(0), t.at(50));
    h.released(a, t.at(20));
    t.hold(&h, LeaseKind::Semaphore, "b", 2, 10, 60);
    t.hold(&h, LeaseKind::Semaphore, "c", 3, 40, 90);
    t.hold(&h, LeaseKind::Semaphore, "d", 4, 45, 90);
    assert_eq!(h.check(&Spec::new().semaphore("s", 3)), vec![]);
}

#[test]
fn semaphore_concurrent_acquisitions_may_invert_tokens() {
    let (h, t) = (History::new(), Clock::new());
    let a = t.hold(&h, LeaseKind::Semaphore, "a", 9, 5, 50);
    h.acquire_invoked(a, t.at(0));
    // Invoked before a's grant: its token may be lower, or equal.
    let b = t.hold(&h, LeaseKind::Semaphore, "b", 8, 6, 50);
    h.acquire_invoked(b, t.at(1));
    let c = t.hold(&h, LeaseKind::Semaphore, "c", 9, 7, 50);
    h.acquire_invoked(c, t.at(2));
    assert_eq!(h.check(&Spec::new().semaphore("s", 3)), vec![]);
}

#[test]
fn semaphore_token_below_an_earlier_grant_fails() {
    let (h, t) = (History::new(), Clock::new());
    let a = t.hold(&h, LeaseKind::Semaphore, "a", 9, 5, 50);
    h.acquire_invoked(a, t.at(0));
    let b = t.hold(&h, LeaseKind::Semaphore, "b", 8, 12, 50);
    h.acquire_invoked(b, t.at(10));
    let v = h.check(&Spec::new().semaphore("s", 3));
    assert_eq!(checks(&v), ["fencing"], "{v:?}");
}

#[test]
fn semaphore_of_one_permit_fences_like_a_mutex() {
    let (h, t) = (History::new(), Clock::new());
    t.hold(&h, LeaseKind::Semaphore, "a", 9, 0, 10);
    t.hold(&h, LeaseKind::Semaphore, "b", 8, 20, 30);
    let v = h.check(&Spec::new().semaphore("s", 1));
    assert_eq!(checks(&v), ["fencing"], "{v:?}");
}

// ---- history -----------------------------------------------------------

#[test]
fn foreign_lease_ids_and_wrong_kinds_are_reported() {
    let (h, other, t) = (History::new(), History::new(), Clock::new());
    t.hold(&other, LeaseKind::Mutex, "a", 1, 0, 10);
    let foreign = t.hold(&other, LeaseKind::Mutex, "a", 2, 20, 30);
    h.lease(LeaseKind::Semaphore, "m", "a", 1, 1, t.at(0), t.at(10));
    h.released(foreign, t.at(5));
    let v = h.check(&Spec::new().mutex("m"));
    assert_eq!(checks(&v), ["history", "history"], "{v:?}");
}

#[test]
fn unnamed_resources_are_not_checked() {
    let (h, t) = (History::new(), Clock::new());
    t.hold(&h, LeaseKind::Mutex, "a", 1, 0, 50);
    t.hold(&h, LeaseKind::Mutex, "b", 2, 40, 100);
    assert_eq!(h.check(&Spec::new().mutex("other")), vec![]);
}

// ---- latch -------------------------------------------------------------

#[test]
fn latch_opening_after_count_passes() {
    let (h, t) = (History::new(), Clock::new());
    h.latch_observed("l", false, t.at(0));
    h.count_down("l", "a", t.at(10), true);
    h.count_down("l", "b", t.at(20), true);
    h.latch_observed("l", false, t.at(21));
    h.count_down("l", "c", t.at(30), true);
    // A read invoked before the opening may still say closed.
    h.latch_observed("l", false, t.at(29));
    h.latch_observed("l", true, t.at(35));
    h.latch_observed("l", true, t.at(40));
    assert_eq!(h.check(&Spec::new().latch("l", 3)), vec![]);
}

#[test]
fn latch_open_before_count_th_distinct_count_down_fails() {
    let (h, t) = (History::new(), Clock::new());
    h.count_down("l", "a", t.at(10), true);
    h.count_down("l", "b", t.at(20), true);
    h.latch_observed("l", true, t.at(25));
    h.count_down("l", "c", t.at(30), true);
    let v = h.check(&Spec::new().latch("l", 3));
    assert_eq!(checks(&v), ["latch"], "{v:?}");
    assert!(v[0].detail.contains("before count-down 3"), "{}", v[0]);
}

#[test]
fn latch_duplicated_ids_count_once() {
    let (h, t) = (History::new(), Clock::new());
    h.count_down("l", "a", t.at(10), true);
    h.count_down("l", "a", t.at(15), true);
    h.count_down("l", "b", t.at(20), true);
    h.latch_observed("l", true, t.at(25));
    let v = h.check(&Spec::new().latch("l", 3));
    assert_eq!(checks(&v), ["latch"], "{v:?}");
    assert!(v[0].detail.contains("only 2 distinct"), "{}", v[0]);
    // The third id, retried, counts from its first invoke.
    h.count_down("l", "c", t.at(22), false);
    h.count_down("l", "c", t.at(40), true);
    assert_eq!(h.check(&Spec::new().latch("l", 3)), vec![]);
}

#[test]
fn latch_open_then_closed_fails() {
    let (h, t) = (History::new(), Clock::new());
    h.latch_observed("l", false, t.at(0));
    h.count_down("l", "a", t.at(10), true);
    h.latch_observed("l", true, t.at(20));
    h.latch_observed("l", false, t.at(30));
    let v = h.check(&Spec::new().latch("l", 1));
    assert_eq!(checks(&v), ["latch"], "{v:?}");
    assert!(v[0].detail.contains("then closed at t+30.0ms"), "{}", v[0]);
}

// ---- barrier -----------------------------------------------------------

/// Two full generations of parties a, b, c; c leads generation 0 and a
/// generation 1.
fn two_generations(h: &History, t: &Clock) {
    for (i, p) in ["a", "b", "c"].into_iter().enumerate() {
        h.arrived("b", p, t.at(i as u64 * 10));
        h.barrier_released("b", p, 0, p == "c", t.at(25 + i as u64));
        h.arrived("b", p, t.at(40 + i as u64));
        h.barrier_released("b", p, 1, p == "a", t.at(50));
    }
}

#[test]
fn barrier_full_generations_pass() {
    let (h, t) = (History::new(), Clock::new());
    two_generations(&h, &t);
    // A later wait of a that broke is not the one released before.
    h.arrived("b", "a", t.at(60));
    h.barrier_broken("b", "a", t.at(70));
    assert_eq!(h.check(&Spec::new().barrier("b", 3)), vec![]);
}

#[test]
fn barrier_parties_minus_one_releases_fail() {
    let (h, t) = (History::new(), Clock::new());
    h.arrived("b", "a", t.at(0));
    h.arrived("b", "b", t.at(5));
    h.barrier_released("b", "a", 0, true, t.at(10));
    h.barrier_released("b", "b", 0, false, t.at(10));
    let v = h.check(&Spec::new().barrier("b", 3));
    assert_eq!(checks(&v), ["barrier"], "{v:?}");
    assert!(
        v[0].detail.contains("released 2 waiters, not 3"),
        "{}",
        v[0]
    );
}

#[test]
fn barrier_release_before_last_arrival_fails() {
    let (h, t) = (History::new(), Clock::new());
    h.arrived("b", "a", t.at(0));
    h.barrier_released("b", "a", 0, true, t.at(5));
    h.arrived("b", "b", t.at(10));
    h.barrier_released("b", "b", 0, false, t.at(12));
    let v = h.check(&Spec::new().barrier("b", 2));
    assert_eq!(checks(&v), ["barrier"], "{v:?}");
    assert!(
        v[0].detail
            .contains("a was released at t+5.0ms, before b arrived at t+10.0ms"),
        "{}",
        v[0]
    );
}

#[test]
fn barrier_two_leaders_fail() {
    let (h, t) = (History::new(), Clock::new());
    h.arrived("b", "a", t.at(0));
    h.arrived("b", "b", t.at(1));
    h.barrier_released("b", "a", 0, true, t.at(5));
    h.barrier_released("b", "b", 0, true, t.at(5));
    let v = h.check(&Spec::new().barrier("b", 2));
    assert_eq!(checks(&v), ["barrier"], "{v:?}");
    assert!(v[0].detail.contains("2 leaders"), "{}", v[0]);
}

#[test]
fn barrier_broken_and_released_in_one_wait_fails() {
    let (h, t) = (History::new(), Clock::new());
    two_generations(&h, &t);
    h.barrier_broken("b", "c", t.at(55));
    let v = h.check(&Spec::new().barrier("b", 3));
    assert_eq!(checks(&v), ["barrier"], "{v:?}");
    assert!(v[0].detail.contains("c's wait broke"), "{}", v[0]);
}

// ---- recording ---------------------------------------------------------

#[test]
fn concurrent_recording_from_threads() {
    let (h, t) = (History::new(), Clock::new());
    thread::scope(|s| {
        for w in 0..8u64 {
            let (h, t) = (h.clone(), &t);
            s.spawn(move || {
                for i in 0..100u64 {
                    // Each worker its own 10 ms slot per round: no overlap.
                    let from = (i * 8 + w) * 10;
                    let id = h.lease(
                        LeaseKind::Mutex,
                        "m",
                        &format!("w{w}"),
                        from + 1,
                        1,
                        t.at(from),
                        t.at(from + 15),
                    );
                    h.released(id, t.at(from + 10));
                    h.failed("m", "lock", "timeout".to_owned(), t.at(from));
                }
            });
        }
    });
    assert_eq!(h.len(), 8 * 100 * 3);
    assert!(!h.is_empty());
    assert_eq!(h.check(&Spec::new().mutex("m")), vec![]);
    assert!(h.to_string().lines().count() == h.len());
}

#[test]
fn violation_and_history_print_readably() {
    let (h, t) = (History::new(), Clock::new());
    t.hold(&h, LeaseKind::Mutex, "a", 1, 0, 50);
    t.hold(&h, LeaseKind::Mutex, "b", 2, 40, 100);
    let v = h.check(&Spec::new().mutex("m"));
    assert!(
        v[0].to_string()
            .starts_with("[mutex] m: lease #0 (holder a, token 1, t+0.0ms..t+50.0ms)"),
        "{}",
        v[0]
    );
    assert_eq!(format!("{h:?}"), "History { len: 2 }");
    assert!(
        h.to_string()
            .contains("t+40.0ms m lease #1 Mutex holder b token 2 permits 1 until t+100.0ms"),
        "{h}"
    );
}

#[test]
fn barrier_unknown_outcome_may_stand_for_a_missing_release() {
    let (h, t) = (History::new(), Instant::now());
    let at = |ms| t + Duration::from_millis(ms);
    for p in ["a", "b", "c"] {
        h.arrived("b", p, at(1));
    }
    h.barrier_released("b", "a", 0, false, at(5));
    h.barrier_released("b", "b", 0, false, at(5));
    let spec = Spec::new().barrier("b", 3);
    assert_eq!(
        h.check(&spec).len(),
        2,
        "one release and the leader missing"
    );
    h.barrier_unknown("b", "c", at(9));
    assert!(h.check(&spec).is_empty(), "{h}");
}

#[test]
fn barrier_unknown_outcome_never_excuses_extra_releases() {
    let (h, t) = (History::new(), Instant::now());
    let at = |ms| t + Duration::from_millis(ms);
    for p in ["a", "b", "c"] {
        h.arrived("b", p, at(1));
        h.barrier_released("b", p, 0, p == "a", at(5));
    }
    h.arrived("b", "d", at(1));
    h.barrier_unknown("b", "d", at(9));
    let spec = Spec::new().barrier("b", 2);
    assert!(!h.check(&spec).is_empty());
}

#[test]
fn barrier_safety_spec_allows_short_generations_but_not_extra_leaders() {
    let (h, t) = (History::new(), Instant::now());
    let at = |ms| t + Duration::from_millis(ms);
    for p in ["a", "b"] {
        h.arrived("b", p, at(1));
        h.barrier_released("b", p, 0, false, at(5));
    }
    assert!(h.check(&Spec::new().barrier_safety("b", 3)).is_empty());
    assert!(!h.check(&Spec::new().barrier("b", 3)).is_empty());
    h.arrived("b", "c", at(6));
    h.barrier_released("b", "c", 1, true, at(9));
    h.arrived("b", "d", at(6));
    h.barrier_released("b", "d", 1, true, at(9));
    assert!(
        !h.check(&Spec::new().barrier_safety("b", 3)).is_empty(),
        "two leaders"
    );
}

// ---- claims ------------------------------------------------------------

#[test]
fn claim_kept_by_a_majority_passes() {
    let (h, t) = (History::new(), Clock::new());
    let a = t.hold(&h, LeaseKind::Mutex, "a", 1, 0, 5000);
    let kept = Some(5010);
    h.sampled(a, t.sample(10, 5000, &[kept, kept, kept, None, Some(200)]));
    assert_eq!(h.check(&Spec::new().mutex("m")), vec![]);
}

#[test]
fn shorter_explicit_extend_outliving_the_key_fails() {
    // with_ttl(5s), extend(300ms): the key expires at 300 ms, the guard
    // still says 5 s, and b gets the lock at 500 ms.
    let (h, t) = (History::new(), Clock::new());
    let a = t.hold(&h, LeaseKind::Mutex, "a", 1, 0, 5000);
    h.extended(a, t.at(5000));
    let cut = Some(300);
    h.sampled(a, t.sample(100, 5000, &[cut, cut, cut, cut, cut]));
    t.hold(&h, LeaseKind::Mutex, "b", 2, 500, 1500);
    let v = h.check(&Spec::new().mutex("m"));
    assert_eq!(checks(&v), ["claim", "mutex"], "{v:?}");
    assert!(
        v[0].detail.contains("valid until t+5000.0ms")
            && v[0].detail.contains("only 0 of 5 nodes")
            && v[0].detail.contains("node 0 until t+300.0ms"),
        "{}",
        v[0]
    );
}

#[test]
fn longer_explicit_extend_kept_by_the_keys_passes() {
    let (h, t) = (History::new(), Clock::new());
    let a = t.hold(&h, LeaseKind::Mutex, "a", 1, 0, 1000);
    h.extended(a, t.at(5000));
    let kept = Some(5002);
    h.sampled(a, t.sample(100, 5000, &[kept, kept, kept, None, None]));
    h.released(a, t.at(600));
    t.hold(&h, LeaseKind::Mutex, "b", 2, 600, 1500);
    assert_eq!(h.check(&Spec::new().mutex("m")), vec![]);
}

#[test]
fn semaphore_shorter_extend_outliving_the_slot_fails() {
    let (h, t) = (History::new(), Clock::new());
    let a = t.hold(&h, LeaseKind::Semaphore, "a", 1, 0, 5000);
    let (cut, kept) = (Some(300), Some(5001));
    h.sampled(a, t.sample(100, 5000, &[cut, cut, kept, kept, None]));
    let v = h.check(&Spec::new().semaphore("s", 2));
    assert_eq!(checks(&v), ["claim"], "{v:?}");
    assert!(v[0].detail.contains("only 2 of 5 nodes"), "{}", v[0]);
}

#[test]
fn short_inner_hold_cutting_the_outer_hold_fails() {
    // Outer hold with_ttl(5s); the owner re-enters with_ttl(300ms) and
    // drops it; the hash expires at 400 ms and job-2 gets the lock at 700.
    let (h, t) = (History::new(), Clock::new());
    let outer = t.hold(&h, LeaseKind::Reentrant, "job-1", 4, 0, 5000);
    let inner = t.hold(&h, LeaseKind::Reentrant, "job-1", 4, 100, 400);
    let cut = Some(400);
    h.sampled(outer, t.sample(110, 5000, &[cut, cut, cut, None, None]));
    h.released(inner, t.at(150));
    t.hold(&h, LeaseKind::Reentrant, "job-2", 5, 700, 1700);
    let v = h.check(&Spec::new().reentrant("r"));
    assert_eq!(checks(&v), ["claim", "reentrant"], "{v:?}");
    assert!(v[0].detail.contains("lease #0 (holder job-1"), "{}", v[0]);
}

#[test]
fn longer_inner_hold_keeping_the_outer_hold_passes() {
    let (h, t) = (History::new(), Clock::new());
    let outer = t.hold(&h, LeaseKind::Reentrant, "job-1", 4, 0, 5000);
    let inner = t.hold(&h, LeaseKind::Reentrant, "job-1", 4, 100, 5100);
    let kept = Some(5100);
    h.sampled(outer, t.sample(110, 5000, &[kept, kept, kept, None, None]));
    h.released(inner, t.at(150));
    h.released(outer, t.at(600));
    t.hold(&h, LeaseKind::Reentrant, "job-2", 5, 700, 1700);
    assert_eq!(h.check(&Spec::new().reentrant("r")), vec![]);
}

#[test]
fn claim_of_a_node_that_did_not_answer_counts_as_kept() {
    let (h, t) = (History::new(), Clock::new());
    let a = t.hold(&h, LeaseKind::Mutex, "a", 1, 0, 5000);
    let mut s = t.sample(10, 5000, &[Some(5010), Some(5010), None]);
    s.nodes[2] = NodeHold::Unreachable;
    h.sampled(a, s);
    assert_eq!(h.check(&Spec::new().mutex("m")), vec![]);
}

#[test]
fn claim_read_after_its_deadline_is_not_checked() {
    // The keys may have expired in time before the late reads.
    let (h, t) = (History::new(), Clock::new());
    let a = t.hold(&h, LeaseKind::Mutex, "a", 1, 0, 100);
    h.sampled(a, t.sample(99, 100, &[None, None, None]));
    assert_eq!(h.check(&Spec::new().mutex("m")), vec![]);
}

#[test]
fn claim_counts_restarted_nodes_only_after_the_acquire() {
    let (h, t) = (History::new(), Clock::new());
    h.node_lost(2, t.at(0));
    let a = t.hold(&h, LeaseKind::Mutex, "a", 1, 10, 2000);
    h.acquire_invoked(a, t.at(5));
    let kept = Some(2010);
    h.sampled(a, t.sample(600, 2000, &[kept, kept, None, None, None]));
    let spec = Spec::new().mutex("m");
    // Node 2 came back empty before the acquire: its missing key counts.
    assert_eq!(checks(&h.check(&spec)), ["claim"]);
    // Lost after the acquire: it held the key, the quarantine covers it.
    h.node_lost(2, t.at(500));
    assert_eq!(h.check(&spec), vec![]);
}

#[test]
fn newcomer_locking_through_a_restarted_node_during_a_live_lease_fails() {
    // a holds on {0, 1, 2}; node 2 restarts empty; a client that first
    // meets the nodes after that trusts node 2 and locks on {2, 3, 4}.
    let (h, t) = (History::new(), Clock::new());
    let a = t.hold(&h, LeaseKind::Mutex, "a", 10, 0, 2000);
    h.node_lost(2, t.at(500));
    let kept = Some(2005);
    h.sampled(a, t.sample(550, 2000, &[kept, kept, None, None, None]));
    t.hold(&h, LeaseKind::Mutex, "newcomer", 11, 600, 900);
    let v = h.check(&Spec::new().mutex("m"));
    // a's own keys are as good as the quarantine makes them; the overlap
    // is the newcomer's.
    assert_eq!(checks(&v), ["mutex"], "{v:?}");
    assert!(v[0].detail.contains("holder newcomer"), "{}", v[0]);
    let (h2, t2) = (History::new(), Clock::new());
    t2.hold(&h2, LeaseKind::Mutex, "a", 10, 0, 2000);
    h2.node_lost(2, t2.at(500));
    t2.hold(&h2, LeaseKind::Mutex, "newcomer", 11, 2000, 2300);
    assert_eq!(h2.check(&Spec::new().mutex("m")), vec![]);
}

#[test]
fn fencing_token_going_back_after_a_restart_fails() {
    // Node clocks disagree: the restarted node's floor (ms × 1024) is
    // below the token the others issued.
    let (h, t) = (History::new(), Clock::new());
    let floor = 1_764_000_000_000u64 * 1024;
    let a = t.hold(&h, LeaseKind::Mutex, "a", floor + 3, 0, 100);
    h.released(a, t.at(50));
    h.node_lost(0, t.at(60));
    t.hold(&h, LeaseKind::Mutex, "b", floor - 50 * 1024, 120, 200);
    let v = h.check(&Spec::new().mutex("m"));
    assert_eq!(checks(&v), ["fencing"], "{v:?}");
    let (h2, t2) = (History::new(), Clock::new());
    t2.hold(&h2, LeaseKind::Mutex, "a", floor + 3, 0, 50);
    h2.node_lost(0, t2.at(60));
    t2.hold(&h2, LeaseKind::Mutex, "b", floor + 120 * 1024, 120, 200);
    assert_eq!(h2.check(&Spec::new().mutex("m")), vec![]);
}

#[test]
fn lease_valid_again_after_lost_fired_fails() {
    // lost() fired at the deadline; a renewal in flight landed after it
    // and the guard says it is valid again.
    let (h, t) = (History::new(), Clock::new());
    let a = t.hold(&h, LeaseKind::Mutex, "a", 1, 0, 1000);
    h.lost(a, t.at(1000));
    h.extended(a, t.at(1990));
    let kept = Some(2000);
    h.sampled(a, t.sample(1005, 1990, &[kept, kept, kept]));
    let v = h.check(&Spec::new().mutex("m"));
    assert_eq!(checks(&v), ["lost"], "{v:?}");
    assert!(
        v[0].detail
            .contains("lost() fired at t+1000.0ms, then the guard said at t+1005.0ms"),
        "{}",
        v[0]
    );
}

#[test]
fn lease_sampled_before_lost_fired_passes() {
    let (h, t) = (History::new(), Clock::new());
    let a = t.hold(&h, LeaseKind::Mutex, "a", 1, 0, 1000);
    let kept = Some(1003);
    h.sampled(a, t.sample(900, 1000, &[kept, kept, kept]));
    h.lost(a, t.at(1000));
    assert_eq!(h.check(&Spec::new().mutex("m")), vec![]);
}

#[test]
fn revived_lease_window_runs_to_its_claimed_deadline() {
    let (h, t) = (History::new(), Clock::new());
    let a = t.hold(&h, LeaseKind::Mutex, "a", 1, 0, 1000);
    h.lost(a, t.at(1000));
    h.extended(a, t.at(1990));
    h.sampled(
        a,
        t.sample(1005, 1990, &[Some(2000), Some(2000), Some(2000)]),
    );
    t.hold(&h, LeaseKind::Mutex, "b", 2, 1500, 2500);
    let v = h.check(&Spec::new().mutex("m"));
    assert_eq!(checks(&v), ["lost", "mutex"], "{v:?}");
}

#[test]
fn lost_lease_window_ends_where_lost_fired() {
    // A quorum said "not yours" at 400 ms: the holder stopped there.
    let (h, t) = (History::new(), Clock::new());
    let a = t.hold(&h, LeaseKind::Mutex, "a", 1, 0, 1000);
    h.lost(a, t.at(400));
    t.hold(&h, LeaseKind::Mutex, "b", 2, 500, 1500);
    assert_eq!(h.check(&Spec::new().mutex("m")), vec![]);
}

#[test]
fn barrier_releasing_three_waiters_of_two_parties_fails() {
    // 3 nodes, 2 parties: x cannot reach node 1, y cannot reach node 2, z
    // reaches all; they arrive 400 ms apart and generation 0 lets all out.
    let (h, t) = (History::new(), Clock::new());
    for (i, p) in ["x", "y", "z"].into_iter().enumerate() {
        h.arrived("b", p, t.at(i as u64 * 400));
    }
    for p in ["x", "y", "z"] {
        h.barrier_released("b", p, 0, p == "z", t.at(805));
    }
    let v = h.check(&Spec::new().barrier_safety("b", 2));
    assert_eq!(checks(&v), ["barrier"], "{v:?}");
    assert!(
        v[0].detail.contains("released 3 waiters, not 2"),
        "{}",
        v[0]
    );
}

#[test]
fn barrier_third_arrival_in_the_next_generation_passes() {
    let (h, t) = (History::new(), Clock::new());
    for (i, p) in ["x", "y", "z"].into_iter().enumerate() {
        h.arrived("b", p, t.at(i as u64 * 400));
    }
    h.barrier_released("b", "x", 0, false, t.at(405));
    h.barrier_released("b", "y", 0, true, t.at(405));
    h.barrier_unknown("b", "z", t.at(2000));
    assert_eq!(h.check(&Spec::new().barrier_safety("b", 2)), vec![]);
}

#[test]
fn latch_read_going_back_after_a_failed_count_down_fails() {
    // A writer cut off from all but node 0 counts down a latch of 1 and
    // gets an error; one reader sees it open through node 0, a later one
    // that cannot reach node 0 reads a count of 1.
    let (h, t) = (History::new(), Clock::new());
    h.count_down("l", "x", t.at(0), false);
    h.latch_observed("l", true, t.at(50));
    h.latch_observed("l", false, t.at(60));
    let v = h.check(&Spec::new().latch("l", 1));
    assert_eq!(checks(&v), ["latch"], "{v:?}");
    assert!(v[0].detail.contains("then closed at t+60.0ms"), "{}", v[0]);
}

#[test]
fn latch_read_invoked_before_the_opening_passes() {
    let (h, t) = (History::new(), Clock::new());
    h.count_down("l", "x", t.at(0), false);
    h.latch_observed("l", false, t.at(40));
    h.latch_observed("l", true, t.at(50));
    assert_eq!(h.check(&Spec::new().latch("l", 1)), vec![]);
}

#[test]
fn expiring_latch_closed_after_its_ttl_is_not_checked() {
    let (h, t) = (History::new(), Clock::new());
    h.count_down("l", "x", t.at(0), true);
    h.latch_observed("l", true, t.at(50));
    h.latch_observed("l", false, t.at(150));
    let ttl = Duration::from_millis(100);
    assert_eq!(h.check(&Spec::new().expiring_latch("l", 1, ttl)), vec![]);
    h.latch_observed("l", false, t.at(99));
    let v = h.check(&Spec::new().expiring_latch("l", 1, ttl));
    assert_eq!(checks(&v), ["latch"], "{v:?}");
}

#[test]
fn samples_losses_and_restarts_print_in_the_timeline() {
    let (h, t) = (History::new(), Clock::new());
    let a = t.hold(&h, LeaseKind::Mutex, "a", 1, 0, 100);
    let mut s = t.sample(10, 100, &[Some(105), None]);
    s.nodes.push(NodeHold::Unreachable);
    h.sampled(a, s);
    h.lost(a, t.at(100));
    h.node_lost(1, t.at(120));
    let text = h.to_string();
    assert!(
        text.contains(
            "t+10.0ms lease #0 claims until t+100.0ms; nodes by t+11.0ms: until t+105.0ms, missing, unreachable"
        ),
        "{text}"
    );
    assert!(text.contains("t+100.0ms lease #0 lost"), "{text}");
    assert!(text.contains("t+120.0ms node 1 lost its data"), "{text}");
}

#[test]
fn samples_and_losses_of_unknown_leases_are_reported() {
    let (h, other, t) = (History::new(), History::new(), Clock::new());
    t.hold(&other, LeaseKind::Mutex, "a", 1, 0, 10);
    let foreign = t.hold(&other, LeaseKind::Mutex, "b", 2, 20, 30);
    h.lost(foreign, t.at(5));
    h.sampled(foreign, t.sample(1, 10, &[Some(20)]));
    let v = h.check(&Spec::new().mutex("m"));
    assert_eq!(checks(&v), ["history", "history"], "{v:?}");
}
