//! The counting semaphore on real servers, on one node and on three nodes
//! with one down: at most `permits` holders under contention, multi-permit
//! acquisition, non-blocking and bounded acquisition, the permits of a
//! crashed holder coming back, typed errors, bad input refused before any
//! I/O, and count safety when five-node clients see different majorities.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use quorate::testkit::{RedisServer, ServerGroup};
use quorate::{Error, Quorum, Semaphore, SemaphorePermit};

/// Short enough to wait out, long enough for a vote on a busy 2-core box.
const CRASH_TTL: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_permits_holders_under_contention() {
    const TASKS: usize = 12;
    const PERMITS: usize = 3;
    for setup in common::one_node_and_three_with_one_down().await {
        // Two clients, as if two processes share the semaphore.
        let clients = [setup.fast_client().await, setup.fast_client().await];
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let sem = Semaphore::new(&clients[t % 2], "contended", PERMITS as u32);
                let (inside, most) = (inside.clone(), most.clone());
                tokio::spawn(async move {
                    let permit = sem.acquire().await.unwrap();
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    assert!(permit.is_valid());
                    tokio::time::sleep(Duration::from_millis(40)).await;
                    // Leave before releasing: a new holder may enter as soon
                    // as the release lands.
                    inside.fetch_sub(1, Ordering::SeqCst);
                    permit.release().await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let most = most.load(Ordering::SeqCst);
        assert!(most <= PERMITS, "{}: {most} holders at once", setup.label);
        // With 12 tasks queueing, every permit must have been in use at once:
        // a semaphore that handed out fewer would pass the bound trivially.
        assert_eq!(most, PERMITS, "{}", setup.label);
        let sem = Semaphore::new(&setup.quorum, "contended", PERMITS as u32);
        assert_eq!(sem.available_permits().await.unwrap(), PERMITS as u32);
    }
}

#[tokio::test]
async fn acquire_many_counts_as_that_many_permits() {
    for setup in common::one_node_and_three_with_one_down().await {
        let sem = Semaphore::new(&setup.quorum, "many", 3);
        let two = sem.acquire_many(2).await.unwrap();
        assert_eq!(two.num_permits(), 2, "{}", setup.label);
        let mut slots = two.slots();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), 2, "{}: slots {:?}", setup.label, two.slots());
        assert!(slots.iter().all(|&s| s < 3));
        assert_eq!(sem.available_permits().await.unwrap(), 1);
        // One permit is left: two more do not fit, one does.
        assert!(sem.try_acquire_many(2).await.unwrap().is_none());
        let one = sem.try_acquire().await.unwrap().unwrap();
        assert_eq!(one.num_permits(), 1);
        assert!(!two.slots().contains(&one.slots()[0]), "{}", setup.label);
        assert_eq!(sem.available_permits().await.unwrap(), 0);
        // Releasing the pair frees both of its permits at once.
        two.release().await.unwrap();
        assert_eq!(sem.available_permits().await.unwrap(), 2);
        let again = sem.try_acquire_many(2).await.unwrap().unwrap();
        again.release().await.unwrap();
        one.release().await.unwrap();
        assert_eq!(sem.available_permits().await.unwrap(), 3);
    }
}

#[tokio::test]
async fn try_acquire_returns_none_when_full() {
    for setup in common::one_node_and_three_with_one_down().await {
        let sem = Semaphore::new(&setup.quorum, "full", 2);
        let a = sem.try_acquire().await.unwrap().unwrap();
        let b = sem.try_acquire().await.unwrap().unwrap();
        assert!(
            sem.try_acquire().await.unwrap().is_none(),
            "{}",
            setup.label
        );
        // Another client sees it full too.
        let other = Semaphore::new(&setup.fast_client().await, "full", 2);
        assert!(other.try_acquire().await.unwrap().is_none());
        a.release().await.unwrap();
        let c = other.try_acquire().await.unwrap().unwrap();
        assert!(sem.try_acquire().await.unwrap().is_none());
        b.release().await.unwrap();
        c.release().await.unwrap();
    }
}

#[tokio::test]
async fn acquire_timeout_times_out_when_full() {
    for setup in common::one_node_and_three_with_one_down().await {
        let sem = Semaphore::new(&setup.quorum, "busy", 1);
        let held = sem.acquire().await.unwrap();
        let wait = Duration::from_millis(200);
        let started = Instant::now();
        let err = sem.acquire_timeout(wait).await.unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, Error::Timeout(_)), "{}: {err:?}", setup.label);
        assert!(err.is_timeout());
        assert!(took >= wait, "{}: gave up after {took:?}", setup.label);
        assert!(
            took < wait + Duration::from_secs(1),
            "{}: {took:?}",
            setup.label
        );
        let err = sem.acquire_many_timeout(1, wait).await.unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        // The permit was never taken away from its holder.
        assert!(held.is_valid());
        held.release().await.unwrap();
        sem.acquire_timeout(wait)
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_release_hands_the_permit_to_a_waiter() {
    for setup in common::one_node_and_three_with_one_down().await {
        let sem = Semaphore::new(&setup.quorum, "handoff", 1);
        let held = sem.acquire().await.unwrap();
        let waiter = {
            let sem = Semaphore::new(&setup.fast_client().await, "handoff", 1);
            tokio::spawn(async move { sem.acquire().await.map(|p| (p, Instant::now())) })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiter.is_finished(),
            "{}: acquired while full",
            setup.label
        );
        let released = Instant::now();
        held.release().await.unwrap();
        let (permit, got) = tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(got >= released);
        permit.release().await.unwrap();
    }
}

#[tokio::test]
async fn available_permits_reflects_holders() {
    for setup in common::one_node_and_three_with_one_down().await {
        let sem = Semaphore::new(&setup.quorum, "gauge", 4);
        assert_eq!(sem.available_permits().await.unwrap(), 4, "{}", setup.label);
        let one = sem.acquire().await.unwrap();
        assert_eq!(sem.available_permits().await.unwrap(), 3);
        let two = sem.acquire_many(2).await.unwrap();
        assert_eq!(sem.available_permits().await.unwrap(), 1);
        let three = sem.acquire().await.unwrap();
        assert_eq!(sem.available_permits().await.unwrap(), 0);
        two.release().await.unwrap();
        assert_eq!(sem.available_permits().await.unwrap(), 2);
        one.release().await.unwrap();
        three.release().await.unwrap();
        assert_eq!(sem.available_permits().await.unwrap(), 4);
        assert_eq!(sem.permits(), 4);
        assert_eq!(sem.name(), "gauge");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permits_come_back_after_a_crashed_holders_ttl() {
    for setup in common::one_node_and_three_with_one_down().await {
        let crashing = Semaphore::new(&setup.quorum, "crash", 2)
            .with_ttl(CRASH_TTL)
            .auto_extend(false);
        let taken = Instant::now();
        // A crash: no release, no keeper, no drop.
        std::mem::forget(crashing.acquire_many(2).await.unwrap());
        let sem = Semaphore::new(&setup.fast_client().await, "crash", 2);
        assert!(
            sem.try_acquire().await.unwrap().is_none(),
            "{}",
            setup.label
        );
        assert_eq!(sem.available_permits().await.unwrap(), 0);
        let permit = sem.acquire_timeout(Duration::from_secs(3)).await.unwrap();
        // Not before the TTL (a little slack for the server's own clock)...
        let waited = taken.elapsed();
        assert!(
            waited >= CRASH_TTL - Duration::from_millis(50),
            "{}: permit back after {waited:?}",
            setup.label
        );
        // ...and then both of the crashed holder's permits are back.
        assert_eq!(sem.available_permits().await.unwrap(), 1, "{}", setup.label);
        permit.release().await.unwrap();
        assert_eq!(sem.available_permits().await.unwrap(), 2);
    }
}

#[tokio::test]
async fn another_permit_count_is_a_config_mismatch_while_permits_are_held() {
    for setup in common::one_node_and_three_with_one_down().await {
        let sem = Semaphore::new(&setup.quorum, "sized", 3);
        let held = sem.acquire().await.unwrap();
        let other = Semaphore::new(&setup.quorum, "sized", 4);
        let mismatch = |r: Result<(), Error>| match r {
            Err(Error::ConfigMismatch { resource, .. }) => assert_eq!(resource, "sized"),
            r => panic!("{}: expected ConfigMismatch, got {r:?}", setup.label),
        };
        mismatch(other.try_acquire().await.map(drop));
        mismatch(other.available_permits().await.map(drop));
        // A waiting call must not wait on an error that retrying cannot fix.
        let waited = tokio::time::timeout(Duration::from_secs(2), other.acquire())
            .await
            .unwrap();
        mismatch(waited.map(drop));
        mismatch(
            other
                .acquire_timeout(Duration::from_secs(5))
                .await
                .map(drop),
        );
        // Nothing of the failed attempts is left behind.
        assert_eq!(sem.available_permits().await.unwrap(), 2);
        held.release().await.unwrap();
        // With no permit held the count is free to change.
        other
            .try_acquire()
            .await
            .unwrap()
            .unwrap()
            .release()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn bad_permit_counts_are_refused_before_any_io() {
    for setup in common::one_node_and_three_with_one_down().await {
        let q = &setup.quorum;
        let sem = Semaphore::new(q, "strict", 3);
        // Full, so that any refused call that did wait would hang.
        let held = sem.acquire_many(3).await.unwrap();
        let before = common::dbsizes(&setup.servers).await;

        assert_eq!(common::refused_at_once(sem.acquire_many(0)).await, "k");
        assert_eq!(common::refused_at_once(sem.acquire_many(4)).await, "k");
        assert_eq!(common::refused_at_once(sem.try_acquire_many(0)).await, "k");
        assert_eq!(common::refused_at_once(sem.try_acquire_many(4)).await, "k");
        let long = Duration::from_secs(30);
        assert_eq!(
            common::refused_at_once(sem.acquire_many_timeout(0, long)).await,
            "k"
        );
        assert_eq!(
            common::refused_at_once(sem.acquire_many_timeout(4, long)).await,
            "k"
        );

        for permits in [0, Semaphore::MAX_PERMITS + 1] {
            let bad = Semaphore::new(q, "strict", permits);
            assert_eq!(common::refused_at_once(bad.acquire()).await, "permits");
            assert_eq!(common::refused_at_once(bad.try_acquire()).await, "permits");
            assert_eq!(
                common::refused_at_once(bad.acquire_timeout(long)).await,
                "permits"
            );
            assert_eq!(
                common::refused_at_once(bad.available_permits()).await,
                "permits"
            );
        }
        let unnamed = Semaphore::new(q, "", 3);
        assert_eq!(common::refused_at_once(unnamed.acquire()).await, "name");
        assert_eq!(
            common::refused_at_once(unnamed.available_permits()).await,
            "name"
        );

        assert_eq!(
            common::dbsizes(&setup.servers).await,
            before,
            "{}",
            setup.label
        );
        held.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_after_expiry_is_not_held_and_spares_the_new_holder() {
    for setup in common::one_node_and_three_with_one_down().await {
        let sem = Semaphore::new(&setup.quorum, "expiring", 1)
            .with_ttl(CRASH_TTL)
            .auto_extend(false);
        let stale = sem.acquire().await.unwrap();
        tokio::time::sleep(CRASH_TTL + Duration::from_millis(100)).await;
        assert!(!stale.is_valid());
        // One permit only: the new holder has the very slot that expired.
        let other = Semaphore::new(&setup.fast_client().await, "expiring", 1);
        let fresh = other.acquire_timeout(Duration::from_secs(2)).await.unwrap();
        assert_eq!(fresh.slots(), stale.slots());
        let err = stale.release().await.unwrap_err();
        assert!(matches!(err, Error::NotHeld), "{}: {err:?}", setup.label);
        assert!(fresh.is_valid());
        assert!(
            other.try_acquire().await.unwrap().is_none(),
            "{}",
            setup.label
        );
        assert_eq!(other.available_permits().await.unwrap(), 0);
        fresh.release().await.unwrap();
        assert_eq!(other.available_permits().await.unwrap(), 1);
    }
}

/// A quorum over five URLs that reaches only the nodes in `sees`: the others
/// point at ports where a server was killed, which refuse connections.
async fn partial_view(live: &ServerGroup, dead: &[RedisServer], sees: [usize; 3]) -> Quorum {
    let urls = (0..5).map(|i| {
        if sees.contains(&i) {
            live[i].url()
        } else {
            dead[i].url()
        }
    });
    // Dead nodes cost a node timeout per release; keep it short so that 50
    // rounds fit in a few seconds, still far above a local reply.
    Quorum::builder()
        .nodes(urls)
        .node_timeout(Duration::from_millis(20))
        .build()
        .await
        .unwrap()
}

/// The permits valid right now must be at most 2 and hold distinct slots.
/// Returns how many are valid.
fn assert_at_most_two_valid(held: &[Option<SemaphorePermit>], when: &str) -> usize {
    let valid: Vec<&SemaphorePermit> = held.iter().flatten().filter(|p| p.is_valid()).collect();
    assert!(
        valid.len() <= 2,
        "{when}: {} permits valid at once",
        valid.len()
    );
    let mut slots: Vec<u32> = valid.iter().flat_map(|p| p.slots()).collect();
    slots.sort_unstable();
    slots.dedup();
    assert_eq!(slots.len(), valid.len(), "{when}: a slot with two holders");
    valid.len()
}

/// One try_acquire: in this partition a client may also find its nodes
/// granting different slots, which is a quorum failure, not a permit.
async fn attempt(sem: &Semaphore) -> Option<SemaphorePermit> {
    match sem.try_acquire().await {
        Ok(permit) => permit,
        Err(e) if e.is_quorum() => None,
        Err(e) => panic!("{e:?}"),
    }
}

/// The design's counter-example: 5 nodes, 2 permits, clients A, B and C that
/// reach {0,1,2}, {0,1,3} and {2,3,4}. No node ever sees more than 2 of them,
/// so per-node counting with a majority would give all three a permit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_is_safe_when_clients_see_different_majorities() {
    let live = ServerGroup::start(5).unwrap();
    let dead: Vec<RedisServer> = (0..5)
        .map(|_| {
            let mut server = RedisServer::start().unwrap();
            server.kill();
            server
        })
        .collect();
    let views = [[0, 1, 2], [0, 1, 3], [2, 3, 4]];
    let mut sems = Vec::new();
    for sees in views {
        sems.push(Semaphore::new(
            &partial_view(&live, &dead, sees).await,
            "split",
            2,
        ));
    }

    // One at a time, A then B then C.
    let mut held: Vec<Option<SemaphorePermit>> = Vec::new();
    for sem in &sems {
        held.push(attempt(sem).await);
        assert_at_most_two_valid(&held, "in order");
    }
    assert!(held.iter().flatten().count() <= 2);
    for permit in held.drain(..).flatten() {
        permit.release().await.unwrap();
    }

    // All at once.
    let at_once = futures::future::join_all(sems.iter().map(attempt)).await;
    assert!(
        at_once.iter().flatten().count() <= 2,
        "all three got a permit"
    );
    assert_at_most_two_valid(&at_once, "at once");
    for permit in at_once.into_iter().flatten() {
        permit.release().await.unwrap();
    }

    // Many rounds in every order, with holders keeping their permits across
    // rounds and one of them releasing per round, so acquisitions meet every
    // mix of earlier holders.
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let mut held: Vec<Option<SemaphorePermit>> = vec![None, None, None];
    let mut most = 0;
    for round in 0..50 {
        let order = orders[round % orders.len()];
        if round % 5 == 4 {
            let free: Vec<usize> = order.into_iter().filter(|&c| held[c].is_none()).collect();
            let got = futures::future::join_all(free.iter().map(|&c| attempt(&sems[c]))).await;
            for (c, permit) in free.into_iter().zip(got) {
                held[c] = permit;
            }
            let valid = assert_at_most_two_valid(&held, &format!("round {round}, at once"));
            most = most.max(valid);
        } else {
            for c in order {
                if held[c].is_none() {
                    held[c] = attempt(&sems[c]).await;
                    let valid =
                        assert_at_most_two_valid(&held, &format!("round {round}, client {c}"));
                    most = most.max(valid);
                }
            }
        }
        if let Some(permit) = held[order[round % 3]].take() {
            permit.release().await.unwrap();
        }
        assert_at_most_two_valid(&held, &format!("round {round}, after release"));
    }
    // The bound must not hold merely because the permits were never all in
    // use at once.
    assert_eq!(most, 2, "never two valid permits at once");
    for permit in held.into_iter().flatten() {
        permit.release().await.unwrap();
    }
}
