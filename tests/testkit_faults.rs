//! The testkit's fault injection against real servers: what a plain redis-rs
//! client (and quorate once) sees through a `FaultProxy`, and what
//! `jump_clock` does to TTLs and lease scores.

use std::future::Future;
use std::time::{Duration, Instant};

use quorate::testkit::{FaultProxy, RedisServer, jump_clock};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

/// Short, so a request swallowed by the proxy fails fast.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(200);
/// For connections that must survive the latency a test adds.
const PATIENT_TIMEOUT: Duration = Duration::from_secs(2);

async fn server_and_proxy() -> (RedisServer, FaultProxy) {
    let server = RedisServer::start().unwrap();
    let proxy = FaultProxy::start(server.port()).await.unwrap();
    (server, proxy)
}

async fn connect_with(url: &str, timeout: Duration) -> redis::RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

async fn connect(url: &str) -> redis::RedisResult<MultiplexedConnection> {
    connect_with(url, RESPONSE_TIMEOUT).await
}

/// A connection to the real port, bypassing the proxy.
async fn direct(server: &RedisServer) -> MultiplexedConnection {
    connect(&server.url()).await.unwrap()
}

async fn ping(conn: &mut MultiplexedConnection) -> redis::RedisResult<String> {
    redis::cmd("PING").query_async(conn).await
}

/// Polls `check` until it is true or a second passes.
async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    check().await
}

async fn port_refuses(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
}

async fn server_ms(conn: &mut MultiplexedConnection) -> i64 {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    secs * 1000 + micros / 1000
}

#[tokio::test]
async fn passthrough_forwards_both_ways() {
    let (server, proxy) = server_and_proxy().await;
    let mut conn = connect(&proxy.url()).await.unwrap();
    let _: () = conn.set("k", "v").await.unwrap();
    let through_proxy: String = conn.get("k").await.unwrap();
    let on_server: String = direct(&server).await.get("k").await.unwrap();
    assert_eq!((through_proxy.as_str(), on_server.as_str()), ("v", "v"));
    assert_eq!(proxy.connections(), 1);
    assert_eq!(proxy.url(), format!("redis://127.0.0.1:{}", proxy.port()));
}

#[tokio::test]
async fn latency_delays_each_direction() {
    let (_server, proxy) = server_and_proxy().await;
    let mut conn = connect_with(&proxy.url(), PATIENT_TIMEOUT).await.unwrap();
    proxy.set_latency(Duration::from_millis(40), Duration::ZERO);
    let started = Instant::now();
    ping(&mut conn).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(80),
        "round trip took {took:?}"
    );
}

#[tokio::test]
async fn jitter_never_reorders_bytes() {
    let (_server, proxy) = server_and_proxy().await;
    let conn = connect_with(&proxy.url(), PATIENT_TIMEOUT).await.unwrap();
    proxy.set_latency(Duration::from_millis(2), Duration::from_millis(20));
    // Issued in order on one connection; any reordering of chunks would
    // garble the RESP stream or pair replies with the wrong requests.
    let incrs = (0..30).map(|_| {
        let mut conn = conn.clone();
        async move { conn.incr::<_, _, i64>("n", 1).await }
    });
    let values: Vec<i64> = futures::future::try_join_all(incrs).await.unwrap();
    assert_eq!(values, (1..=30).collect::<Vec<_>>());
}

#[tokio::test]
async fn blackhole_silences_open_and_new_connections_until_healed() {
    let (_server, proxy) = server_and_proxy().await;
    let mut conn = connect(&proxy.url()).await.unwrap();
    ping(&mut conn).await.unwrap();
    proxy.blackhole(true);
    let err = conn.get::<_, Option<String>>("k").await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");

    // New connections are accepted, then nothing ever comes back.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut raw, b"PING\r\n")
        .await
        .unwrap();
    let mut buf = [0; 16];
    let read = tokio::io::AsyncReadExt::read(&mut raw, &mut buf);
    let silent = tokio::time::timeout(Duration::from_millis(100), read).await;
    assert!(silent.is_err(), "got {silent:?}");

    proxy.heal();
    let mut fresh = connect(&proxy.url()).await.unwrap();
    assert_eq!(ping(&mut fresh).await.unwrap(), "PONG");
}

#[tokio::test]
async fn drop_replies_runs_the_command_but_loses_the_answer() {
    let (server, proxy) = server_and_proxy().await;
    let mut conn = connect(&proxy.url()).await.unwrap();
    ping(&mut conn).await.unwrap();
    proxy.drop_replies(true);
    let err = conn.incr::<_, _, i64>("k", 1).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let mut real = direct(&server).await;
    let value: Option<i64> = real.get("k").await.unwrap();
    assert_eq!(value, Some(1));
}

#[tokio::test]
async fn drop_requests_keeps_commands_from_the_server() {
    let (server, proxy) = server_and_proxy().await;
    let mut conn = connect(&proxy.url()).await.unwrap();
    ping(&mut conn).await.unwrap();
    proxy.drop_requests(true);
    let err = conn.incr::<_, _, i64>("k", 1).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let value: Option<i64> = direct(&server).await.get("k").await.unwrap();
    assert_eq!(value, None);
}

#[tokio::test]
async fn drop_requests_still_delivers_earlier_replies() {
    let (_server, proxy) = server_and_proxy().await;
    let mut conn = connect_with(&proxy.url(), PATIENT_TIMEOUT).await.unwrap();
    ping(&mut conn).await.unwrap();
    // The server holds the reply for 150 ms; requests are cut meanwhile.
    let blocked = tokio::spawn(async move {
        let popped: redis::RedisResult<Option<(String, String)>> = conn.blpop("empty", 0.15).await;
        popped
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    proxy.drop_requests(true);
    assert_eq!(blocked.await.unwrap().unwrap(), None);
}

#[tokio::test]
async fn reset_breaks_open_connections_and_accepts_new_ones() {
    let (_server, proxy) = server_and_proxy().await;
    let mut conn = connect(&proxy.url()).await.unwrap();
    ping(&mut conn).await.unwrap();
    assert_eq!(proxy.connections(), 1);
    proxy.reset();
    assert!(ping(&mut conn).await.is_err());
    assert!(eventually(|| async { proxy.connections() == 0 }).await);
    let mut fresh = connect(&proxy.url()).await.unwrap();
    assert_eq!(ping(&mut fresh).await.unwrap(), "PONG");
}

#[tokio::test]
async fn reset_closes_idle_connections() {
    let (_server, proxy) = server_and_proxy().await;
    let _idle = connect(&proxy.url()).await.unwrap();
    assert_eq!(proxy.connections(), 1);
    proxy.reset();
    assert!(eventually(|| async { proxy.connections() == 0 }).await);
}

#[tokio::test]
async fn refuse_rejects_connections_until_lifted() {
    let (_server, proxy) = server_and_proxy().await;
    let mut conn = connect(&proxy.url()).await.unwrap();
    ping(&mut conn).await.unwrap();
    proxy.refuse(true);
    assert!(ping(&mut conn).await.is_err());
    assert!(connect(&proxy.url()).await.is_err());
    proxy.refuse(false);
    let mut fresh = connect(&proxy.url()).await.unwrap();
    assert_eq!(ping(&mut fresh).await.unwrap(), "PONG");
}

#[tokio::test]
async fn proxies_to_one_node_fail_independently() {
    let (server, cut) = server_and_proxy().await;
    let open = FaultProxy::start(server.port()).await.unwrap();
    let mut through_cut = connect(&cut.url()).await.unwrap();
    let mut through_open = connect(&open.url()).await.unwrap();
    cut.blackhole(true);
    assert!(ping(&mut through_cut).await.is_err());
    assert_eq!(ping(&mut through_open).await.unwrap(), "PONG");
}

#[tokio::test]
async fn dropping_the_proxy_frees_its_port() {
    let (_server, proxy) = server_and_proxy().await;
    let _conn = connect(&proxy.url()).await.unwrap();
    let port = proxy.port();
    drop(proxy);
    assert!(eventually(|| port_refuses(port)).await);
}

#[tokio::test]
async fn shutdown_closes_port_and_connections() {
    let (_server, proxy) = server_and_proxy().await;
    let mut conn = connect(&proxy.url()).await.unwrap();
    ping(&mut conn).await.unwrap();
    let port = proxy.port();
    proxy.shutdown().await;
    assert!(port_refuses(port).await);
    assert!(ping(&mut conn).await.is_err());
}

#[tokio::test]
async fn quorate_fails_fast_through_a_blackholed_proxy() {
    let (_server, proxy) = server_and_proxy().await;
    let quorum = quorate::Quorum::connect([proxy.url()]).await.unwrap();
    let mutex = quorate::Mutex::new(&quorum, "x");
    let guard = mutex.try_lock().await.unwrap().expect("lock is free");
    guard.release().await.unwrap();

    proxy.blackhole(true);
    let started = Instant::now();
    let result = mutex.try_lock().await;
    let took = started.elapsed();
    assert!(
        matches!(result, Err(quorate::Error::Quorum(_))),
        "{result:?}"
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[tokio::test]
async fn jump_forward_shortens_ttls_and_expires_keys() {
    let server = RedisServer::start().unwrap();
    let mut conn = direct(&server).await;
    let _: () = conn.pset_ex("lease", "v", 10_000).await.unwrap();
    let _: () = conn.set("forever", "v").await.unwrap();

    jump_clock(&server.url(), 4_000).await.unwrap();
    let left: i64 = conn.pttl("lease").await.unwrap();
    assert!(0 < left && left <= 6_000, "pttl {left}");

    jump_clock(&server.url(), 20_000).await.unwrap();
    assert!(!conn.exists::<_, bool>("lease").await.unwrap());
    assert_eq!(conn.pttl::<_, i64>("forever").await.unwrap(), -1);
}

#[tokio::test]
async fn jump_back_lengthens_ttls() {
    let server = RedisServer::start().unwrap();
    let mut conn = direct(&server).await;
    let _: () = conn.pset_ex("lease", "v", 10_000).await.unwrap();
    jump_clock(&server.url(), -5_000).await.unwrap();
    let left: i64 = conn.pttl("lease").await.unwrap();
    assert!(left > 10_000, "pttl {left}");
}

#[tokio::test]
async fn jump_shifts_lease_scores_only() {
    let server = RedisServer::start().unwrap();
    let mut conn = direct(&server).await;
    let end = server_ms(&mut conn).await + 10_000;
    let _: () = conn
        .zadd_multiple("leases", &[(end, "slot"), (5, "small")])
        .await
        .unwrap();

    jump_clock(&server.url(), 3_000).await.unwrap();
    let slot: i64 = conn.zscore("leases", "slot").await.unwrap();
    let small: i64 = conn.zscore("leases", "small").await.unwrap();
    assert_eq!((slot, small), (end - 3_000, 5));

    jump_clock(&server.url(), -3_000).await.unwrap();
    let slot: i64 = conn.zscore("leases", "slot").await.unwrap();
    assert_eq!(slot, end);
}
