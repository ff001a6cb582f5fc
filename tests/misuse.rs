//! Client misuse: what happens when guards are released late, moved across
//! tasks and threads, dropped in a panic or outside any runtime, or outlive
//! the `Quorum` they came from.
//!
//! Releasing a guard twice, or extending it after release, does not compile:
//! `release` takes the guard by value, so nothing is left to call it on.
//! (An integration test cannot hold a `compile_fail` doctest, so that is
//! stated here rather than tested.) What can happen at run time is a
//! release that comes too late, after the lease expired; that is tested.

mod common;

use std::time::{Duration, Instant};

use quorate::testkit::ServerGroup;
use quorate::{Error, Mutex, Quorum, Semaphore};

/// How long a dropped guard's spawned release may take on a busy 2-core box:
/// far below the default 10 s TTL, so freeing within it is not the TTL.
const SOON: Duration = Duration::from_secs(2);

/// Polls until `mutex` can be taken (and releases it at once): whether the
/// lock is free. Returns how long it took.
async fn frees_within(mutex: &Mutex, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        // A quorum failure on a loaded box is no answer: look again.
        if let Ok(Some(guard)) = mutex.try_lock().await {
            guard.release().await.unwrap();
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_after_expiry_is_not_held_and_spares_the_next_holder() {
    let servers = ServerGroup::start(3).unwrap();
    let q = common::fast_quorum(&servers).await;
    let stale = Mutex::new(&q, "late")
        .with_ttl(Duration::from_millis(300))
        .auto_extend(false)
        .lock()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!stale.is_valid());
    // Another process takes the lock under the same name.
    let other = Mutex::new(&common::fast_quorum(&servers).await, "late");
    let fresh = other.lock_timeout(SOON).await.unwrap();
    let token = common::majority_value(&servers, "late").await;

    // An extension does not revive it, and the release frees nothing.
    let err = stale.extend(Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(err, Error::NotHeld), "{err:?}");
    let err = stale.release().await.unwrap_err();
    assert!(matches!(err, Error::NotHeld), "{err:?}");

    assert!(fresh.is_valid());
    assert_eq!(common::majority_value(&servers, "late").await, token);
    let late = Mutex::new(&q, "late");
    assert!(
        common::despite_slow_nodes(|| late.try_lock())
            .await
            .is_none()
    );
    fresh.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_moved_to_another_task_releases_there() {
    let (_servers, q) = common::cluster(3).await;
    let mutex = Mutex::new(&q, "moved");
    let guard = mutex.lock().await.unwrap();
    let released = tokio::spawn(async move {
        assert!(guard.is_valid());
        guard.release().await
    })
    .await
    .unwrap();
    released.unwrap();
    // Free at once: the release was a real one, not the TTL.
    let again = common::despite_slow_nodes(|| mutex.try_lock()).await;
    again.unwrap().release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_dropped_in_a_panicking_task_frees_the_lock_soon() {
    let (_servers, q) = common::cluster(3).await;
    let mutex = Mutex::new(&q, "panicked");
    let (taken_tx, taken_rx) = tokio::sync::oneshot::channel();
    let holder = {
        let mutex = mutex.clone();
        tokio::spawn(async move {
            let _guard = mutex.lock().await.unwrap();
            taken_tx.send(()).unwrap();
            panic!("deliberate: the holder panics while holding the guard");
        })
    };
    taken_rx.await.unwrap();
    assert!(holder.await.unwrap_err().is_panic());
    // Unwinding dropped the guard, whose drop spawned the release: free well
    // before the 10 s TTL (and its keeper would have kept it forever).
    let took = frees_within(&mutex, SOON).await;
    assert!(took.is_some(), "still held {SOON:?} after the panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_dropped_in_spawn_blocking_frees_the_lock_soon() {
    let (_servers, q) = common::cluster(3).await;
    let mutex = Mutex::new(&q, "blocking");
    let guard = mutex.lock().await.unwrap();
    // Blocking threads still see the runtime, so the drop can spawn the
    // release.
    tokio::task::spawn_blocking(move || drop(guard))
        .await
        .unwrap();
    assert!(frees_within(&mutex, SOON).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_dropped_outside_any_runtime_frees_the_lock_by_its_ttl() {
    const TTL: Duration = Duration::from_secs(1);
    let (_servers, q) = common::cluster(3).await;
    let mutex = Mutex::new(&q, "orphaned").with_ttl(TTL);
    let guard = mutex.lock().await.unwrap();
    let acquired = guard.acquired_at();
    let lost = guard.lost();
    // A plain thread has no runtime to spawn a release on: the drop must
    // neither panic nor block, and leaves the lock to its TTL.
    std::thread::spawn(move || drop(guard)).join().unwrap();
    let dropped = Instant::now();
    // The guard knows it is gone, and its keeper no longer renews it.
    tokio::time::timeout(Duration::from_millis(100), lost)
        .await
        .unwrap();
    assert!(
        common::despite_slow_nodes(|| mutex.try_lock())
            .await
            .is_none()
    );
    let again = mutex.lock_timeout(TTL + SOON).await.unwrap();
    // Not before the lease ran out (the keeper may have renewed it once
    // before the drop, which only makes it later).
    assert!(
        again.acquired_at() >= acquired + TTL - Duration::from_millis(50),
        "free {:?} after the grant",
        again.acquired_at() - acquired
    );
    assert!(dropped.elapsed() < TTL + SOON);
    again.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permit_dropped_outside_any_runtime_comes_back_by_its_ttl() {
    const TTL: Duration = Duration::from_secs(1);
    let (_servers, q) = common::cluster(3).await;
    let sem = Semaphore::new(&q, "orphaned-permit", 1).with_ttl(TTL);
    let permit = sem.acquire().await.unwrap();
    std::thread::spawn(move || drop(permit)).join().unwrap();
    assert!(
        common::despite_slow_nodes(|| sem.try_acquire())
            .await
            .is_none()
    );
    let again = sem.acquire_timeout(TTL + SOON).await.unwrap();
    again.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guards_outlive_the_quorum_they_came_from() {
    let servers = ServerGroup::start(3).unwrap();
    let q = common::builder(&servers).build().await.unwrap();
    let released = Mutex::new(&q, "kept-a").lock().await.unwrap();
    let dropped = Mutex::new(&q, "kept-b").lock().await.unwrap();
    let permit = Semaphore::new(&q, "kept-c", 1).acquire().await.unwrap();
    // Short enough that only the keeper can keep it past the sleep below.
    let renewed = Mutex::new(&q, "kept-d")
        .with_ttl(Duration::from_millis(300))
        .lock()
        .await
        .unwrap();
    // The application drops its handle; the guards hold a clone of it.
    drop(q);

    let other: Quorum = common::fast_quorum(&servers).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(renewed.is_valid(), "the keeper stopped with the quorum");
    let kept = Mutex::new(&other, "kept-d");
    assert!(
        common::despite_slow_nodes(|| kept.try_lock())
            .await
            .is_none()
    );

    released.release().await.unwrap();
    renewed.release().await.unwrap();
    permit.release().await.unwrap();
    drop(dropped);
    for name in ["kept-a", "kept-d"] {
        let mutex = Mutex::new(&other, name);
        let guard = common::despite_slow_nodes(|| mutex.try_lock()).await;
        assert!(guard.is_some(), "{name} still held after its release");
    }
    let sem = Semaphore::new(&other, "kept-c", 1);
    assert_eq!(
        common::despite_slow_nodes(|| sem.available_permits()).await,
        1
    );
    // The last guard's drop releases through the quorum it kept alive.
    assert!(
        frees_within(&Mutex::new(&other, "kept-b"), SOON)
            .await
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permit_is_used_and_released_across_tasks_and_lost_completes_after_release() {
    let (_servers, q) = common::cluster(3).await;
    let sem = Semaphore::new(&q, "relay", 2);
    let permit = sem.acquire().await.unwrap();
    // Taken before the hand-over and watched from yet another task.
    let watcher = tokio::spawn(permit.lost());
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move { tx.send(permit).unwrap() });
    let permit = rx.await.unwrap();
    let worker = tokio::spawn(async move {
        assert!(permit.is_valid());
        let before = permit.deadline();
        permit.extend(Duration::from_secs(20)).await.unwrap();
        assert!(permit.deadline() > before);
        let lost = permit.lost();
        permit.release().await.unwrap();
        // Awaited after the release it completes at once: there is nothing
        // left to lose.
        tokio::time::timeout(Duration::from_millis(100), lost)
            .await
            .unwrap();
    });
    worker.await.unwrap();
    tokio::time::timeout(Duration::from_millis(100), watcher)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        common::despite_slow_nodes(|| sem.available_permits()).await,
        2
    );
}
