//! Settings of a [`Quorum`](crate::Quorum): plain data with documented
//! defaults, (de)serialized with serde, durations written the way people
//! write them (`"30s"`, `"250ms"`). With the `config` feature they load
//! from a TOML file and `QUORATE_*` environment variables (`load.rs`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[cfg(feature = "config")]
mod load;

/// Settings shared by every primitive of one [`Quorum`](crate::Quorum), and
/// the nodes it connects to.
///
/// Build it with `Config::default()` and struct update syntax, through
/// [`QuorumBuilder`](crate::QuorumBuilder), or (feature `config`) from a
/// TOML file and the environment. It is checked when the quorum is built;
/// a per-primitive TTL is checked against it before the first operation.
///
/// With serde, durations are strings such as `"30s"`, `"250ms"` or
/// `"1m 30s"` ([`humantime`](https://docs.rs/humantime) syntax), and a
/// field quorate does not know is an error, so a typo never leaves a
/// setting at its default.
///
/// ```
/// use std::time::Duration;
/// use quorate::Config;
///
/// let config = Config {
///     nodes: vec!["redis://10.0.0.1".into(), "redis://10.0.0.2".into(), "redis://10.0.0.3".into()],
///     ttl: Duration::from_secs(30),
///     key_prefix: "myapp:".into(),
///     ..Config::default()
/// };
/// assert_eq!(config.max_ttl, Config::DEFAULT_MAX_TTL);
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The nodes' URLs (`redis://host:port/db`, `rediss://...`,
    /// `redis+unix:///path`; a Redis Cluster as `cluster:URL|URL|...`, a
    /// Sentinel-managed primary as `sentinel:SERVICE@URL|URL|...`), for
    /// [`Quorum::from_config`](crate::Quorum::from_config).
    /// Nodes added to a [`QuorumBuilder`](crate::QuorumBuilder) join them.
    /// Default: none. Environment: `QUORATE_NODES`, comma-separated.
    pub nodes: Vec<String>,
    /// Lease time-to-live used when a primitive does not set its own.
    /// Default: [`Config::DEFAULT_TTL`] (10 s).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long one node may take to answer one request before its vote
    /// counts as a failure. `None` picks `min(50 ms, ttl / 20)` per lease.
    /// It must not exceed a tenth of the TTL. Default: `None`.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub node_timeout: Option<Duration>,
    /// Clock drift allowance as a fraction of the TTL, in `[0, 1)`. A lease
    /// is valid for `ttl - elapsed - (ttl * drift_factor + 2 ms)`.
    /// Default: [`Config::DEFAULT_DRIFT_FACTOR`] (0.01).
    pub drift_factor: f64,
    /// First backoff between attempts of a waiting call when no wake-up
    /// arrives; it doubles up to `max_retry_delay`. Default: 50 ms.
    #[serde(with = "humantime_serde")]
    pub retry_delay: Duration,
    /// Random extra delay added to each backoff, so waiters do not retry in
    /// lockstep. Default: 50 ms.
    #[serde(with = "humantime_serde")]
    pub retry_jitter: Duration,
    /// Longest backoff between attempts. Default: 1 s.
    #[serde(with = "humantime_serde")]
    pub max_retry_delay: Duration,
    /// Time allowed to open a connection to a node. Default: 1 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The longest lease TTL any process of the deployment uses, and so the
    /// restart quarantine: a node that restarted without durable
    /// persistence sits out `max_ttl` plus drift from its start, long
    /// enough for every lease it may have forgotten to have expired.
    ///
    /// Every process records its `max_ttl` on the nodes when it connects,
    /// and takes the largest one recorded as the deployment's bound, so a
    /// process with short leases still waits out another's long ones. No
    /// lease may ask for more. Default: [`Config::DEFAULT_MAX_TTL`] (60 s).
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Accept an even number of nodes. `N = 4` tolerates one failure, like
    /// `N = 3`, at a higher cost, so it is refused unless set. Default: false.
    pub allow_even_nodes: bool,
    /// Prepended to every resource name. Default: empty.
    pub key_prefix: String,
    /// Restart safety, the Redlock specification's "delayed restarts". A node
    /// that restarts without persistence forgets the leases it granted, and
    /// could grant them again. A node presumed restarted grants no lease that
    /// counts until [`max_ttl`](Self::max_ttl) plus drift has passed since
    /// it started; its other answers (extensions, releases) count. Nodes
    /// that persist every write (`appendonly yes` with `appendfsync
    /// always`) are trusted at once.
    /// Turn it off only if every node persists every write. Default: true.
    pub restart_quarantine: bool,
    /// After each lease write (an acquire, an extension, a renewal), wait
    /// for this many replicas of the node's primary to confirm it
    /// (`WAIT`); a write they do not confirm in time counts as that node's
    /// failure, and an acquire that falls short undoes its lease. For
    /// primaries with replicas (Sentinel, managed services, a cluster's
    /// shards), so that a failover to a confirmed replica keeps the lease.
    /// Default: none. Environment: `QUORATE_WAIT_REPLICAS=1,100ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_replicas: Option<WaitReplicas>,
}

/// How many replicas must confirm a lease write, and how long to wait for
/// them (see [`Config::wait_replicas`]).
///
/// ```
/// let wait = quorate::WaitReplicas { replicas: 1, timeout: std::time::Duration::from_millis(100) };
/// # let _ = wait;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitReplicas {
    /// Replicas that must confirm; at least 1.
    pub replicas: u32,
    /// The longest wait for them; above zero, and below the per-node
    /// timeout of every lease, which it is part of.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Config {
    /// Default lease TTL.
    ///
    /// ```
    /// assert_eq!(quorate::Config::default().ttl, quorate::Config::DEFAULT_TTL);
    /// ```
    pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
    /// Default clock drift factor, the Redlock specification's.
    ///
    /// ```
    /// assert_eq!(quorate::Config::default().drift_factor, quorate::Config::DEFAULT_DRIFT_FACTOR);
    /// ```
    pub const DEFAULT_DRIFT_FACTOR: f64 = 0.01;
    /// Shortest TTL any lease may have.
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) {
    /// let too_short = quorate::Config::MIN_TTL / 2;
    /// let e = quorate::Mutex::new(&q, "x").with_ttl(too_short).try_lock().await.unwrap_err();
    /// assert!(e.is_invalid_input());
    /// # }
    /// ```
    pub const MIN_TTL: Duration = Duration::from_millis(10);
    /// Ceiling of the default per-node timeout.
    ///
    /// ```
    /// // With no node_timeout set, a 10 s lease gets the default ceiling.
    /// assert_eq!(quorate::Config::default().node_timeout, None);
    /// assert_eq!(quorate::Config::DEFAULT_NODE_TIMEOUT, std::time::Duration::from_millis(50));
    /// ```
    pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_millis(50);
    /// Default longest lease TTL, and restart quarantine.
    ///
    /// ```
    /// assert_eq!(quorate::Config::default().max_ttl, quorate::Config::DEFAULT_MAX_TTL);
    /// ```
    pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(60);
    /// Longest life of latch and barrier state.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// let latch = quorate::Latch::new(&q, "boot", 3).with_ttl(quorate::Config::MAX_STATE_TTL);
    /// # }
    /// ```
    pub const MAX_STATE_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

    pub(crate) fn validate(&self) -> Result<()> {
        if !self.drift_factor.is_finite() || !(0.0..1.0).contains(&self.drift_factor) {
            return Err(Error::config(
                "drift_factor",
                format!("{} is outside [0, 1)", self.drift_factor),
            ));
        }
        if self.node_timeout == Some(Duration::ZERO) {
            return Err(Error::config("node_timeout", "must be above zero"));
        }
        if let Some(wait) = self.wait_replicas {
            if wait.replicas == 0 {
                return Err(Error::config(
                    "wait_replicas",
                    "replicas must be at least 1",
                ));
            }
            if wait.timeout.is_zero() {
                return Err(Error::config("wait_replicas", "timeout must be above zero"));
            }
        }
        if self.retry_delay.is_zero() {
            return Err(Error::config("retry_delay", "must be above zero"));
        }
        if self.max_retry_delay < self.retry_delay {
            return Err(Error::config(
                "max_retry_delay",
                "must be at least retry_delay",
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::config("connect_timeout", "must be above zero"));
        }
        if self.max_ttl < Self::MIN_TTL || self.max_ttl > Self::MAX_STATE_TTL {
            return Err(Error::config("max_ttl", "must be within 10 ms..=30 days"));
        }
        self.timing(self.ttl).map(|_| ())
    }

    /// Checks a lease TTL against these settings and derives its timing.
    pub(crate) fn timing(&self, ttl: Duration) -> Result<Timing> {
        let ttl = whole_millis(ttl);
        if ttl < Self::MIN_TTL {
            return Err(Error::config("ttl", format!("{ttl:?} is below 10 ms")));
        }
        if ttl > self.max_ttl {
            return Err(Error::config(
                "ttl",
                format!("{ttl:?} is above max_ttl ({:?})", self.max_ttl),
            ));
        }
        let node_timeout = self.node_timeout(ttl)?;
        let drift = self.drift(ttl);
        if drift + node_timeout >= ttl {
            return Err(Error::config(
                "ttl",
                format!("{ttl:?} leaves no validity after drift and node timeout"),
            ));
        }
        Ok(Timing {
            ttl,
            node_timeout,
            drift,
        })
    }

    /// Checks the TTL of latch or barrier state (not a lease: it may outlive
    /// `max_ttl`) and derives the timing of its rounds.
    pub(crate) fn state_timing(&self, ttl: Duration) -> Result<Timing> {
        let ttl = whole_millis(ttl);
        if ttl < Self::MIN_TTL || ttl > Self::MAX_STATE_TTL {
            return Err(Error::config(
                "ttl",
                format!("{ttl:?} is outside 10 ms..=30 days"),
            ));
        }
        let node_timeout = self.node_timeout(ttl)?;
        Ok(Timing {
            ttl,
            node_timeout,
            drift: self.drift(ttl),
        })
    }

    /// The per-node timeout for rounds about something that lives `ttl`.
    fn node_timeout(&self, ttl: Duration) -> Result<Duration> {
        match self.node_timeout {
            Some(t) if t * 10 > ttl => Err(Error::config(
                "node_timeout",
                format!("{t:?} is more than a tenth of the ttl ({ttl:?})"),
            )),
            Some(t) => Ok(t),
            None => Ok(Self::DEFAULT_NODE_TIMEOUT.min(ttl / 20)),
        }
    }

    /// The drift allowance of a lease of `ttl`.
    pub(crate) fn drift(&self, ttl: Duration) -> Duration {
        ttl.mul_f64(self.drift_factor) + Duration::from_millis(2)
    }

    /// How long a node presumed restarted sits out, or `None` when the
    /// quarantine is off: `bound` (the deployment's longest lease TTL)
    /// plus its drift.
    pub(crate) fn quarantine(&self, bound: Duration) -> Option<Duration> {
        self.restart_quarantine.then(|| bound + self.drift(bound))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            nodes: Vec::new(),
            ttl: Self::DEFAULT_TTL,
            node_timeout: None,
            drift_factor: Self::DEFAULT_DRIFT_FACTOR,
            retry_delay: Duration::from_millis(50),
            retry_jitter: Duration::from_millis(50),
            max_retry_delay: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            max_ttl: Self::DEFAULT_MAX_TTL,
            allow_even_nodes: false,
            key_prefix: String::new(),
            restart_quarantine: true,
            wait_replicas: None,
        }
    }
}

// Beside the settings it reads, so loading and connecting read as one story.
impl crate::Quorum {
    /// Connects to `config.nodes` with `config`'s settings.
    ///
    /// ```no_run
    /// # async fn demo() -> quorate::Result<()> {
    /// let config = quorate::Config::from_file("quorate.toml")?.with_env()?;
    /// let q = quorate::Quorum::from_config(&config).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`QuorumBuilder::build`](crate::QuorumBuilder::build).
    ///
    /// # Cancel safety
    ///
    /// As [`QuorumBuilder::build`](crate::QuorumBuilder::build).
    pub async fn from_config(config: &Config) -> Result<crate::Quorum> {
        crate::Quorum::builder()
            .config(config.clone())
            .build()
            .await
    }
}

/// Settings get logged at start-up: the nodes' passwords are left out.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<String> = self.nodes.iter().map(|u| redact(u)).collect();
        f.debug_struct("Config")
            .field("nodes", &nodes)
            .field("ttl", &self.ttl)
            .field("node_timeout", &self.node_timeout)
            .field("drift_factor", &self.drift_factor)
            .field("retry_delay", &self.retry_delay)
            .field("retry_jitter", &self.retry_jitter)
            .field("max_retry_delay", &self.max_retry_delay)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_ttl", &self.max_ttl)
            .field("allow_even_nodes", &self.allow_even_nodes)
            .field("key_prefix", &self.key_prefix)
            .field("restart_quarantine", &self.restart_quarantine)
            .field("wait_replicas", &self.wait_replicas)
            .finish()
    }
}

/// A node URL with the password of its user info, if any, masked.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once('@') {
        Some((user_info, _)) if user_info.contains(':') => {
            let user = user_info.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{}", &rest[user_info.len() + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Whole milliseconds are sent to Redis; validity is computed from exactly
/// what was sent.
fn whole_millis(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().min(u128::from(u64::MAX)) as u64)
}

/// The checked timing of one lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    pub(crate) ttl: Duration,
    pub(crate) node_timeout: Duration,
    pub(crate) drift: Duration,
}

impl Timing {
    pub(crate) fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_lease_timing_takes_the_default_node_timeout_and_drift() {
        let timing = Config::default().timing(Duration::from_secs(10)).unwrap();
        assert_eq!(timing.ttl, Duration::from_secs(10));
        assert_eq!(timing.node_timeout, ms(50));
        assert_eq!(timing.drift, ms(102));
        // Short TTLs get a twentieth of it as the node timeout.
        assert_eq!(
            Config::default().timing(ms(400)).unwrap().node_timeout,
            ms(20)
        );
    }

    #[test]
    fn lease_ttls_out_of_range_are_refused_with_the_field() {
        let config = Config::default();
        for bad in [ms(9), Duration::from_micros(10_999) / 2, ms(60_001)] {
            let e = config.timing(bad).unwrap_err();
            assert!(
                matches!(e, Error::InvalidConfig { field: "ttl", .. }),
                "{bad:?}: {e}"
            );
        }
        let slow = Config {
            node_timeout: Some(ms(100)),
            ..Config::default()
        };
        let e = slow.timing(ms(999)).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidConfig {
                    field: "node_timeout",
                    ..
                }
            ),
            "{e}"
        );
        let drifty = Config {
            drift_factor: 0.9,
            ..Config::default()
        };
        assert!(drifty.timing(ms(20)).is_err());
    }

    #[test]
    fn state_may_outlive_max_ttl_but_not_thirty_days() {
        let config = Config::default();
        assert!(config.state_timing(Duration::from_secs(3600)).is_ok());
        assert!(config.state_timing(Config::MAX_STATE_TTL + ms(1)).is_err());
        assert!(config.state_timing(ms(9)).is_err());
    }

    #[test]
    fn the_quarantine_is_the_bound_plus_its_drift_unless_switched_off() {
        let config = Config::default();
        assert_eq!(config.quarantine(Duration::from_secs(10)), Some(ms(10_102)));
        let off = Config {
            restart_quarantine: false,
            ..Config::default()
        };
        assert_eq!(off.quarantine(Duration::from_secs(10)), None);
    }

    #[test]
    fn debug_output_masks_the_nodes_passwords() {
        let config = Config {
            nodes: vec![
                "redis://:s3cret@10.0.0.1:6379/2".into(),
                "rediss://app:s3cret@10.0.0.2".into(),
                "redis://10.0.0.3".into(),
                "redis+unix:///run/redis.sock".into(),
            ],
            ..Config::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redis://:***@10.0.0.1:6379/2"), "{shown}");
        assert!(shown.contains("rediss://app:***@10.0.0.2"), "{shown}");
        assert!(shown.contains("redis://10.0.0.3"), "{shown}");
        assert!(shown.contains("restart_quarantine: true"), "{shown}");
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        let nan = Config {
            drift_factor: f64::NAN,
            ..Config::default()
        };
        assert!(matches!(
            nan.validate(),
            Err(Error::InvalidConfig {
                field: "drift_factor",
                ..
            })
        ));
        let zero = Config {
            retry_delay: Duration::ZERO,
            ..Config::default()
        };
        assert!(zero.validate().is_err());
        assert!(Config::default().validate().is_ok());
    }
}
