//! The reentrant lock on real servers, on one node and on three nodes with
//! one down: its owner re-enters at once with the same fencing token, from
//! any task or handle presenting the owner id; other owners wait until every
//! hold is released and then get a larger token; only the owner's guards
//! release; a crashed holder's lock frees after its TTL; bad input is
//! refused before any I/O.

mod common;

use std::time::{Duration, Instant};

use quorate::{Error, ReentrantGuard, ReentrantLock};

/// Short enough to wait out, long enough for a vote on a busy 2-core box.
const CRASH_TTL: Duration = Duration::from_millis(300);

/// How long a waiter may take to notice a release on a busy 2-core box.
const SOON: Duration = Duration::from_secs(2);

/// A re-entry must not wait on anything, so this is far below any backoff
/// or TTL it could be waiting out.
const AT_ONCE: Duration = Duration::from_millis(500);

/// Takes a hold that must be granted at once: a re-entry.
async fn reenter(lock: &ReentrantLock) -> ReentrantGuard {
    let started = Instant::now();
    let guard = lock.try_lock().await.unwrap().unwrap();
    assert!(
        started.elapsed() < AT_ONCE,
        "re-entry took {:?}",
        started.elapsed()
    );
    guard
}

#[tokio::test]
async fn the_owner_reenters_at_once_with_the_same_fencing_token() {
    for setup in common::one_node_and_three_with_one_down().await {
        let lock = ReentrantLock::new(&setup.quorum, "ledger", "job-17");
        let outer = lock.lock().await.unwrap();
        let mut holds = vec![outer];
        for _ in 0..3 {
            holds.push(reenter(&lock).await);
        }
        let waited = lock.lock_timeout(AT_ONCE).await.unwrap();
        holds.push(lock.lock().await.unwrap());
        holds.push(waited);
        let token = holds[0].fencing_token().await.unwrap();
        for guard in &holds {
            assert_eq!(
                guard.fencing_token().await.unwrap(),
                token,
                "{}",
                setup.label
            );
            assert!(guard.is_valid());
            assert_eq!(guard.name(), "ledger");
        }
        assert_eq!(lock.hold_count().await.unwrap(), 6, "{}", setup.label);
        for guard in holds {
            guard.release().await.unwrap();
        }
        assert_eq!(lock.hold_count().await.unwrap(), 0);
    }
}

/// The same promise with every node up: then a vote is decided by the first
/// two answers, which need not come from the two nodes that recorded the
/// token. After a SCRIPT FLUSH (as after a restart) a node lags while it
/// loads the script, which makes that likely.
#[tokio::test]
async fn reentry_keeps_the_fencing_token_on_three_healthy_nodes() {
    let (servers, q) = common::cluster(3).await;
    for round in 0..30 {
        common::script_flush_all(&servers).await;
        let lock = ReentrantLock::new(&q, format!("healthy:{round}"), "job-17");
        let outer = lock.lock().await.unwrap();
        let inner = reenter(&lock).await;
        let innermost = reenter(&lock).await;
        assert_eq!(
            inner.fencing_token().await.unwrap(),
            outer.fencing_token().await.unwrap(),
            "round {round}"
        );
        assert_eq!(
            innermost.fencing_token().await.unwrap(),
            outer.fencing_token().await.unwrap(),
            "round {round}"
        );
        for guard in [innermost, inner, outer] {
            guard.release().await.unwrap();
        }
    }
}

#[tokio::test]
async fn hold_count_counts_the_owners_holds() {
    for setup in common::one_node_and_three_with_one_down().await {
        let lock = ReentrantLock::new(&setup.quorum, "counted", "job-17");
        let other = ReentrantLock::new(&setup.quorum, "counted", "job-18");
        assert_eq!(lock.hold_count().await.unwrap(), 0, "{}", setup.label);
        let mut holds = Vec::new();
        for n in 1..=3 {
            holds.push(lock.lock().await.unwrap());
            assert_eq!(lock.hold_count().await.unwrap(), n, "{}", setup.label);
            // Holds are the owner's: another owner has none.
            assert_eq!(other.hold_count().await.unwrap(), 0);
        }
        for n in (0..3).rev() {
            holds.pop().unwrap().release().await.unwrap();
            assert_eq!(lock.hold_count().await.unwrap(), n, "{}", setup.label);
        }
        assert_eq!(lock.owner(), "job-17");
        assert_eq!(lock.name(), "counted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_owner_waits_until_every_hold_is_released() {
    for setup in common::one_node_and_three_with_one_down().await {
        let lock = ReentrantLock::new(&setup.quorum, "shared", "job-17");
        let other = ReentrantLock::new(&setup.fast_client().await, "shared", "job-18");
        let outer = lock.lock().await.unwrap();
        let inner = lock.lock().await.unwrap();
        assert!(other.try_lock().await.unwrap().is_none(), "{}", setup.label);
        let wait = Duration::from_millis(200);
        let started = Instant::now();
        let err = other.lock_timeout(wait).await.unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{}: {err:?}", setup.label);
        assert!(started.elapsed() >= wait);

        let waiter = {
            let other = other.clone();
            tokio::spawn(async move { other.lock().await.unwrap() })
        };
        // One hold left: still not free.
        inner.release().await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!waiter.is_finished(), "{}: taken over a hold", setup.label);
        assert!(other.try_lock().await.unwrap().is_none(), "{}", setup.label);
        let token = outer.fencing_token().await.unwrap();
        outer.release().await.unwrap();
        let taken = tokio::time::timeout(SOON, waiter).await.unwrap().unwrap();
        assert!(
            taken.fencing_token().await.unwrap() > token,
            "{}",
            setup.label
        );
        // Now the first owner is the one kept out.
        assert!(lock.try_lock().await.unwrap().is_none(), "{}", setup.label);
        taken.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_owners_failed_attempts_do_not_free_the_lock() {
    for setup in common::one_node_and_three_with_one_down().await {
        let lock = ReentrantLock::new(&setup.quorum, "guarded", "job-17");
        let holds = [lock.lock().await.unwrap(), lock.lock().await.unwrap()];
        // A failed attempt undoes what its scripts set, by owner id: that
        // undo must not touch the holder's holds. A cancelled lock() undoes
        // from a spawned task.
        let other = ReentrantLock::new(&setup.fast_client().await, "guarded", "job-18");
        assert!(other.try_lock().await.unwrap().is_none());
        let err = other
            .lock_timeout(Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        assert!(
            tokio::time::timeout(Duration::from_millis(100), other.lock())
                .await
                .is_err()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(lock.hold_count().await.unwrap(), 2, "{}", setup.label);
        assert_eq!(other.hold_count().await.unwrap(), 0);
        assert!(holds.iter().all(|g| g.is_valid()));
        let third = ReentrantLock::new(&setup.quorum, "guarded", "job-19");
        assert!(third.try_lock().await.unwrap().is_none(), "{}", setup.label);
        for guard in holds {
            guard.release().await.unwrap();
        }
        other
            .try_lock()
            .await
            .unwrap()
            .unwrap()
            .release()
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_guard_of_one_owner_does_not_release_the_next_owners_hold() {
    for setup in common::one_node_and_three_with_one_down().await {
        let lock = ReentrantLock::new(&setup.quorum, "handover", "job-17")
            .with_ttl(CRASH_TTL)
            .auto_extend(false);
        let stale = lock.lock().await.unwrap();
        tokio::time::sleep(CRASH_TTL + Duration::from_millis(100)).await;
        assert!(!stale.is_valid());
        let next = ReentrantLock::new(&setup.fast_client().await, "handover", "job-18");
        let fresh = next.lock_timeout(SOON).await.unwrap();
        let err = stale.release().await.unwrap_err();
        assert!(matches!(err, Error::NotHeld), "{}: {err:?}", setup.label);
        assert!(fresh.is_valid());
        assert_eq!(next.hold_count().await.unwrap(), 1, "{}", setup.label);
        assert_eq!(lock.hold_count().await.unwrap(), 0);
        assert!(lock.try_lock().await.unwrap().is_none(), "{}", setup.label);
        fresh.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reentry_works_across_tasks_sharing_an_owner_id() {
    for setup in common::one_node_and_three_with_one_down().await {
        // Two handles on two clients, as if two processes work for one job.
        let first = ReentrantLock::new(&setup.quorum, "job-lock", "job-17");
        let second = ReentrantLock::new(&setup.fast_client().await, "job-lock", "job-17");
        let outsider = ReentrantLock::new(&setup.quorum, "job-lock", "job-18");
        let (taken_tx, taken_rx) = tokio::sync::oneshot::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let holder = tokio::spawn(async move {
            let guard = first.lock().await.unwrap();
            taken_tx.send(guard.fencing_token().await.unwrap()).unwrap();
            done_rx.await.unwrap();
            guard.release().await.unwrap();
        });
        let token = taken_rx.await.unwrap();
        let joined = tokio::spawn(async move {
            let guard = reenter(&second).await;
            (second, guard)
        })
        .await
        .unwrap();
        let (second, guard) = joined;
        assert_eq!(
            guard.fencing_token().await.unwrap(),
            token,
            "{}",
            setup.label
        );
        assert_eq!(second.hold_count().await.unwrap(), 2, "{}", setup.label);
        assert!(outsider.try_lock().await.unwrap().is_none());
        // The first task lets go; the job still holds the lock through the
        // second.
        done_tx.send(()).unwrap();
        holder.await.unwrap();
        assert_eq!(second.hold_count().await.unwrap(), 1);
        assert!(
            outsider.try_lock().await.unwrap().is_none(),
            "{}",
            setup.label
        );
        guard.release().await.unwrap();
        outsider
            .try_lock()
            .await
            .unwrap()
            .unwrap()
            .release()
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holders_lock_frees_after_its_ttl() {
    for setup in common::one_node_and_three_with_one_down().await {
        let crashing = ReentrantLock::new(&setup.quorum, "crash", "job-17")
            .with_ttl(CRASH_TTL)
            .auto_extend(false);
        let taken = Instant::now();
        let outer = crashing.lock().await.unwrap();
        let token = outer.fencing_token().await.unwrap();
        // A crash: no release, no keeper, no drop, for every hold.
        std::mem::forget(outer);
        std::mem::forget(crashing.lock().await.unwrap());
        let next = ReentrantLock::new(&setup.fast_client().await, "crash", "job-18");
        assert!(next.try_lock().await.unwrap().is_none(), "{}", setup.label);
        let guard = next.lock_timeout(Duration::from_secs(3)).await.unwrap();
        let waited = taken.elapsed();
        // Not before the TTL (a little slack for the server's own clock).
        assert!(
            waited >= CRASH_TTL - Duration::from_millis(50),
            "{}: free after {waited:?}",
            setup.label
        );
        assert!(
            guard.fencing_token().await.unwrap() > token,
            "{}",
            setup.label
        );
        assert_eq!(crashing.hold_count().await.unwrap(), 0);
        guard.release().await.unwrap();
    }
}

#[tokio::test]
async fn empty_owner_or_name_is_refused_before_any_io() {
    for setup in common::one_node_and_three_with_one_down().await {
        let q = &setup.quorum;
        // Held, so that a refused lock() that did wait would hang.
        let held = ReentrantLock::new(q, "strict", "holder")
            .lock()
            .await
            .unwrap();
        let before = common::dbsizes(&setup.servers).await;

        let huge = "x".repeat(1025);
        for owner in ["", huge.as_str()] {
            let bad = ReentrantLock::new(q, "strict", owner);
            assert_eq!(common::refused_at_once(bad.lock()).await, "owner");
            let long = Duration::from_secs(30);
            assert_eq!(
                common::refused_at_once(bad.lock_timeout(long)).await,
                "owner"
            );
            assert_eq!(common::refused_at_once(bad.try_lock()).await, "owner");
            assert_eq!(common::refused_at_once(bad.hold_count()).await, "owner");
        }
        for name in ["", huge.as_str()] {
            let bad = ReentrantLock::new(q, name, "holder");
            assert_eq!(common::refused_at_once(bad.lock()).await, "name");
            assert_eq!(common::refused_at_once(bad.try_lock()).await, "name");
            assert_eq!(common::refused_at_once(bad.hold_count()).await, "name");
        }

        assert_eq!(
            common::dbsizes(&setup.servers).await,
            before,
            "{}",
            setup.label
        );
        held.release().await.unwrap();
    }
}

/// One hold's short TTL never cuts another's: an inner hold of 300 ms,
/// taken through another handle and dropped, leaves the outer hold of 5 s
/// in force, and no other owner gets the lock meanwhile.
#[tokio::test]
async fn a_short_inner_hold_never_cuts_the_outer_hold() {
    for setup in common::one_node_and_three_with_one_down().await {
        let owner = "job-9";
        let outer = ReentrantLock::new(&setup.quorum, "nested", owner)
            .with_ttl(Duration::from_secs(5))
            .lock()
            .await
            .unwrap();
        let inner = ReentrantLock::new(&setup.quorum, "nested", owner)
            .with_ttl(CRASH_TTL)
            .auto_extend(false)
            .lock()
            .await
            .unwrap();
        drop(inner);
        tokio::time::sleep(CRASH_TTL * 2).await;
        assert!(outer.is_valid(), "{}", setup.label);
        let other = ReentrantLock::new(&setup.fast_client().await, "nested", "job-10");
        assert!(
            other.try_lock().await.unwrap().is_none(),
            "{}: another owner got the lock while the outer hold was valid",
            setup.label
        );
        // An inner hold left to expire does not cut it either.
        let lapsing = ReentrantLock::new(&setup.quorum, "nested", owner)
            .with_ttl(CRASH_TTL)
            .auto_extend(false)
            .lock()
            .await
            .unwrap();
        std::mem::forget(lapsing);
        tokio::time::sleep(CRASH_TTL * 2).await;
        assert!(other.try_lock().await.unwrap().is_none(), "{}", setup.label);
        outer.release().await.unwrap();
        assert!(other.try_lock().await.unwrap().is_some(), "{}", setup.label);
    }
}
