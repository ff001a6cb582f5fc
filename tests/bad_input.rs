//! Bad input is refused with its typed error before any network I/O: bad
//! settings when the quorum is built (no connection is even opened), bad
//! TTLs and names at the first call of a primitive (nothing is written), and
//! a zero extension of a live lease (which stays valid).

mod common;

use std::future::Future;
use std::time::Duration;

use quorate::testkit::ServerGroup;
use quorate::{Config, Error, Mutex, Quorum, QuorumBuilder};

/// Connections the server has accepted so far.
async fn connections_received(c: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(c)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn field_of(result: quorate::Result<Quorum>) -> &'static str {
    match result {
        Err(Error::InvalidConfig { field, .. }) => field,
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

/// Builds with bad settings: refused with `field`, without connecting.
async fn refused_build(
    servers: &ServerGroup,
    field: &str,
    tweak: impl Fn(QuorumBuilder) -> QuorumBuilder,
) {
    let mut probe = common::conn(servers, 0).await;
    let sizes = common::dbsizes(servers).await;
    let before = connections_received(&mut probe).await;
    let result = tweak(common::builder(servers)).build().await;
    let err_field = field_of(result);
    assert_eq!(err_field, field);
    assert_eq!(
        connections_received(&mut probe).await,
        before,
        "{field}: connected"
    );
    assert_eq!(common::dbsizes(servers).await, sizes);
}

#[tokio::test]
async fn bad_settings_are_refused_without_connecting() {
    let servers = ServerGroup::start(1).unwrap();
    let ms = Duration::from_millis;
    refused_build(&servers, "ttl", |b| b.ttl(Duration::ZERO)).await;
    refused_build(&servers, "ttl", |b| b.ttl(ms(5))).await;
    refused_build(&servers, "ttl", |b| {
        b.ttl(Duration::from_secs(24 * 3600 + 1))
    })
    .await;
    // 2 s is more than a tenth of the default 10 s ttl.
    refused_build(&servers, "node_timeout", |b| {
        b.node_timeout(Duration::from_secs(2))
    })
    .await;
    refused_build(&servers, "node_timeout", |b| b.node_timeout(Duration::ZERO)).await;
    for factor in [-0.1, 1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        refused_build(&servers, "drift_factor", |b| b.drift_factor(factor)).await;
    }
    refused_build(&servers, "retry_delay", |b| b.retry(Duration::ZERO, ms(10))).await;
    // The same checks apply to a whole Config.
    refused_build(&servers, "drift_factor", |b| {
        b.config(Config {
            drift_factor: f64::NAN,
            ..Config::default()
        })
    })
    .await;
}

#[tokio::test]
async fn bad_urls_are_refused() {
    for url in [
        "not a url",
        "http://127.0.0.1:1",
        "redis://127.0.0.1:notaport",
    ] {
        let field = field_of(Quorum::connect([url]).await);
        assert_eq!(field, "nodes", "{url}");
    }
}

/// Runs all three ways to acquire on `mutex`; each must fail with the error
/// `check` accepts, and no server may gain a key.
async fn refused_everywhere(servers: &ServerGroup, mutex: &Mutex, check: impl Fn(&Error) -> bool) {
    let before = common::dbsizes(servers).await;
    let label = format!("{mutex:?}");
    expect_err(&label, "try_lock", mutex.try_lock(), &check).await;
    expect_err(&label, "lock", mutex.lock(), &check).await;
    let timed = mutex.lock_timeout(Duration::from_secs(1));
    expect_err(&label, "lock_timeout", timed, &check).await;
    assert_eq!(
        common::dbsizes(servers).await,
        before,
        "{label}: wrote keys"
    );
}

async fn expect_err<T: std::fmt::Debug>(
    label: &str,
    call: &str,
    fut: impl Future<Output = quorate::Result<T>>,
    check: &impl Fn(&Error) -> bool,
) {
    // A refusal is immediate; a call that went on to wait would time out.
    let result = tokio::time::timeout(Duration::from_millis(500), fut)
        .await
        .unwrap_or_else(|_| panic!("{label}: {call} was not refused at once"));
    match result {
        Err(e) if check(&e) => assert!(e.is_invalid_input(), "{e:?}"),
        other => panic!("{label}: {call} gave {other:?}"),
    }
}

fn invalid_config(field: &'static str) -> impl Fn(&Error) -> bool {
    move |e| matches!(e, Error::InvalidConfig { field: f, .. } if *f == field)
}

fn invalid_name(e: &Error) -> bool {
    matches!(e, Error::InvalidArgument { name: "name", .. })
}

#[tokio::test]
async fn bad_lease_ttls_are_refused_before_any_write() {
    let (servers, q) = common::cluster(3).await;
    let ttl = |ttl| Mutex::new(&q, "ttl").with_ttl(ttl);
    refused_everywhere(&servers, &ttl(Duration::ZERO), invalid_config("ttl")).await;
    refused_everywhere(
        &servers,
        &ttl(Duration::from_millis(5)),
        invalid_config("ttl"),
    )
    .await;
    let above_max = Duration::from_secs(24 * 3600) + Duration::from_millis(1);
    refused_everywhere(&servers, &ttl(above_max), invalid_config("ttl")).await;

    // A fixed per-node timeout needs a ttl of at least ten times it.
    let fixed = common::builder(&servers)
        .node_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let short = Mutex::new(&fixed, "ttl").with_ttl(Duration::from_millis(500));
    refused_everywhere(&servers, &short, invalid_config("node_timeout")).await;
}

#[tokio::test]
async fn bad_names_are_refused_before_any_write() {
    let servers = ServerGroup::start(3).unwrap();
    let q = common::builder(&servers)
        .key_prefix("app:")
        .build()
        .await
        .unwrap();
    refused_everywhere(&servers, &Mutex::new(&q, ""), invalid_name).await;
    // 4 prefix bytes + 1021 = 1025, one over the limit.
    let long = "x".repeat(1021);
    refused_everywhere(&servers, &Mutex::new(&q, long), invalid_name).await;
    let cross = |e: &Error| matches!(e, Error::CrossSlot { resource } if resource == "foo{}{bar}");
    refused_everywhere(&servers, &Mutex::new(&q, "foo{}{bar}"), cross).await;

    // At the limit exactly, it is accepted.
    let longest = Mutex::new(&q, "x".repeat(1020));
    longest
        .try_lock()
        .await
        .unwrap()
        .unwrap()
        .release()
        .await
        .unwrap();
}

#[tokio::test]
async fn zero_extension_is_refused_and_the_lease_stays_valid() {
    let (servers, q) = common::cluster(3).await;
    let guard = Mutex::new(&q, "zero").lock().await.unwrap();
    let deadline = guard.deadline();
    let mut pttls = Vec::new();
    for i in 0..3 {
        pttls.push(common::pttl(&servers, i, "zero").await);
    }
    assert!(pttls.iter().filter(|&&p| p > 0).count() >= 2, "{pttls:?}");
    let err = guard.extend(Duration::ZERO).await.unwrap_err();
    assert!(invalid_config("ttl")(&err), "{err:?}");
    assert!(guard.is_valid());
    assert_eq!(guard.deadline(), deadline);
    // Nothing was sent: the keys did not get a zero (or any new) TTL.
    for (i, before) in pttls.into_iter().enumerate() {
        let now = common::pttl(&servers, i, "zero").await;
        if before > 0 {
            assert!(
                now > 0 && now <= before,
                "node {i}: pttl {now} after {before}"
            );
        }
    }
    guard.release().await.unwrap();
}
