//! Fault scenarios of the reliability plan for the primitives other than the
//! mutex, one test per row (S-3, S-4, L-1, B-1, R-1, R-2), on real servers
//! behind fault proxies, plus a second S-4 test that pins down one way a
//! permit fails to come back. Each records what the library said in a
//! `testkit::History` and checks it against a `Spec`, so the property is
//! judged over the whole run, not only at the points a test happens to look.
//!
//! Crashes are `std::mem::forget` of guards taken with `auto_extend(false)`:
//! no release, no renewal, no drop. The servers tie nothing to a client's
//! connections, so that is what they see of a SIGKILLed holder too.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use quorate::testkit::{FaultProxy, History, LeaseKind, ServerGroup, Spec};
use quorate::{Barrier, Error, Latch, Quorum, QuorumBuilder, ReentrantLock, Semaphore};

/// How long a waiter may take to notice a change on a busy 2-core box.
const SOON: Duration = Duration::from_secs(2);

/// One client's own path to every node: a proxy per node, so its faults hit
/// this client only, and a quorum through them.
struct View {
    proxies: Vec<FaultProxy>,
    quorum: Quorum,
}

/// A client that reaches only the nodes in `sees`; the others refuse its
/// connections, like nodes that are down for it alone. It connects while
/// its reachable nodes are a majority.
async fn view(
    servers: &ServerGroup,
    sees: &[usize],
    settings: impl FnOnce(QuorumBuilder) -> QuorumBuilder,
) -> View {
    let mut proxies = Vec::new();
    for i in 0..servers.len() {
        let proxy = FaultProxy::start(servers[i].port()).await.unwrap();
        proxy.refuse(!sees.contains(&i));
        proxies.push(proxy);
    }
    let urls: Vec<String> = proxies.iter().map(FaultProxy::url).collect();
    let quorum = settings(Quorum::builder().nodes(urls))
        .build()
        .await
        .unwrap();
    View { proxies, quorum }
}

/// Fails with every violation and the whole timeline.
fn assert_safe(history: &History, spec: &Spec) {
    let violations = history.check(spec);
    let listed: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(
        violations.is_empty(),
        "{} violations:\n{}\nhistory:\n{history}",
        violations.len(),
        listed.join("\n")
    );
}

/// The most windows `[start, end)` open at one instant.
fn most_at_once(windows: &[(Instant, Instant)]) -> usize {
    let mut points: Vec<(Instant, i32)> = Vec::new();
    for &(start, end) in windows.iter().filter(|(s, e)| s < e) {
        points.push((start, 1));
        points.push((end, -1));
    }
    // Ends before starts at a tie: the windows are half-open.
    points.sort();
    let (mut open, mut most) = (0, 0);
    for (_, step) in points {
        open += step;
        most = most.max(open);
    }
    most as usize
}

/// The design's counter-example to per-node counting: 5 nodes, 2 permits,
/// clients A, B and C reaching {0,1,2}, {0,1,3} and {2,3,4}. No node is
/// shared by all three, so counters per node with a majority would let all
/// three hold a permit. Every round all three try at once, some with
/// `try_acquire`, some with `acquire_timeout` (which a release in the same
/// round may serve).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_two_permits_are_never_exceeded_when_clients_see_different_majorities() {
    const NAME: &str = "split";
    const ROUNDS: usize = 24;
    let servers = ServerGroup::start(5).unwrap();
    let mut views = Vec::new();
    for sees in [[0, 1, 2], [0, 1, 3], [2, 3, 4]] {
        // A node timeout well above a local reply on a loaded box; refused
        // nodes fail at once anyway.
        let settings = |b: QuorumBuilder| {
            b.ttl(Duration::from_secs(2))
                .node_timeout(Duration::from_millis(150))
                .retry(Duration::from_millis(5), Duration::from_millis(10))
        };
        views.push(view(&servers, &sees, settings).await);
    }
    let history = History::new();
    let windows = Arc::new(StdMutex::new(Vec::new()));
    let start = Arc::new(tokio::sync::Barrier::new(3));
    let workers: Vec<_> = views
        .iter()
        .enumerate()
        .map(|(c, v)| {
            let sem = Semaphore::new(&v.quorum, NAME, 2);
            let (history, windows, start) = (history.clone(), windows.clone(), start.clone());
            let holder = ["A", "B", "C"][c];
            tokio::spawn(async move {
                let mut granted = 0;
                for round in 0..ROUNDS {
                    start.wait().await;
                    let invoked = Instant::now();
                    let result = if (round + c) % 2 == 0 {
                        sem.try_acquire().await
                    } else {
                        sem.acquire_timeout(Duration::from_millis(300))
                            .await
                            .map(Some)
                    };
                    let permit = match result {
                        Ok(Some(permit)) => permit,
                        Ok(None) => continue,
                        // Busy until the deadline, or too few of this
                        // client's nodes agreed: no permit, and no harm.
                        Err(e) if e.is_timeout() || e.is_quorum() => {
                            history.failed(NAME, "acquire", e.to_string(), Instant::now());
                            continue;
                        }
                        Err(e) => panic!("{holder}, round {round}: {e:?}"),
                    };
                    granted += 1;
                    let id = history.lease(
                        LeaseKind::Semaphore,
                        NAME,
                        holder,
                        permit.fencing_token().await.unwrap(),
                        permit.num_permits(),
                        permit.acquired_at(),
                        permit.deadline(),
                    );
                    history.acquire_invoked(id, invoked);
                    assert!(permit.is_valid(), "{holder}, round {round}");
                    // Holds of different lengths, so the clients overlap in
                    // every combination.
                    let hold = 10 + (round * 7 + c * 11) % 30;
                    tokio::time::sleep(Duration::from_millis(hold as u64)).await;
                    history.extended(id, permit.deadline());
                    let released = Instant::now();
                    history.released(id, released);
                    windows
                        .lock()
                        .unwrap()
                        .push((permit.acquired_at(), released.min(permit.deadline())));
                    match permit.release().await {
                        Ok(()) => {}
                        // Too few answers in time: the slot expires by TTL.
                        Err(e) if e.is_quorum() => {
                            history.failed(NAME, "release", e.to_string(), Instant::now());
                        }
                        Err(e) => panic!("{holder}, round {round}: release gave {e:?}"),
                    }
                }
                granted
            })
        })
        .collect();
    // The first panic ends the wait: the others would block at the barrier.
    let all = futures::future::try_join_all(workers);
    let granted = tokio::time::timeout(Duration::from_secs(25), all)
        .await
        .unwrap()
        .unwrap();
    assert_safe(&history, &Spec::new().semaphore(NAME, 2));
    // The bound must not hold merely because permits were never both used.
    let most = most_at_once(&windows.lock().unwrap());
    assert_eq!(most, 2, "never two holders at once; grants {granted:?}");
    assert!(
        granted.iter().all(|&g| g > 0),
        "a client never got a permit: {granted:?}\n{history}"
    );
}

/// Holders of every permit crash; once their TTL has passed, as many new
/// holders get in, and none before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_every_permit_of_crashed_holders_comes_back_after_the_ttl() {
    const NAME: &str = "reclaim";
    const PERMITS: u32 = 3;
    const TTL: Duration = Duration::from_millis(500);
    let servers = ServerGroup::start(3).unwrap();
    let history = History::new();
    let mut crashed_until = Vec::new();
    for c in 0..PERMITS {
        // Each holder is its own process, with its own connections.
        let client = common::fast_quorum(&servers).await;
        let sem = Semaphore::new(&client, NAME, PERMITS)
            .with_ttl(TTL)
            .auto_extend(false);
        let permit = sem.acquire().await.unwrap();
        history.lease(
            LeaseKind::Semaphore,
            NAME,
            &format!("crashed-{c}"),
            permit.fencing_token().await.unwrap(),
            permit.num_permits(),
            permit.acquired_at(),
            permit.deadline(),
        );
        crashed_until.push(permit.deadline());
        // The crash: no release, no renewal, no drop.
        std::mem::forget(permit);
    }
    let crashed_at = Instant::now();

    let observer = Semaphore::new(&common::fast_quorum(&servers).await, NAME, PERMITS);
    assert!(
        common::despite_slow_nodes(|| observer.try_acquire())
            .await
            .is_none()
    );
    assert_eq!(
        common::despite_slow_nodes(|| observer.available_permits()).await,
        0
    );

    // New holders, each a process of its own, all waiting at once.
    let mut waiters = Vec::new();
    for c in 0..PERMITS {
        let client = common::fast_quorum(&servers).await;
        let history = history.clone();
        waiters.push(tokio::spawn(async move {
            let sem = Semaphore::new(&client, NAME, PERMITS);
            let invoked = Instant::now();
            let permit = sem.acquire_timeout(Duration::from_secs(3)).await.unwrap();
            let id = history.lease(
                LeaseKind::Semaphore,
                NAME,
                &format!("new-{c}"),
                permit.fencing_token().await.unwrap(),
                permit.num_permits(),
                permit.acquired_at(),
                permit.deadline(),
            );
            history.acquire_invoked(id, invoked);
            (id, permit)
        }));
    }
    let mut fresh = Vec::new();
    for waiter in waiters {
        fresh.push(
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    // The k-th permit back comes no sooner than the k-th crashed lease
    // ended, by the local clock (the checker below says the same of every
    // instant).
    let mut back: Vec<Instant> = fresh.iter().map(|(_, p)| p.acquired_at()).collect();
    back.sort();
    crashed_until.sort();
    for (k, (got, ended)) in back.iter().zip(&crashed_until).enumerate() {
        assert!(
            got >= ended,
            "permit {k} came back {:?} before crashed lease {k} ended",
            *ended - *got
        );
    }
    assert!(fresh.iter().all(|(_, p)| p.is_valid()));
    assert!(crashed_at.elapsed() < TTL + Duration::from_secs(3));
    assert_eq!(
        common::despite_slow_nodes(|| observer.available_permits()).await,
        0
    );
    let mut slots: Vec<u32> = fresh.iter().flat_map(|(_, p)| p.slots()).collect();
    slots.sort_unstable();
    assert_eq!(slots, [0, 1, 2]);
    for (id, permit) in fresh {
        history.extended(id, permit.deadline());
        history.released(id, Instant::now());
        permit.release().await.unwrap();
    }
    assert_eq!(
        common::despite_slow_nodes(|| observer.available_permits()).await,
        PERMITS
    );
    assert_safe(&history, &Spec::new().semaphore(NAME, PERMITS));
}

/// Slots and their owners in one node's semaphore state.
async fn owners_on(servers: &ServerGroup, i: usize, name: &str) -> Vec<(String, String)> {
    let mut c = common::conn(servers, i).await;
    let owners: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(format!("{{{name}}}:owners"))
        .query_async(&mut c)
        .await
        .unwrap();
    owners.into_iter().filter(|(k, _)| k != "permits").collect()
}

/// The permits of S-4 come back only if a release frees every slot its
/// holder took. A slow node answers after the vote was decided by the other
/// two, and may give the holder another slot than they agreed on (here it
/// has slot 0 taken by a permit whose release never reached it). That slot
/// must be freed too, not held until the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_a_released_permit_leaves_no_slot_on_a_slow_node() {
    const NAME: &str = "straggler";
    let servers = ServerGroup::start(3).unwrap();
    {
        let mut c = common::conn(&servers, 2).await;
        let (secs, _): (i64, i64) = redis::cmd("TIME").query_async(&mut c).await.unwrap();
        let expiry = (secs + 60) * 1000;
        let _: () = redis::cmd("ZADD")
            .arg(NAME)
            .arg(expiry)
            .arg("0")
            .query_async(&mut c)
            .await
            .unwrap();
        let _: () = redis::cmd("HSET")
            .arg(format!("{{{NAME}}}:owners"))
            .arg("0")
            .arg("forgotten")
            .arg("permits")
            .arg("2")
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let client = view(&servers, &[0, 1, 2], |b| b).await;
    // Load the scripts everywhere first: a node that has to load them
    // while slow would answer nothing in time, and run nothing.
    let sem = Semaphore::new(&client.quorum, NAME, 2);
    Semaphore::new(&client.quorum, "warm-up", 2)
        .acquire()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    // Node 2 answers after nodes 0 and 1 have decided every vote, yet well
    // within the node timeout.
    client.proxies[2].set_latency(Duration::from_millis(10), Duration::ZERO);
    // The slot tried first is random: when it is 0, node 2 grants slot 1
    // while the others grant 0. Eight rounds miss that with odds 1 in 256.
    for _ in 0..8 {
        let permit = sem.acquire_timeout(SOON).await.unwrap();
        permit.release().await.unwrap();
    }
    // Let node 2's delayed requests land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..3 {
        let left: Vec<(String, String)> = owners_on(&servers, i, NAME)
            .await
            .into_iter()
            .filter(|(_, owner)| owner != "forgotten")
            .collect();
        assert!(
            left.is_empty(),
            "node {i} still holds slots of released permits: {left:?}"
        );
    }
}

/// Records a latch's state as read by `count()`: open when it read 0 (at
/// return), closed otherwise (at invoke). Returns the count.
async fn observe(latch: &Latch, history: &History) -> u32 {
    let invoked = Instant::now();
    let left = common::despite_slow_nodes(|| latch.count()).await;
    if left == 0 {
        history.latch_observed(latch.name(), true, Instant::now());
    } else {
        history.latch_observed(latch.name(), false, invoked);
    }
    left
}

/// A count-down, recorded under `id` (for `count_down()` a label of our
/// own: each call is one distinct operation).
async fn count_down(latch: &Latch, history: &History, id: &str, fresh: bool) {
    let invoked = Instant::now();
    let result = if fresh {
        latch.count_down().await
    } else {
        latch.count_down_as(id).await
    };
    history.count_down(latch.name(), id, invoked, result.is_ok());
    result.unwrap();
}

/// Ids on one node's latch set.
async fn ids_on(servers: &ServerGroup, i: usize, name: &str) -> i64 {
    let mut c = common::conn(servers, i).await;
    redis::cmd("SCARD")
        .arg(name)
        .query_async(&mut c)
        .await
        .unwrap()
}

/// Lets replies through again on a client's proxies. The proxy swallowed
/// whole replies, which a real TCP connection never does without breaking:
/// resetting the connections lets the client start clean instead of pairing
/// later replies with the wrong requests.
fn heal(proxies: &[FaultProxy]) {
    for p in proxies {
        p.heal();
        p.reset();
    }
}

/// Count-downs whose replies are lost on 2 of 3 nodes cannot get a majority
/// of acknowledgements, so each retries with its operation id until the
/// replies flow again; those retries, and explicit repeats of an id, count
/// once. The latch opens exactly once, only after the 5th distinct
/// count-down, and stays open for every reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_retried_and_repeated_count_downs_count_once_and_the_latch_opens_once() {
    const NAME: &str = "l1";
    const COUNT: u32 = 5;
    let servers = ServerGroup::start(3).unwrap();
    let counter = view(&servers, &[0, 1, 2], |b| b).await;
    let latch = Latch::new(&counter.quorum, NAME, COUNT);
    let history = History::new();

    // Waiters and a reader are other processes, on direct connections.
    let mut waiters = Vec::new();
    for _ in 0..3 {
        let latch = Latch::new(&common::fast_quorum(&servers).await, NAME, COUNT);
        let history = history.clone();
        waiters.push(tokio::spawn(async move {
            latch.wait().await.unwrap();
            history.latch_observed(NAME, true, Instant::now());
        }));
    }
    let reader = Latch::new(&common::fast_quorum(&servers).await, NAME, COUNT);
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let polling = {
        let (reader, history, stop, reads) =
            (reader.clone(), history.clone(), stop.clone(), reads.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                observe(&reader, &history).await;
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };
    assert_eq!(observe(&reader, &history).await, COUNT);

    // Replies lost on nodes 0 and 1: the requests run there, but only node
    // 2 acknowledges, one short of a majority.
    for p in &counter.proxies[..2] {
        p.drop_replies(true);
    }
    let faulted = Instant::now();
    {
        let (latch, history) = (&latch, &history);
        let blind = async move {
            tokio::join!(
                count_down(latch, history, "d1", false),
                count_down(latch, history, "d2", false),
                count_down(latch, history, "anonymous-1", true),
            )
        };
        tokio::pin!(blind);
        // They retry, and keep retrying, while the replies are lost.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut blind)
                .await
                .is_err(),
            "a count-down returned without a majority of acknowledgements"
        );
        heal(&counter.proxies);
        tokio::time::timeout(Duration::from_secs(5), blind)
            .await
            .unwrap();
    }
    assert!(faulted.elapsed() >= Duration::from_millis(300));
    // Every attempt reached every node, yet each operation counts once.
    for i in 0..3 {
        assert_eq!(ids_on(&servers, i, NAME).await, 3, "node {i}");
    }
    assert_eq!(observe(&reader, &history).await, 2);

    // Explicit repeats of the same ids, from this and another client.
    for id in ["d1", "d2", "d1"] {
        count_down(&latch, &history, id, false).await;
    }
    count_down(&reader, &history, "d2", false).await;
    assert_eq!(observe(&reader, &history).await, 2);
    count_down(&latch, &history, "d4", false).await;
    count_down(&latch, &history, "d4", false).await;
    assert_eq!(observe(&reader, &history).await, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "a waiter returned after 4 distinct count-downs of 5"
    );

    // The 5th, again with lost replies (nodes 1 and 2 this time).
    for p in &counter.proxies[1..] {
        p.drop_replies(true);
    }
    let last = count_down(&latch, &history, "d5", false);
    tokio::pin!(last);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut last)
            .await
            .is_err()
    );
    heal(&counter.proxies);
    tokio::time::timeout(Duration::from_secs(5), last)
        .await
        .unwrap();
    for waiter in waiters {
        tokio::time::timeout(SOON, waiter).await.unwrap().unwrap();
    }

    // Open, and it stays open: repeats, a 6th distinct count-down, reads.
    count_down(&latch, &history, "d5", false).await;
    count_down(&latch, &history, "d1", false).await;
    count_down(&latch, &history, "anonymous-2", true).await;
    for _ in 0..5 {
        assert_eq!(observe(&reader, &history).await, 0);
        assert_eq!(observe(&latch, &history).await, 0);
    }
    reader
        .wait_timeout(Duration::from_millis(100))
        .await
        .unwrap();
    history.latch_observed(NAME, true, Instant::now());
    stop.store(true, Ordering::SeqCst);
    polling.await.unwrap();
    assert!(reads.load(Ordering::SeqCst) > 10);
    assert_safe(&history, &Spec::new().latch(NAME, COUNT));
}

/// One party's waits over `generations` generations, recorded.
async fn party(barrier: Barrier, name: String, history: History, generations: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    for _ in 0..generations {
        history.arrived(barrier.name(), &name, Instant::now());
        let result = barrier.wait_timeout(Duration::from_secs(5)).await.unwrap();
        history.barrier_released(
            barrier.name(),
            &name,
            result.generation(),
            result.is_leader(),
            Instant::now(),
        );
        seen.push(result.generation());
    }
    seen
}

/// Four parties over three nodes: three full generations, then one party
/// dies before it arrives and the others are told the generation broke (or
/// time out), never released; then a full generation works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b1_generations_release_all_parties_and_a_dead_party_breaks_its_generation() {
    const NAME: &str = "b1";
    const PARTIES: u32 = 4;
    let servers = ServerGroup::start(3).unwrap();
    let mut barriers = Vec::new();
    for _ in 0..PARTIES {
        // Each party is a process of its own.
        barriers.push(Barrier::new(
            &common::fast_quorum(&servers).await,
            NAME,
            PARTIES,
        ));
    }
    let history = History::new();
    let names: Vec<String> = (0..PARTIES).map(|p| format!("p{p}")).collect();

    let tasks: Vec<_> = barriers
        .iter()
        .zip(&names)
        .map(|(b, n)| tokio::spawn(party(b.clone(), n.clone(), history.clone(), 3)))
        .collect();
    for task in tasks {
        let seen = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen, [0, 1, 2]);
    }

    // p3 dies while working, before it arrives.
    let dead = {
        let barrier = barriers[3].clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            barrier.wait().await
        })
    };
    let survivors: Vec<_> = (0..3)
        .map(|p| {
            let (barrier, name, history) = (barriers[p].clone(), names[p].clone(), history.clone());
            // p0 gives up first; the others would wait far longer.
            let patience = if p == 0 { 500 } else { 5_000 };
            tokio::spawn(async move {
                history.arrived(NAME, &name, Instant::now());
                let result = barrier.wait_timeout(Duration::from_millis(patience)).await;
                match &result {
                    Ok(r) => history.barrier_released(
                        NAME,
                        &name,
                        r.generation(),
                        r.is_leader(),
                        Instant::now(),
                    ),
                    Err(Error::BrokenBarrier) => {
                        history.barrier_broken(NAME, &name, Instant::now())
                    }
                    Err(e) => history.failed(NAME, "wait", e.to_string(), Instant::now()),
                }
                result
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    dead.abort();
    assert!(dead.await.unwrap_err().is_cancelled());
    let started = Instant::now();
    for (p, survivor) in survivors.into_iter().enumerate() {
        let result = tokio::time::timeout(Duration::from_secs(8), survivor)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(result, Err(Error::BrokenBarrier) | Err(Error::Timeout(_))),
            "p{p} without p3: {result:?}\n{history}"
        );
    }
    // The patient ones learnt of the break, not of their own deadline.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // A full set again: the generation after the broken one.
    let tasks: Vec<_> = barriers
        .iter()
        .zip(&names)
        .map(|(b, n)| tokio::spawn(party(b.clone(), n.clone(), history.clone(), 1)))
        .collect();
    for task in tasks {
        let seen = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen, [4]);
    }
    assert_safe(&history, &Spec::new().barrier(NAME, PARTIES));
}

/// PTTL of `key` on every node.
async fn pttls(servers: &ServerGroup, key: &str) -> Vec<i64> {
    let mut all = Vec::new();
    for i in 0..servers.len() {
        all.push(common::pttl(servers, i, key).await);
    }
    all
}

/// Records a reentrant hold of `owner`.
async fn record_hold(
    history: &History,
    owner: &str,
    guard: &quorate::ReentrantGuard,
) -> quorate::testkit::LeaseId {
    history.lease(
        LeaseKind::Reentrant,
        guard.name(),
        owner,
        guard.fencing_token().await.ok(),
        1,
        guard.acquired_at(),
        guard.deadline(),
    )
}

/// An owner takes the lock three times and lets go of it hold by hold while
/// another owner keeps trying; the other gets it only after the last hold,
/// with a larger token. Re-entry keeps the token and refreshes the TTL, and
/// a stale guard of another owner cannot release it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_another_owner_gets_the_lock_only_after_the_third_release() {
    const NAME: &str = "r1";
    const TTL: Duration = Duration::from_secs(3);
    let servers = ServerGroup::start(3).unwrap();
    let history = History::new();
    let spec = Spec::new().reentrant(NAME);

    // A guard of job-B from before, expired: stale in B's hands.
    let b_client = common::fast_quorum(&servers).await;
    let stale = ReentrantLock::new(&b_client, NAME, "job-B")
        .with_ttl(Duration::from_millis(300))
        .auto_extend(false)
        .lock()
        .await
        .unwrap();
    record_hold(&history, "job-B", &stale).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!stale.is_valid());

    // Renewals off: only re-entries move the TTL.
    let a_client = common::fast_quorum(&servers).await;
    let lock = ReentrantLock::new(&a_client, NAME, "job-A")
        .with_ttl(TTL)
        .auto_extend(false);
    let first = lock.lock().await.unwrap();
    let token = first.fencing_token().await.unwrap();
    let mut holds = vec![(record_hold(&history, "job-A", &first).await, first)];

    // job-B tries throughout, from its own client.
    let freed = Arc::new(AtomicBool::new(false));
    let tries = Arc::new(AtomicUsize::new(0));
    let contender = {
        let (freed, tries) = (freed.clone(), tries.clone());
        let other = ReentrantLock::new(&b_client, NAME, "job-B");
        tokio::spawn(async move {
            loop {
                if let Ok(Some(guard)) = other.try_lock().await {
                    // Only the third release may let it in.
                    assert!(
                        freed.load(Ordering::SeqCst),
                        "got the lock while job-A held it"
                    );
                    return (guard, tries.load(Ordering::SeqCst));
                }
                tries.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    for depth in 2..=3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = pttls(&servers, NAME).await;
        let guard = lock.try_lock().await.unwrap().unwrap();
        let after = pttls(&servers, NAME).await;
        assert_eq!(guard.fencing_token().await.unwrap(), token, "depth {depth}");
        // Refreshed to the full TTL where the hash lives, a majority at
        // least; 300 ms had run off it.
        let refreshed = before
            .iter()
            .zip(&after)
            .filter(|&(&b, &a)| b > 0 && a > b + 150)
            .count();
        assert!(
            refreshed >= 2,
            "depth {depth}: PTTL {before:?} before re-entry, {after:?} after"
        );
        holds.push((record_hold(&history, "job-A", &guard).await, guard));
    }
    assert_eq!(common::despite_slow_nodes(|| lock.hold_count()).await, 3);

    // Another owner's guard does not release job-A's lock.
    let err = stale.release().await.unwrap_err();
    assert!(matches!(err, Error::NotHeld), "{err:?}");
    assert_eq!(common::despite_slow_nodes(|| lock.hold_count()).await, 3);

    for left in [2, 1] {
        let (id, guard) = holds.pop().unwrap();
        history.released(id, Instant::now());
        guard.release().await.unwrap();
        assert_eq!(common::despite_slow_nodes(|| lock.hold_count()).await, left);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!contender.is_finished(), "free with {left} holds left");
    }
    let (id, last) = holds.pop().unwrap();
    assert!(last.is_valid());
    freed.store(true, Ordering::SeqCst);
    let released = Instant::now();
    history.released(id, released);
    last.release().await.unwrap();

    let (taken, tries) = tokio::time::timeout(SOON, contender)
        .await
        .unwrap()
        .unwrap();
    let b = record_hold(&history, "job-B", &taken).await;
    // Its attempt may have started before the release and landed after it:
    // what counts is that its votes came in after the release began.
    assert!(taken.acquired_at() >= released);
    assert!(
        taken.fencing_token().await.unwrap() > token,
        "{} after {token}",
        taken.fencing_token().await.unwrap()
    );
    // It really contended throughout: about one try per 10-20 ms for over a
    // second.
    assert!(tries >= 20, "only {tries} tries");
    assert_eq!(common::despite_slow_nodes(|| lock.hold_count()).await, 0);
    history.extended(b, taken.deadline());
    history.released(b, Instant::now());
    taken.release().await.unwrap();
    assert_safe(&history, &spec);
}

/// An owner crashes holding the lock three deep; it frees after the TTL of
/// the last hold, and the next owner's token is larger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_a_lock_crashed_at_depth_three_frees_after_the_ttl_with_a_larger_token() {
    const NAME: &str = "r2";
    const TTL: Duration = Duration::from_millis(400);
    let servers = ServerGroup::start(3).unwrap();
    let history = History::new();
    let crashing = ReentrantLock::new(&common::fast_quorum(&servers).await, NAME, "job-A")
        .with_ttl(TTL)
        .auto_extend(false);
    let mut token = None;
    let mut held_until = Instant::now();
    for _ in 0..3 {
        let guard = crashing.lock().await.unwrap();
        assert_eq!(
            *token.get_or_insert(guard.fencing_token().await.unwrap()),
            guard.fencing_token().await.unwrap()
        );
        record_hold(&history, "job-A", &guard).await;
        held_until = held_until.max(guard.deadline());
        // The crash: no release, no renewal, no drop.
        std::mem::forget(guard);
    }
    let token = token.unwrap();
    assert_eq!(
        common::despite_slow_nodes(|| crashing.hold_count()).await,
        3
    );

    let next = ReentrantLock::new(&common::fast_quorum(&servers).await, NAME, "job-B");
    assert!(
        common::despite_slow_nodes(|| next.try_lock())
            .await
            .is_none()
    );
    let guard = next.lock_timeout(Duration::from_secs(3)).await.unwrap();
    let id = record_hold(&history, "job-B", &guard).await;
    assert!(
        guard.acquired_at() >= held_until,
        "taken {:?} before the last crashed hold ended",
        held_until - guard.acquired_at()
    );
    assert!(
        guard.fencing_token().await.unwrap() > token,
        "{} after {token}",
        guard.fencing_token().await.unwrap()
    );
    assert_eq!(
        common::despite_slow_nodes(|| crashing.hold_count()).await,
        0
    );
    assert_eq!(common::despite_slow_nodes(|| next.hold_count()).await, 1);
    history.extended(id, guard.deadline());
    history.released(id, Instant::now());
    guard.release().await.unwrap();
    assert_safe(&history, &Spec::new().reentrant(NAME));
}

/// B-2: clients that each miss a different node. Three nodes, two parties:
/// X cannot reach node 1, Y cannot reach node 2, Z reaches all; they arrive
/// X, Y, Z, 400 ms apart. Per-node counting let all three through
/// generation 0; now a generation releases at most its parties, one of them
/// the leader, and Z waits for the next generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b2_parties_that_each_miss_a_node_never_release_more_than_parties() {
    const NAME: &str = "b2";
    let servers = ServerGroup::start(3).unwrap();
    let history = History::new();
    let views = [
        view(&servers, &[0, 2], |b| b).await,
        view(&servers, &[0, 1], |b| b).await,
        view(&servers, &[0, 1, 2], |b| b).await,
    ];
    let mut waits = Vec::new();
    for (party, v) in ["x", "y", "z"].into_iter().zip(&views) {
        let barrier = Barrier::new(&v.quorum, NAME, 2);
        let history = history.clone();
        waits.push(tokio::spawn(async move {
            history.arrived(NAME, party, Instant::now());
            let result = barrier.wait_timeout(Duration::from_secs(3)).await;
            match &result {
                Ok(done) => history.barrier_released(
                    NAME,
                    party,
                    done.generation(),
                    done.is_leader(),
                    Instant::now(),
                ),
                Err(Error::BrokenBarrier) => history.barrier_broken(NAME, party, Instant::now()),
                Err(_) => history.barrier_unknown(NAME, party, Instant::now()),
            }
            result
        }));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let mut released = Vec::new();
    for wait in waits {
        if let Ok(done) = wait.await.unwrap() {
            released.push(done.generation());
        }
    }
    let in_first = released.iter().filter(|&&g| g == 0).count();
    assert!(in_first <= 2, "generation 0 released {in_first}\n{history}");
    assert_eq!(in_first, 2, "x and y make generation 0\n{history}");
    assert_safe(&history, &Spec::new().barrier_safety(NAME, 2));
}

/// L-4: a latch seen open is never read closed later. A writer that reaches
/// only node 0 counts down (it fails: one node of three), leaving its id on
/// node 0 alone. A reader reaching every node unions that id in and sees
/// the latch open; a later reader that cannot reach node 0 must see it open
/// too, so the first reader made the id durable on a majority first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l4_a_latch_seen_open_is_never_read_closed_by_a_partial_view() {
    const NAME: &str = "l4";
    let servers = ServerGroup::start(3).unwrap();
    let history = History::new();
    let writer = view(&servers, &[0, 1, 2], |b| b.ttl(Duration::from_millis(300))).await;
    writer.proxies[1].refuse(true);
    writer.proxies[2].refuse(true);
    writer.proxies[1].reset();
    writer.proxies[2].reset();
    let latch = Latch::new(&writer.quorum, NAME, 1);
    let invoked = Instant::now();
    let counted = latch.count_down_as("x").await;
    history.count_down(NAME, "x", invoked, counted.is_ok());
    assert!(counted.is_err(), "one node of three acknowledged it");
    assert_eq!(ids_on(&servers, 0, NAME).await, 1);

    let everyone = view(&servers, &[0, 1, 2], |b| b).await;
    let reader = Latch::new(&everyone.quorum, NAME, 1);
    reader.wait_timeout(SOON).await.unwrap();
    history.latch_observed(NAME, true, Instant::now());

    let partial = view(&servers, &[1, 2], |b| b).await;
    let later = Latch::new(&partial.quorum, NAME, 1);
    assert_eq!(observe(&later, &history).await, 0, "read closed again");
    assert_safe(&history, &Spec::new().latch(NAME, 1));
}

/// S-5: a node whose grant reply was lost may have granted another slot
/// than the majority (here a foreign holder takes slot 0 there): the
/// release, by owner token, frees it too instead of leaving it to the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_a_permit_whose_grant_reply_was_lost_frees_every_slot_at_release() {
    const NAME: &str = "s5";
    let servers = ServerGroup::start(3).unwrap();
    let v = view(&servers, &[0, 1, 2], |b| b).await;
    let sem = Semaphore::new(&v.quorum, NAME, 2).with_ttl(Duration::from_secs(10));
    // Slot 0 is someone else's on node 2 only.
    let mut c = common::conn(&servers, 2).await;
    let far: i64 = 9_999_999_999_999;
    let _: () = redis::pipe()
        .cmd("ZADD")
        .arg(NAME)
        .arg(far)
        .arg("0")
        .cmd("HSET")
        .arg(format!("{{{NAME}}}:owners"))
        .arg("0")
        .arg("foreign")
        .arg("permits")
        .arg(2)
        .query_async(&mut c)
        .await
        .unwrap();
    v.proxies[2].drop_replies(true);
    let mut permit = None;
    while permit.is_none() {
        // The start slot is random: wait for the one that splits node 2.
        let p = sem.acquire().await.unwrap();
        if p.slots() == [0] {
            permit = Some(p);
        } else {
            p.release().await.unwrap();
        }
    }
    let permit = permit.unwrap();
    heal(&v.proxies);
    // The grant on node 2 may still be on its way there.
    let granted = common::eventually(Duration::from_secs(1), || async {
        owners_on(&servers, 2, NAME)
            .await
            .iter()
            .any(|(slot, _)| slot == "1")
    })
    .await;
    assert!(
        granted,
        "node 2 granted slot 1: {:?}",
        owners_on(&servers, 2, NAME).await
    );
    permit.release().await.unwrap();
    let left = owners_on(&servers, 2, NAME).await;
    assert_eq!(
        left,
        vec![("0".to_owned(), "foreign".to_owned())],
        "{left:?}"
    );
}

/// L-5: a node that restarts empty does not make a latch seen open read
/// closed. The count-down and the read that sees it open reach nodes
/// {0,1,2} only, so the id is on a bare majority; node 0 then restarts
/// and forgets it. A reader of {0,3,4} that saw the restart, and one that
/// meets node 0 only after it, both presume node 0 restarted (its new
/// `run_id`; its youth beside nodes 3 and 4), so its empty answer does not
/// count: they see the latch open or cannot tell, never closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l5_a_node_restarted_empty_does_not_close_a_latch_seen_open() {
    const NAME: &str = "l5";
    let mut servers = ServerGroup::start(5).unwrap();
    let history = History::new();
    let near = view(&servers, &[0, 1, 2], |b| b).await;
    let latch = Latch::new(&near.quorum, NAME, 1);
    count_down(&latch, &history, "x", false).await;
    assert_eq!(observe(&latch, &history).await, 0);
    let far = view(&servers, &[0, 3, 4], |b| b).await;
    // Old enough that a node restarted now is younger than its peers.
    tokio::time::sleep(admission_youth()).await;
    servers[0].restart().unwrap();

    let saw_it = Latch::new(&far.quorum, NAME, 1);
    let newcomer = view(&servers, &[0, 3, 4], |b| b).await;
    let met_later = Latch::new(&newcomer.quorum, NAME, 1);
    for reader in [&saw_it, &met_later] {
        let invoked = Instant::now();
        match reader.count().await {
            Ok(0) => history.latch_observed(NAME, true, Instant::now()),
            Ok(_) => history.latch_observed(NAME, false, invoked),
            Err(e) => assert!(matches!(e, Error::Quorum(_)), "{e}"),
        }
    }
    assert_safe(&history, &Spec::new().latch(NAME, 1));
}

/// A little more than the gap in start times at which a node is presumed
/// restarted at first contact.
fn admission_youth() -> Duration {
    Duration::from_millis(2_500)
}
