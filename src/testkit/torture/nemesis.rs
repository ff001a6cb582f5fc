//! The nemesis: one fault at a time on a random node, drawn from the seed,
//! never on more than a minority of nodes at once (a node restarted empty
//! counts for a while after), each healed after a while.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Rig;
use super::rng::Rng;

/// A fault in force, and how to heal it.
#[derive(Debug, Clone)]
enum Fault {
    /// SIGKILL; healed by a restart without persistence.
    Kill(usize),
    /// SIGSTOP; healed by SIGCONT.
    Pause(usize),
    /// Some clients cannot reach the node.
    Partition(usize, Vec<usize>),
    /// Every client's requests to the node are delayed.
    Latency(usize),
    /// Some clients' requests reach the node, its replies never come back.
    DropReplies(usize, Vec<usize>),
    /// Restarted empty a moment ago: it counts as faulty until the others
    /// brought it up to date (lease quarantine, barrier and latch repair),
    /// so no majority is ever wiped at once.
    Restarted(usize),
}

impl Fault {
    fn node(&self) -> usize {
        match self {
            Fault::Kill(n)
            | Fault::Pause(n)
            | Fault::Partition(n, _)
            | Fault::Latency(n)
            | Fault::DropReplies(n, _)
            | Fault::Restarted(n) => *n,
        }
    }
}

/// Injects faults until the end of the run, then heals everything.
pub(super) async fn run(rig: &Arc<Rig>) {
    let mut rng = Rng::new(rig.torture.seed);
    let most = (rig.torture.nodes - 1) / 2;
    let mut active: Vec<(Instant, Fault)> = Vec::new();
    while Instant::now() < rig.until {
        tokio::time::sleep(rng.millis(150, 600)).await;
        let now = Instant::now();
        let (due, rest): (Vec<_>, Vec<_>) = active.into_iter().partition(|(at, _)| *at <= now);
        active = rest;
        for (_, fault) in due {
            if let Some(after) = heal(rig, fault).await {
                active.push((Instant::now() + rng.millis(1000, 2500), after));
            }
        }
        if active.len() < most {
            let busy: Vec<usize> = active.iter().map(|(_, f)| f.node()).collect();
            let free: Vec<usize> = (0..rig.torture.nodes)
                .filter(|n| !busy.contains(n))
                .collect();
            let node = free[rng.below(free.len() as u64) as usize];
            if let Some(fault) = inject(rig, &mut rng, node).await {
                active.push((Instant::now() + rng.millis(300, 2500), fault));
            }
        }
    }
    for (_, fault) in active {
        heal(rig, fault).await;
    }
}

/// Some of the clients, at least one.
fn some_clients(rig: &Rig, rng: &mut Rng) -> Vec<usize> {
    let all = rig.proxies.len();
    let picked: Vec<usize> = (0..all).filter(|_| rng.chance(50)).collect();
    if picked.is_empty() {
        vec![rng.below(all as u64) as usize]
    } else {
        picked
    }
}

async fn inject(rig: &Arc<Rig>, rng: &mut Rng, node: usize) -> Option<Fault> {
    let fault = match rng.below(7) {
        0 => Fault::Kill(node),
        1 => Fault::Pause(node),
        2 => Fault::Partition(node, some_clients(rig, rng)),
        3 => Fault::Latency(node),
        4 => Fault::DropReplies(node, some_clients(rig, rng)),
        5 => Fault::Restarted(node),
        _ => {
            rig.tallies.fault("script flush");
            flush_scripts(rig, node).await;
            return None;
        }
    };
    match &fault {
        Fault::Kill(n) => {
            rig.tallies.fault("kill");
            let n = *n;
            servers(rig, move |s| s[n].kill()).await;
        }
        Fault::Pause(n) => {
            rig.tallies.fault("pause");
            let n = *n;
            servers(rig, move |s| s[n].pause()).await;
        }
        Fault::Partition(n, clients) => {
            rig.tallies.fault("partition");
            clients
                .iter()
                .for_each(|&c| rig.proxies[c][*n].refuse(true));
        }
        Fault::Latency(n) => {
            rig.tallies.fault("latency");
            let delay = rng.millis(5, 40);
            rig.proxies
                .iter()
                .for_each(|p| p[*n].set_latency(delay, Duration::from_millis(5)));
        }
        Fault::DropReplies(n, clients) => {
            rig.tallies.fault("dropped replies");
            clients
                .iter()
                .for_each(|&c| rig.proxies[c][*n].drop_replies(true));
        }
        Fault::Restarted(n) => {
            rig.tallies.fault("restart");
            let n = *n;
            servers(rig, move |s| {
                let _ = s[n].restart();
            })
            .await;
        }
    }
    Some(fault)
}

/// Heals a fault; a killed node comes back empty and is then `Restarted`.
async fn heal(rig: &Arc<Rig>, fault: Fault) -> Option<Fault> {
    match fault {
        Fault::Kill(n) => {
            servers(rig, move |s| {
                let _ = s[n].restart();
            })
            .await;
            return Some(Fault::Restarted(n));
        }
        Fault::Pause(n) => servers(rig, move |s| s[n].resume()).await,
        Fault::Partition(n, clients) => clients
            .iter()
            .for_each(|&c| rig.proxies[c][n].refuse(false)),
        Fault::Latency(n) => rig.proxies.iter().for_each(|p| p[n].heal()),
        Fault::DropReplies(n, clients) => clients.iter().for_each(|&c| {
            // Dropped bytes leave the stream out of step: start clean.
            rig.proxies[c][n].heal();
            rig.proxies[c][n].reset();
        }),
        Fault::Restarted(_) => {}
    }
    None
}

/// Runs a blocking operation on the servers off the runtime's threads.
async fn servers(
    rig: &Arc<Rig>,
    f: impl FnOnce(&mut crate::testkit::ServerGroup) + Send + 'static,
) {
    let rig = rig.clone();
    let _ = tokio::task::spawn_blocking(move || f(&mut rig.servers.lock().unwrap())).await;
}

async fn flush_scripts(rig: &Rig, node: usize) {
    let client = rig.servers.lock().unwrap()[node].client();
    let flush = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async::<()>(&mut conn)
            .await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), flush).await;
}
