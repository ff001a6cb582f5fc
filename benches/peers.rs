//! Quorate's mutex next to its peers, on the same local redis-servers in the
//! same run: rslock (the published Rust Redlock crate) and a raw floor
//! (hand-written redis-rs: `SET NX PX` on every node, granted on a majority,
//! a compare-and-delete script to release; no fencing, no waiting, no
//! renewal). All use a 10 s TTL; quorate and rslock otherwise run with
//! their defaults.
//!
//! For 1, 3 and 5 nodes:
//! - W1: one task, one key, lock + release for 3 s: p50 and p99 of a cycle.
//! - W2: 64 tasks, a key each, lock + release for 5 s: cycles/s in total.
//! - W3: 16 tasks on one key, each holding it 1 ms and competing again at
//!   once, for 5 s: acquisitions/s and fairness (fewest ÷ most per task).
//! - W3b: W3, but a task that released waits until another has acquired:
//!   the handoff gap p50 (a release sent to the next acquire returning: a
//!   release plus an acquire) and acquisitions/s.
//!
//! The raw floor cannot wait for a held lock, so it sits out W3 and W3b.
//! Failed releases are counted and listed under the table (rslock's
//! release reports nothing, so none are counted for it).
//!
//! Run: `cargo bench --bench peers`. `PEERS_SECONDS_SCALE=0.2` shortens
//! every duration, `PEERS_NODES=1,3` picks the node counts. The table goes
//! to stdout and, as Markdown, to `target/peers.md`.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use futures::future::join_all;
use quorate::{MutexGuard, Quorum};
use redis::aio::MultiplexedConnection;
use redis::{Script, Value};
use rslock::{LockGuard, LockManager};
use tokio::sync::watch;

const TTL: Duration = Duration::from_secs(10);
/// How long a W3 task holds the lock: an OS sleep, as tokio's timer has
/// 1 ms granularity.
const HOLD: Duration = Duration::from_millis(1);
const W2_TASKS: usize = 64;
const W3_TASKS: usize = 16;

fn main() {
    let settings = Settings::from_env();
    let rt = support::runtime();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut redis_version = String::from("?");
    for &n in &settings.nodes {
        let (servers, quorum) = support::setup(&rt, n);
        let urls = servers.urls();
        rt.block_on(async {
            redis_version = version_of(&urls[0]).await;
            let systems = [
                System::Quorate(quorum),
                System::Rslock(LockManager::new(urls.clone())),
                System::Raw(Raw::connect(&urls).await),
            ];
            rows.extend(measure(&systems, n, &settings, &mut notes).await);
        });
    }
    let table = render(&rows, &notes, &machine(&redis_version, settings.scale));
    print!("{table}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers.md");
    std::fs::write(&out, &table).unwrap();
    eprintln!("written to {}", out.display());
}

/// Runs every workload on every system over `n` nodes; failed releases go
/// to `notes`.
async fn measure(
    systems: &[System; 3],
    n: usize,
    settings: &Settings,
    notes: &mut Vec<String>,
) -> Vec<Row> {
    let secs = |s| settings.secs(s);
    let cycles = each(systems, "W1", n, notes, async |s| {
        w1(s, secs(0.5)).await; // warm-up: connections, script caches
        w1(s, secs(3.0)).await
    })
    .await;
    let rates = each(systems, "W2", n, notes, async |s| w2(s, secs(5.0)).await).await;
    let at_once = each(systems, "W3", n, notes, async |s| {
        w3(s, secs(5.0), Turns::AtOnce).await
    })
    .await;
    let after_another = each(systems, "W3b", n, notes, async |s| {
        w3(s, secs(5.0), Turns::AfterAnother).await
    })
    .await;
    let row = |label, cells: Vec<Option<Cell>>| Row {
        label,
        nodes: n,
        cells,
    };
    vec![
        row(
            "W1 lock+release p50 / p99",
            cycles.iter().map(|l| Some(Cell::cycle(l))).collect(),
        ),
        row(
            "W2 cycles/s, 64 keys",
            rates.iter().map(|&r| Some(Cell::rate(r))).collect(),
        ),
        row(
            "W3 acquisitions/s (fairness)",
            at_once
                .iter()
                .map(|c| c.as_ref().map(Cell::contention))
                .collect(),
        ),
        row(
            "W3b handoff gap p50",
            after_another
                .iter()
                .map(|c| c.as_ref().map(|c| Cell::latency(c.gap_p50())))
                .collect(),
        ),
        row(
            "W3b acquisitions/s",
            after_another
                .iter()
                .map(|c| c.as_ref().map(|c| Cell::rate(c.rate())))
                .collect(),
        ),
    ]
}

/// Runs `workload` on each system in turn, saying so on stderr, and notes
/// the releases that failed.
async fn each<T>(
    systems: &[System; 3],
    workload: &str,
    n: usize,
    notes: &mut Vec<String>,
    run: impl AsyncFn(&System) -> T,
) -> Vec<T> {
    let mut results = Vec::new();
    for system in systems {
        eprintln!("{n} node(s): {workload} {}", system.name());
        results.push(run(system).await);
        let failed = std::mem::take(&mut *FAILED_RELEASES.lock().unwrap());
        if let Some(first) = failed.first() {
            notes.push(format!(
                "{workload}, {n} node(s), {}: {} release(s) failed, e.g. {first}",
                system.name(),
                failed.len(),
            ));
        }
    }
    results
}

// ---------------------------------------------------------------------------
// The workloads

/// W1: lock + release on one key, one task; the latency of each cycle.
async fn w1(system: &System, run_for: Duration) -> Latencies {
    let lock = system.lock_on("w1");
    let deadline = Instant::now() + run_for;
    let mut cycles = Vec::new();
    while Instant::now() < deadline {
        let started = Instant::now();
        lock.acquire().await.release().await;
        cycles.push(started.elapsed());
    }
    Latencies::new(cycles)
}

/// W2: lock + release loops on 64 tasks, a key each; cycles/s in total,
/// counting the cycles that ended before the deadline.
async fn w2(system: &System, run_for: Duration) -> f64 {
    let deadline = Instant::now() + run_for;
    let tasks = (0..W2_TASKS).map(|i| {
        let lock = system.lock_on(&format!("w2:{i}"));
        tokio::spawn(async move {
            let mut cycles = 0_u64;
            loop {
                lock.acquire().await.release().await;
                if Instant::now() >= deadline {
                    return cycles;
                }
                cycles += 1;
            }
        })
    });
    let cycles: u64 = join_all(tasks).await.into_iter().map(Result::unwrap).sum();
    cycles as f64 / run_for.as_secs_f64()
}

/// How a W3 task that released competes again.
#[derive(Clone, Copy)]
enum Turns {
    /// At once (W3).
    AtOnce,
    /// Once another task has acquired (W3b).
    AfterAnother,
}

/// W3 and W3b: 16 tasks on one key, each holding it for [`HOLD`]. `None`
/// for a system that cannot wait for a held lock.
async fn w3(system: &System, run_for: Duration, turns: Turns) -> Option<Contention> {
    if !system.waits() {
        return None;
    }
    let deadline = Instant::now() + run_for;
    // Every acquisition before the deadline, in order; receivers learn of
    // each new one.
    let (log, _) = watch::channel(Vec::<Turn>::new());
    let log = Arc::new(log);
    let tasks = (0..W3_TASKS).map(|_| {
        let lock = system.lock_on("w3");
        let log = log.clone();
        tokio::spawn(async move {
            let mut acquired = log.subscribe();
            let mut mine = 0_u64;
            loop {
                let held = lock.acquire().await;
                let at = Instant::now();
                if at >= deadline {
                    held.release().await;
                    return mine;
                }
                let mut turn = 0;
                // `releasing` is set again when the release is sent.
                log.send_modify(|log| {
                    turn = log.len();
                    log.push(Turn {
                        acquired: at,
                        releasing: at,
                    });
                });
                mine += 1;
                tokio::task::spawn_blocking(|| std::thread::sleep(HOLD))
                    .await
                    .unwrap();
                // Recorded without waking anyone: only acquisitions do.
                let releasing = Instant::now();
                log.send_if_modified(|log| {
                    log[turn].releasing = releasing;
                    false
                });
                held.release().await;
                if let Turns::AfterAnother = turns {
                    let next = acquired.wait_for(|log| log.len() > turn + 1);
                    if tokio::time::timeout_at(deadline.into(), next)
                        .await
                        .is_err()
                    {
                        return mine;
                    }
                }
            }
        })
    });
    let per_task = join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let acquisitions = log.borrow().clone();
    Some(Contention {
        per_task,
        turns: acquisitions,
        run_for,
    })
}

/// One acquisition in W3: when its acquire returned and its release was
/// sent.
#[derive(Clone, Copy)]
struct Turn {
    acquired: Instant,
    releasing: Instant,
}

/// What W3 and W3b measured.
struct Contention {
    per_task: Vec<u64>,
    turns: Vec<Turn>,
    run_for: Duration,
}

impl Contention {
    fn rate(&self) -> f64 {
        self.turns.len() as f64 / self.run_for.as_secs_f64()
    }

    /// Fewest ÷ most acquisitions of one task.
    fn fairness(&self) -> f64 {
        let fewest = self.per_task.iter().min().copied().unwrap_or(0);
        let most = self.per_task.iter().max().copied().unwrap_or(0);
        fewest as f64 / most.max(1) as f64
    }

    /// From one release being sent to the next acquire returning.
    fn gap_p50(&self) -> Duration {
        let gaps = self
            .turns
            .windows(2)
            .map(|w| w[1].acquired.saturating_duration_since(w[0].releasing));
        Latencies::new(gaps.collect()).p50
    }
}

/// Percentiles of a sample.
struct Latencies {
    p50: Duration,
    p99: Duration,
}

impl Latencies {
    fn new(mut sample: Vec<Duration>) -> Latencies {
        sample.sort_unstable();
        let at = |q: f64| {
            let rank = (q * sample.len() as f64).ceil() as usize;
            sample
                .get(rank.saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        Latencies {
            p50: at(0.50),
            p99: at(0.99),
        }
    }
}

// ---------------------------------------------------------------------------
// The three systems, behind one lock and one release. Quorate's calls are
// all here.

/// A system under comparison: one client, shared by every task.
enum System {
    Quorate(Quorum),
    Rslock(LockManager),
    Raw(Raw),
}

impl System {
    fn name(&self) -> &'static str {
        match self {
            System::Quorate(_) => "quorate",
            System::Rslock(_) => "rslock",
            System::Raw(_) => "raw floor",
        }
    }

    /// Whether it can wait for a lock someone else holds.
    fn waits(&self) -> bool {
        !matches!(self, System::Raw(_))
    }

    /// Its lock on `key`, made once per task; keys differ per system.
    fn lock_on(&self, key: &str) -> Lock {
        match self {
            System::Quorate(q) => {
                Lock::Quorate(quorate::Mutex::new(q, format!("peers:quorate:{key}")).with_ttl(TTL))
            }
            System::Rslock(m) => Lock::Rslock(m.clone(), format!("peers:rslock:{key}")),
            System::Raw(r) => Lock::Raw(r.clone(), format!("peers:raw:{key}").into()),
        }
    }
}

enum Lock {
    Quorate(quorate::Mutex),
    Rslock(LockManager, String),
    Raw(Raw, Arc<str>),
}

impl Lock {
    /// Takes the lock, waiting while another task holds it: quorate's
    /// `lock()` (push wake-ups), rslock's `acquire` (its `lock`, three tries
    /// with a random delay of up to 200 ms, repeated until it succeeds;
    /// uncontended that is one `lock`). The raw floor makes one attempt and
    /// panics if refused, so it only runs the uncontended workloads.
    async fn acquire(&self) -> Held {
        match self {
            Lock::Quorate(mutex) => Held::Quorate(mutex.lock().await.unwrap()),
            Lock::Rslock(manager, key) => {
                Held::Rslock(manager.acquire(key.as_str(), TTL).await.unwrap())
            }
            Lock::Raw(raw, key) => {
                let token = raw.lock(key).await.expect("raw floor refused");
                Held::Raw(raw.clone(), key.clone(), token)
            }
        }
    }
}

enum Held {
    Quorate(MutexGuard),
    Rslock(LockGuard),
    Raw(Raw, Arc<str>, String),
}

/// Why releases failed, since [`each`] last took them. rslock's release
/// reports nothing, so only quorate and the raw floor add to it.
static FAILED_RELEASES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

impl Held {
    /// Releases the lock; a failure is noted and the workload goes on (the
    /// key may then stay until its TTL).
    async fn release(self) {
        let failed = match self {
            Held::Quorate(guard) => guard.release().await.err().map(|e| e.to_string()),
            Held::Rslock(guard) => {
                guard.release().await;
                None
            }
            Held::Raw(raw, key, token) => compare_and_delete(raw.nodes.iter(), &key, &token).await,
        };
        if let Some(why) = failed {
            FAILED_RELEASES.lock().unwrap().push(why);
        }
    }
}

/// The raw floor: one multiplexed connection per node.
#[derive(Clone)]
struct Raw {
    nodes: Arc<[MultiplexedConnection]>,
}

static COMPARE_AND_DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end",
    )
});

impl Raw {
    async fn connect(urls: &[String]) -> Raw {
        let nodes = join_all(urls.iter().map(|url| async move {
            let client = redis::Client::open(url.as_str())?;
            client.get_multiplexed_async_connection().await
        }))
        .await;
        Raw {
            nodes: nodes
                .into_iter()
                .collect::<redis::RedisResult<_>>()
                .unwrap(),
        }
    }

    /// `SET key token NX PX ttl` on every node at once: the token if a
    /// majority said yes, otherwise `None` after undoing the yeses.
    async fn lock(&self, key: &str) -> Option<String> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut set = redis::cmd("SET");
        set.arg(key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(TTL.as_millis() as u64);
        let votes = join_all(self.nodes.iter().map(|node| {
            let (mut node, set) = (node.clone(), &set);
            async move { matches!(set.query_async::<Value>(&mut node).await, Ok(Value::Okay)) }
        }))
        .await;
        if votes.iter().filter(|&&yes| yes).count() > self.nodes.len() / 2 {
            return Some(token);
        }
        let yeses = self.nodes.iter().zip(&votes).filter(|(_, yes)| **yes);
        compare_and_delete(yeses.map(|(node, _)| node), key, &token).await;
        None
    }
}

/// Compare-and-delete (`EVALSHA`) on `nodes` at once: the first node
/// error, if any (that node keeps the key until its TTL).
async fn compare_and_delete<'a>(
    nodes: impl Iterator<Item = &'a MultiplexedConnection>,
    key: &str,
    token: &str,
) -> Option<String> {
    let replies = join_all(nodes.map(|node| {
        let mut node = node.clone();
        async move {
            COMPARE_AND_DELETE
                .key(key)
                .arg(token)
                .invoke_async::<i64>(&mut node)
                .await
        }
    }))
    .await;
    replies
        .into_iter()
        .find_map(|r| r.err().map(|e| e.to_string()))
}

// ---------------------------------------------------------------------------
// Settings and the table

struct Settings {
    /// Multiplies every duration.
    scale: f64,
    nodes: Vec<usize>,
}

impl Settings {
    fn from_env() -> Settings {
        let scale = std::env::var("PEERS_SECONDS_SCALE").map_or(1.0, |s| {
            s.parse()
                .ok()
                .filter(|&x: &f64| x > 0.0)
                .expect("PEERS_SECONDS_SCALE: a positive number")
        });
        let nodes = std::env::var("PEERS_NODES").map_or(vec![1, 3, 5], |s| {
            s.split(',')
                .map(|n| n.trim().parse().expect("PEERS_NODES: e.g. 1,3,5"))
                .collect()
        });
        Settings { scale, nodes }
    }

    fn secs(&self, s: f64) -> Duration {
        Duration::from_secs_f64(s * self.scale)
    }
}

/// One line of the table: a number per system (`None`: not measured).
struct Row {
    label: &'static str,
    nodes: usize,
    cells: Vec<Option<Cell>>,
}

/// A measured number as shown, and the value ratios compare.
struct Cell {
    text: String,
    value: f64,
}

impl Cell {
    fn cycle(l: &Latencies) -> Cell {
        Cell {
            text: format!("{} / {}", duration(l.p50), duration(l.p99)),
            value: l.p50.as_secs_f64(),
        }
    }

    fn latency(d: Duration) -> Cell {
        Cell {
            text: duration(d),
            value: d.as_secs_f64(),
        }
    }

    fn rate(r: f64) -> Cell {
        Cell {
            text: format!("{r:.0}/s"),
            value: r,
        }
    }

    fn contention(c: &Contention) -> Cell {
        Cell {
            text: format!("{:.0}/s ({:.2})", c.rate(), c.fairness()),
            value: c.rate(),
        }
    }
}

fn duration(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{} µs", d.as_micros())
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

/// The table as Markdown, padded so it also reads well as plain text, then
/// the notes and the machine.
fn render(rows: &[Row], notes: &[String], machine: &str) -> String {
    let ratio = |q: &Option<Cell>, peer: &Option<Cell>| match (q, peer) {
        (Some(q), Some(peer)) => format!("{:.2}", q.value / peer.value),
        _ => "—".to_owned(),
    };
    let text = |c: &Option<Cell>| c.as_ref().map_or("—".to_owned(), |c| c.text.clone());
    let header = [
        "Workload",
        "Nodes",
        "quorate",
        "rslock",
        "raw floor",
        "quorate÷rslock",
        "quorate÷raw",
    ]
    .map(str::to_owned);
    let mut lines = vec![header];
    // Grouped by workload, in the order measured, then by node count.
    let mut sorted: Vec<&Row> = rows.iter().collect();
    sorted.sort_by_key(|r| (rows.iter().position(|x| x.label == r.label), r.nodes));
    for r in sorted {
        let [q, rs, raw] = [&r.cells[0], &r.cells[1], &r.cells[2]];
        lines.push([
            r.label.to_owned(),
            r.nodes.to_string(),
            text(q),
            text(rs),
            text(raw),
            ratio(q, rs),
            ratio(q, raw),
        ]);
    }
    let width = |i: usize| lines.iter().map(|l| l[i].chars().count()).max().unwrap();
    let widths: Vec<usize> = (0..7).map(width).collect();
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    let pad = |l: &[String; 7]| {
        let cells = l.iter().zip(&widths).enumerate().map(|(i, (c, &w))| {
            if i == 0 {
                format!("{c:<w$}")
            } else {
                format!("{c:>w$}")
            }
        });
        line(cells.collect())
    };
    let rule = widths.iter().enumerate().map(|(i, &w)| {
        let dashes = "-".repeat(w - 1);
        if i == 0 {
            format!("{dashes}-")
        } else {
            format!("{dashes}:")
        }
    });
    let mut out = pad(&lines[0]);
    out += &line(rule.collect());
    for l in &lines[1..] {
        out += &pad(l);
    }
    out += "\nRatios divide quorate's number by the peer's: below 1 is better in latency \
            rows (ratio of p50s), above 1 in rate rows. Fairness: fewest ÷ most acquisitions \
            of one task.\n\n";
    for note in notes {
        out += &format!("- {note}\n");
    }
    if !notes.is_empty() {
        out += "\n";
    }
    out += machine;
    out += "\n";
    out
}

/// The machine and the date, for the line under the table.
fn machine(redis_version: &str, scale: f64) -> String {
    let run = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map_or("?".to_owned(), |o| {
                String::from_utf8_lossy(&o.stdout).trim().to_owned()
            })
    };
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let mut line = format!(
        "Machine: {cpus} CPUs (nproc), Redis {redis_version}, {}; tokio multi-thread runtime, \
         2 workers; {}.",
        run("uname", &["-sr"]),
        run("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    );
    if scale != 1.0 {
        line += &format!(" Durations scaled by {scale}.");
    }
    line
}

/// The version a redis-server reports.
async fn version_of(url: &str) -> String {
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut con)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .to_owned()
}
