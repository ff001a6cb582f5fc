//! The cyclic barrier on real servers, on one node and on three nodes with
//! one down: each generation releases exactly `parties` waiters once the
//! last arrives, with one leader and generation numbers counting up by one;
//! a party that does not arrive in time breaks its generation for everyone
//! in it and the next one starts clean; bad party counts and mismatched
//! ones fail with typed errors (bad input before any I/O).

mod common;

use std::time::{Duration, Instant};

use quorate::{Barrier, BarrierWaitResult, Error, Quorum};
use tokio::sync::mpsc;

/// How long released waiters may take to notice on a busy 2-core box.
const SOON: Duration = Duration::from_secs(2);

/// Long enough that a waiter still pending after it is really blocked.
const SETTLE: Duration = Duration::from_millis(150);

/// Starts a waiter that reports its outcome on `done`.
fn arrive(
    q: &Quorum,
    name: &str,
    parties: u32,
    done: &mpsc::UnboundedSender<BarrierWaitResult>,
) -> tokio::task::JoinHandle<()> {
    let barrier = Barrier::new(q, name, parties);
    let done = done.clone();
    tokio::spawn(async move {
        done.send(barrier.wait().await.unwrap()).unwrap();
    })
}

/// Receives `n` released waiters, which must all be of `generation` with
/// exactly one leader among them.
async fn released(
    rx: &mut mpsc::UnboundedReceiver<BarrierWaitResult>,
    n: usize,
    generation: u64,
    label: &str,
) {
    let mut leaders = 0;
    for _ in 0..n {
        let result = tokio::time::timeout(SOON, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{label}: generation {generation} not released"))
            .unwrap();
        assert_eq!(result.generation(), generation, "{label}");
        leaders += usize::from(result.is_leader());
    }
    assert_eq!(leaders, 1, "{label}: leaders of generation {generation}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_generation_releases_exactly_parties_waiters_after_the_last_arrives() {
    for setup in common::one_node_and_three_with_one_down().await {
        let clients = [setup.quorum.clone(), setup.fast_client().await];
        let (tx, mut rx) = mpsc::unbounded_channel();
        arrive(&clients[0], "phase", 3, &tx);
        arrive(&clients[1], "phase", 3, &tx);
        tokio::time::sleep(SETTLE).await;
        assert!(
            rx.try_recv().is_err(),
            "{}: released with 2 of 3",
            setup.label
        );
        // Two more: the first of them completes generation 0, the other
        // starts generation 1 and must stay there alone.
        arrive(&clients[0], "phase", 3, &tx);
        arrive(&clients[1], "phase", 3, &tx);
        released(&mut rx, 3, 0, setup.label).await;
        tokio::time::sleep(SETTLE).await;
        assert!(
            rx.try_recv().is_err(),
            "{}: a 4th waiter released",
            setup.label
        );
        arrive(&clients[0], "phase", 3, &tx);
        tokio::time::sleep(SETTLE).await;
        assert!(
            rx.try_recv().is_err(),
            "{}: released with 2 of 3",
            setup.label
        );
        arrive(&clients[1], "phase", 3, &tx);
        released(&mut rx, 3, 1, setup.label).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_per_generation_and_generations_count_up_by_one() {
    const PARTIES: usize = 3;
    const GENERATIONS: u64 = 5;
    for setup in common::one_node_and_three_with_one_down().await {
        let clients = [setup.quorum.clone(), setup.fast_client().await];
        // Each party waits again as soon as it is released: the barrier must
        // be ready for the next generation at once.
        let tasks: Vec<_> = (0..PARTIES)
            .map(|p| {
                let barrier = Barrier::new(&clients[p % 2], "lockstep", PARTIES as u32);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    for _ in 0..GENERATIONS {
                        seen.push(barrier.wait().await.unwrap());
                    }
                    seen
                })
            })
            .collect();
        let mut leaders = vec![0; GENERATIONS as usize];
        for task in tasks {
            let seen = tokio::time::timeout(SOON * 2, task).await.unwrap().unwrap();
            let generations: Vec<u64> = seen.iter().map(BarrierWaitResult::generation).collect();
            assert_eq!(
                generations,
                (0..GENERATIONS).collect::<Vec<_>>(),
                "{}",
                setup.label
            );
            for result in seen {
                leaders[result.generation() as usize] += usize::from(result.is_leader());
            }
        }
        assert_eq!(leaders, vec![1; GENERATIONS as usize], "{}", setup.label);
    }
}

/// More waiters than parties arriving at the same moment: each node takes
/// them in its own order, yet every node must put the same waiters in each
/// generation, so two full generations are released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_arrivals_fill_consecutive_generations() {
    for setup in common::one_node_and_three_with_one_down().await {
        let clients = [setup.quorum.clone(), setup.fast_client().await];
        for round in 0..3 {
            let name = format!("crowd:{round}");
            let (tx, mut rx) = mpsc::unbounded_channel();
            for p in 0..6 {
                arrive(&clients[p % 2], &name, 3, &tx);
            }
            let mut generations = Vec::new();
            let mut leaders = 0;
            for _ in 0..6 {
                let result = tokio::time::timeout(SOON, rx.recv())
                    .await
                    .unwrap_or_else(|_| {
                        panic!("{}: released {generations:?} of 2 x 3", setup.label)
                    })
                    .unwrap();
                generations.push(result.generation());
                leaders += usize::from(result.is_leader());
            }
            generations.sort_unstable();
            assert_eq!(generations, [0, 0, 0, 1, 1, 1], "{}", setup.label);
            assert_eq!(leaders, 2, "{}", setup.label);
        }
    }
}

/// With every node up, an arrival counts once two nodes have it, so the
/// third may lag behind; after a SCRIPT FLUSH (as after a restart) it lags
/// while it loads the script. Every generation must still complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generations_complete_on_three_healthy_nodes() {
    let (servers, q) = common::cluster(3).await;
    let clients = [q, common::fast_quorum(&servers).await];
    let (tx, mut rx) = mpsc::unbounded_channel();
    for generation in 0..5 {
        common::script_flush_all(&servers).await;
        for p in 0..4 {
            arrive(&clients[p % 2], "healthy", 4, &tx);
        }
        released(&mut rx, 4, generation, "3 healthy nodes").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_that_does_not_arrive_in_time_breaks_the_generation() {
    for setup in common::one_node_and_three_with_one_down().await {
        let clients = [setup.quorum.clone(), setup.fast_client().await];
        let impatient = Barrier::new(&clients[0], "broken", 3);
        let patient = Barrier::new(&clients[1], "broken", 3);
        // The third party never comes. The impatient one gives up and
        // breaks the generation; the patient one is told so at once rather
        // than at its own, much later, deadline.
        let started = Instant::now();
        let (early, late) = tokio::join!(
            impatient.wait_timeout(Duration::from_millis(300)),
            patient.wait_timeout(Duration::from_secs(10)),
        );
        let took = started.elapsed();
        assert!(
            matches!(early, Err(Error::BrokenBarrier)),
            "{}: {early:?}",
            setup.label
        );
        assert!(
            matches!(late, Err(Error::BrokenBarrier)),
            "{}: {late:?}",
            setup.label
        );
        assert!(
            took < SOON + Duration::from_millis(300),
            "{}: {took:?}",
            setup.label
        );

        // The next generation starts with no arrivals: two new parties are
        // not released by the two that broke away...
        let (tx, mut rx) = mpsc::unbounded_channel();
        arrive(&clients[0], "broken", 3, &tx);
        arrive(&clients[1], "broken", 3, &tx);
        tokio::time::sleep(SETTLE).await;
        assert!(
            rx.try_recv().is_err(),
            "{}: old arrivals counted",
            setup.label
        );
        // ...and a full set is, as the generation after the broken one.
        let last = patient.wait_timeout(Duration::from_secs(5)).await.unwrap();
        assert_eq!(last.generation(), 1, "{}", setup.label);
        let others = [rx.recv().await.unwrap(), rx.recv().await.unwrap()];
        assert!(others.iter().all(|r| r.generation() == 1));
        let leaders =
            others.iter().filter(|r| r.is_leader()).count() + usize::from(last.is_leader());
        assert_eq!(leaders, 1, "{}", setup.label);
    }
}

#[tokio::test]
async fn bad_party_counts_are_refused_before_any_io() {
    for setup in common::one_node_and_three_with_one_down().await {
        let q = &setup.quorum;
        // Some state on the servers, whose size must not change.
        let pair = Barrier::new(q, "strict", 2);
        let (a, b) = tokio::join!(pair.wait(), pair.wait());
        a.unwrap();
        b.unwrap();
        let before = common::dbsizes(&setup.servers).await;

        for parties in [0, 1, Barrier::MAX_PARTIES + 1] {
            let bad = Barrier::new(q, "strict", parties);
            assert_eq!(common::refused_at_once(bad.wait()).await, "parties");
            let long = Duration::from_secs(30);
            assert_eq!(
                common::refused_at_once(bad.wait_timeout(long)).await,
                "parties"
            );
        }
        let unnamed = Barrier::new(q, "", 2);
        assert_eq!(common::refused_at_once(unnamed.wait()).await, "name");

        assert_eq!(
            common::dbsizes(&setup.servers).await,
            before,
            "{}",
            setup.label
        );
    }
}

#[tokio::test]
async fn another_parties_count_for_the_same_name_is_a_config_mismatch() {
    for setup in common::one_node_and_three_with_one_down().await {
        let pair = Barrier::new(&setup.quorum, "sized", 2);
        let (a, b) = tokio::join!(pair.wait(), pair.wait());
        assert_eq!(a.unwrap().generation(), 0);
        assert_eq!(b.unwrap().generation(), 0);

        let other = Barrier::new(&setup.quorum, "sized", 3);
        let mismatch = |r: Result<BarrierWaitResult, Error>| match r {
            Err(Error::ConfigMismatch { resource, .. }) => assert_eq!(resource, "sized"),
            r => panic!("{}: expected ConfigMismatch, got {r:?}", setup.label),
        };
        // A wait must not go on over an error that retrying cannot fix.
        mismatch(tokio::time::timeout(SOON, other.wait()).await.unwrap());
        mismatch(other.wait_timeout(Duration::from_secs(5)).await);

        // The barrier as created is untouched and goes on.
        let (a, b) = tokio::join!(pair.wait(), pair.wait());
        assert_eq!(a.unwrap().generation(), 1, "{}", setup.label);
        assert_eq!(b.unwrap().generation(), 1);
        assert_eq!(pair.parties(), 2);
        assert_eq!(pair.name(), "sized");
    }
}
