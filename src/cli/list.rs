//! `quorate list [PREFIX]`: every resource under a name prefix, with its
//! kind and holder, found with `SCAN` page by page (never `KEYS`, which
//! blocks a server with many keys).

use std::collections::BTreeMap;

use redis::aio::MultiplexedConnection;
use serde::Serialize;

use super::nodes::{Nodes, one_line};
use super::report::Output;
use super::state::short;
use super::{Outcome, Status, args};
use crate::key::{Keys, NODE_RECORD};

/// One resource as the nodes list it.
#[derive(Debug, Serialize)]
struct Listed {
    name: String,
    kind: &'static str,
    /// The holder (mutex token, reentrant owner) or the fill (`3/8`).
    holder: String,
    /// Nodes where its main key is.
    nodes: usize,
}

#[derive(Debug, Serialize)]
struct Listing {
    resources: Vec<Listed>,
    /// Nodes that could not be scanned, with the cause.
    unreachable: Vec<String>,
    /// Stopped at `--limit`.
    truncated: bool,
}

pub(super) async fn run(nodes: &Nodes, list: &args::List, out: Output) -> Outcome {
    let pattern = format!(
        "{}{}*",
        glob_escape(&nodes.key_prefix),
        glob_escape(list.prefix.as_deref().unwrap_or(""))
    );
    let limit = list.limit.unwrap_or(usize::MAX);
    let mut found: BTreeMap<String, (&'static str, BTreeMap<String, usize>, usize)> =
        BTreeMap::new();
    let mut unreachable = Vec::new();
    let mut truncated = false;
    for node in &nodes.nodes {
        let scanned = match &node.conn {
            Ok(conn) => scan(&mut conn.clone(), &pattern, list.page, nodes, limit).await,
            Err(e) => Err(e.clone()),
        };
        let entries = match scanned {
            Ok((entries, cut)) => {
                truncated |= cut;
                entries
            }
            Err(e) => {
                unreachable.push(format!("{}: {e}", node.addr));
                continue;
            }
        };
        for (key, kind, holder) in entries {
            let name = key
                .strip_prefix(&nodes.key_prefix)
                .unwrap_or(&key)
                .to_owned();
            let entry = found.entry(name).or_insert((kind, BTreeMap::new(), 0));
            *entry.1.entry(holder).or_default() += 1;
            entry.2 += 1;
        }
    }
    let resources: Vec<Listed> = found
        .into_iter()
        .take(limit)
        .map(|(name, (kind, holders, count))| Listed {
            name,
            kind,
            holder: holders
                .into_iter()
                .max_by_key(|(_, k)| *k)
                .map(|(h, _)| h)
                .unwrap_or_default(),
            nodes: count,
        })
        .collect();
    nodes.enough(nodes.nodes.len() - unreachable.len())?;
    let listing = Listing {
        resources,
        unreachable,
        truncated,
    };
    out.print(&listing, || text(&listing));
    Ok(if listing.resources.is_empty() {
        Status::Absent
    } else {
        Status::Ok
    })
}

/// The resources of one node matching `pattern`: their main key, kind and
/// holder. `true` when it stopped at `limit`.
async fn scan(
    conn: &mut MultiplexedConnection,
    pattern: &str,
    page: usize,
    nodes: &Nodes,
    limit: usize,
) -> Result<(Vec<(String, &'static str, String)>, bool), String> {
    let record = format!("{}{NODE_RECORD}", nodes.key_prefix);
    let mut cursor = 0u64;
    let mut entries = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(page.max(1))
            .query_async(conn)
            .await
            .map_err(|e| one_line(&e))?;
        // Auxiliary keys (`{x}:fence`, `{x}:owners`, ...) and the node's
        // record are no resources of their own.
        let mains: Vec<String> = keys
            .into_iter()
            .filter(|k| *k != record && Keys::new("", k).is_ok())
            .collect();
        entries.extend(describe(conn, &mains).await.map_err(|e| one_line(&e))?);
        if entries.len() >= limit {
            return Ok((entries, true));
        }
        if next == 0 {
            return Ok((entries, false));
        }
        cursor = next;
    }
}

/// The kind and holder of each main key, in two pipelined requests.
async fn describe(
    conn: &mut MultiplexedConnection,
    keys: &[String],
) -> redis::RedisResult<Vec<(String, &'static str, String)>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut types = redis::pipe();
    for k in keys {
        types.cmd("TYPE").arg(k);
    }
    let types: Vec<String> = types.query_async(conn).await?;
    let mut briefs = redis::pipe();
    for (key, key_type) in keys.iter().zip(&types) {
        brief(&mut briefs, key, key_type);
    }
    let replies: Vec<redis::Value> = briefs.query_async(conn).await?;
    Ok(keys
        .iter()
        .zip(&types)
        .zip(replies)
        .filter_map(|((key, key_type), reply)| {
            let (kind, holder) = classify(key_type, reply)?;
            Some((key.clone(), kind, holder))
        })
        .collect())
}

/// Queues what tells a key's holder: one command per key.
fn brief(pipe: &mut redis::Pipeline, key: &str, key_type: &str) {
    let keys = Keys::new("", key).ok();
    let sibling = |s: &str| {
        keys.as_ref()
            .and_then(|k| k.sibling(s).ok())
            .unwrap_or_default()
    };
    match key_type {
        "string" => pipe.cmd("GET").arg(key),
        "zset" => pipe.cmd("HGET").arg(sibling("owners")).arg("permits"),
        "hash" => pipe
            .cmd("HMGET")
            .arg(key)
            .arg("owner")
            .arg("parties")
            .arg("gen"),
        "set" => pipe.cmd("HGET").arg(sibling("count")).arg("count"),
        _ => pipe.cmd("PING"),
    };
}

fn classify(key_type: &str, reply: redis::Value) -> Option<(&'static str, String)> {
    let text = |v: &redis::Value| redis::from_redis_value_ref::<String>(v).ok();
    Some(match key_type {
        "string" => ("mutex", text(&reply).map(|t| short(&t)).unwrap_or_default()),
        "zset" => (
            "semaphore",
            format!("{} permits", text(&reply).as_deref().unwrap_or("?")),
        ),
        "hash" => {
            let fields: Vec<Option<String>> = redis::from_redis_value(reply).ok()?;
            match fields.as_slice() {
                [Some(owner), _, _] => ("reentrant", owner.clone()),
                [_, Some(parties), generation] => (
                    "barrier",
                    format!(
                        "{parties} parties, generation {}",
                        generation.as_deref().unwrap_or("0")
                    ),
                ),
                _ => return None,
            }
        }
        "set" => (
            "latch",
            format!("count {}", text(&reply).as_deref().unwrap_or("?")),
        ),
        _ => return None,
    })
}

/// `SCAN MATCH` is a glob: the prefix's own `*?[\` must match literally.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn text(listing: &Listing) -> String {
    let mut out = format!("{:<40} {:<10} {:<28} nodes\n", "name", "kind", "holder");
    for r in &listing.resources {
        out.push_str(&format!(
            "{:<40} {:<10} {:<28} {}\n",
            r.name, r.kind, r.holder, r.nodes
        ));
    }
    for u in &listing.unreachable {
        out.push_str(&format!("unreachable: {u}\n"));
    }
    if listing.truncated {
        out.push_str("(stopped at --limit)\n");
    }
    out
}
