//! Lease lifetimes: an unextended lease ends at its TTL and the lock passes
//! on, a stale holder can neither release nor extend what is no longer its
//! own, extension moves the deadline, the keeper holds a short lease for
//! many TTLs, and `lost()` reports both a stolen key and a plain expiry.

mod common;

use std::time::{Duration, Instant};

use quorate::{Error, Mutex};

const SHORT: Duration = Duration::from_millis(300);

/// Slack for a shared 2-core machine.
const SLACK: Duration = Duration::from_millis(250);

#[tokio::test]
async fn unextended_lease_expires_and_another_client_takes_it() {
    let (servers, q) = common::cluster(3).await;
    let other = common::builder(&servers).build().await.unwrap();
    let first = Mutex::new(&q, "expiring")
        .with_ttl(SHORT)
        .auto_extend(false)
        .lock()
        .await
        .unwrap();
    let taken = Instant::now();
    first.lost().await;
    assert!(!first.is_valid());
    // The local deadline comes a little before the keys expire; the second
    // client waits out the rest.
    let second = Mutex::new(&other, "expiring")
        .lock_timeout(Duration::from_secs(2))
        .await
        .unwrap();
    assert!(taken.elapsed() < SHORT + SLACK, "{:?}", taken.elapsed());
    assert!(second.is_valid());
    second.release().await.unwrap();
}

#[tokio::test]
async fn release_after_expiry_is_not_held_and_spares_the_new_holder() {
    for n in [1, 3] {
        let (servers, q) = common::cluster(n).await;
        let other = common::builder(&servers).build().await.unwrap();
        let stale = Mutex::new(&q, "stale")
            .with_ttl(SHORT)
            .auto_extend(false)
            .lock()
            .await
            .unwrap();
        stale.lost().await;
        let holder = Mutex::new(&other, "stale")
            .lock_timeout(Duration::from_secs(2))
            .await
            .unwrap();
        let token = common::majority_value(&servers, "stale").await;
        let before = common::values(&servers, "stale").await;

        let err = stale.release().await.unwrap_err();
        assert!(matches!(err, Error::NotHeld), "{err:?}");

        // The new holder's key is untouched on every node that had it.
        let after = common::values(&servers, "stale").await;
        for (i, was) in before.iter().enumerate() {
            if was.as_ref() == Some(&token) {
                assert_eq!(after[i].as_ref(), Some(&token), "node {i}");
            }
        }
        assert!(holder.is_valid());
        holder.release().await.unwrap();
    }
}

#[tokio::test]
async fn extend_of_an_expired_lease_is_not_held() {
    for n in [1, 3] {
        let (servers, q) = common::cluster(n).await;
        let guard = Mutex::new(&q, "late")
            .with_ttl(SHORT)
            .auto_extend(false)
            .lock()
            .await
            .unwrap();
        guard.lost().await;
        // Wait until the keys are gone too, so a revival would be visible.
        let gone = common::eventually(SHORT, || async {
            common::get(&servers, 0, "late").await.is_none()
        })
        .await;
        assert!(gone);
        let err = guard.extend(Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, Error::NotHeld), "{err:?}");
        assert!(!guard.is_valid());
        assert_eq!(guard.remaining(), Duration::ZERO);
        for i in 0..n {
            assert_eq!(common::get(&servers, i, "late").await, None);
        }
    }
}

#[tokio::test]
async fn extend_of_a_live_lease_pushes_the_deadline() {
    for n in [1, 3] {
        let (servers, q) = common::cluster(n).await;
        let guard = Mutex::new(&q, "longer")
            .with_ttl(Duration::from_secs(1))
            .auto_extend(false)
            .lock()
            .await
            .unwrap();
        let before = guard.remaining();
        let deadline = guard.deadline();
        guard.extend(Duration::from_secs(5)).await.unwrap();
        assert!(guard.is_valid());
        assert!(guard.remaining() > before, "{:?}", guard.remaining());
        assert!(guard.remaining() > Duration::from_secs(4));
        assert!(guard.deadline() > deadline);
        // A majority of the nodes holds the key with the new TTL.
        let mut extended = 0;
        for i in 0..n {
            let pttl = common::pttl(&servers, i, "longer").await;
            assert!(pttl <= 5000, "node {i}: pttl {pttl}");
            extended += usize::from(pttl > 4000);
        }
        assert!(extended > n / 2, "extended on {extended} of {n}");
        guard.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_extension_keeps_a_short_lease_for_many_ttls() {
    let (servers, q) = common::cluster(3).await;
    let other = common::builder(&servers).build().await.unwrap();
    let guard = Mutex::new(&q, "kept")
        .with_ttl(Duration::from_millis(500))
        .lock()
        .await
        .unwrap();
    let token = common::majority_value(&servers, "kept").await;
    let start = Instant::now();
    // Six TTLs; the sleeps are the time that must pass, not synchronization.
    while start.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(guard.is_valid(), "lost after {:?}", start.elapsed());
        // Still ours where the lease needs it: on a majority.
        assert_eq!(common::majority_value(&servers, "kept").await, token);
        assert!(
            Mutex::new(&other, "kept")
                .try_lock()
                .await
                .unwrap()
                .is_none()
        );
    }
    guard.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_key_behind_the_holders_back_ends_the_lease() {
    let (servers, q) = common::cluster(3).await;
    let ttl = Duration::from_millis(500);
    let guard = Mutex::new(&q, "stolen").with_ttl(ttl).lock().await.unwrap();
    common::del_everywhere(&servers, "stolen").await;
    // The next renewal (at about a third of the TTL) hears "not yours" from
    // every node and must end the lease, not re-create the key.
    let start = Instant::now();
    tokio::time::timeout(ttl + SLACK, guard.lost())
        .await
        .unwrap();
    assert!(
        !guard.is_valid(),
        "lost after {:?} but valid",
        start.elapsed()
    );
    assert_eq!(guard.remaining(), Duration::ZERO);
    let err = guard.release().await.unwrap_err();
    assert!(matches!(err, Error::NotHeld), "{err:?}");
}

#[tokio::test]
async fn lost_completes_at_the_deadline_without_extension() {
    let (_servers, q) = common::cluster(3).await;
    let guard = Mutex::new(&q, "deadline")
        .with_ttl(SHORT)
        .auto_extend(false)
        .lock()
        .await
        .unwrap();
    let deadline = guard.deadline();
    tokio::time::timeout(SHORT + SLACK, guard.lost())
        .await
        .unwrap();
    let now = Instant::now();
    assert!(now >= deadline, "lost {:?} early", deadline - now);
    assert!(now - deadline < SLACK, "lost {:?} late", now - deadline);
    assert!(!guard.is_valid());
    assert_eq!(guard.remaining(), Duration::ZERO);
}
