//! Interoperation with other Redlock clients (redis-py `Lock`, redsync,
//! node-redlock), driven here through their raw commands: a random token
//! under `SET name token NX PX ttl`, released by compare-and-delete. Their
//! locks and quorate's must exclude each other on every node.

mod common;

use std::time::Duration;

use quorate::Mutex;

/// Takes a raw lock on `nodes` and checks quorate is kept out until the raw
/// release, after which it gets the lock at once.
async fn raw_lock_blocks_quorate(n: usize, nodes: &[usize]) {
    let (servers, q) = common::cluster(n).await;
    let name = "shared";
    let token = uuid::Uuid::new_v4().to_string();
    for &i in nodes {
        assert!(common::set_nx_px(&servers, i, name, &token, 10_000).await);
    }
    let mutex = Mutex::new(&q, name);
    assert!(
        mutex.try_lock().await.unwrap().is_none(),
        "raw lock on {nodes:?} of {n}"
    );
    let err = mutex
        .lock_timeout(Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    // The raw keys survived quorate's attempts (and their undo).
    for &i in nodes {
        assert_eq!(common::get(&servers, i, name).await.as_ref(), Some(&token));
    }

    for &i in nodes {
        assert_eq!(common::raw_release(&servers, i, name, &token).await, 1);
    }
    let guard = mutex.try_lock().await.unwrap().unwrap();
    guard.release().await.unwrap();
}

#[tokio::test]
async fn raw_redlock_lock_blocks_quorate_on_one_node() {
    raw_lock_blocks_quorate(1, &[0]).await;
}

#[tokio::test]
async fn raw_redlock_lock_on_a_majority_blocks_quorate_on_three_nodes() {
    for nodes in [&[0, 1][..], &[1, 2], &[0, 2], &[0, 1, 2]] {
        raw_lock_blocks_quorate(3, nodes).await;
    }
}

#[tokio::test]
async fn raw_client_gets_the_lock_after_quorate_releases() {
    let (servers, q) = common::cluster(3).await;
    let guard = Mutex::new(&q, "handback").lock().await.unwrap();
    guard.release().await.unwrap();
    for i in 0..3 {
        assert!(common::set_nx_px(&servers, i, "handback", "raw", 10_000).await);
    }
}

#[tokio::test]
async fn quorate_lock_blocks_raw_set_nx() {
    for n in [1, 3] {
        let (servers, q) = common::cluster(n).await;
        let ttl = Duration::from_secs(5);
        let guard = Mutex::new(&q, "shared").with_ttl(ttl).lock().await.unwrap();
        // A majority decides, but the acquire went to every node; the last
        // one gets a moment to answer.
        let everywhere = common::eventually(Duration::from_millis(500), || async {
            let mut all = true;
            for i in 0..n {
                all &= common::get(&servers, i, "shared").await.is_some();
            }
            all
        })
        .await;
        assert!(everywhere, "n={n}: lock key missing on some node");
        let mut value = None;
        for i in 0..n {
            // What another client's acquire does on each node: refused.
            assert!(
                !common::set_nx_px(&servers, i, "shared", "raw", 10_000).await,
                "node {i}"
            );

            // A plain string holding the token, the same on every node.
            let mut c = common::conn(&servers, i).await;
            let kind: String = redis::cmd("TYPE")
                .arg("shared")
                .query_async(&mut c)
                .await
                .unwrap();
            assert_eq!(kind, "string");
            let token = common::get(&servers, i, "shared").await.unwrap();
            assert!(!token.is_empty());
            assert_eq!(
                *value.get_or_insert_with(|| token.clone()),
                token,
                "node {i}"
            );
            let pttl = common::pttl(&servers, i, "shared").await;
            assert!(
                pttl > 0 && pttl <= ttl.as_millis() as i64,
                "node {i}: pttl {pttl}"
            );

            // Their compare-and-delete with a wrong token leaves it alone.
            assert_eq!(common::raw_release(&servers, i, "shared", "raw").await, 0);
        }
        assert!(guard.is_valid());
        guard.release().await.unwrap();
    }
}
