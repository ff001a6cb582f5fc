use quorate::testkit::ServerGroup;
use quorate::{Mutex, Quorum};
use std::time::{Duration, Instant};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    for n in [1usize, 3, 5] {
        let servers = ServerGroup::start(n).unwrap();
        let q = Quorum::connect(servers.urls()).await.unwrap();
        let m = Mutex::new(&q, "w1").with_ttl(Duration::from_secs(10));
        // raw floor
        let mut conns = Vec::new();
        for u in servers.urls() {
            conns.push(
                redis::Client::open(u)
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap(),
            );
        }
        let rel = redis::Script::new(
            "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end",
        );
        let mut lat = Vec::new();
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            let t = Instant::now();
            m.lock().await.unwrap().release().await.unwrap();
            lat.push(t.elapsed());
        }
        lat.sort();
        let mut raw = Vec::new();
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            let t = Instant::now();
            let futs = conns.iter().map(|c| {
                let mut c = c.clone();
                async move {
                    let r: Option<String> = redis::cmd("SET")
                        .arg("raw")
                        .arg("tok")
                        .arg("NX")
                        .arg("PX")
                        .arg(10000)
                        .query_async(&mut c)
                        .await
                        .unwrap();
                    r
                }
            });
            let _ = futures::future::join_all(futs).await;
            let futs = conns.iter().map(|c| {
                let mut c = c.clone();
                let rel = &rel;
                async move {
                    let _: i64 = rel
                        .key("raw")
                        .arg("tok")
                        .invoke_async(&mut c)
                        .await
                        .unwrap();
                }
            });
            futures::future::join_all(futs).await;
            raw.push(t.elapsed());
        }
        raw.sort();
        println!(
            "{n} nodes: quorate p50 {:?} ({} cycles)  raw p50 {:?}  ratio {:.2}",
            lat[lat.len() / 2],
            lat.len(),
            raw[raw.len() / 2],
            lat[lat.len() / 2].as_secs_f64() / raw[raw.len() / 2].as_secs_f64()
        );
    }
}
