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

/// The expiry of `key` on each server, in wall-clock ms (`PEXPIRETIME`);
/// negative when the key is missing or has none.
async fn expiries(servers: &quorate::testkit::ServerGroup, key: &str) -> Vec<i64> {
    let mut all = Vec::new();
    for i in 0..servers.len() {
        let mut c = common::conn(servers, i).await;
        all.push(
            redis::cmd("PEXPIRETIME")
                .arg(key)
                .query_async(&mut c)
                .await
                .unwrap(),
        );
    }
    all
}

/// A guard's deadline as wall-clock ms, comparable with `PEXPIRETIME` on
/// local servers.
fn wall_ms(deadline: Instant) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let ahead = deadline.saturating_duration_since(Instant::now());
    (now + ahead).as_millis() as i64
}

/// An extension shorter than what is left never shortens the lease: the
/// key keeps its expiry, the guard its deadline, and nobody else gets the
/// lock while the guard says it is valid.
#[tokio::test]
async fn a_shorter_extend_never_lets_another_client_in_while_the_guard_is_valid() {
    for n in [1, 3] {
        let (servers, q) = common::cluster(n).await;
        let other = common::builder(&servers).build().await.unwrap();
        let guard = Mutex::new(&q, "shrunk")
            .with_ttl(Duration::from_secs(5))
            .auto_extend(false)
            .lock()
            .await
            .unwrap();
        let before = guard.deadline();
        guard.extend(SHORT).await.unwrap();
        assert_eq!(guard.deadline(), before, "{n} nodes");
        for expiry in expiries(&servers, "shrunk").await {
            assert!(expiry >= wall_ms(guard.deadline()), "{n} nodes");
        }
        tokio::time::sleep(SHORT + SLACK).await;
        assert!(guard.is_valid());
        let rival = Mutex::new(&other, "shrunk").try_lock().await.unwrap();
        assert!(rival.is_none(), "{n} nodes: a second holder");
        // A longer one does extend.
        guard.extend(Duration::from_secs(8)).await.unwrap();
        assert!(guard.deadline() > before);
        guard.release().await.unwrap();
    }
}

/// The semaphore's extensions follow the same rule.
#[tokio::test]
async fn a_shorter_extend_never_shortens_a_permit() {
    let (servers, q) = common::cluster(3).await;
    let other = common::builder(&servers).build().await.unwrap();
    let permit = quorate::Semaphore::new(&q, "shrunk-permits", 1)
        .with_ttl(Duration::from_secs(5))
        .auto_extend(false)
        .acquire()
        .await
        .unwrap();
    let before = permit.deadline();
    permit.extend(SHORT).await.unwrap();
    assert_eq!(permit.deadline(), before);
    tokio::time::sleep(SHORT + SLACK).await;
    assert!(permit.is_valid());
    let sem = quorate::Semaphore::new(&other, "shrunk-permits", 1);
    assert!(
        sem.try_acquire().await.unwrap().is_none(),
        "a second permit"
    );
    permit.release().await.unwrap();
}

/// A renewal sent before the deadline but answered after it comes too late:
/// the lease was lost at the deadline and stays lost.
#[tokio::test]
async fn a_lease_seen_lost_stays_lost_when_a_late_renewal_lands() {
    let server = quorate::testkit::RedisServer::start().unwrap();
    let proxy = quorate::testkit::FaultProxy::start(server.port())
        .await
        .unwrap();
    // The answer must come back late, yet within the per-node timeout: a
    // 16 ms round trip (below) under the 40 ms allowed for a 400 ms TTL.
    let q = quorate::Quorum::builder()
        .node(proxy.url())
        .node_timeout(Duration::from_millis(40))
        .build()
        .await
        .unwrap();
    let ttl = Duration::from_millis(400);
    let guard = Mutex::new(&q, "late")
        .with_ttl(ttl)
        .auto_extend(false)
        .lock()
        .await
        .unwrap();
    proxy.set_latency(Duration::from_millis(8), Duration::ZERO);
    let deadline = guard.deadline();
    tokio::time::sleep_until((deadline - Duration::from_millis(4)).into()).await;
    let extended = guard.extend(ttl).await;
    assert!(Instant::now() > deadline);
    assert!(matches!(extended, Err(Error::NotHeld)), "{extended:?}");
    assert!(!guard.is_valid());
    assert_eq!(guard.remaining(), Duration::ZERO);
    tokio::time::timeout(Duration::from_millis(50), guard.lost())
        .await
        .unwrap();
}
