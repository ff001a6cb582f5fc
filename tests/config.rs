//! Loading settings from TOML and `QUORATE_*` environment variables: every
//! field, the round trip, and every kind of bad value, each refused with
//! the field named.

mod common;

use std::time::Duration;

use quorate::{Config, Error, Mutex, Quorum, WaitReplicas};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Every field away from its default.
fn everything() -> Config {
    Config {
        nodes: vec![
            "redis://10.0.0.1:6380".into(),
            "redis://10.0.0.2:6380/2".into(),
            "rediss://10.0.0.3".into(),
            "redis://10.0.0.4".into(),
            "cluster:redis://10.0.1.1:7000|redis://10.0.1.2:7000".into(),
        ],
        ttl: Duration::from_secs(30),
        node_timeout: Some(ms(40)),
        drift_factor: 0.02,
        retry_delay: ms(20),
        retry_jitter: ms(15),
        max_retry_delay: Duration::from_secs(2),
        connect_timeout: ms(750),
        max_ttl: Duration::from_secs(90),
        allow_even_nodes: true,
        key_prefix: "app:".into(),
        restart_quarantine: false,
        wait_replicas: Some(WaitReplicas {
            replicas: 1,
            timeout: ms(100),
        }),
    }
}

const EVERYTHING: &str = r#"
nodes = ["redis://10.0.0.1:6380", "redis://10.0.0.2:6380/2", "rediss://10.0.0.3", "redis://10.0.0.4", "cluster:redis://10.0.1.1:7000|redis://10.0.1.2:7000"]
ttl = "30s"
node_timeout = "40ms"
drift_factor = 0.02
retry_delay = "20ms"
retry_jitter = "15ms"
max_retry_delay = "2s"
connect_timeout = "750ms"
max_ttl = "1m 30s"
allow_even_nodes = true
key_prefix = "app:"
restart_quarantine = false
wait_replicas = { replicas = 1, timeout = "100ms" }
"#;

const EVERYTHING_ENV: &[(&str, &str)] = &[
    (
        "QUORATE_NODES",
        "redis://10.0.0.1:6380, redis://10.0.0.2:6380/2,rediss://10.0.0.3,redis://10.0.0.4,cluster:redis://10.0.1.1:7000|redis://10.0.1.2:7000",
    ),
    ("QUORATE_TTL", "30s"),
    ("QUORATE_NODE_TIMEOUT", "40ms"),
    ("QUORATE_DRIFT_FACTOR", "0.02"),
    ("QUORATE_RETRY_DELAY", "20ms"),
    ("QUORATE_RETRY_JITTER", "15ms"),
    ("QUORATE_MAX_RETRY_DELAY", "2s"),
    ("QUORATE_CONNECT_TIMEOUT", "750ms"),
    ("QUORATE_MAX_TTL", "90s"),
    ("QUORATE_ALLOW_EVEN_NODES", "true"),
    ("QUORATE_KEY_PREFIX", "app:"),
    ("QUORATE_RESTART_QUARANTINE", "false"),
    ("QUORATE_WAIT_REPLICAS", "1, 100ms"),
];

/// The field and origin of a load error, or the field of a range error.
fn blamed(e: &Error) -> (String, String) {
    match e {
        Error::ConfigLoad { origin, field, .. } => {
            (field.clone().unwrap_or_default(), origin.clone())
        }
        Error::InvalidConfig { field, .. } => ((*field).to_owned(), "range".to_owned()),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[test]
fn every_field_reads_from_toml() {
    assert_eq!(Config::from_toml(EVERYTHING).unwrap(), everything());
}

#[test]
fn every_field_reads_from_the_environment() {
    let config = Config::default().with_env_vars(EVERYTHING_ENV.iter().copied());
    assert_eq!(config.unwrap(), everything());
}

#[test]
fn an_empty_file_and_an_empty_environment_give_the_defaults() {
    assert_eq!(Config::from_toml("").unwrap(), Config::default());
    let none: [(&str, &str); 0] = [];
    assert_eq!(
        Config::default().with_env_vars(none).unwrap(),
        Config::default()
    );
}

#[test]
fn settings_round_trip_through_toml() {
    for config in [Config::default(), everything()] {
        let text = config.to_toml();
        assert_eq!(Config::from_toml(&text).unwrap(), config, "{text}");
    }
    // Durations are written the way people write them.
    assert!(everything().to_toml().contains("ttl = \"30s\""));
    assert!(everything().to_toml().contains("max_ttl = \"1m 30s\""));
}

#[test]
fn the_environment_overrides_the_file_and_keeps_the_rest() {
    let config = Config::from_toml(EVERYTHING)
        .unwrap()
        .with_env_vars([("QUORATE_TTL", "45s"), ("OTHER", "x")])
        .unwrap();
    assert_eq!(config.ttl, Duration::from_secs(45));
    assert_eq!(
        Config {
            ttl: everything().ttl,
            ..config
        },
        everything()
    );
}

#[test]
fn a_file_reads_like_its_text() {
    let dir = std::env::temp_dir().join(format!("quorate-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("quorate.toml");
    std::fs::write(&path, EVERYTHING).unwrap();
    assert_eq!(Config::from_file(&path).unwrap(), everything());
    std::fs::write(&path, "ttl = \"30\"\n").unwrap();
    let e = Config::from_file(&path).unwrap_err();
    assert_eq!(blamed(&e), ("ttl".into(), path.display().to_string()));
    std::fs::remove_dir_all(&dir).unwrap();
    let missing = Config::from_file(dir.join("nowhere.toml")).unwrap_err();
    assert!(
        matches!(&missing, Error::ConfigLoad { field: None, origin, .. } if origin.ends_with("nowhere.toml")),
        "{missing}"
    );
}

#[test]
fn every_bad_toml_value_is_refused_naming_its_field() {
    let cases: &[(&str, &str, &str)] = &[
        // (TOML, field blamed, "TOML" for a load error or "range")
        ("tll = \"30s\"", "tll", "TOML"),
        ("[ttl]\nsecs = 1", "ttl", "TOML"),
        ("nodes = \"redis://a\"", "nodes", "TOML"),
        ("nodes = [1, 2, 3]", "nodes[0]", "TOML"),
        ("ttl = \"30\"", "ttl", "TOML"),
        ("ttl = 30", "ttl", "TOML"),
        ("ttl = \"30 parsecs\"", "ttl", "TOML"),
        ("ttl = \"-1s\"", "ttl", "TOML"),
        ("ttl = \"5ms\"", "ttl", "range"),
        ("ttl = \"2m\"", "ttl", "range"),
        ("node_timeout = \"soon\"", "node_timeout", "TOML"),
        ("node_timeout = \"0s\"", "node_timeout", "range"),
        ("node_timeout = \"2s\"", "node_timeout", "range"),
        ("drift_factor = \"high\"", "drift_factor", "TOML"),
        ("drift_factor = 1.5", "drift_factor", "range"),
        ("drift_factor = -0.1", "drift_factor", "range"),
        ("drift_factor = nan", "drift_factor", "range"),
        ("retry_delay = \"0s\"", "retry_delay", "range"),
        ("retry_jitter = true", "retry_jitter", "TOML"),
        ("max_retry_delay = \"10ms\"", "max_retry_delay", "range"),
        ("connect_timeout = \"0ms\"", "connect_timeout", "range"),
        ("max_ttl = \"5ms\"", "max_ttl", "range"),
        ("max_ttl = \"31days\"", "max_ttl", "range"),
        ("allow_even_nodes = \"yes\"", "allow_even_nodes", "TOML"),
        ("key_prefix = 5", "key_prefix", "TOML"),
        ("restart_quarantine = 1", "restart_quarantine", "TOML"),
    ];
    for (text, field, origin) in cases {
        let e = Config::from_toml(text).unwrap_err();
        assert_eq!(
            blamed(&e),
            ((*field).into(), (*origin).into()),
            "{text}: {e}"
        );
        assert!(!e.to_string().contains('\n'), "one line: {e}");
        assert!(e.is_invalid_input());
    }
}

#[test]
fn text_that_is_not_toml_is_refused_with_its_line() {
    let e = Config::from_toml("ttl = \"10s\"\nnodes = [\n").unwrap_err();
    assert!(matches!(&e, Error::ConfigLoad { field: None, .. }), "{e:?}");
    assert!(e.to_string().starts_with("TOML: line "), "{e}");
}

#[test]
fn every_bad_environment_value_is_refused_naming_its_variable() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // (variable, value, field blamed, origin)
        ("QUORATE_TLL", "30s", "", "QUORATE_TLL"),
        ("QUORATE_TTL", "30", "ttl", "QUORATE_TTL"),
        ("QUORATE_TTL", "5ms", "ttl", "range"),
        (
            "QUORATE_NODE_TIMEOUT",
            "fast",
            "node_timeout",
            "QUORATE_NODE_TIMEOUT",
        ),
        (
            "QUORATE_DRIFT_FACTOR",
            "high",
            "drift_factor",
            "QUORATE_DRIFT_FACTOR",
        ),
        ("QUORATE_DRIFT_FACTOR", "1", "drift_factor", "range"),
        ("QUORATE_RETRY_DELAY", "0s", "retry_delay", "range"),
        (
            "QUORATE_RETRY_JITTER",
            "a bit",
            "retry_jitter",
            "QUORATE_RETRY_JITTER",
        ),
        ("QUORATE_MAX_RETRY_DELAY", "1ms", "max_retry_delay", "range"),
        (
            "QUORATE_CONNECT_TIMEOUT",
            "1",
            "connect_timeout",
            "QUORATE_CONNECT_TIMEOUT",
        ),
        ("QUORATE_MAX_TTL", "forever", "max_ttl", "QUORATE_MAX_TTL"),
        (
            "QUORATE_ALLOW_EVEN_NODES",
            "yes",
            "allow_even_nodes",
            "QUORATE_ALLOW_EVEN_NODES",
        ),
        (
            "QUORATE_RESTART_QUARANTINE",
            "0",
            "restart_quarantine",
            "QUORATE_RESTART_QUARANTINE",
        ),
        (
            "QUORATE_WAIT_REPLICAS",
            "1",
            "wait_replicas",
            "QUORATE_WAIT_REPLICAS",
        ),
        (
            "QUORATE_WAIT_REPLICAS",
            "one,1s",
            "wait_replicas",
            "QUORATE_WAIT_REPLICAS",
        ),
        ("QUORATE_WAIT_REPLICAS", "0,1s", "wait_replicas", "range"),
    ];
    for (name, value, field, origin) in cases {
        let e = Config::default()
            .with_env_vars([(*name, *value)])
            .unwrap_err();
        assert_eq!(
            blamed(&e),
            ((*field).into(), (*origin).into()),
            "{name}={value}: {e}"
        );
        assert!(e.to_string().starts_with(name) || *origin == "range", "{e}");
    }
}

#[test]
fn variables_of_the_testkit_and_the_inspector_are_not_settings() {
    let config = Config::default()
        .with_env_vars([
            ("QUORATE_REDIS_SERVER", "/usr/bin/redis-server"),
            ("QUORATE_CONFIG", "quorate.toml"),
        ])
        .unwrap();
    assert_eq!(config, Config::default());
}

#[test]
fn an_empty_node_list_in_the_environment_means_no_node() {
    let config = Config::from_toml(EVERYTHING)
        .unwrap()
        .with_env_vars([("QUORATE_NODES", " ")])
        .unwrap();
    assert!(config.nodes.is_empty());
}

#[tokio::test]
async fn a_quorum_connects_from_loaded_settings() {
    let servers = quorate::testkit::ServerGroup::start(1).unwrap();
    let text = format!(
        "nodes = [{:?}]\nttl = \"2s\"\nkey_prefix = \"loaded:\"\n",
        servers.urls()[0]
    );
    let config = Config::from_toml(&text).unwrap();
    let q = Quorum::from_config(&config).await.unwrap();
    assert_eq!(q.config(), &config);
    let guard = Mutex::new(&q, "job").lock().await.unwrap();
    assert!(guard.remaining() <= Duration::from_secs(2));
    assert!(common::get(&servers, 0, "loaded:job").await.is_some());
    guard.release().await.unwrap();
}

#[tokio::test]
async fn nodes_of_the_builder_join_those_of_the_settings() {
    let servers = quorate::testkit::ServerGroup::start(3).unwrap();
    let urls = servers.urls();
    let config = Config {
        nodes: urls[..2].to_vec(),
        ..Config::default()
    };
    let q = Quorum::builder()
        .config(config)
        .node(&urls[2])
        .build()
        .await
        .unwrap();
    assert_eq!(q.node_count(), 3);
    assert_eq!(q.config().nodes, urls);
}
