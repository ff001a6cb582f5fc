//! The nemesis: carries out the planned [`Schedule`] at its offsets, then
//! heals whatever is still broken at the end of the run.
//!
//! Choices are all made in the plan; this side only acts, so a seed
//! replays. Actions run a little late when the one before took time (a
//! restart waits for the server to answer): the plan's offsets are when an
//! action is due, never earlier.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::schedule::{Action, Schedule};
use super::{Rig, workers};

/// Jitter of the latency fault, on top of its planned delay.
const LATENCY_JITTER: Duration = Duration::from_millis(5);

/// Refusals per (client, node): a partition and a view may cut the same
/// link, and the link comes back only when both are over.
#[derive(Default)]
struct Links {
    refused: HashMap<(usize, usize), u32>,
}

impl Links {
    fn refuse(&mut self, rig: &Rig, client: usize, node: usize) {
        let n = self.refused.entry((client, node)).or_default();
        *n += 1;
        if *n == 1 {
            rig.proxies[client][node].refuse(true);
        }
    }

    fn restore(&mut self, rig: &Rig, client: usize, node: usize) {
        let n = self.refused.entry((client, node)).or_default();
        *n = n.saturating_sub(1);
        if *n == 0 {
            rig.proxies[client][node].refuse(false);
        }
    }
}

/// Carries out `schedule` until the end of the run; past the end, only the
/// heals run, at once. Waits for the newcomers it started.
pub(super) async fn run(rig: &Arc<Rig>, schedule: &Schedule) {
    let mut links = Links::default();
    let mut newcomers: Vec<JoinHandle<()>> = Vec::new();
    for step in schedule.steps() {
        let due = rig.start + step.at;
        if due >= rig.until {
            if step.action.heals() {
                act(rig, &mut links, &step.action, &mut newcomers).await;
            }
            continue;
        }
        tokio::time::sleep_until(due.into()).await;
        act(rig, &mut links, &step.action, &mut newcomers).await;
    }
    tokio::time::sleep_until(rig.until.into()).await;
    for task in newcomers {
        let _ = task.await;
    }
}

async fn act(
    rig: &Arc<Rig>,
    links: &mut Links,
    action: &Action,
    newcomers: &mut Vec<JoinHandle<()>>,
) {
    match action {
        Action::Kill(n) => {
            rig.tallies.fault("kill");
            rig.history.node_lost(*n, Instant::now());
            let n = *n;
            servers(rig, move |s| s[n].kill()).await;
        }
        Action::Restart(n) => {
            let n = *n;
            servers(rig, move |s| {
                let _ = s[n].restart();
            })
            .await;
        }
        Action::Pause(n) => {
            rig.tallies.fault("pause");
            let n = *n;
            servers(rig, move |s| s[n].pause()).await;
        }
        Action::Resume(n) => {
            let n = *n;
            servers(rig, move |s| s[n].resume()).await;
        }
        Action::RestartEmpty(n) => {
            rig.tallies.fault("restart");
            rig.history.node_lost(*n, Instant::now());
            let n = *n;
            servers(rig, move |s| {
                let _ = s[n].restart();
            })
            .await;
        }
        Action::FlushScripts(n) => {
            rig.tallies.fault("script flush");
            flush_scripts(rig, *n).await;
        }
        Action::Newcomer(slot, ms) => {
            rig.tallies.fault("newcomer");
            let ordinal = newcomers.len() as u64;
            let life = Duration::from_millis(*ms);
            let task = workers::newcomer(rig.clone(), *slot, ordinal, life);
            newcomers.push(tokio::spawn(task));
        }
        _ => links_act(rig, links, action),
    }
}

/// The actions on client proxies.
fn links_act(rig: &Rig, links: &mut Links, action: &Action) {
    match action {
        Action::Partition(n, clients) => {
            rig.tallies.fault("partition");
            clients.iter().for_each(|&c| links.refuse(rig, c, *n));
        }
        Action::Reconnect(n, clients) => clients.iter().for_each(|&c| links.restore(rig, c, *n)),
        Action::View(c, nodes) => {
            rig.tallies.fault("view");
            nodes.iter().for_each(|&n| links.refuse(rig, *c, n));
        }
        Action::ClearView(c, nodes) => nodes.iter().for_each(|&n| links.restore(rig, *c, n)),
        Action::Latency(n, ms) => {
            rig.tallies.fault("latency");
            let delay = Duration::from_millis(*ms);
            rig.proxies
                .iter()
                .for_each(|p| p[*n].set_latency(delay, LATENCY_JITTER));
        }
        Action::NoLatency(n) => rig
            .proxies
            .iter()
            .for_each(|p| p[*n].set_latency(Duration::ZERO, Duration::ZERO)),
        Action::DropReplies(n, clients) => {
            rig.tallies.fault("dropped replies");
            clients
                .iter()
                .for_each(|&c| rig.proxies[c][*n].drop_replies(true));
        }
        Action::DeliverReplies(n, clients) => clients.iter().for_each(|&c| {
            // Dropped bytes leave the stream out of step: start clean.
            rig.proxies[c][*n].drop_replies(false);
            rig.proxies[c][*n].reset();
        }),
        _ => {}
    }
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
