//! One resource as one node holds it, read with plain commands and
//! classified by its key layout (see `key.rs` and the scripts in `lua/`):
//!
//! | main key | kind |
//! |---|---|
//! | string (the owner token: `SET NX PX`, also other Redlock clients') | mutex |
//! | sorted set of slots, hash `{name}:owners` | semaphore |
//! | hash with `owner` and `h:<hold>` fields | reentrant lock |
//! | hash with `parties`, `gen`, `s:<gen>:<seat>`, `o:<gen>` | barrier |
//! | set of count-down ids, hash `{name}:count` | latch |

use std::collections::HashMap;

use redis::aio::MultiplexedConnection;
use redis::{InfoDict, RedisResult, Role};
use serde::Serialize;

use super::Failure;
use super::nodes::{Node, one_line};
use crate::key::{Keys, NODE_RECORD};

/// The keys of one resource, whatever its kind.
#[derive(Debug, Clone)]
pub(super) struct ResourceKeys {
    pub(super) main: String,
    pub(super) fence: String,
    pub(super) owners: String,
    pub(super) count: String,
    pub(super) channel: String,
    record: String,
}

impl ResourceKeys {
    pub(super) fn new(prefix: &str, name: &str) -> Result<ResourceKeys, Failure> {
        let bad = |e: crate::Error| Failure::usage(e.to_string());
        let keys = Keys::new(prefix, name).map_err(bad)?;
        Ok(ResourceKeys {
            fence: keys.sibling("fence").map_err(bad)?,
            owners: keys.sibling("owners").map_err(bad)?,
            count: keys.sibling("count").map_err(bad)?,
            channel: keys.sibling("ready").map_err(bad)?,
            record: format!("{prefix}{NODE_RECORD}"),
            main: keys.main,
        })
    }
}

/// Whether a node's grants count toward a quorum now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(super) enum Counts {
    Yes,
    /// Presumed restarted: recorded on the node by the client that
    /// quarantined it.
    Quarantined {
        left_ms: i64,
    },
    /// A replica takes no locks.
    Replica,
    Unreachable {
        error: String,
    },
}

/// What the node holds under the resource's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Held {
    Absent,
    Mutex {
        holder: String,
    },
    Semaphore {
        capacity: Option<u32>,
        slots: Vec<Slot>,
    },
    Reentrant {
        owner: String,
        holds: u32,
    },
    Latch {
        count: Option<u32>,
        ids: Vec<String>,
        open: bool,
    },
    Barrier {
        parties: Option<u32>,
        generation: u64,
        arrivals: Vec<String>,
        last: Option<Outcome>,
    },
    /// A key quorate did not write.
    Other {
        key_type: String,
    },
}

impl Held {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Held::Absent => "absent",
            Held::Mutex { .. } => "mutex",
            Held::Semaphore { .. } => "semaphore",
            Held::Reentrant { .. } => "reentrant",
            Held::Latch { .. } => "latch",
            Held::Barrier { .. } => "barrier",
            Held::Other { .. } => "other",
        }
    }
}

/// A semaphore slot held on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct Slot {
    pub(super) slot: u32,
    pub(super) holder: String,
    pub(super) ttl_ms: i64,
}

/// A decided barrier generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct Outcome {
    pub(super) generation: u64,
    /// The members released, the leader first; empty when broken.
    pub(super) released: Vec<String>,
    pub(super) broken: bool,
}

/// One node's view of one resource.
#[derive(Debug, Clone, Serialize)]
pub(super) struct NodeState {
    pub(super) node: String,
    pub(super) counts: Counts,
    /// Time left on the main key; `None` when it is absent.
    pub(super) ttl_ms: Option<i64>,
    /// The fencing counter as stored (the next token is at least this plus
    /// one, and at least the node's clock in ms × 1024).
    pub(super) fence: Option<u64>,
    pub(super) held: Held,
    /// The mutex's owner token, whole: what a forced release compares.
    #[serde(skip)]
    pub(super) token: Option<String>,
}

impl NodeState {
    pub(super) fn answered(&self) -> bool {
        !matches!(self.counts, Counts::Unreachable { .. })
    }
}

/// Reads the resource on one node; never fails as a whole: an unreachable
/// node is a state of its own.
pub(super) async fn read(node: &Node, keys: &ResourceKeys) -> NodeState {
    let outcome = match &node.conn {
        Ok(conn) => read_on(&mut conn.clone(), &node.addr, keys)
            .await
            .map_err(|e| one_line(&e)),
        Err(e) => Err(e.clone()),
    };
    outcome.unwrap_or_else(|error| NodeState {
        node: node.addr.clone(),
        counts: Counts::Unreachable { error },
        ttl_ms: None,
        fence: None,
        held: Held::Absent,
        token: None,
    })
}

async fn read_on(
    conn: &mut MultiplexedConnection,
    addr: &str,
    keys: &ResourceKeys,
) -> RedisResult<NodeState> {
    let mut pipe = redis::pipe();
    pipe.cmd("TIME")
        .cmd("INFO")
        .arg("server")
        .cmd("ROLE")
        .cmd("HMGET")
        .arg(&keys.record)
        .arg("q_run_id")
        .arg("q_until")
        .cmd("TYPE")
        .arg(&keys.main)
        .cmd("PTTL")
        .arg(&keys.main)
        .cmd("GET")
        .arg(&keys.fence);
    type First = (
        (i64, i64),
        InfoDict,
        Role,
        (Option<String>, Option<i64>),
        String,
        i64,
        Option<String>,
    );
    let ((secs, micros), info, role, (q_run, q_until), key_type, pttl, fence): First =
        pipe.query_async(conn).await?;
    let now_ms = secs * 1000 + micros / 1000;
    let run_id: String = info.get("run_id").unwrap_or_default();
    let counts = match (role, q_run, q_until) {
        (Role::Replica { .. }, _, _) => Counts::Replica,
        (_, Some(run), Some(until)) if run == run_id && until > now_ms => Counts::Quarantined {
            left_ms: until - now_ms,
        },
        _ => Counts::Yes,
    };
    let (held, token) = held(conn, keys, &key_type, now_ms).await?;
    Ok(NodeState {
        node: addr.to_owned(),
        counts,
        ttl_ms: (pttl >= -1).then_some(pttl),
        fence: fence.and_then(|f| f.parse().ok()),
        held,
        token,
    })
}

/// Reads and classifies the main key of type `key_type`.
async fn held(
    conn: &mut MultiplexedConnection,
    keys: &ResourceKeys,
    key_type: &str,
    now_ms: i64,
) -> RedisResult<(Held, Option<String>)> {
    let main = keys.main.as_str();
    Ok(match key_type {
        "none" => (Held::Absent, None),
        "string" => {
            let token: Option<String> = redis::cmd("GET").arg(main).query_async(conn).await?;
            let holder = token.as_deref().map(short).unwrap_or_default();
            (Held::Mutex { holder }, token)
        }
        "zset" => {
            let mut pipe = redis::pipe();
            pipe.cmd("ZRANGE")
                .arg(main)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .cmd("HGETALL")
                .arg(&keys.owners);
            let (slots, owners): (Vec<(String, f64)>, HashMap<String, String>) =
                pipe.query_async(conn).await?;
            (semaphore(&slots, &owners, now_ms), None)
        }
        "hash" => {
            let fields: HashMap<String, String> =
                redis::cmd("HGETALL").arg(main).query_async(conn).await?;
            let held = if fields.contains_key("parties") {
                barrier(&fields)
            } else {
                reentrant(&fields, now_ms)
            };
            (held, None)
        }
        "set" => {
            let mut pipe = redis::pipe();
            pipe.cmd("SMEMBERS")
                .arg(main)
                .cmd("HGETALL")
                .arg(&keys.count);
            let (mut ids, state): (Vec<String>, HashMap<String, String>) =
                pipe.query_async(conn).await?;
            ids.sort();
            let held = Held::Latch {
                count: state.get("count").and_then(|c| c.parse().ok()),
                ids,
                open: state.get("open").is_some_and(|o| o == "1"),
            };
            (held, None)
        }
        other => (
            Held::Other {
                key_type: other.to_owned(),
            },
            None,
        ),
    })
}

fn semaphore(slots: &[(String, f64)], owners: &HashMap<String, String>, now_ms: i64) -> Held {
    let slots = slots
        .iter()
        .filter_map(|(slot, expiry)| {
            Some(Slot {
                slot: slot.parse().ok()?,
                holder: owners.get(slot).map(|t| short(t)).unwrap_or_default(),
                ttl_ms: *expiry as i64 - now_ms,
            })
        })
        .filter(|s| s.ttl_ms > 0)
        .collect();
    Held::Semaphore {
        capacity: owners.get("permits").and_then(|p| p.parse().ok()),
        slots,
    }
}

fn reentrant(fields: &HashMap<String, String>, now_ms: i64) -> Held {
    let holds = fields
        .iter()
        .filter(|(k, v)| k.starts_with("h:") && v.parse::<i64>().is_ok_and(|e| e > now_ms))
        .count() as u32;
    Held::Reentrant {
        owner: fields.get("owner").cloned().unwrap_or_default(),
        holds,
    }
}

fn barrier(fields: &HashMap<String, String>) -> Held {
    let number = |name: &str| fields.get(name).and_then(|v| v.parse::<u64>().ok());
    let generation = number("gen").unwrap_or(0).max(number("floor").unwrap_or(0));
    let mut seats: Vec<(u32, String)> = fields
        .iter()
        .filter_map(|(k, party)| {
            let seat = k.strip_prefix(&format!("s:{generation}:"))?.parse().ok()?;
            Some((seat, short(party)))
        })
        .collect();
    seats.sort();
    let last = generation.checked_sub(1).and_then(|g| {
        let outcome = fields.get(&format!("o:{g}"))?;
        let released = outcome
            .strip_prefix("done:")
            .map(|m| m.split(',').map(short).collect())
            .unwrap_or_default();
        Some(Outcome {
            generation: g,
            released,
            broken: outcome == "broken",
        })
    });
    Held::Barrier {
        parties: number("parties").map(|p| p as u32),
        generation,
        arrivals: seats.into_iter().map(|(_, p)| p).collect(),
        last,
    }
}

/// A token or id shortened for display: enough to tell holders apart,
/// not enough to act as them.
pub(super) fn short(token: &str) -> String {
    const SHOWN: usize = 8;
    match token.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}…", &token[..cut]),
        None => token.to_owned(),
    }
}
