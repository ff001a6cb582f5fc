//! `quorate release NAME --force`: deletes a stuck lock on every node.
//!
//! A mutex is deleted only where it still holds the token shown (compare
//! and delete), so a holder that took the lock since is left alone. The
//! fencing counter is kept: tokens must keep rising. Waiters are woken.

use std::io::{BufRead, Write};

use futures::future::join_all;
use serde::Serialize;

use super::nodes::{Node, Nodes, one_line};
use super::report::{Output, Report};
use super::state::{Held, NodeState, ResourceKeys};
use super::{Failure, Outcome, Status, args};

/// Deletes the key when it still holds the token: a lock taken since is
/// not ours to break.
const COMPARE_AND_DELETE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// What the release did on one node.
#[derive(Debug, Serialize)]
struct Removed {
    node: String,
    /// `removed`, `nothing`, `changed` (a new holder, left alone) or `error`.
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Released {
    name: String,
    kind: &'static str,
    before: String,
    nodes: Vec<Removed>,
}

pub(super) async fn run(nodes: &Nodes, release: &args::Release, out: Output) -> Outcome {
    let keys = ResourceKeys::new(&nodes.key_prefix, &release.name)?;
    let report = Report::read(nodes, &release.name, &keys).await;
    nodes.enough(report.answered())?;
    if !matches!(report.kind, "mutex" | "semaphore" | "reentrant") {
        return refuse_kind(&report);
    }
    if !release.force {
        return Err(Failure::usage(format!(
            "refusing to release {} {} ({}) without --force: its holder may still be running",
            report.kind, report.name, report.summary
        )));
    }
    if !release.yes && !confirm(&report) {
        eprintln!("quorate: nothing removed");
        return Ok(Status::Absent);
    }
    let removed = join_all(
        nodes
            .nodes
            .iter()
            .zip(&report.nodes)
            .map(|(node, state)| remove(node, state, &keys)),
    )
    .await;
    let any = removed.iter().any(|r| r.result == "removed");
    let released = Released {
        name: report.name.clone(),
        kind: report.kind,
        before: report.summary.clone(),
        nodes: removed,
    };
    out.print(&released, || text(&released));
    Ok(if any { Status::Ok } else { Status::Absent })
}

fn refuse_kind(report: &Report) -> Outcome {
    if report.kind == "other" {
        return Err(Failure::usage(format!(
            "{} is {}: not released",
            report.name, report.summary
        )));
    }
    if report.found() {
        return Err(Failure::usage(format!(
            "{} is a {}: only locks (mutex, semaphore, reentrant) are released; its state expires with its TTL",
            report.name, report.kind
        )));
    }
    eprintln!("quorate: {}: {}", report.name, report.summary);
    Ok(Status::Absent)
}

/// Asks on standard input; anything but yes, or no answer, declines.
fn confirm(report: &Report) -> bool {
    eprint!(
        "delete {} {} ({}) on {} nodes? [y/N] ",
        report.kind,
        report.name,
        report.summary,
        report.nodes.len()
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let read = std::io::stdin().lock().read_line(&mut answer);
    read.is_ok() && matches!(answer.trim(), "y" | "Y" | "yes")
}

async fn remove(node: &Node, state: &NodeState, keys: &ResourceKeys) -> Removed {
    let done = |result: &'static str, error: Option<String>| Removed {
        node: node.addr.clone(),
        result,
        error,
    };
    let Ok(conn) = &node.conn else {
        return done("error", node.conn.as_ref().err().cloned());
    };
    let mut conn = conn.clone();
    let deleted: redis::RedisResult<i64> = match (&state.held, &state.token) {
        (Held::Mutex { .. }, Some(token)) => {
            redis::cmd("EVAL")
                .arg(COMPARE_AND_DELETE)
                .arg(1)
                .arg(&keys.main)
                .arg(token)
                .query_async(&mut conn)
                .await
        }
        (Held::Semaphore { .. } | Held::Reentrant { .. }, _) => {
            redis::cmd("DEL")
                .arg(&keys.main)
                .arg(&keys.owners)
                .query_async(&mut conn)
                .await
        }
        _ => return done("nothing", None),
    };
    match deleted {
        Ok(0) if matches!(state.held, Held::Mutex { .. }) => done("changed", None),
        Ok(0) => done("nothing", None),
        Ok(_) => {
            // Waiters retry at once rather than at their next backoff.
            let _: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(&keys.channel)
                .arg("*")
                .query_async(&mut conn)
                .await;
            done("removed", None)
        }
        Err(e) => done("error", Some(one_line(&e))),
    }
}

fn text(released: &Released) -> String {
    let mut out = format!(
        "released {} {} (was: {})\n",
        released.kind, released.name, released.before
    );
    for r in &released.nodes {
        let what = match (r.result, &r.error) {
            ("removed", _) => "removed".to_owned(),
            ("changed", _) => "left alone: a new holder took it since".to_owned(),
            ("nothing", _) => "nothing to remove".to_owned(),
            (_, Some(e)) => format!("error: {e}"),
            (other, None) => other.to_owned(),
        };
        out.push_str(&format!("  {:<22} {what}\n", r.node));
    }
    out
}
