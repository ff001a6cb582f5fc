//! The sampler: what the servers hold for a lease, next to what its guard
//! claims.
//!
//! A second holder shows in the history only if one happens to get in; a
//! guard whose keys expire before its deadline is wrong either way. The
//! sampler reads the guard's deadline first, then each node's key straight
//! from the server (side connections, not any client's proxies, so a
//! client's faults do not hide what a node holds) and records both as a
//! [`Sample`] for the `claim` check.
//!
//! What is read per kind: a mutex is the string `name` holding the owner
//! token, with its `PEXPIRETIME`; a semaphore is each held slot's score
//! (its expiry in server milliseconds) in the sorted set `name`, owned by
//! the token in the hash `{name}:owners`; a reentrant lock is the hash
//! `name` whose field `owner` is the owner id, with its `PEXPIRETIME`. Each
//! node's reads are one `MULTI`, so they see one state. The servers run on
//! this machine, so their wall clock is ours: a (`SystemTime`, `Instant`)
//! pair taken at the sample turns their milliseconds into instants.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::key::Keys;
use crate::testkit::history::{History, LeaseId, NodeHold, Sample};
use crate::testkit::server::ServerGroup;
use crate::{Config, MutexGuard, ReentrantGuard, SemaphorePermit};

/// How long one node's reads may take before it counts as unreachable.
const READ_TIMEOUT: Duration = Duration::from_millis(150);

/// What a guard's keys look like on a node that holds it.
pub(super) enum Claim {
    /// The string `key` holds `token`.
    Mutex { key: String, token: String },
    /// The hash `key`'s field `owner` is `owner`.
    Reentrant { key: String, owner: String },
    /// Each of `slots` has a score in the set `set` and is owned by
    /// `token` in the hash `owners`.
    Semaphore {
        set: String,
        owners: String,
        token: String,
        slots: Vec<u32>,
    },
}

/// What the sampler needs of a guard.
pub(super) trait Claims: std::ops::Deref<Target = crate::Lease> {
    /// Its keys, under the run's key prefix.
    fn claim(&self, prefix: &str) -> Claim;
}

fn main_key(prefix: &str, name: &str) -> String {
    Keys::new(prefix, name).map_or_else(|_| format!("{prefix}{name}"), |k| k.main)
}

impl Claims for MutexGuard {
    fn claim(&self, prefix: &str) -> Claim {
        Claim::Mutex {
            key: main_key(prefix, self.name()),
            token: self.owner_token().to_owned(),
        }
    }
}

impl Claims for ReentrantGuard {
    fn claim(&self, prefix: &str) -> Claim {
        Claim::Reentrant {
            key: main_key(prefix, self.name()),
            owner: self.owner_token().to_owned(),
        }
    }
}

impl Claims for SemaphorePermit {
    fn claim(&self, prefix: &str) -> Claim {
        let keys = Keys::new(prefix, self.name()).ok();
        let owners = keys.as_ref().and_then(|k| k.sibling("owners").ok());
        Claim::Semaphore {
            set: main_key(prefix, self.name()),
            owners: owners.unwrap_or_default(),
            token: self.owner_token().to_owned(),
            slots: self.slots(),
        }
    }
}

/// One side connection per server.
pub(super) struct Sampler {
    nodes: Vec<ConnectionManager>,
    prefix: String,
}

impl Sampler {
    /// Side connections to every server of the group; they reconnect by
    /// themselves after a restart.
    pub(super) fn new(servers: &ServerGroup, config: &Config) -> std::io::Result<Sampler> {
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(READ_TIMEOUT))
            .set_response_timeout(Some(READ_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let nodes = servers
            .iter()
            .map(|s| s.client().get_connection_manager_lazy(manager.clone()))
            .collect::<redis::RedisResult<_>>()
            .map_err(std::io::Error::other)?;
        Ok(Sampler {
            nodes,
            prefix: config.key_prefix.clone(),
        })
    }

    /// Samples a live guard into the history; does nothing once it is no
    /// longer valid. The deadline is read before anything else.
    pub(super) async fn sample(&self, history: &History, id: LeaseId, guard: &impl Claims) {
        let deadline = guard.deadline();
        if !guard.is_valid() {
            return;
        }
        let at = Instant::now();
        let claim = guard.claim(&self.prefix);
        let reads = join_all(self.nodes.iter().map(|conn| read(conn.clone(), &claim))).await;
        let read_by = Instant::now();
        let clock = (SystemTime::now(), Instant::now());
        let nodes = reads
            .into_iter()
            .map(|read| match read {
                None => NodeHold::Unreachable,
                Some(None) => NodeHold::Missing,
                Some(Some(ms)) => NodeHold::Until(ms.map(|ms| instant(ms, clock))),
            })
            .collect();
        let sample = Sample {
            deadline,
            at,
            read_by,
            nodes,
        };
        history.sampled(id, sample);
    }
}

/// A server's wall-clock milliseconds as an instant of the local monotonic
/// clock, through a pair of readings of both clocks.
fn instant(ms: i64, (wall, mono): (SystemTime, Instant)) -> Instant {
    let now_ms = wall
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let delta = ms as f64 - now_ms;
    let offset = Duration::from_secs_f64(delta.abs() / 1000.0);
    if delta >= 0.0 {
        mono + offset
    } else {
        mono.checked_sub(offset).unwrap_or(mono)
    }
}

/// One node's view of the claim: `None` when it did not answer in time;
/// `Some(None)` when it does not hold it; `Some(Some(expiry))` when it does,
/// `expiry` in server milliseconds (`None`: no expiry).
async fn read(mut conn: ConnectionManager, claim: &Claim) -> Option<Option<Option<i64>>> {
    let query = async {
        match claim {
            Claim::Mutex { key, token } => {
                let (value, expiry): (Option<String>, i64) = redis::pipe()
                    .atomic()
                    .cmd("GET")
                    .arg(key)
                    .cmd("PEXPIRETIME")
                    .arg(key)
                    .query_async(&mut conn)
                    .await?;
                Ok::<_, redis::RedisError>(held(value.as_deref() == Some(token), expiry))
            }
            Claim::Reentrant { key, owner } => {
                let (value, expiry): (Option<String>, i64) = redis::pipe()
                    .atomic()
                    .cmd("HGET")
                    .arg(key)
                    .arg("owner")
                    .cmd("PEXPIRETIME")
                    .arg(key)
                    .query_async(&mut conn)
                    .await?;
                Ok(held(value.as_deref() == Some(owner), expiry))
            }
            Claim::Semaphore {
                set,
                owners,
                token,
                slots,
            } => {
                let (names, scores): (Vec<Option<String>>, Vec<Option<String>>) = redis::pipe()
                    .atomic()
                    .cmd("HMGET")
                    .arg(owners)
                    .arg(slots)
                    .cmd("ZMSCORE")
                    .arg(set)
                    .arg(slots)
                    .query_async(&mut conn)
                    .await?;
                Ok(slots_held(&names, &scores, token))
            }
        }
    };
    match tokio::time::timeout(READ_TIMEOUT, query).await {
        Ok(Ok(hold)) => Some(hold),
        _ => None,
    }
}

/// `PEXPIRETIME`: -2 for a missing key, -1 for one without expiry.
fn held(owned: bool, expiry: i64) -> Option<Option<i64>> {
    match (owned, expiry) {
        (false, _) | (true, -2) => None,
        (true, -1) => Some(None),
        (true, ms) => Some(Some(ms)),
    }
}

/// Every slot owned by `token`, expiring at its score: held until the
/// earliest of them.
fn slots_held(
    names: &[Option<String>],
    scores: &[Option<String>],
    token: &str,
) -> Option<Option<i64>> {
    let owned = !names.is_empty() && names.iter().all(|n| n.as_deref() == Some(token));
    let expiries: Option<Vec<i64>> = scores
        .iter()
        .map(|s| s.as_deref()?.parse::<f64>().ok().map(|ms| ms as i64))
        .collect();
    match (owned, expiries) {
        (true, Some(expiries)) => expiries.into_iter().min().map(Some),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_milliseconds_map_onto_the_monotonic_clock() {
        let (wall, mono) = (SystemTime::now(), Instant::now());
        let now_ms = wall.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        let later = instant(now_ms + 300, (wall, mono));
        let d = later - mono;
        assert!(
            d <= Duration::from_millis(300) && d > Duration::from_millis(298),
            "{d:?}"
        );
        assert!(instant(now_ms - 300, (wall, mono)) < mono);
    }

    #[test]
    fn a_key_is_held_only_by_its_owner_and_while_it_exists() {
        assert_eq!(held(true, 1234), Some(Some(1234)));
        assert_eq!(held(true, -1), Some(None));
        assert_eq!(held(true, -2), None);
        assert_eq!(held(false, 1234), None);
        let mine = |s: &str| Some(s.to_owned());
        let scores = [mine("1700000000300"), mine("1700000000100")];
        assert_eq!(
            slots_held(&[mine("t"), mine("t")], &scores, "t"),
            Some(Some(1_700_000_000_100))
        );
        assert_eq!(slots_held(&[mine("t"), mine("u")], &scores, "t"), None);
        assert_eq!(
            slots_held(&[mine("t"), None], &[scores[0].clone(), None], "t"),
            None
        );
    }
}
