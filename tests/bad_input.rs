//! Bad input is refused with its typed error before any network I/O: bad
//! settings when the quorum is built (no connection is even opened), bad
//! TTLs, counts, ids and names at the first call of a primitive (no script
//! runs, nothing is written), and out-of-range extensions of a live lease
//! (which stays valid). Every case of the reliability plan's list of inputs
//! to reject that the API can express has a test here.
//!
//! Cases of that list that do not apply, and why:
//! - Non-UTF-8 names, ids and owners: the API takes `&str`. NUL and control
//!   characters are accepted, as Redis keys are binary safe.
//! - Retry counts (`retries = 0`, "forever"), a retry jitter above the
//!   delay (jitter is added to the delay, any value is sound), a minimum
//!   validity, an auto-extension threshold, a quorum override, a
//!   reentrancy limit: there are no such settings.
//! - Releasing more permits than held, or a hold count overflow: a permit
//!   or hold is a value released once, as a whole.
//! - Caller-chosen lock values and fencing tokens near `i64::MAX`: owner
//!   tokens are 128 random bits made inside, tokens never pass through user
//!   input. (A reentrant owner id is the caller's; only its length is
//!   checked.)
//! - A permit count, latch count or party count that disagrees with the
//!   servers, a replica, or two URLs that reach one server: these need the
//!   servers to tell, so they fail at the first call or at connect (tests
//!   in semaphore.rs, latch.rs, barrier.rs and quorum.rs), not before I/O.
//! - One node without an opt-in: a single node is a supported setup.

mod common;

use std::future::Future;
use std::time::Duration;

use quorate::testkit::ServerGroup;
use quorate::{
    Barrier, Config, Error, Latch, Mutex, Quorum, QuorumBuilder, ReentrantLock, Semaphore,
};

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

// ---------------------------------------------------------------------------
// Every other case of the reliability plan's list of inputs to reject, on
// every primitive. Each call must fail at once with its typed error naming
// the field, and no server may have run a script or gained a key.

/// What the servers hold and have run; equal before and after a refused
/// call when the call sent nothing.
#[derive(Debug, PartialEq, Eq)]
struct Footprint {
    dbsizes: Vec<i64>,
    scripts_run: Vec<u64>,
}

impl Footprint {
    /// The footprint once it stops moving: an acquisition returns when a
    /// majority answered, and its request to the slowest node may still be
    /// landing.
    async fn of(servers: &ServerGroup) -> Footprint {
        let mut last = Footprint::now(servers).await;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let now = Footprint::now(servers).await;
            if now == last {
                break;
            }
            last = now;
        }
        last
    }

    async fn now(servers: &ServerGroup) -> Footprint {
        let mut scripts_run = Vec::new();
        for i in 0..servers.len() {
            scripts_run.push(scripts_run_on(servers, i).await);
        }
        Footprint {
            dbsizes: common::dbsizes(servers).await,
            scripts_run,
        }
    }
}

/// EVAL and EVALSHA calls one server has run, from `INFO commandstats`.
async fn scripts_run_on(servers: &ServerGroup, i: usize) -> u64 {
    let mut c = common::conn(servers, i).await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .unwrap();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_eval:") || l.starts_with("cmdstat_evalsha:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// The refusal, as `InvalidConfig(field)`, `InvalidArgument(name)` or
/// `CrossSlot(resource)`, of a call that must be refused at once.
async fn refusal<T: std::fmt::Debug>(
    label: &str,
    call: impl Future<Output = quorate::Result<T>>,
) -> String {
    // A refusal is immediate; a call that went on to wait would time out.
    let result = tokio::time::timeout(Duration::from_millis(500), call)
        .await
        .unwrap_or_else(|_| panic!("{label}: not refused at once"));
    match result {
        Err(Error::InvalidConfig { field, .. }) => format!("InvalidConfig({field})"),
        Err(Error::InvalidArgument { name, .. }) => format!("InvalidArgument({name})"),
        Err(Error::CrossSlot { resource }) => format!("CrossSlot({resource})"),
        other => panic!("{label}: expected a refusal of bad input, got {other:?}"),
    }
}

/// TTLs no lease or state may have: below 10 ms (also once rounded down to
/// whole milliseconds), above the 30 days any state may live (and so above
/// every `max_ttl`), and too large to send as milliseconds at all.
fn bad_ttls() -> [Duration; 5] {
    [
        Duration::ZERO,
        Duration::from_micros(9_999),
        Duration::from_millis(5),
        Config::MAX_STATE_TTL + Duration::from_millis(1),
        Duration::MAX,
    ]
}

/// Names whose braces would put the sibling keys in another cluster slot
/// than the main key: an empty first hash tag.
const CROSS_SLOT_NAMES: [&str; 2] = ["foo{}{bar}", "{}x"];

#[tokio::test]
async fn more_bad_settings_are_refused_without_connecting() {
    let servers = ServerGroup::start(1).unwrap();
    let ms = Duration::from_millis;
    // The builder's retry() sets only the first delay: above the default
    // 1 s ceiling it is refused, as is a ceiling below the delay.
    refused_build(&servers, "max_retry_delay", |b| b.retry(ms(1500), ms(10))).await;
    refused_build(&servers, "max_retry_delay", |b| {
        b.config(Config {
            retry_delay: ms(100),
            max_retry_delay: ms(50),
            ..Config::default()
        })
    })
    .await;
    refused_build(&servers, "connect_timeout", |b| {
        b.connect_timeout(Duration::ZERO)
    })
    .await;
    refused_build(&servers, "max_ttl", |b| {
        b.config(Config {
            max_ttl: ms(9),
            ttl: ms(9),
            ..Config::default()
        })
    })
    .await;
    // The default TTL must fit under a lowered ceiling.
    refused_build(&servers, "ttl", |b| {
        b.config(Config {
            max_ttl: Duration::from_secs(1),
            ..Config::default()
        })
    })
    .await;
    // Nothing would be left of a lease after the drift allowance.
    refused_build(&servers, "ttl", |b| b.ttl(ms(20)).drift_factor(0.9)).await;
    refused_build(&servers, "ttl", |b| b.ttl(Duration::MAX)).await;
    refused_build(&servers, "ttl", |b| b.ttl(Duration::from_micros(9_999))).await;
    // The same node twice would vote twice; an even count tolerates no more
    // failures than one node fewer.
    refused_build(&servers, "nodes", |b| b.node(servers[0].url())).await;
    refused_build(&servers, "nodes", |b| b.node("redis://127.0.0.1:1")).await;
    assert_eq!(field_of(Quorum::builder().build().await), "nodes");
}

#[tokio::test]
async fn a_deserialized_config_with_a_nan_drift_factor_is_refused() {
    use serde::Deserialize;
    use serde::de::IntoDeserializer;
    use serde::de::value::{Error as ValueError, MapDeserializer};

    let servers = ServerGroup::start(1).unwrap();
    // serde_json is no dependency; a map of serde values is the data a
    // JSON-like `{"drift_factor": NaN}` gives.
    let data = MapDeserializer::<_, ValueError>::new(
        [("drift_factor", f64::NAN.into_deserializer())].into_iter(),
    );
    let config = Config::deserialize(data).unwrap();
    assert!(config.drift_factor.is_nan());
    // Fields not given keep their defaults.
    assert_eq!(config.ttl, Config::DEFAULT_TTL);
    refused_build(&servers, "drift_factor", |b| b.config(config.clone())).await;
}

#[tokio::test]
async fn bad_semaphore_input_is_refused_before_any_io() {
    let (servers, q) = common::cluster(3).await;
    // Full, and no keeper to run scripts meanwhile.
    let held = Semaphore::new(&q, "sem", 2)
        .auto_extend(false)
        .acquire_many(2)
        .await
        .unwrap();
    let before = Footprint::of(&servers).await;
    let long = Duration::from_secs(30);

    for permits in [0, Semaphore::MAX_PERMITS + 1, u32::MAX] {
        let bad = Semaphore::new(&q, "sem", permits);
        for r in [
            refusal("acquire", bad.acquire()).await,
            refusal("try_acquire", bad.try_acquire()).await,
            refusal("acquire_timeout", bad.acquire_timeout(long)).await,
            refusal("available_permits", bad.available_permits()).await,
        ] {
            assert_eq!(r, "InvalidArgument(permits)", "{permits} permits");
        }
    }
    let sem = Semaphore::new(&q, "sem", 2);
    for k in [0, 3, u32::MAX] {
        for r in [
            refusal("acquire_many", sem.acquire_many(k)).await,
            refusal("try_acquire_many", sem.try_acquire_many(k)).await,
            refusal("acquire_many_timeout", sem.acquire_many_timeout(k, long)).await,
        ] {
            assert_eq!(r, "InvalidArgument(k)", "k = {k}");
        }
    }
    for ttl in bad_ttls() {
        let bad = Semaphore::new(&q, "sem", 2).with_ttl(ttl);
        for r in [
            refusal("acquire", bad.acquire()).await,
            refusal("try_acquire_many", bad.try_acquire_many(1)).await,
            refusal("acquire_timeout", bad.acquire_timeout(long)).await,
            refusal("available_permits", bad.available_permits()).await,
        ] {
            assert_eq!(r, "InvalidConfig(ttl)", "ttl {ttl:?}");
        }
    }
    for name in ["", &"x".repeat(1025)] {
        let bad = Semaphore::new(&q, name, 2);
        assert_eq!(
            refusal("acquire", bad.acquire()).await,
            "InvalidArgument(name)"
        );
    }
    for name in CROSS_SLOT_NAMES {
        let bad = Semaphore::new(&q, name, 2);
        let expected = format!("CrossSlot({name})");
        assert_eq!(refusal("acquire", bad.acquire()).await, expected);
        assert_eq!(refusal("try_acquire", bad.try_acquire()).await, expected);
        assert_eq!(
            refusal("available", bad.available_permits()).await,
            expected
        );
    }
    assert_eq!(Footprint::of(&servers).await, before);
    held.release().await.unwrap();
}

#[tokio::test]
async fn bad_latch_input_is_refused_before_any_io() {
    let (servers, q) = common::cluster(3).await;
    // Closed, so that a refused wait that did wait would hang.
    Latch::new(&q, "latch", 2).count_down().await.unwrap();
    let before = Footprint::of(&servers).await;
    let long = Duration::from_secs(30);

    for count in [0, Latch::MAX_COUNT + 1, u32::MAX] {
        let bad = Latch::new(&q, "latch", count);
        for r in [
            refusal("count_down", bad.count_down()).await,
            refusal("count_down_as", bad.count_down_as("a")).await,
            refusal("wait", bad.wait()).await,
            refusal("wait_timeout", bad.wait_timeout(long)).await,
            refusal("count", bad.count()).await,
        ] {
            assert_eq!(r, "InvalidArgument(count)", "count {count}");
        }
    }
    let latch = Latch::new(&q, "latch", 2);
    for id in ["", &"i".repeat(1025)] {
        assert_eq!(
            refusal("count_down_as", latch.count_down_as(id)).await,
            "InvalidArgument(id)",
            "id of {} bytes",
            id.len()
        );
    }
    for ttl in bad_ttls() {
        let bad = Latch::new(&q, "latch", 2).with_ttl(ttl);
        for r in [
            refusal("count_down", bad.count_down()).await,
            refusal("count_down_as", bad.count_down_as("a")).await,
            refusal("wait", bad.wait()).await,
            refusal("count", bad.count()).await,
        ] {
            assert_eq!(r, "InvalidConfig(ttl)", "ttl {ttl:?}");
        }
    }
    for name in ["", &"x".repeat(1025)] {
        let bad = Latch::new(&q, name, 2);
        assert_eq!(refusal("wait", bad.wait()).await, "InvalidArgument(name)");
    }
    for name in CROSS_SLOT_NAMES {
        let bad = Latch::new(&q, name, 2);
        let expected = format!("CrossSlot({name})");
        assert_eq!(refusal("count_down", bad.count_down()).await, expected);
        assert_eq!(refusal("wait", bad.wait()).await, expected);
        assert_eq!(refusal("count", bad.count()).await, expected);
    }
    assert_eq!(Footprint::of(&servers).await, before);
}

#[tokio::test]
async fn bad_barrier_input_is_refused_before_any_io() {
    let (servers, q) = common::cluster(3).await;
    let pair = Barrier::new(&q, "barrier", 2);
    let (a, b) = tokio::join!(pair.wait(), pair.wait());
    a.unwrap();
    b.unwrap();
    // A node that lagged behind the generation is brought up to date in the
    // background, a few node timeouts later; let that land first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = Footprint::of(&servers).await;
    let long = Duration::from_secs(30);

    // A wait that was not refused would block: these are single parties.
    for parties in [0, 1, Barrier::MAX_PARTIES + 1, u32::MAX] {
        let bad = Barrier::new(&q, "barrier", parties);
        assert_eq!(
            refusal("wait", bad.wait()).await,
            "InvalidArgument(parties)"
        );
        assert_eq!(
            refusal("wait_timeout", bad.wait_timeout(long)).await,
            "InvalidArgument(parties)"
        );
    }
    for ttl in bad_ttls() {
        let bad = Barrier::new(&q, "barrier", 2).with_ttl(ttl);
        assert_eq!(refusal("wait", bad.wait()).await, "InvalidConfig(ttl)");
        assert_eq!(
            refusal("wait_timeout", bad.wait_timeout(long)).await,
            "InvalidConfig(ttl)"
        );
    }
    for name in ["", &"x".repeat(1025)] {
        let bad = Barrier::new(&q, name, 2);
        assert_eq!(refusal("wait", bad.wait()).await, "InvalidArgument(name)");
    }
    for name in CROSS_SLOT_NAMES {
        let bad = Barrier::new(&q, name, 2);
        let expected = format!("CrossSlot({name})");
        assert_eq!(refusal("wait", bad.wait()).await, expected);
        assert_eq!(
            refusal("wait_timeout", bad.wait_timeout(long)).await,
            expected
        );
    }
    assert_eq!(Footprint::of(&servers).await, before);
}

#[tokio::test]
async fn bad_reentrant_input_is_refused_before_any_io() {
    let (servers, q) = common::cluster(3).await;
    // Held by another owner, so that a refused lock() that did wait would
    // hang.
    let held = ReentrantLock::new(&q, "reentrant", "holder")
        .auto_extend(false)
        .lock()
        .await
        .unwrap();
    let before = Footprint::of(&servers).await;
    let long = Duration::from_secs(30);

    for owner in ["", &"o".repeat(1025)] {
        let bad = ReentrantLock::new(&q, "reentrant", owner);
        for r in [
            refusal("lock", bad.lock()).await,
            refusal("lock_timeout", bad.lock_timeout(long)).await,
            refusal("try_lock", bad.try_lock()).await,
            refusal("hold_count", bad.hold_count()).await,
        ] {
            assert_eq!(
                r,
                "InvalidArgument(owner)",
                "owner of {} bytes",
                owner.len()
            );
        }
    }
    for ttl in bad_ttls() {
        let bad = ReentrantLock::new(&q, "reentrant", "other").with_ttl(ttl);
        for r in [
            refusal("lock", bad.lock()).await,
            refusal("lock_timeout", bad.lock_timeout(long)).await,
            refusal("try_lock", bad.try_lock()).await,
            refusal("hold_count", bad.hold_count()).await,
        ] {
            assert_eq!(r, "InvalidConfig(ttl)", "ttl {ttl:?}");
        }
    }
    for name in ["", &"x".repeat(1025)] {
        let bad = ReentrantLock::new(&q, name, "other");
        assert_eq!(refusal("lock", bad.lock()).await, "InvalidArgument(name)");
    }
    for name in CROSS_SLOT_NAMES {
        let bad = ReentrantLock::new(&q, name, "other");
        let expected = format!("CrossSlot({name})");
        assert_eq!(refusal("lock", bad.lock()).await, expected);
        assert_eq!(refusal("try_lock", bad.try_lock()).await, expected);
        assert_eq!(refusal("hold_count", bad.hold_count()).await, expected);
    }
    assert_eq!(Footprint::of(&servers).await, before);
    held.release().await.unwrap();
}

#[tokio::test]
async fn a_ttl_under_ten_node_timeouts_is_refused_on_every_primitive() {
    let servers = ServerGroup::start(3).unwrap();
    let q = common::builder(&servers)
        .node_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let before = Footprint::of(&servers).await;
    let ttl = Duration::from_millis(999);
    let expected = "InvalidConfig(node_timeout)";
    let sem = Semaphore::new(&q, "s", 2).with_ttl(ttl);
    assert_eq!(refusal("semaphore", sem.try_acquire()).await, expected);
    let latch = Latch::new(&q, "l", 2).with_ttl(ttl);
    assert_eq!(refusal("latch", latch.count_down()).await, expected);
    let barrier = Barrier::new(&q, "b", 2).with_ttl(ttl);
    assert_eq!(refusal("barrier", barrier.wait()).await, expected);
    let lock = ReentrantLock::new(&q, "r", "me").with_ttl(ttl);
    assert_eq!(refusal("reentrant", lock.try_lock()).await, expected);
    assert_eq!(Footprint::of(&servers).await, before);
}

#[tokio::test]
async fn a_long_key_prefix_counts_toward_the_key_limit_on_every_primitive() {
    let servers = ServerGroup::start(3).unwrap();
    let prefix = "p".repeat(1000);
    let q = common::builder(&servers)
        .key_prefix(prefix)
        .build()
        .await
        .unwrap();
    let before = Footprint::of(&servers).await;
    // 1000 + 25 = 1025 bytes, one over the limit; no name alone is long.
    let name = "n".repeat(25);
    let expected = "InvalidArgument(name)";
    assert_eq!(
        refusal("mutex", Mutex::new(&q, &name).try_lock()).await,
        expected
    );
    let sem = Semaphore::new(&q, &name, 2);
    assert_eq!(refusal("semaphore", sem.try_acquire()).await, expected);
    let latch = Latch::new(&q, &name, 2);
    assert_eq!(refusal("latch", latch.count_down()).await, expected);
    let barrier = Barrier::new(&q, &name, 2);
    assert_eq!(refusal("barrier", barrier.wait()).await, expected);
    let lock = ReentrantLock::new(&q, &name, "me");
    assert_eq!(refusal("reentrant", lock.try_lock()).await, expected);
    assert_eq!(Footprint::of(&servers).await, before);

    // One byte shorter, it fits.
    let fits = Semaphore::new(&q, "n".repeat(24), 2);
    let permit = fits.acquire_timeout(Duration::from_secs(2)).await.unwrap();
    permit.release().await.unwrap();
}

#[tokio::test]
async fn an_out_of_range_extension_is_refused_on_every_guard_kind() {
    let (servers, q) = common::cluster(3).await;
    // No keeper, so nothing but the refused calls could touch the leases.
    let mutex = Mutex::new(&q, "m").auto_extend(false).lock().await.unwrap();
    let permit = Semaphore::new(&q, "s", 2)
        .auto_extend(false)
        .acquire()
        .await
        .unwrap();
    let hold = ReentrantLock::new(&q, "r", "me")
        .auto_extend(false)
        .lock()
        .await
        .unwrap();
    let deadlines = [mutex.deadline(), permit.deadline(), hold.deadline()];
    let before = Footprint::of(&servers).await;
    for ttl in bad_ttls() {
        for r in [
            refusal("mutex", mutex.extend(ttl)).await,
            refusal("semaphore", permit.extend(ttl)).await,
            refusal("reentrant", hold.extend(ttl)).await,
        ] {
            assert_eq!(r, "InvalidConfig(ttl)", "ttl {ttl:?}");
        }
    }
    assert_eq!(Footprint::of(&servers).await, before);
    // The leases are as they were: valid, with their old deadlines.
    assert_eq!(
        [mutex.deadline(), permit.deadline(), hold.deadline()],
        deadlines
    );
    assert!(mutex.is_valid() && permit.is_valid() && hold.is_valid());
    mutex.release().await.unwrap();
    permit.release().await.unwrap();
    hold.release().await.unwrap();
}

#[tokio::test]
async fn bad_input_is_refused_with_every_node_down() {
    let (mut servers, q) = common::cluster(3).await;
    for i in 0..3 {
        servers[i].kill();
    }
    // Had anything been sent, these would be quorum failures or waits.
    let sem = Semaphore::new(&q, "s", 0);
    assert_eq!(
        refusal("semaphore", sem.acquire()).await,
        "InvalidArgument(permits)"
    );
    let latch = Latch::new(&q, "l", 0);
    assert_eq!(
        refusal("latch", latch.wait()).await,
        "InvalidArgument(count)"
    );
    let barrier = Barrier::new(&q, "b", 1);
    assert_eq!(
        refusal("barrier", barrier.wait()).await,
        "InvalidArgument(parties)"
    );
    let lock = ReentrantLock::new(&q, "r", "");
    assert_eq!(
        refusal("reentrant", lock.lock()).await,
        "InvalidArgument(owner)"
    );
    let mutex = Mutex::new(&q, "m").with_ttl(Duration::ZERO);
    assert_eq!(refusal("mutex", mutex.lock()).await, "InvalidConfig(ttl)");
    let crossed = Mutex::new(&q, "foo{}{bar}");
    assert_eq!(
        refusal("mutex", crossed.lock()).await,
        "CrossSlot(foo{}{bar})"
    );
}

/// A name that spells another resource's internal key would share that key:
/// a mutex called `{x}:fence` is mutex `x`'s fencing counter (which lives
/// for days), and semaphore `{z}:owners` is semaphore `z`'s owner hash, so
/// each breaks the other (a lock that looks held for days, script errors,
/// WRONGTYPE). Such names are ambiguous and refused like any bad name.
#[tokio::test]
async fn names_that_spell_an_internal_key_are_refused_before_any_io() {
    let (servers, q) = common::cluster(3).await;
    let before = Footprint::of(&servers).await;
    let short = Duration::from_millis(100);
    let expected = "InvalidArgument(name)";
    for name in [
        "{x}:fence",
        "{x}:ready",
        "{x}:owners",
        "{x}:count",
        "quorate:node",
        "a{t}:fence",
    ] {
        let mutex = Mutex::new(&q, name);
        assert_eq!(refusal(name, mutex.try_lock()).await, expected, "mutex");
        let sem = Semaphore::new(&q, name, 2);
        assert_eq!(
            refusal(name, sem.try_acquire()).await,
            expected,
            "semaphore"
        );
        let latch = Latch::new(&q, name, 2);
        assert_eq!(refusal(name, latch.count()).await, expected, "latch");
        let barrier = Barrier::new(&q, name, 2);
        assert_eq!(
            refusal(name, barrier.wait_timeout(short)).await,
            expected,
            "barrier"
        );
        let lock = ReentrantLock::new(&q, name, "me");
        assert_eq!(refusal(name, lock.try_lock()).await, expected, "reentrant");
    }
    assert_eq!(Footprint::of(&servers).await, before);
}
