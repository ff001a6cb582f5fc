mod common;
use std::time::{Duration, Instant};
use quorate::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    for n in [1, 3] {
        let (servers, q) = common::cluster(n).await;
        let m = Mutex::new(&q, "smoke");
        let t = Instant::now();
        let g = m.lock().await.unwrap();
        println!("n={n} lock {:?} token {} remaining {:?}", t.elapsed(), g.fencing_token(), g.remaining());
        assert!(m.try_lock().await.unwrap().is_none());
        let m2 = m.clone();
        let waiter = tokio::spawn(async move { let t = Instant::now(); let g = m2.lock().await.unwrap(); (t, Instant::now(), g) });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rel = Instant::now();
        g.release().await.unwrap();
        let (_, got, g2) = waiter.await.unwrap();
        println!("handoff {:?} token2 {}", got - rel, g2.fencing_token());
        g2.release().await.unwrap();
        println!("dbsize {:?}", common::dbsizes(&servers).await);
    }
}
