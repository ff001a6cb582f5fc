//! One Redis deployment: a connection manager, per-request timeouts and the
//! identity checks made at connect time.

use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, InfoDict, Role, ScriptInvocation, Value};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::quorum::Call;

/// One node's answer to one script.
///
/// Scripts reply with an array whose first element is a status: 1 for yes,
/// anything else for no. The rest is the payload.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// The script granted the request.
    Yes(Payload),
    /// The script refused.
    No(Payload),
    /// No usable answer.
    Failed(Failure),
    /// The node restarted recently and may have forgotten leases: its vote
    /// does not count yet (the script did run).
    Quarantined,
}

/// The elements of a script reply after its status.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Payload(pub(crate) Vec<Value>);

impl Payload {
    /// The integer at `i`, if there is one.
    pub(crate) fn int(&self, i: usize) -> Option<i64> {
        match self.0.get(i)? {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The integers from `i` on.
    pub(crate) fn ints_from(&self, i: usize) -> Vec<i64> {
        (i..self.0.len()).filter_map(|j| self.int(j)).collect()
    }

    /// The strings from `i` on.
    pub(crate) fn strings_from(&self, i: usize) -> Vec<String> {
        self.0
            .iter()
            .skip(i)
            .filter_map(|v| redis::from_redis_value_ref::<String>(v).ok())
            .collect()
    }
}

/// Why a node gave no usable answer.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) message: String,
    /// A timeout or a connection problem, as opposed to an error reply that
    /// will come back the same way every time (a key of the wrong type, a
    /// denied command).
    pub(crate) transient: bool,
    /// The script found state created with other parameters; the detail.
    pub(crate) mismatch: Option<String>,
}

const NO_SCRIPT: redis::ErrorKind = redis::ErrorKind::Server(redis::ServerErrorKind::NoScript);

/// Error code of the scripts' "state created with other parameters" reply.
const MISMATCH: &str = "QUORATE_MISMATCH";

/// What a node said about itself at connect time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) run_id: String,
}

pub(crate) struct Node {
    pub(crate) addr: String,
    pub(crate) client: Client,
    conn: ConnectionManager,
    incarnation: std::sync::Mutex<Incarnation>,
}

/// The server process a node's votes come from.
#[derive(Debug, Default)]
struct Incarnation {
    run_id: Option<String>,
    /// Votes count again from this instant (a restart was seen).
    counts_from: Option<Instant>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.addr)
    }
}

impl Node {
    /// Parses a URL and prepares a lazy connection; no I/O.
    pub(crate) fn open(url: &str, config: &Config) -> Result<Node> {
        let client = Client::open(url)
            .map_err(|e| Error::config("nodes", format!("bad url {url:?}: {e}")))?;
        let info = client.get_connection_info();
        let addr = match info.redis_settings().db() {
            0 => info.addr().to_string(),
            db => format!("{}/{db}", info.addr()),
        };
        // Requests get their own deadline (the per-node timeout) in `invoke`.
        // A short reconnect budget makes calls to a dead node fail at once
        // instead of queueing behind a long reconnect.
        let manager = ConnectionManagerConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(Some(config.connect_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(500));
        let conn = client
            .get_connection_manager_lazy(manager)
            .map_err(|e| Error::config("nodes", format!("{addr}: {e}")))?;
        Ok(Node {
            addr,
            client,
            conn,
            incarnation: Default::default(),
        })
    }

    /// Asks the node who it is and refuses replicas.
    pub(crate) async fn identify(&self, timeout: Duration) -> Result<Identity> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("ROLE").cmd("INFO").arg("server");
        let query = pipe.query_async::<(Role, InfoDict)>(&mut conn);
        let (role, info) = tokio::time::timeout(timeout, query)
            .await
            .map_err(|_| self.connect_error(timeout_error()))?
            .map_err(|e| self.connect_error(e))?;
        if !matches!(role, Role::Primary { .. }) {
            return Err(Error::config(
                "nodes",
                format!("{} is a replica; locks need primaries", self.addr),
            ));
        }
        let run_id = info.get::<String>("run_id").unwrap_or_default();
        self.incarnation.lock().unwrap().run_id = Some(run_id.clone());
        Ok(Identity { run_id })
    }

    /// Runs a script with a deadline. Never fails as a whole: a timeout or
    /// an error is this node's vote. A stamped reply from a node that
    /// restarted less than `quarantine` ago is [`Reply::Quarantined`].
    pub(crate) async fn invoke(
        &self,
        call: &Call,
        timeout: Duration,
        quarantine: Option<Duration>,
    ) -> Reply {
        let reply =
            match tokio::time::timeout(timeout, self.invoke_reloading(call.invocation())).await {
                Err(_) => {
                    return Reply::Failed(Failure {
                        message: format!("no answer within {timeout:?}"),
                        transient: true,
                        mismatch: None,
                    });
                }
                Ok(Err(e)) => return Reply::Failed(failure(e)),
                Ok(Ok(reply)) => reply,
            };
        let mut values = reply.into_iter();
        let Some(status) = values.next() else {
            return Reply::Failed(Failure {
                message: "empty script reply".into(),
                transient: false,
                mismatch: None,
            });
        };
        if call.is_stamped() {
            let run_id = values
                .next()
                .and_then(|v| redis::from_redis_value::<String>(v).ok());
            let uptime = values
                .next()
                .and_then(|v| redis::from_redis_value::<u64>(v).ok());
            if !self.admits(run_id.unwrap_or_default(), uptime.unwrap_or(0), quarantine) {
                return Reply::Quarantined;
            }
        }
        let payload = Payload(values.collect());
        match status {
            Value::Int(1) => Reply::Yes(payload),
            _ => Reply::No(payload),
        }
    }

    /// Whether a vote from server `run_id`, up for `uptime` seconds, counts.
    ///
    /// A run_id other than the one seen before means the node restarted and
    /// may have forgotten leases it granted (without persistence): its votes
    /// do not count until `quarantine` has passed since it started, the
    /// Redlock specification's delayed restart. The first run_id seen is
    /// trusted.
    fn admits(&self, run_id: String, uptime: u64, quarantine: Option<Duration>) -> bool {
        let now = Instant::now();
        let mut incarnation = self.incarnation.lock().unwrap();
        let restarted = incarnation
            .run_id
            .as_ref()
            .is_some_and(|known| *known != run_id);
        if restarted && let Some(period) = quarantine {
            // Uptime is a difference of whole wall-clock seconds: the server
            // may have started up to a second later than it says. Take the
            // latest start, so the quarantine never ends early.
            let said = Duration::from_secs(uptime);
            let started = (now + Duration::from_secs(1))
                .checked_sub(said)
                .unwrap_or(now)
                .min(now);
            incarnation.counts_from = Some(started + period);
            tracing::warn!(node = %self.addr, ?period, "node restarted; its votes do not count for a while");
        }
        incarnation.run_id = Some(run_id);
        incarnation.counts_from.is_none_or(|t| now >= t)
    }

    /// EVALSHA, loading the script on NOSCRIPT. Loading and the retried
    /// EVALSHA are two commands, so a `SCRIPT FLUSH` may land between them:
    /// try a few times (the caller's timeout bounds it).
    async fn invoke_reloading(&self, inv: &ScriptInvocation<'_>) -> redis::RedisResult<Vec<Value>> {
        let mut conn = self.conn.clone();
        let mut tries = 0;
        loop {
            match inv.invoke_async::<Vec<Value>>(&mut conn).await {
                Err(e) if e.kind() == NO_SCRIPT && tries < 3 => tries += 1,
                other => return other,
            }
        }
    }

    fn connect_error(&self, source: redis::RedisError) -> Error {
        Error::Connect {
            node: self.addr.clone(),
            source,
        }
    }
}

fn failure(e: redis::RedisError) -> Failure {
    Failure {
        transient: e.is_timeout()
            || e.is_io_error()
            || e.is_connection_dropped()
            || e.kind() == NO_SCRIPT,
        mismatch: (e.code() == Some(MISMATCH)).then(|| e.detail().unwrap_or("").to_owned()),
        message: e.to_string(),
    }
}

fn timeout_error() -> redis::RedisError {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no answer within the connect timeout",
    )
    .into()
}
