//! The `quorate` binary, run as an operator would, against real servers
//! holding resources taken through the library and through raw
//! `SET NX PX` from another client.
//!
//! `cargo test` builds the binary: the crate's dev-dependency on itself
//! enables the `cli` feature its `required-features` asks for.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use quorate::testkit::ServerGroup;
use quorate::{Barrier, Latch, Mutex, ReentrantLock, Semaphore};
use serde_json::Value;

use common::{cluster, conn, get, set_nx_px};

/// The binary with the nodes of `servers` and no other `QUORATE_*`
/// setting of the environment.
fn quorate(servers: &ServerGroup) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quorate"));
    for (name, _) in std::env::vars() {
        if name.starts_with("QUORATE_") && name != "QUORATE_REDIS_SERVER" {
            cmd.env_remove(name);
        }
    }
    cmd.arg("--nodes").arg(servers.urls().join(","));
    cmd
}

/// A running `quorate watch`: killed when dropped, so a failed test leaves
/// no process behind.
struct Watching(std::process::Child);

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `quorate watch NAME` with a long interval, its views arriving on
/// the channel line by line.
fn watch(servers: &ServerGroup, name: &str) -> (Watching, mpsc::Receiver<String>) {
    let mut child = quorate(servers)
        .args(["watch", name, "--interval", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, seen) = mpsc::channel();
    let out = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    (Watching(child), seen)
}

fn run(servers: &ServerGroup, args: &[&str]) -> Output {
    let out = quorate(servers).args(args).output().unwrap();
    assert!(
        out.status.code().is_some(),
        "killed by a signal: {:?}",
        out.status
    );
    out
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(out), stderr(out)))
}

/// `status NAME --json`, which must exit with `expected`.
fn status(servers: &ServerGroup, name: &str, expected: i32) -> Value {
    let out = run(servers, &["--json", "status", name]);
    assert_eq!(code(&out), expected, "{}{}", stdout(&out), stderr(&out));
    json(&out)
}

fn short(token: &str) -> String {
    format!("{}…", &token[..8])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_library_mutex_on_every_node() {
    let (servers, q) = cluster(3).await;
    let guard = Mutex::new(&q, "orders:42").lock().await.unwrap();
    let token = guard.fencing_token().await.unwrap();
    let owner = common::majority_value(&servers, "orders:42").await;
    let report = status(&servers, "orders:42", 0);
    assert_eq!(report["kind"], "mutex");
    assert_eq!(
        report["summary"],
        format!("held by {} on 3 of 3 nodes", short(&owner))
    );
    for node in report["nodes"].as_array().unwrap() {
        assert_eq!(node["held"]["holder"], short(&owner).as_str());
        assert_eq!(node["counts"]["state"], "yes");
        let ttl = node["ttl_ms"].as_i64().unwrap();
        assert!(ttl > 8_000 && ttl <= 10_000, "{ttl}");
        // The committed token is on a majority at least.
        assert!(node["fence"].as_u64().unwrap_or(0) <= token);
    }
    let fenced = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["fence"].as_u64() == Some(token))
        .count();
    assert!(fenced >= 2, "{report}");
    // The owner token is never printed whole.
    let text = stdout(&run(&servers, &["status", "orders:42"]));
    assert!(
        !text.contains(&owner) && text.contains(&short(&owner)),
        "{text}"
    );
    guard.release().await.unwrap();
}

#[tokio::test]
async fn status_shows_raw_set_nx_px_locks_and_minorities() {
    let servers = ServerGroup::start(3).unwrap();
    for i in 0..2 {
        assert!(set_nx_px(&servers, i, "peer:lock", "redsync-token-1", 30_000).await);
    }
    let report = status(&servers, "peer:lock", 0);
    assert_eq!(report["summary"], "held by redsync-… on 2 of 3 nodes");
    assert_eq!(report["nodes"][2]["held"]["kind"], "absent");

    assert!(set_nx_px(&servers, 0, "peer:minority", "someone-else", 30_000).await);
    let report = status(&servers, "peer:minority", 0);
    assert_eq!(
        report["summary"],
        "held by someone-… on 1 of 3 nodes only: not a majority (2 needed)"
    );
}

#[tokio::test]
async fn status_of_nothing_exits_one() {
    let servers = ServerGroup::start(1).unwrap();
    let report = status(&servers, "nothing:here", 1);
    assert_eq!(report["kind"], "absent");
    assert_eq!(report["summary"], "not found");
    let text = stdout(&run(&servers, &["status", "nothing:here"]));
    assert!(text.starts_with("nothing:here: not found"), "{text}");
}

#[tokio::test]
async fn status_shows_semaphore_slots_and_capacity() {
    let (servers, q) = cluster(3).await;
    let jobs = Semaphore::new(&q, "jobs", 4);
    let permit = jobs.acquire_many(2).await.unwrap();
    let report = status(&servers, "jobs", 0);
    assert_eq!(report["kind"], "semaphore");
    assert!(
        report["summary"]
            .as_str()
            .unwrap()
            .starts_with("2 of 4 permits held on a majority: "),
        "{report}"
    );
    let node = &report["nodes"][0]["held"];
    assert_eq!(node["capacity"], 4);
    let slots: Vec<u64> = node["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["slot"].as_u64().unwrap())
        .collect();
    let mut held: Vec<u64> = permit.slots().iter().map(|&s| u64::from(s)).collect();
    held.sort_unstable();
    assert_eq!(slots, held);
    permit.release().await.unwrap();
}

#[tokio::test]
async fn status_shows_a_reentrant_owner_and_its_holds() {
    let (servers, q) = cluster(1).await;
    let ledger = ReentrantLock::new(&q, "ledger", "job-17");
    let outer = ledger.lock().await.unwrap();
    let inner = ledger.lock().await.unwrap();
    let report = status(&servers, "ledger", 0);
    assert_eq!(report["kind"], "reentrant");
    assert_eq!(report["nodes"][0]["held"]["owner"], "job-17");
    assert_eq!(report["nodes"][0]["held"]["holds"], 2);
    assert_eq!(
        report["summary"],
        "held by owner \"job-17\", 2 holds, on 1 of 1 nodes"
    );
    inner.release().await.unwrap();
    outer.release().await.unwrap();
}

#[tokio::test]
async fn status_shows_a_latch_count_and_ids() {
    let (servers, q) = cluster(3).await;
    let boot = Latch::new(&q, "boot", 3);
    boot.count_down_as("shard-1").await.unwrap();
    boot.count_down_as("shard-2").await.unwrap();
    let report = status(&servers, "boot", 0);
    assert_eq!(report["kind"], "latch");
    assert_eq!(
        report["summary"],
        "closed: 2 of 3 count-downs (shard-1, shard-2)"
    );
    boot.count_down_as("shard-3").await.unwrap();
    boot.wait().await.unwrap();
    let report = status(&servers, "boot", 0);
    assert!(
        report["summary"]
            .as_str()
            .unwrap()
            .starts_with("open: 3 of 3"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_barrier_arrivals_and_the_last_outcome() {
    let (servers, q) = cluster(1).await;
    let phase = Barrier::new(&q, "phase", 2);
    let first = {
        let phase = phase.clone();
        tokio::spawn(async move { phase.wait().await.unwrap() })
    };
    let arrived = common::eventually(Duration::from_secs(3), || async {
        status(&servers, "phase", 0)["summary"] == "generation 0: 1 of 2 arrived"
    })
    .await;
    assert!(arrived, "{}", status(&servers, "phase", 0));
    phase.wait().await.unwrap();
    first.await.unwrap();
    let report = status(&servers, "phase", 0);
    let summary = report["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("generation 1: 0 of 2 arrived; generation 0 released 2 (leader "),
        "{summary}"
    );
}

#[tokio::test]
async fn a_node_that_sits_out_is_shown_not_to_count() {
    let servers = ServerGroup::start(3).unwrap();
    let mut c = conn(&servers, 1).await;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut c)
        .await
        .unwrap();
    let run_id = info
        .lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .unwrap()
        .trim()
        .to_owned();
    let (secs, _): (i64, i64) = redis::cmd("TIME").query_async(&mut c).await.unwrap();
    let until = (secs + 60) * 1000;
    let _: () = redis::cmd("HSET")
        .arg(common::NODE_RECORD)
        .arg("q_run_id")
        .arg(&run_id)
        .arg("q_until")
        .arg(until)
        .query_async(&mut c)
        .await
        .unwrap();
    set_nx_px(&servers, 0, "r", "t0000000000", 30_000).await;
    let report = status(&servers, "r", 0);
    assert_eq!(report["nodes"][0]["counts"]["state"], "yes");
    assert_eq!(report["nodes"][1]["counts"]["state"], "quarantined");
    assert!(report["nodes"][1]["counts"]["left_ms"].as_i64().unwrap() > 50_000);
}

#[tokio::test]
async fn unreachable_nodes_are_named_and_a_lost_majority_exits_three() {
    let mut servers = ServerGroup::start(3).unwrap();
    set_nx_px(&servers, 1, "down:lock", "token-123456", 30_000).await;
    set_nx_px(&servers, 2, "down:lock", "token-123456", 30_000).await;
    let dead = servers[0].url();
    servers[0].kill();
    let report = status(&servers, "down:lock", 0);
    assert_eq!(report["nodes"][0]["counts"]["state"], "unreachable");
    let text = stdout(&run(&servers, &["status", "down:lock"]));
    let line = text.lines().find(|l| l.contains("unreachable")).unwrap();
    assert!(line.contains(dead.trim_start_matches("redis://")), "{line}");

    servers[1].kill();
    let out = run(&servers, &["status", "down:lock"]);
    assert_eq!(code(&out), 3);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("quorate: 1 of 3 nodes answered, 2 needed: "),
        "{err}"
    );
    assert!(err.contains("refused"), "{err}");
}

#[tokio::test]
async fn list_pages_through_resources_with_their_kind_and_holder() {
    let (servers, q) = cluster(1).await;
    let lock = Mutex::new(&q, "ls:a-mutex").lock().await.unwrap();
    let permit = Semaphore::new(&q, "ls:b-semaphore", 3)
        .acquire()
        .await
        .unwrap();
    Latch::new(&q, "ls:c-latch", 2).count_down().await.unwrap();
    set_nx_px(&servers, 0, "ls:d-peer", "peer-token-xyz", 30_000).await;
    set_nx_px(&servers, 0, "elsewhere", "x", 30_000).await;
    for page in ["1", "100"] {
        let out = run(&servers, &["--json", "list", "ls:", "--page", page]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let listed: Vec<(String, String)> = json(&out)["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap().to_owned(),
                    r["kind"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let expected = [
            ("ls:a-mutex", "mutex"),
            ("ls:b-semaphore", "semaphore"),
            ("ls:c-latch", "latch"),
            ("ls:d-peer", "mutex"),
        ];
        assert_eq!(
            listed,
            expected.map(|(n, k)| (n.to_owned(), k.to_owned())),
            "page {page}"
        );
    }
    let limited = json(&run(&servers, &["--json", "list", "ls:", "--limit", "2"]));
    assert_eq!(limited["resources"].as_array().unwrap().len(), 2);
    assert_eq!(limited["truncated"], true);
    let none = run(&servers, &["list", "nothing-like-this:"]);
    assert_eq!(code(&none), 1);
    lock.release().await.unwrap();
    permit.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_refuses_without_force_asks_and_then_deletes_everywhere() {
    let (servers, q) = cluster(3).await;
    let guard = Mutex::new(&q, "stuck").lock().await.unwrap();
    guard.fencing_token().await.unwrap();
    let held = || async {
        common::values(&servers, "stuck")
            .await
            .iter()
            .flatten()
            .count()
    };

    let out = run(&servers, &["release", "stuck"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("without --force"), "{}", stderr(&out));
    assert_eq!(held().await, 3);

    for answer in ["n\n", ""] {
        let mut child = quorate(&servers)
            .args(["release", "stuck", "--force"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answer.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(code(&out), 1, "{answer:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("[y/N]"), "{}", stderr(&out));
        assert_eq!(held().await, 3, "declined with {answer:?}");
    }

    let out = run(&servers, &["release", "stuck", "--force", "--yes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("released mutex stuck (was: held by "),
        "{text}"
    );
    assert_eq!(text.matches(" removed").count(), 3, "{text}");
    assert_eq!(held().await, 0);
    // Tokens must keep rising: the counters stay.
    assert!(
        common::values(&servers, "{stuck}:fence")
            .await
            .iter()
            .flatten()
            .count()
            >= 2
    );
    // The holder learns at its next renewal.
    tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .unwrap();
}

#[tokio::test]
async fn release_deletes_raw_locks_semaphores_and_reentrant_locks_but_not_latches() {
    let (servers, q) = cluster(1).await;
    set_nx_px(&servers, 0, "raw", "other-client", 30_000).await;
    let permit = Semaphore::new(&q, "sem", 2).acquire().await.unwrap();
    let hold = ReentrantLock::new(&q, "re", "job-1").lock().await.unwrap();
    for name in ["raw", "sem", "re"] {
        let out = run(&servers, &["--json", "release", name, "--force", "--yes"]);
        assert_eq!(code(&out), 0, "{name}: {}", stderr(&out));
        assert_eq!(json(&out)["nodes"][0]["result"], "removed");
        assert_eq!(status(&servers, name, 1)["kind"], "absent");
    }
    assert!(get(&servers, 0, "{sem}:owners").await.is_none());
    Latch::new(&q, "latch", 2).count_down().await.unwrap();
    let out = run(&servers, &["release", "latch", "--force", "--yes"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("latch is a latch"),
        "{}",
        stderr(&out)
    );
    let out = run(&servers, &["release", "gone", "--force", "--yes"]);
    assert_eq!(code(&out), 1);
    let _: i64 = redis::cmd("LPUSH")
        .arg("a-list")
        .arg("x")
        .query_async(&mut conn(&servers, 0).await)
        .await
        .unwrap();
    assert_eq!(status(&servers, "a-list", 0)["kind"], "other");
    let out = run(&servers, &["release", "a-list", "--force", "--yes"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("a key quorate did not write"),
        "{}",
        stderr(&out)
    );
    drop((permit, hold));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_refreshes_on_notifications_and_ends_cleanly_on_ctrl_c() {
    let (servers, q) = cluster(1).await;
    let guard = Mutex::new(&q, "watched").lock().await.unwrap();
    // A long interval: a refresh within it comes from the notification.
    let (mut child, seen) = watch(&servers, "watched");
    let first = headline(&seen, "mutex watched: held by ");
    assert!(first.ends_with("on 1 of 1 nodes"), "{first}");
    guard.release().await.unwrap();
    headline(&seen, "mutex watched: not held");

    let pid = child.0.id().to_string();
    let signalled = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(signalled.success());
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_exits_unreachable_when_its_nodes_go_away() {
    let (mut servers, _q) = cluster(1).await;
    let (mut child, seen) = watch(&servers, "orphaned");
    headline(&seen, "orphaned: not found");
    servers[0].kill();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still watching");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(3), "{status:?}");
}

/// The next view's first line, which must start with `start`.
fn headline(lines: &mpsc::Receiver<String>, start: &str) -> String {
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("no view starting {start:?}"));
        if line.starts_with(start) {
            return line;
        }
        assert!(
            line.starts_with(' ') || line.starts_with("waiting") || line.is_empty(),
            "unexpected view: {line}"
        );
    }
}

#[tokio::test]
async fn watch_prints_json_views_and_stops_after_the_updates_asked() {
    let servers = ServerGroup::start(1).unwrap();
    set_nx_px(&servers, 0, "w", "token-abcdefgh", 30_000).await;
    let out = run(
        &servers,
        &[
            "--json",
            "watch",
            "w",
            "--interval",
            "20ms",
            "--updates",
            "3",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let views: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(views.len(), 3);
    assert!(
        views
            .iter()
            .all(|v| v["kind"] == "mutex" && v["waiting"] == 0)
    );
}

#[tokio::test]
async fn bench_reports_latency_and_throughput() {
    let servers = ServerGroup::start(1).unwrap();
    let out = run(
        &servers,
        &["--json", "bench", "--duration", "200ms", "--tasks", "4"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let results = json(&out);
    assert_eq!(results["nodes"], 1);
    assert!(results["w1"]["cycles"].as_u64().unwrap() > 0, "{results}");
    assert!(results["w1"]["p99_us"].as_u64().unwrap() >= results["w1"]["p50_us"].as_u64().unwrap());
    assert!(results["w2"]["cycles"].as_u64().unwrap() > 0, "{results}");
    let mut c = conn(&servers, 0).await;
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("quorate-bench:*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(left.iter().all(|k| k.ends_with(":fence")), "{left:?}");
}

#[tokio::test]
async fn usage_errors_exit_two_in_one_line() {
    let servers = ServerGroup::start(1).unwrap();
    let bad_setting = quorate(&servers)
        .env("QUORATE_NODE_TIMEOUT", "fast")
        .args(["status", "x"])
        .output()
        .unwrap();
    assert_eq!(code(&bad_setting), 2);
    let err = stderr(&bad_setting);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("quorate: QUORATE_NODE_TIMEOUT: invalid node_timeout: "),
        "{err}"
    );
    let typo = quorate(&servers)
        .env("QUORATE_NODE_TIMOUT", "5ms")
        .args(["status", "x"])
        .output()
        .unwrap();
    assert_eq!(code(&typo), 2);
    assert!(stderr(&typo).starts_with("quorate: QUORATE_NODE_TIMOUT: no such setting"));

    let no_nodes = Command::new(env!("CARGO_BIN_EXE_quorate"))
        .env_remove("QUORATE_NODES")
        .args(["status", "x"])
        .output()
        .unwrap();
    assert_eq!(code(&no_nodes), 2);
    assert_eq!(stderr(&no_nodes).lines().count(), 1);
    assert_eq!(code(&run(&servers, &["frobnicate"])), 2);
    assert_eq!(code(&run(&servers, &["status", ""])), 2);
}

#[test]
fn help_documents_the_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_quorate"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0);
    let help = stdout(&out);
    for line in [
        "0  ok",
        "1  not found or not held",
        "2  usage",
        "3  nodes unreachable",
    ] {
        assert!(help.contains(line), "{help}");
    }
    for command in ["status", "list", "release", "watch", "bench"] {
        assert!(help.contains(command), "{help}");
    }
}
