//! Fault scenarios for the mutex, one test per row of the fault-test matrix
//! in `shared/research/reliability.md` part (b): M-2, M-3, M-4, M-6, M-8,
//! M-9, M-10, M-12, M-14, M-17, M-18, M-20 and M-22, each named `mN_...`
//! after its row, plus the matrix's negative controls (`nc_...`): unsafe
//! setups in which the history checker must report the overlap. A control
//! whose overlap went unreported would mean a broken checker or injector.
//!
//! Other rows live elsewhere: M-5 (exhaustive quorum masks) in
//! `tests/quorum.rs`; the S-, L-, B- and R- rows (semaphore, latch, barrier,
//! reentrant lock) in `tests/faults_primitives.rs`.
//!
//! Every scenario runs on real `redis-server` processes. A fault that hits
//! one client only goes through that client's own `FaultProxy` per node (a
//! `View`); a node a client "cannot reach" refuses it. Where the property
//! is about overlapping holders, the leases go into a `History` with the
//! library's own grant instants and deadlines, and `History::check` decides.
//!
//! M-12 and M-14 pause and kill a holder *process*: the test binary runs
//! itself again as a child, `m12_child_holder` / `m14_child_holder`, which
//! do nothing unless the parent set their environment variable.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quorate::testkit::{
    FaultProxy, History, LeaseId, LeaseKind, ServerGroup, Spec, Violation, jump_clock,
};
use quorate::{Config, Error, Mutex, MutexGuard, Quorum, QuorumBuilder, Tally, Vote};
use tokio::sync::mpsc;

/// Scheduling slack for a shared 2-core machine, on top of every bound.
const SLACK: Duration = Duration::from_millis(150);

/// One client's own path to every node: a proxy per node, so that a fault
/// hits this client alone, as a partition between it and the node would.
struct View {
    proxies: Vec<FaultProxy>,
}

impl View {
    async fn start(servers: &ServerGroup) -> View {
        let mut proxies = Vec::new();
        for server in servers.iter() {
            proxies.push(FaultProxy::start(server.port()).await.unwrap());
        }
        View { proxies }
    }

    fn urls(&self) -> Vec<String> {
        self.proxies.iter().map(FaultProxy::url).collect()
    }

    /// A builder over this view's proxies.
    fn builder(&self) -> QuorumBuilder {
        Quorum::builder().nodes(self.urls())
    }

    /// Lets this client reach exactly `nodes`; the others refuse it, like
    /// nodes that are down (for this client only).
    fn reach(&self, nodes: &[usize]) {
        for (i, proxy) in self.proxies.iter().enumerate() {
            proxy.refuse(!nodes.contains(&i));
        }
    }

    /// Clears every fault and drops the connections, so the client starts
    /// clean (a swallowed reply leaves a connection out of step).
    fn heal(&self) {
        for proxy in &self.proxies {
            proxy.heal();
            proxy.reset();
        }
    }

    fn set_latency(&self, nodes: &[usize], each_way: Duration) {
        for &i in nodes {
            self.proxies[i].set_latency(each_way, Duration::ZERO);
        }
    }

    async fn shutdown(self) {
        for proxy in self.proxies {
            proxy.shutdown().await;
        }
    }
}

/// Settings with short backoffs, so a waiting client notices a free lock
/// soon instead of after a backoff that doubled up to a second.
fn fast_config(ttl: Duration) -> Config {
    Config {
        ttl,
        max_ttl: ttl,
        retry_delay: Duration::from_millis(5),
        retry_jitter: Duration::from_millis(5),
        max_retry_delay: Duration::from_millis(50),
        ..Config::default()
    }
}

/// The drift allowance of a lease with the default drift factor.
fn drift(ttl: Duration) -> Duration {
    ttl.mul_f64(Config::DEFAULT_DRIFT_FACTOR) + Duration::from_millis(2)
}

/// Records a grant with the library's own instants: when the votes were in,
/// and the deadline the guard will act by.
async fn record(history: &History, holder: &str, guard: &MutexGuard) -> LeaseId {
    history.lease(
        LeaseKind::Mutex,
        guard.name(),
        holder,
        // None when it cannot be committed now (the lease is being lost).
        guard.fencing_token().await.ok(),
        1,
        guard.acquired_at(),
        guard.deadline(),
    )
}

/// Releases a recorded lease: the keeper may have moved the deadline unseen,
/// and the holder stops acting at the release invoke.
async fn release(history: &History, id: LeaseId, guard: MutexGuard) -> quorate::Result<()> {
    history.extended(id, guard.deadline());
    history.released(id, Instant::now());
    guard.release().await
}

fn violations(history: &History, name: &str) -> Vec<Violation> {
    history.check(&Spec::new().mutex(name))
}

fn assert_no_overlap(history: &History, name: &str) {
    let found = violations(history, name);
    assert!(found.is_empty(), "{found:#?}\n{history}");
}

/// For the negative controls: the checker must see the overlap.
fn assert_overlap_reported(history: &History, name: &str) {
    let found = violations(history, name);
    assert!(
        found.iter().any(|v| v.check == "mutex"),
        "the checker missed an overlap: {found:#?}\n{history}"
    );
}

/// Lock keys (fencing counters left out) on each of `nodes`.
async fn lock_keys_on(servers: &ServerGroup, nodes: &[usize]) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for &i in nodes {
        all.push(common::lock_keys(servers, i).await);
    }
    all
}

async fn no_lock_keys(servers: &ServerGroup, nodes: &[usize]) -> bool {
    lock_keys_on(servers, nodes)
        .await
        .iter()
        .all(|keys| keys.is_empty())
}

/// Awaits `f` and says how long it took.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = f.await;
    (out, started.elapsed())
}

fn quorum_tally(result: quorate::Result<Option<MutexGuard>>) -> Tally {
    match result {
        Err(Error::Quorum(tally)) => tally,
        other => panic!("expected Error::Quorum, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Child holder processes (M-12, M-14)
// ---------------------------------------------------------------------------

const M12_ENV: &str = "QUORATE_M12_NODES";
const M14_ENV: &str = "QUORATE_M14_NODES";
const M12_TTL: Duration = Duration::from_millis(500);
const M14_TTL: Duration = Duration::from_secs(1);

/// Accepts a write only with a token at least the largest seen: the
/// protected resource's side of fencing.
const FENCED_WRITE: &str = r"
local max = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) >= max then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
";

async fn fenced_write(url: &str, token: u64) -> bool {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let accepted: i64 = redis::Script::new(FENCED_WRITE)
        .key("fenced:max")
        .arg(token.to_string())
        .invoke_async(&mut conn)
        .await
        .unwrap();
    accepted == 1
}

/// One line to the parent, flushed at once: it reacts to it.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// This test binary run again as a child that runs one test, with its
/// stdout read line by line; killed (SIGKILL) when dropped, so a failing
/// parent never leaves it behind.
struct ChildProcess {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl ChildProcess {
    fn spawn(test: &str, env: &str, urls: &[String]) -> ChildProcess {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(env, urls.join(","))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ChildProcess { child, lines }
    }

    /// What follows `prefix` in the next line that has it. The harness's
    /// own output is skipped; it may share the line (`test name ... `).
    async fn expect(&mut self, prefix: &str, within: Duration) -> String {
        let wait = async {
            while let Some(line) = self.lines.recv().await {
                if let Some((_, rest)) = line.split_once(prefix) {
                    return rest.trim().to_owned();
                }
            }
            panic!("the child exited before printing {prefix:?}");
        };
        tokio::time::timeout(within, wait)
            .await
            .unwrap_or_else(|_| panic!("the child printed no {prefix:?} within {within:?}"))
    }

    /// Lines printed so far, without waiting.
    fn printed(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.try_recv() {
            lines.push(line);
        }
        lines
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Child side of M-12: locks with a short auto-extended lease, announces
/// its token, is SIGSTOPped by the parent during its sleep, and on waking
/// reports whether the guard still claims validity and whether the fenced
/// resource took its write. It writes without checking `is_valid` on
/// purpose: fencing must stop the stale holder even so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m12_child_holder() {
    let Ok(nodes) = std::env::var(M12_ENV) else {
        return;
    };
    let urls: Vec<&str> = nodes.split(',').collect();
    let q = Quorum::builder()
        .nodes(&urls)
        .ttl(M12_TTL)
        .build()
        .await
        .unwrap();
    let guard = Mutex::new(&q, "m12")
        .with_ttl(M12_TTL)
        .lock()
        .await
        .unwrap();
    say(&format!("LOCKED {}", guard.fencing_token().await.unwrap()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    say(&format!("VALID {}", guard.is_valid()));
    let accepted = fenced_write(urls[0], guard.fencing_token().await.unwrap()).await;
    say(if accepted {
        "WRITE accepted"
    } else {
        "WRITE rejected"
    });
    let _ = guard.release().await;
}

/// Child side of M-14: locks, announces its token, and waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m14_child_holder() {
    let Ok(nodes) = std::env::var(M14_ENV) else {
        return;
    };
    let q = Quorum::builder()
        .nodes(nodes.split(','))
        .ttl(M14_TTL)
        .build()
        .await
        .unwrap();
    let guard = Mutex::new(&q, "m14")
        .with_ttl(M14_TTL)
        .lock()
        .await
        .unwrap();
    say(&format!("LOCKED {}", guard.fencing_token().await.unwrap()));
    // The parent SIGKILLs this process long before.
    tokio::time::sleep(Duration::from_secs(30)).await;
    drop(guard);
}

// ---------------------------------------------------------------------------
// M-2: one, then two nodes crash
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m2_lock_and_release_stay_fast_with_one_then_two_nodes_killed() {
    let mut servers = ServerGroup::start(5).unwrap();
    let ttl = Duration::from_secs(1);
    // min(50 ms, ttl / 20)
    let node_timeout = Duration::from_millis(50);
    let q = common::builder(&servers).ttl(ttl).build().await.unwrap();
    let mutex = Mutex::new(&q, "m2").with_ttl(ttl);
    let mut last_token = 0;
    for (killed, victim) in [(1, 4), (2, 3)] {
        servers[victim].kill();
        for round in 0..5 {
            let (guard, took) = timed(mutex.lock()).await;
            let guard = guard.unwrap();
            // Uncontended: a majority answers at once; a dead node costs at
            // most its timeout, never a hang.
            assert!(
                took <= node_timeout + SLACK,
                "{killed} down, round {round}: lock took {took:?}"
            );
            assert!(guard.fencing_token().await.unwrap() > last_token);
            last_token = guard.fencing_token().await.unwrap();
            let (released, took) = timed(guard.release()).await;
            released.unwrap();
            assert!(
                took <= node_timeout + SLACK,
                "{killed} down, round {round}: release took {took:?}"
            );
        }
        let live: Vec<usize> = (0..5).filter(|i| servers[*i].is_running()).collect();
        assert!(
            no_lock_keys(&servers, &live).await,
            "{killed} down: lock keys left on the live nodes"
        );
    }
}

// ---------------------------------------------------------------------------
// M-3: a hung (SIGSTOPped) minority
// ---------------------------------------------------------------------------

/// One contender of M-3: try_lock in a loop until `until`, holding each
/// grant briefly. Returns its grants and its slowest single call.
async fn try_lock_contender(
    q: Quorum,
    holder: String,
    history: History,
    ttl: Duration,
    until: Instant,
) -> (usize, Duration) {
    let mutex = Mutex::new(&q, "m3").with_ttl(ttl);
    let mut grants = 0;
    let mut slowest = Duration::ZERO;
    while Instant::now() < until {
        let (attempt, took) = timed(mutex.try_lock()).await;
        slowest = slowest.max(took);
        match attempt {
            Ok(Some(guard)) => {
                grants += 1;
                let id = record(&history, &holder, &guard).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
                let (released, took) = timed(release(&history, id, guard)).await;
                slowest = slowest.max(took);
                if let Err(e) = released {
                    history.failed("m3", "release", e.to_string(), Instant::now());
                }
            }
            Ok(None) => {}
            // Split votes with two nodes silent leave no majority either way.
            Err(e) => history.failed("m3", "try_lock", e.to_string(), Instant::now()),
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    (grants, slowest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m3_hung_minority_costs_a_bounded_wait_and_keeps_exclusion() {
    let servers = ServerGroup::start(5).unwrap();
    let ttl = Duration::from_secs(1);
    let node_timeout = Duration::from_millis(50);
    // A call that misses waits for the hung nodes' answers (one timeout) and
    // then undoes on them, since they may have applied it (another one).
    let bound = 2 * node_timeout + SLACK;
    let mut clients = Vec::new();
    for _ in 0..3 {
        // Connected before the freeze: a hung node would cost the connect
        // timeout.
        let q = common::builder(&servers)
            .config(fast_config(ttl))
            .build()
            .await
            .unwrap();
        clients.push(q);
    }
    servers[3].pause();
    servers[4].pause();

    let mine = Mutex::new(&clients[0], "m3").with_ttl(ttl);
    let theirs = Mutex::new(&clients[1], "m3").with_ttl(ttl);
    let (guard, took) = timed(mine.lock()).await;
    let guard = guard.unwrap();
    assert!(took <= bound, "lock took {took:?}");
    let (attempt, took) = timed(theirs.try_lock()).await;
    assert!(attempt.unwrap().is_none(), "a second holder while held");
    assert!(took <= bound, "contended try_lock took {took:?}");
    let (released, took) = timed(guard.release()).await;
    released.unwrap();
    assert!(took <= bound, "release took {took:?}");

    let history = History::new();
    let until = Instant::now() + Duration::from_secs(1);
    let contenders: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, q)| {
            tokio::spawn(try_lock_contender(
                q.clone(),
                format!("c{i}"),
                history.clone(),
                ttl,
                until,
            ))
        })
        .collect();
    let mut grants = 0;
    for contender in contenders {
        let (won, slowest) = contender.await.unwrap();
        grants += won;
        assert!(slowest <= bound, "a call took {slowest:?}\n{history}");
    }
    assert!(grants >= 3, "only {grants} grants\n{history}");
    assert_no_overlap(&history, "m3");

    servers[3].resume();
    servers[4].resume();
    // The resumed nodes work off their backlog and vote again: a new lock
    // lands on all five.
    let guard = mine.lock().await.unwrap();
    let token = common::majority_value(&servers, "m3").await;
    let everywhere = common::eventually(Duration::from_secs(1), || async {
        common::values(&servers, "m3")
            .await
            .iter()
            .all(|v| v.as_ref() == Some(&token))
    })
    .await;
    assert!(everywhere, "{:?}", common::values(&servers, "m3").await);
    guard.release().await.unwrap();
    let clean = common::eventually(ttl, || no_lock_keys(&servers, &[0, 1, 2, 3, 4])).await;
    assert!(
        clean,
        "{:?}",
        lock_keys_on(&servers, &[0, 1, 2, 3, 4]).await
    );
}

// ---------------------------------------------------------------------------
// M-4: the majority is down
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m4_lost_majority_fails_with_a_tally_in_time_and_leaves_no_lock() {
    let mut servers = ServerGroup::start(5).unwrap();
    let ttl = Duration::from_secs(1);
    let node_timeout = Duration::from_millis(50);
    let q = common::builder(&servers).ttl(ttl).build().await.unwrap();
    let mutex = Mutex::new(&q, "m4").with_ttl(ttl);
    // Two crashed, one hung: three of five cannot vote.
    servers[3].kill();
    servers[4].kill();
    servers[2].pause();

    let (attempt, took) = timed(mutex.try_lock()).await;
    let tally = quorum_tally(attempt);
    assert!(tally.granted() <= 2 && tally.needed() == 3, "{tally}");
    assert!(tally.failed() >= 3, "{tally}");
    assert!(took <= 2 * node_timeout + SLACK, "try_lock took {took:?}");
    // The two live nodes granted, and the undo took it back before the call
    // returned: well before the TTL could have.
    assert!(
        no_lock_keys(&servers, &[0, 1]).await,
        "{:?}",
        lock_keys_on(&servers, &[0, 1]).await
    );

    let timeout = Duration::from_millis(400);
    let (attempt, took) = timed(mutex.lock_timeout(timeout)).await;
    let err = attempt.unwrap_err();
    let tally = err.tally().unwrap_or_else(|| panic!("{err:?}"));
    assert!(tally.granted() <= 2 && tally.needed() == 3, "{tally}");
    // It waits out its timeout, then at most one more attempt: one round
    // plus its undo, each bounded by the per-node timeout.
    assert!(took >= timeout, "gave up after {took:?}");
    assert!(
        took <= timeout + 2 * node_timeout + SLACK,
        "lock_timeout took {took:?}"
    );
    assert!(
        no_lock_keys(&servers, &[0, 1]).await,
        "{:?}",
        lock_keys_on(&servers, &[0, 1]).await
    );
    servers[2].resume();
}

// ---------------------------------------------------------------------------
// M-6: a node restarts empty while a lease it granted lives
// ---------------------------------------------------------------------------

const M6_TTL: Duration = Duration::from_secs(2);

/// Milliseconds into the current wall-clock second.
fn wall_ms_into_second() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::from(now.subsec_millis())
}

/// The M-6 setup: A reaches {0, 1, 2}, B reaches {2, 3, 4}; node 2 is the
/// only one they share. Both connect before the partition, so both know
/// node 2's first run_id. A locks, then node 2 restarts empty.
///
/// Redis reports its uptime in whole seconds of wall-clock time, so a few
/// milliseconds after a restart late in a second it already says 1 s. The
/// restart is timed to happen then, and the setup returns just after the
/// second ended: whatever B learns first from node 2 says "up for 1 s"
/// while it has been up for a fraction of that. The quarantine must count
/// from the real start all the same.
async fn restart_under_a_lease(
    b_quarantine: bool,
) -> (ServerGroup, View, View, Quorum, Quorum, MutexGuard, Instant) {
    let mut servers = ServerGroup::start(5).unwrap();
    let a_view = View::start(&servers).await;
    let b_view = View::start(&servers).await;
    let a = a_view
        .builder()
        .ttl(M6_TTL)
        .max_ttl(M6_TTL)
        .build()
        .await
        .unwrap();
    // The deployment's max_ttl, recorded by both, is the quarantine.
    let b = b_view
        .builder()
        .config(fast_config(M6_TTL))
        .restart_quarantine(b_quarantine)
        .build()
        .await
        .unwrap();
    a_view.reach(&[0, 1, 2]);
    b_view.reach(&[2, 3, 4]);
    let to_late_in_second = (1000 + 850 - wall_ms_into_second()) % 1000;
    tokio::time::sleep(Duration::from_millis(to_late_in_second)).await;
    let guard = Mutex::new(&a, "m6")
        .with_ttl(M6_TTL)
        .auto_extend(false)
        .lock()
        .await
        .unwrap();
    // Without persistence, node 2 forgets A's lease.
    let restarting = Instant::now();
    common::blocking(|| servers[2].restart().unwrap());
    let into_second = wall_ms_into_second();
    if into_second > 500 {
        tokio::time::sleep(Duration::from_millis(1000 - into_second + 20)).await;
    }
    (servers, a_view, b_view, a, b, guard, restarting)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m6_restarted_node_does_not_vote_while_a_lease_it_granted_lives() {
    let (servers, a_view, b_view, _a, b, a_guard, restarting) = restart_under_a_lease(true).await;
    let history = History::new();
    let a_id = record(&history, "A", &a_guard).await;
    let b_mutex = Mutex::new(&b, "m6").with_ttl(M6_TTL);

    // B tries for as long as A's lease is valid, and must never win: node 2
    // is empty and 3, 4 are free, so only the quarantine stops it. B's first
    // call may find its old connection to node 2 dead.
    let mut quarantined = None;
    while a_guard.is_valid() {
        match b_mutex.try_lock().await {
            Ok(Some(guard)) => {
                // Both windows left open: each holder would act until its
                // deadline.
                record(&history, "B", &guard).await;
                let after = guard.acquired_at() - restarting;
                let found = violations(&history, "m6");
                panic!(
                    "B locked {after:?} after node 2 began restarting, while A's lease \
                     was valid: {found:#?}\n{history}"
                );
            }
            Ok(None) => panic!("node 2 is empty and 3, 4 are free: nobody refuses B"),
            Err(Error::Quorum(tally)) => {
                assert!(tally.granted() < tally.needed(), "{tally}");
                if matches!(tally.nodes()[2].vote(), Vote::Quarantined { .. }) {
                    quarantined.get_or_insert(tally);
                }
            }
            Err(other) => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tally = quarantined.unwrap_or_else(|| panic!("node 2 was never quarantined\n{history}"));
    assert_eq!(tally.granted(), 2, "{tally}");

    // Once node 2 has sat out the longest lease TTL (plus drift) since it
    // restarted, B gets the lock.
    let b_guard = b_mutex.lock_timeout(Duration::from_secs(3)).await.unwrap();
    let b_id = record(&history, "B", &b_guard).await;
    let waited = b_guard.acquired_at() - restarting;
    release(&history, b_id, b_guard).await.unwrap();
    // A's lease ran out: its release is a no-op.
    let _ = release(&history, a_id, a_guard).await;
    assert_no_overlap(&history, "m6");
    let quarantine = M6_TTL + drift(M6_TTL);
    assert!(
        waited >= quarantine && waited <= quarantine + Duration::from_secs(1),
        "B got the lock {waited:?} after node 2 began restarting\n{history}"
    );
    a_view.shutdown().await;
    b_view.shutdown().await;
    drop(servers);
}

/// Negative control for M-6 (the spec's undelayed restart): with the
/// quarantine off, the restarted node votes for B at once and two leases
/// overlap, which the checker must report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nc_m6_undelayed_restart_lets_two_holders_overlap() {
    let (servers, a_view, b_view, _a, b, a_guard, _) = restart_under_a_lease(false).await;
    let history = History::new();
    let a_id = record(&history, "A", &a_guard).await;
    let b_mutex = Mutex::new(&b, "m6").with_ttl(M6_TTL);
    let mut b_guard = None;
    let give_up = Instant::now() + Duration::from_millis(800);
    while b_guard.is_none() && Instant::now() < give_up {
        // The first call may find the old connection to node 2 dead.
        if let Ok(Some(guard)) = b_mutex.try_lock().await {
            b_guard = Some(guard);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b_guard = b_guard.unwrap_or_else(|| panic!("B never got the forgotten lock"));
    assert!(a_guard.is_valid(), "A's lease should still be valid");
    let b_id = record(&history, "B", &b_guard).await;
    let _ = release(&history, b_id, b_guard).await;
    let _ = release(&history, a_id, a_guard).await;
    assert_overlap_reported(&history, "m6");
    a_view.shutdown().await;
    b_view.shutdown().await;
    drop(servers);
}

/// The tally of a refused attempt, when it was refused for want of votes.
fn shortfall(result: quorate::Result<Option<MutexGuard>>) -> Option<Tally> {
    match result {
        Ok(None) => None,
        Ok(Some(guard)) => panic!("locked: {guard:?}"),
        Err(Error::Quorum(tally)) => Some(tally),
        Err(other) => panic!("{other:?}"),
    }
}

/// M-6 at first contact: the deployment has run for 3 s, A holds a lock on
/// {0, 1, 2}, node 2 restarts empty, and a client C that connects only then
/// and reaches {2, 3, 4} must not get the lock while A holds it. C never
/// saw node 2's old `run_id`; node 2 started 3 s after nodes 3 and 4, and
/// that is enough. C then records the quarantine on node 2, so a client
/// that reaches node 2 alone honours it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m6_a_client_that_connects_after_a_restart_does_not_trust_the_restarted_node() {
    let mut servers = ServerGroup::start(5).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let a_view = View::start(&servers).await;
    a_view.reach(&[0, 1, 2]);
    let a = a_view
        .builder()
        .config(fast_config(M6_TTL))
        .build()
        .await
        .unwrap();
    let history = History::new();
    let a_guard = Mutex::new(&a, "m6-first-contact")
        .with_ttl(M6_TTL)
        .auto_extend(false)
        .lock()
        .await
        .unwrap();
    let a_id = record(&history, "A", &a_guard).await;
    common::blocking(|| servers[2].restart().unwrap());

    let c_view = View::start(&servers).await;
    c_view.reach(&[2, 3, 4]);
    let c = c_view
        .builder()
        .config(fast_config(M6_TTL))
        .build()
        .await
        .unwrap();
    let c_mutex = Mutex::new(&c, "m6-first-contact").with_ttl(M6_TTL);
    let alone = Quorum::connect([servers[2].url()]).await.unwrap();
    let mut quarantined = false;
    while a_guard.is_valid() {
        let tally = shortfall(c_mutex.try_lock().await).expect("nobody refuses C");
        quarantined |= matches!(tally.nodes()[2].vote(), Vote::Quarantined { .. });
        // Node 2's own record says so to a client that reaches nobody else.
        let tally = shortfall(Mutex::new(&alone, "elsewhere").try_lock().await);
        let tally = tally.expect("node 2 alone is quarantined");
        let vote = tally.nodes()[0].vote().clone();
        assert!(matches!(vote, Vote::Quarantined { .. }), "{vote}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(quarantined, "C counted node 2 at once");
    let c_guard = c_mutex.lock_timeout(Duration::from_secs(4)).await.unwrap();
    let c_id = record(&history, "C", &c_guard).await;
    release(&history, c_id, c_guard).await.unwrap();
    let _ = release(&history, a_id, a_guard).await;
    assert_no_overlap(&history, "m6-first-contact");
    a_view.shutdown().await;
    c_view.shutdown().await;
}

/// The quarantine is the deployment's longest lease, not this process's:
/// A (max_ttl 3 s) recorded its bound on every node at connect; C, with
/// leases of 500 ms and first contact after node 2 restarted, still keeps
/// node 2 out for A's 3 s lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m6_the_quarantine_covers_the_longest_lease_of_any_process() {
    const LONG: Duration = Duration::from_secs(3);
    let mut servers = ServerGroup::start(5).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let a_view = View::start(&servers).await;
    let a = a_view
        .builder()
        .config(fast_config(LONG))
        .build()
        .await
        .unwrap();
    a_view.reach(&[0, 1, 2]);
    let a_guard = Mutex::new(&a, "m6-bound")
        .with_ttl(LONG)
        .auto_extend(false)
        .lock()
        .await
        .unwrap();
    common::blocking(|| servers[2].restart().unwrap());
    let c_view = View::start(&servers).await;
    c_view.reach(&[2, 3, 4]);
    let c = c_view
        .builder()
        .config(fast_config(Duration::from_millis(500)))
        .build()
        .await
        .unwrap();
    let c_mutex = Mutex::new(&c, "m6-bound");
    while a_guard.is_valid() {
        let tally = shortfall(c_mutex.try_lock().await).expect("nobody refuses C");
        assert!(tally.granted() < tally.needed(), "{tally}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a_view.shutdown().await;
    c_view.shutdown().await;
}

/// A node whose persistence cannot lose an acknowledged write (AOF with
/// `appendfsync always`) keeps its leases across a restart, so its votes
/// count at once, and the lease it held is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m6_a_node_that_persists_every_write_counts_at_once_after_a_restart() {
    let durable = ["--appendonly", "yes", "--appendfsync", "always"];
    let mut server = quorate::testkit::RedisServer::start_with(&durable).unwrap();
    let q = Quorum::connect([server.url()]).await.unwrap();
    let held = Mutex::new(&q, "kept")
        .auto_extend(false)
        .lock()
        .await
        .unwrap();
    common::blocking(|| server.restart().unwrap());
    let other = Mutex::new(&q, "fresh");
    let fresh = common::eventually(Duration::from_secs(1), || async {
        matches!(other.try_lock().await, Ok(Some(_)))
    })
    .await;
    assert!(fresh, "a durable node was quarantined");
    assert!(Mutex::new(&q, "kept").try_lock().await.unwrap().is_none());
    held.extend(Duration::from_secs(10)).await.unwrap();
    held.release().await.unwrap();
}

/// Emulates a node clock running `ahead` of the others, as far as fencing
/// goes: the clock only sets the floor of the counters, so the node's
/// counter for `name` is raised to where that floor would be.
async fn clock_ahead(servers: &ServerGroup, i: usize, name: &str, ahead: Duration) {
    let mut c = common::conn(servers, i).await;
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await.unwrap();
    let ms = secs * 1000 + micros / 1000 + ahead.as_millis() as u64;
    let _: () = redis::cmd("SET")
        .arg(format!("{{{name}}}:fence"))
        .arg(ms * 1024)
        .arg("PX")
        .arg(60_000)
        .query_async(&mut c)
        .await
        .unwrap();
}

/// A's lease commits its token on {X, B} while X's clock runs `ahead`; B
/// restarts empty; H then locks on {B, C}. Returns both tokens.
async fn tokens_across_a_clock_offset(ahead: Duration) -> (u64, u64) {
    let name = "fenced";
    let ttl = Duration::from_secs(1);
    let mut servers = ServerGroup::start(3).unwrap();
    let a_view = View::start(&servers).await;
    let h_view = View::start(&servers).await;
    let a = a_view
        .builder()
        .config(fast_config(ttl))
        .build()
        .await
        .unwrap();
    let h = h_view
        .builder()
        .config(fast_config(ttl))
        .build()
        .await
        .unwrap();
    a_view.reach(&[0, 1]);
    h_view.reach(&[1, 2]);
    clock_ahead(&servers, 0, name, ahead).await;
    let a_guard = Mutex::new(&a, name).with_ttl(ttl).lock().await.unwrap();
    let first = a_guard.fencing_token().await.unwrap();
    a_guard.release().await.unwrap();
    common::blocking(|| servers[1].restart().unwrap());
    // H saw node 1 restart, so it waits out the quarantine first.
    let h_guard = Mutex::new(&h, name)
        .with_ttl(ttl)
        .lock_timeout(Duration::from_secs(5))
        .await
        .unwrap();
    let later = h_guard.fencing_token().await.unwrap();
    h_guard.release().await.unwrap();
    a_view.shutdown().await;
    h_view.shutdown().await;
    (first, later)
}

/// Fencing tokens stay monotonic across a restart when node clocks differ
/// by less than the restart quarantine (max_ttl, here 1 s): the restarted
/// node sits out longer than the offset, and its clock floor passes the
/// token that was lost with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_rise_across_a_restart_when_node_clocks_differ_by_less_than_the_quarantine()
{
    let (first, later) = tokens_across_a_clock_offset(Duration::from_millis(300)).await;
    assert!(later > first, "token {later} after {first}");
}

/// Negative control: with a node clock 10 s ahead and a 1 s quarantine, the
/// token lost with the restart was above anything the others' clocks give,
/// and the next holder's token is smaller. This is the assumption the docs
/// state: node clocks within max_ttl of each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nc_fencing_tokens_fall_when_a_node_clock_is_ahead_by_more_than_the_quarantine() {
    let (first, later) = tokens_across_a_clock_offset(Duration::from_secs(10)).await;
    assert!(later < first, "token {later} after {first}");
}

// ---------------------------------------------------------------------------
// M-8: asymmetric partition that keeps changing
// ---------------------------------------------------------------------------

/// One side of M-8: locks and briefly holds in a loop until stopped.
async fn partitioned_contender(
    q: Quorum,
    holder: &'static str,
    history: History,
    ttl: Duration,
    stop: Arc<AtomicBool>,
) -> usize {
    let mutex = Mutex::new(&q, "m8").with_ttl(ttl);
    let mut grants = 0;
    while !stop.load(Ordering::SeqCst) {
        match mutex.lock_timeout(Duration::from_millis(300)).await {
            Ok(guard) => {
                grants += 1;
                let id = record(&history, holder, &guard).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
                // A flip mid-hold can cut the holder off its own keys; the
                // TTL frees them then.
                if let Err(e) = release(&history, id, guard).await {
                    history.failed("m8", "release", e.to_string(), Instant::now());
                }
            }
            Err(e) => history.failed("m8", "lock", e.to_string(), Instant::now()),
        }
        // Room for the other side: a releaser that locks again at once would
        // beat every waiter.
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    grants
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m8_flipping_asymmetric_partition_keeps_exclusion_through_the_shared_node() {
    let servers = ServerGroup::start(5).unwrap();
    let ttl = Duration::from_millis(500);
    let a_view = View::start(&servers).await;
    let b_view = View::start(&servers).await;
    let a = a_view
        .builder()
        .config(fast_config(ttl))
        .build()
        .await
        .unwrap();
    let b = b_view
        .builder()
        .config(fast_config(ttl))
        .build()
        .await
        .unwrap();
    // Node 2 is in both views at all times: it arbitrates.
    let sides = [[0, 1, 2], [2, 3, 4]];
    a_view.reach(&sides[0]);
    b_view.reach(&sides[1]);

    let history = History::new();
    let stop = Arc::new(AtomicBool::new(false));
    let a_task = tokio::spawn(partitioned_contender(
        a,
        "A",
        history.clone(),
        ttl,
        stop.clone(),
    ));
    let b_task = tokio::spawn(partitioned_contender(
        b,
        "B",
        history.clone(),
        ttl,
        stop.clone(),
    ));
    for flip in 1..=4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        a_view.reach(&sides[flip % 2]);
        b_view.reach(&sides[(flip + 1) % 2]);
    }
    stop.store(true, Ordering::SeqCst);
    let a_grants = a_task.await.unwrap();
    let b_grants = b_task.await.unwrap();
    assert_no_overlap(&history, "m8");
    assert!(
        a_grants > 0 && b_grants > 0,
        "A {a_grants}, B {b_grants} grants\n{history}"
    );
    a_view.shutdown().await;
    b_view.shutdown().await;
}

// ---------------------------------------------------------------------------
// M-9: latency near the validity edge
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m9_acquire_that_cannot_fit_its_validity_fails_and_undoes() {
    let servers = ServerGroup::start(5).unwrap();
    let all = [0, 1, 2, 3, 4];
    let ttl = Duration::from_secs(1);

    // (a) The quorum arrives, but too late. A round is capped by the
    // per-node timeout, which the settings keep below the validity, so it
    // takes an acquisition of two rounds: the reentrant lock commits its
    // fencing token at once. Only a drift allowance close to the TTL leaves
    // a validity shorter than two rounds: 1000 - (890 + 2) = 108 ms, while
    // 30 ms each way makes each round take at least 60 ms, well within the
    // 100 ms per-node timeout.
    let late_view = View::start(&servers).await;
    let late = late_view
        .builder()
        .ttl(ttl)
        .node_timeout(Duration::from_millis(100))
        .drift_factor(0.89)
        .build()
        .await
        .unwrap();
    // Loads the scripts first: a NOSCRIPT reload costs two more round trips.
    let warm = Mutex::new(&late, "m9-warm").with_ttl(ttl).lock().await;
    warm.unwrap().release().await.unwrap();
    late_view.set_latency(&all, Duration::from_millis(30));
    let started = Instant::now();
    let late_lock = quorate::ReentrantLock::new(&late, "m9-late", "job").with_ttl(ttl);
    let tally = match late_lock.try_lock().await {
        Err(Error::Quorum(tally)) => tally,
        other => panic!("expected Error::Quorum, got {other:?}"),
    };
    assert!(tally.expired(), "{tally}");
    assert!(tally.granted() >= tally.needed(), "{tally}");
    // The undo ran before the call returned; the keys' own TTL is far off.
    let clean =
        common::eventually(Duration::from_millis(200), || no_lock_keys(&servers, &all)).await;
    assert!(clean, "{:?}", lock_keys_on(&servers, &all).await);
    assert!(
        started.elapsed() < ttl - SLACK,
        "too slow to tell undo from expiry"
    );

    // (b) Latency above the per-node timeout: every reply comes too late,
    // yet every script ran. The undo, sent after them on the same
    // connections, runs after them and deletes what they set.
    let slow_view = View::start(&servers).await;
    let slow = slow_view.builder().ttl(ttl).build().await.unwrap();
    slow_view.set_latency(&all, Duration::from_millis(40));
    let seen = Arc::new(AtomicBool::new(false));
    let watching = Arc::new(AtomicBool::new(true));
    // Sees the key the lost-reply acquire set, so the case is not vacuous.
    let watcher = {
        let mut conn = common::conn(&servers, 0).await;
        let (seen, watching) = (seen.clone(), watching.clone());
        tokio::spawn(async move {
            while watching.load(Ordering::SeqCst) {
                let exists: bool = redis::cmd("EXISTS")
                    .arg("m9-slow")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                if exists {
                    seen.store(true, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let started = Instant::now();
    let tally = quorum_tally(Mutex::new(&slow, "m9-slow").try_lock().await);
    assert!(!tally.expired() && tally.granted() == 0, "{tally}");
    assert!(
        tally
            .nodes()
            .iter()
            .all(|n| matches!(n.vote(), Vote::Failed(_))),
        "{tally}"
    );
    let clean =
        common::eventually(Duration::from_millis(400), || no_lock_keys(&servers, &all)).await;
    watching.store(false, Ordering::SeqCst);
    watcher.await.unwrap();
    assert!(clean, "{:?}", lock_keys_on(&servers, &all).await);
    assert!(
        started.elapsed() < ttl - SLACK,
        "too slow to tell undo from expiry"
    );
    assert!(
        seen.load(Ordering::SeqCst),
        "the acquire never reached node 0"
    );
    late_view.shutdown().await;
    slow_view.shutdown().await;
}

// ---------------------------------------------------------------------------
// M-10: ambiguous replies
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m10_lost_replies_leave_no_phantom_holder() {
    let servers = ServerGroup::start(5).unwrap();
    let all = [0, 1, 2, 3, 4];
    let ttl = Duration::from_secs(1);
    // The longest allowed (a tenth of the TTL): requests take extra hops
    // through the proxies, and a busy machine must not fail live nodes.
    let node_timeout = Duration::from_millis(100);
    // A key of A left behind would live a whole TTL; B must get the lock
    // well within that.
    let no_phantom_within = ttl / 3;
    let a_view = View::start(&servers).await;
    let b_view = View::start(&servers).await;
    let a = a_view
        .builder()
        .ttl(ttl)
        .node_timeout(node_timeout)
        .build()
        .await
        .unwrap();
    let b = b_view
        .builder()
        .config(fast_config(ttl))
        .node_timeout(node_timeout)
        .build()
        .await
        .unwrap();
    // B needs all of {2, 3, 4}: a key A left on 3 or 4 would block it.
    b_view.reach(&[2, 3, 4]);
    let a_mutex = Mutex::new(&a, "m10").with_ttl(ttl);
    let b_mutex = Mutex::new(&b, "m10").with_ttl(ttl);
    let history = History::new();

    // Nodes 3 and 4 run A's scripts but A never hears back.
    a_view.proxies[3].drop_replies(true);
    a_view.proxies[4].drop_replies(true);
    for round in 0..4 {
        let guard = a_mutex.lock_timeout(Duration::from_secs(2)).await.unwrap();
        let id = record(&history, "A", &guard).await;
        let attempt = b_mutex.try_lock().await;
        assert!(
            matches!(attempt, Ok(None) | Err(Error::Quorum(_))),
            "round {round}: B got a held lock"
        );
        // The release goes to every node, the silent ones included.
        release(&history, id, guard).await.unwrap();
        let guard = b_mutex
            .lock_timeout(no_phantom_within)
            .await
            .unwrap_or_else(|e| panic!("round {round}: a phantom of A blocks B: {e}\n{history}"));
        let id = record(&history, "B", &guard).await;
        release(&history, id, guard).await.unwrap();
    }

    // With node 2 silent too, A cannot know it holds anything: the attempt
    // fails, and its undo reaches the silent nodes as well.
    a_view.proxies[2].drop_replies(true);
    let tally = quorum_tally(a_mutex.try_lock().await);
    assert_eq!(tally.granted(), 2, "{tally}");
    let guard = b_mutex
        .lock_timeout(no_phantom_within)
        .await
        .unwrap_or_else(|e| panic!("a failed acquire of A left a phantom: {e}\n{history}"));
    let id = record(&history, "B", &guard).await;
    release(&history, id, guard).await.unwrap();

    // A holder cut off from every node cannot release: its keys block B
    // until their TTL, no longer.
    a_view.heal();
    let guard = a_mutex.lock_timeout(Duration::from_secs(2)).await.unwrap();
    // A's keys were all set before this instant.
    let a_granted = guard.acquired_at();
    let id = record(&history, "A", &guard).await;
    for proxy in &a_view.proxies {
        proxy.drop_requests(true);
    }
    assert!(release(&history, id, guard).await.is_err());
    let guard = b_mutex
        .lock_timeout(ttl + Duration::from_secs(1))
        .await
        .unwrap();
    let waited = guard.acquired_at() - a_granted;
    // Half a TTL of slack: a phantom renewed even once would hold on for a
    // whole TTL more.
    assert!(
        waited <= ttl + ttl / 2,
        "B waited {waited:?} for a TTL of {ttl:?}\n{history}"
    );
    let id = record(&history, "B", &guard).await;
    release(&history, id, guard).await.unwrap();

    // Healed and reset, A works again, and nothing stray is left anywhere
    // once the TTL has passed.
    a_view.heal();
    let guard = a_mutex.lock_timeout(Duration::from_secs(2)).await.unwrap();
    let id = record(&history, "A", &guard).await;
    release(&history, id, guard).await.unwrap();
    tokio::time::sleep(ttl).await;
    assert!(
        no_lock_keys(&servers, &all).await,
        "{:?}",
        lock_keys_on(&servers, &all).await
    );
    assert_no_overlap(&history, "m10");
    a_view.shutdown().await;
    b_view.shutdown().await;
}

// ---------------------------------------------------------------------------
// M-12: the holder process is paused past its lease
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m12_holder_paused_past_its_lease_is_fenced_off() {
    let servers = ServerGroup::start(5).unwrap();
    let q = common::builder(&servers)
        .ttl(M12_TTL)
        .build()
        .await
        .unwrap();
    let mut child = ChildProcess::spawn("m12_child_holder", M12_ENV, &servers.urls());
    let child_token: u64 = child
        .expect("LOCKED ", Duration::from_secs(10))
        .await
        .parse()
        .unwrap();
    // During the child's 300 ms sleep: it holds a valid, auto-extended lease.
    child.signal("-STOP");
    let stopped = Instant::now();

    // The stopped child cannot renew: its keys expire and we get the lock.
    let guard = Mutex::new(&q, "m12")
        .with_ttl(M12_TTL)
        .lock_timeout(Duration::from_secs(2))
        .await
        .unwrap();
    assert!(guard.fencing_token().await.unwrap() > child_token);
    assert!(
        fenced_write(&servers[0].url(), guard.fencing_token().await.unwrap()).await,
        "the current holder's write was refused"
    );
    tokio::time::sleep_until((stopped + 2 * M12_TTL + Duration::from_millis(100)).into()).await;
    let early = child.printed();
    assert!(
        !early.iter().any(|l| l.contains("VALID")),
        "the child woke before the stop: {early:?}"
    );
    child.signal("-CONT");

    // On waking, the library says the lease is gone, and the resource
    // refuses the stale holder's write by its smaller token.
    assert_eq!(
        child.expect("VALID ", Duration::from_secs(5)).await,
        "false"
    );
    assert_eq!(
        child.expect("WRITE ", Duration::from_secs(5)).await,
        "rejected"
    );
    let mut conn = common::conn(&servers, 0).await;
    let stored: String = redis::cmd("GET")
        .arg("fenced:max")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, guard.fencing_token().await.unwrap().to_string());
    guard.release().await.unwrap();
    drop(child);
}

// ---------------------------------------------------------------------------
// M-14: the holder process crashes
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m14_crashed_holders_lock_comes_back_within_its_ttl() {
    let servers = ServerGroup::start(5).unwrap();
    let q = common::builder(&servers)
        .ttl(M14_TTL)
        .build()
        .await
        .unwrap();
    let mutex = Mutex::new(&q, "m14").with_ttl(M14_TTL);
    let mut child = ChildProcess::spawn("m14_child_holder", M14_ENV, &servers.urls());
    let child_token: u64 = child
        .expect("LOCKED ", Duration::from_secs(10))
        .await
        .parse()
        .unwrap();
    assert!(
        mutex.try_lock().await.unwrap().is_none(),
        "the child does not hold the lock"
    );
    child.child.kill().unwrap();
    let killed = Instant::now();
    let guard = mutex
        .lock_timeout(M14_TTL + Duration::from_secs(2))
        .await
        .unwrap();
    // Its last renewal was before the kill: the keys are gone one TTL later.
    assert!(
        killed.elapsed() <= M14_TTL + Duration::from_millis(500),
        "took {:?}",
        killed.elapsed()
    );
    assert!(guard.fencing_token().await.unwrap() > child_token);
    guard.release().await.unwrap();
    drop(child);
}

// ---------------------------------------------------------------------------
// M-17: extension under faults
// ---------------------------------------------------------------------------

/// Asserts that an extension between `started` and `returned` set the
/// deadline from its own start: `started + ttl - drift`, give or take how
/// long the call took before sending.
fn assert_deadline_from_start(guard: &MutexGuard, ttl: Duration, started: Instant, what: &str) {
    let from_start = started + ttl - drift(ttl);
    let deadline = guard.deadline();
    assert!(
        deadline >= from_start && deadline <= from_start + Duration::from_millis(20),
        "{what}: deadline {:?} after the extend's start, expected {:?}",
        deadline - started,
        ttl - drift(ttl)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m17_extension_needs_a_majority_and_never_revives_a_lease() {
    let mut servers = ServerGroup::start(5).unwrap();
    let all = [0, 1, 2, 3, 4];
    let ttl = Duration::from_secs(2);
    let view = View::start(&servers).await;
    // A per-node timeout well above the latency added below.
    let q = view
        .builder()
        .ttl(ttl)
        .node_timeout(Duration::from_millis(150))
        .build()
        .await
        .unwrap();
    let guard = Mutex::new(&q, "m17")
        .with_ttl(ttl)
        .auto_extend(false)
        .lock()
        .await
        .unwrap();

    // While node 0 is down, then once it is back without the key.
    servers[0].kill();
    let before = guard.deadline();
    let started = Instant::now();
    guard.extend(ttl).await.unwrap();
    assert!(guard.deadline() > before);
    assert_deadline_from_start(&guard, ttl, started, "node 0 down");
    common::blocking(|| servers[0].restart().unwrap());
    let started = Instant::now();
    guard.extend(ttl).await.unwrap();
    assert_deadline_from_start(&guard, ttl, started, "node 0 restarted empty");
    assert_eq!(common::get(&servers, 0, "m17").await, None);

    // Slow links: node 0 answers after the timeout, the others after 40 ms.
    // The deadline counts from the start, not from when the votes were in.
    view.set_latency(&[1, 2, 3, 4], Duration::from_millis(20));
    view.set_latency(&[0], Duration::from_millis(100));
    let started = Instant::now();
    guard.extend(ttl).await.unwrap();
    let returned = Instant::now();
    assert!(returned - started >= Duration::from_millis(40));
    assert_deadline_from_start(&guard, ttl, started, "slow links");
    assert!(guard.deadline() + Duration::from_millis(35) <= returned + ttl - drift(ttl));
    // Nothing was swallowed, so the connections stay in step: no reset.
    view.set_latency(&all, Duration::ZERO);
    guard.release().await.unwrap();

    // An expired lease cannot be extended.
    let direct = common::builder(&servers).build().await.unwrap();
    let short = Duration::from_millis(300);
    let guard = Mutex::new(&direct, "m17-expired")
        .with_ttl(short)
        .auto_extend(false)
        .lock()
        .await
        .unwrap();
    guard.lost().await;
    let err = guard.extend(short).await.unwrap_err();
    assert!(matches!(err, Error::NotHeld), "{err:?}");
    assert!(!guard.is_valid());
    let gone = common::eventually(SLACK, || no_lock_keys(&servers, &all)).await;
    assert!(gone, "{:?}", lock_keys_on(&servers, &all).await);

    // Keys deleted under a lease that is still valid locally: the extension
    // reaches every node, finds nothing, and creates nothing.
    let guard = Mutex::new(&direct, "m17-deleted")
        .with_ttl(ttl)
        .auto_extend(false)
        .lock()
        .await
        .unwrap();
    common::del_everywhere(&servers, "m17-deleted").await;
    let err = guard.extend(ttl).await.unwrap_err();
    assert!(matches!(err, Error::NotHeld), "{err:?}");
    assert!(no_lock_keys(&servers, &all).await);
    assert!(!guard.is_valid());
    tokio::time::timeout(Duration::from_millis(100), guard.lost())
        .await
        .unwrap();
    view.shutdown().await;
}

// ---------------------------------------------------------------------------
// M-18: a stale holder releases
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m18_stale_release_is_not_held_and_spares_the_new_holder() {
    let servers = ServerGroup::start(5).unwrap();
    let ttl = Duration::from_millis(300);
    let a = common::builder(&servers).build().await.unwrap();
    let b = common::fast_quorum(&servers).await;
    let history = History::new();
    let a_guard = Mutex::new(&a, "m18")
        .with_ttl(ttl)
        .auto_extend(false)
        .lock()
        .await
        .unwrap();
    let a_id = record(&history, "A", &a_guard).await;
    a_guard.lost().await;
    let b_guard = Mutex::new(&b, "m18")
        .with_ttl(Duration::from_secs(2))
        .lock_timeout(Duration::from_secs(2))
        .await
        .unwrap();
    let b_id = record(&history, "B", &b_guard).await;
    let b_token = common::majority_value(&servers, "m18").await;
    let before = common::values(&servers, "m18").await;

    let err = release(&history, a_id, a_guard).await.unwrap_err();
    assert!(matches!(err, Error::NotHeld), "{err:?}");

    // Compare-and-delete: every node that had B's key still has it.
    let after = common::values(&servers, "m18").await;
    let holding: Vec<usize> = (0..5)
        .filter(|&i| before[i].as_ref() == Some(&b_token))
        .collect();
    assert!(holding.len() >= 3, "{before:?}");
    for i in holding {
        assert_eq!(after[i].as_ref(), Some(&b_token), "node {i}");
    }
    assert!(b_guard.is_valid());
    release(&history, b_id, b_guard).await.unwrap();
    assert_no_overlap(&history, "m18");
}

// ---------------------------------------------------------------------------
// M-20: acquisitions cancelled midway
// ---------------------------------------------------------------------------

/// Cancellation offsets in ms, drawn once from a seeded RNG over 0..=30.
const M20_OFFSETS: [u64; 14] = [0, 17, 3, 29, 8, 1, 22, 12, 30, 5, 26, 14, 2, 19];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m20_cancelled_acquires_leave_nothing_that_outlives_the_ttl() {
    let servers = ServerGroup::start(5).unwrap();
    let live = [0, 1, 2, 3];
    let ttl = Duration::from_millis(500);
    let q = common::builder(&servers).ttl(ttl).build().await.unwrap();
    let other = common::builder(&servers).ttl(ttl).build().await.unwrap();
    let mutex = Mutex::new(&q, "m20").with_ttl(ttl);
    let fresh = Mutex::new(&other, "m20").with_ttl(ttl);
    // Scripts loaded before the freeze; from then on every call to node 4
    // stays in flight until its per-node timeout.
    mutex.lock().await.unwrap().release().await.unwrap();
    servers[4].pause();

    for ms in M20_OFFSETS {
        let began = Instant::now();
        if let Ok(won) = tokio::time::timeout(Duration::from_millis(ms), mutex.lock()).await {
            won.unwrap().release().await.unwrap();
        }
        // The undo of a dropped acquire runs from a spawned task: the lock
        // is free again within one TTL, without waiting for any expiry.
        let guard = loop {
            match fresh.try_lock().await {
                Ok(Some(guard)) => break guard,
                // Racing the undo: some nodes still hold the dropped claim.
                Ok(None) | Err(Error::Quorum(_)) => {}
                Err(other) => panic!("{ms} ms: {other:?}"),
            }
            assert!(began.elapsed() < ttl, "{ms} ms: still held after a TTL");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        guard.release().await.unwrap();
        // Every key of this round was set after `began`, so one gone by
        // `began + ttl` was deleted, not left to expire.
        let clean = common::eventually(ttl.saturating_sub(began.elapsed()), || {
            no_lock_keys(&servers, &live)
        })
        .await;
        assert!(clean, "{ms} ms: {:?}", lock_keys_on(&servers, &live).await);
    }
    // The frozen node runs its backlog in order: each acquire is followed by
    // the undo or release of the same owner.
    servers[4].resume();
    let clean = common::eventually(ttl, || no_lock_keys(&servers, &[4])).await;
    assert!(clean, "{:?}", lock_keys_on(&servers, &[4]).await);
}

// ---------------------------------------------------------------------------
// M-22: script cache loss and a restart under contention
// ---------------------------------------------------------------------------

/// One contender of M-22: every call must succeed. Each cycle (wait, hold,
/// release) runs under a shared `gate`, which the restart takes exclusively.
async fn flushed_contender(
    q: Quorum,
    holder: String,
    history: History,
    ttl: Duration,
    stop: Arc<AtomicBool>,
    gate: Arc<tokio::sync::RwLock<()>>,
) -> (usize, Vec<String>) {
    let mutex = Mutex::new(&q, "m22").with_ttl(ttl);
    let mut grants = 0;
    let mut errors = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let _cycle = gate.read().await;
        match mutex.lock_timeout(Duration::from_secs(5)).await {
            Ok(guard) => {
                grants += 1;
                let id = record(&history, &holder, &guard).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
                if let Err(e) = release(&history, id, guard).await {
                    errors.push(format!("{holder} release: {e}"));
                }
            }
            Err(e) => errors.push(format!("{holder} lock: {e}")),
        }
    }
    (grants, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m22_script_flushes_and_a_restart_stay_invisible_to_contenders() {
    let mut servers = ServerGroup::start(5).unwrap();
    let ttl = Duration::from_secs(1);
    let history = History::new();
    let stop = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(tokio::sync::RwLock::new(()));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let q = common::builder(&servers)
            .config(fast_config(ttl))
            .build()
            .await
            .unwrap();
        tasks.push(tokio::spawn(flushed_contender(
            q,
            format!("c{i}"),
            history.clone(),
            ttl,
            stop.clone(),
            gate.clone(),
        )));
    }
    // A fixed seed: the same nodes are flushed in the same order every run.
    let mut seed: u64 = 0x5eed_cafe;
    let mut flushes = 0;
    for step in 0..50 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        if step == 25 {
            // Between cycles: a lease whose bare majority included this node
            // would be lost for real (and reported), which is M-6's subject,
            // not this one's. The restart still empties the script cache and
            // the fencing counter, and the node sits out its quarantine.
            let _idle = gate.write().await;
            common::blocking(|| servers[1].restart().unwrap());
            continue;
        }
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let node = (seed >> 33) as usize % 5;
        let mut conn = common::conn(&servers, node).await;
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .unwrap();
        flushes += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let mut grants = 0;
    let mut errors = Vec::new();
    for task in tasks {
        let (won, failed) = task.await.unwrap();
        grants += won;
        errors.extend(failed);
    }
    assert!(errors.is_empty(), "{errors:#?}\n{history}");
    assert!(
        grants >= 20,
        "only {grants} grants over {flushes} flushes\n{history}"
    );
    // The mutex check covers tokens too: strictly rising in grant order.
    assert_no_overlap(&history, "m22");
}

// ---------------------------------------------------------------------------
// Negative controls
// ---------------------------------------------------------------------------

/// Two clients that each believe in a 3-node quorum, over node sets of a
/// 5-node group that share one node: their majorities need not intersect,
/// so both lock at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nc_non_intersecting_quorums_let_two_holders_overlap() {
    let servers = ServerGroup::start(5).unwrap();
    let urls = servers.urls();
    let ttl = Duration::from_secs(2);
    let a = Quorum::connect(&urls[0..3]).await.unwrap();
    let b = Quorum::connect(&urls[2..5]).await.unwrap();
    let history = History::new();
    let a_guard = Mutex::new(&a, "nc-quorum")
        .with_ttl(ttl)
        .auto_extend(false)
        .lock()
        .await
        .unwrap();
    let a_id = record(&history, "A", &a_guard).await;
    let b_guard = Mutex::new(&b, "nc-quorum")
        .with_ttl(ttl)
        .auto_extend(false)
        .try_lock()
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("B's two free nodes should be a majority of its three"));
    let b_id = record(&history, "B", &b_guard).await;
    let _ = release(&history, b_id, b_guard).await;
    let _ = release(&history, a_id, a_guard).await;
    assert_overlap_reported(&history, "nc-quorum");
}

const DRIFT_TTL: Duration = Duration::from_secs(3);
/// Less than the default drift allowance, 3 s × 1 % + 2 ms = 32 ms.
const CLOCK_JUMP_MS: i64 = 30;

/// One run of the drift scenario: what the history says, and the two
/// instants that decide it, straight from the guards.
struct DriftRun {
    history: History,
    a_deadline: Instant,
    b_granted: Instant,
}

/// A locks for 3 s without extension; every node's clock then runs 30 ms
/// ahead (its keys expire 30 ms early); B polls tightly across the expiry
/// and takes the lock as soon as it can.
async fn fast_server_clocks(a_drift_factor: f64) -> DriftRun {
    let servers = ServerGroup::start(5).unwrap();
    let a = common::builder(&servers)
        .ttl(DRIFT_TTL)
        .drift_factor(a_drift_factor)
        .build()
        .await
        .unwrap();
    let b = common::builder(&servers)
        .config(Config {
            ttl: DRIFT_TTL,
            retry_delay: Duration::from_millis(1),
            retry_jitter: Duration::ZERO,
            max_retry_delay: Duration::from_millis(1),
            ..Config::default()
        })
        .build()
        .await
        .unwrap();
    let history = History::new();
    let a_guard = Mutex::new(&a, "nc-drift")
        .with_ttl(DRIFT_TTL)
        .auto_extend(false)
        .lock()
        .await
        .unwrap();
    let a_id = record(&history, "A", &a_guard).await;
    for url in servers.urls() {
        jump_clock(&url, CLOCK_JUMP_MS).await.unwrap();
    }
    // Polling for 3 s would load the machine for nothing: B starts a little
    // before the earliest moment the keys could expire.
    let expiry = a_guard.acquired_at() + DRIFT_TTL - Duration::from_millis(CLOCK_JUMP_MS as u64);
    tokio::time::sleep_until((expiry - Duration::from_millis(200)).into()).await;
    let b_guard = Mutex::new(&b, "nc-drift")
        .with_ttl(DRIFT_TTL)
        .lock_timeout(Duration::from_secs(2))
        .await
        .unwrap();
    let b_id = record(&history, "B", &b_guard).await;
    let run = DriftRun {
        history: history.clone(),
        a_deadline: a_guard.deadline(),
        b_granted: b_guard.acquired_at(),
    };
    let _ = release(&history, b_id, b_guard).await;
    let _ = release(&history, a_id, a_guard).await;
    run
}

/// The positive side of the drift control: with the default drift factor,
/// A's deadline comes before keys that expire up to 32 ms early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nc_drift_allowance_covers_fast_server_clocks() {
    let run = fast_server_clocks(Config::DEFAULT_DRIFT_FACTOR).await;
    assert_no_overlap(&run.history, "nc-drift");
    assert!(run.b_granted >= run.a_deadline);
}

/// Negative control: without a drift allowance A believes in its lease up
/// to the full TTL, while its keys expired 30 ms early and B took over.
///
/// A overestimates its lease by 28 ms less the time its SET took to land,
/// and B's grant comes a round after the expiry: on a busy machine the two
/// can use up the 28 ms, and then nothing overlapped. The checker can only
/// report an overlap that happened, so such a run is repeated (at most three
/// runs); in every run its verdict must match the guards' own instants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nc_no_drift_allowance_overlaps_with_fast_server_clocks() {
    let mut missed = Vec::new();
    for _ in 0..3 {
        let run = fast_server_clocks(0.0).await;
        let overlapped = run.b_granted < run.a_deadline;
        let reported = violations(&run.history, "nc-drift")
            .iter()
            .any(|v| v.check == "mutex");
        assert_eq!(reported, overlapped, "{}", run.history);
        if reported {
            assert_overlap_reported(&run.history, "nc-drift");
            return;
        }
        missed.push(run.history.to_string());
    }
    panic!("three runs without an overlap:\n{}", missed.join("\n"));
}
