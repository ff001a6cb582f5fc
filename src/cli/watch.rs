//! `quorate watch NAME`: the resource's report, again each time it is
//! released, counted down or arrived at (its notification channel), and at
//! least every `--interval`, since leases also end silently, by expiry.

use futures::StreamExt;
use futures::stream::{self, BoxStream};

use super::nodes::Nodes;
use super::report::{Output, Report};
use super::state::ResourceKeys;
use super::{Failure, Outcome, Status, args};

pub(super) async fn run(nodes: &Nodes, watch: &args::Watch, out: Output) -> Outcome {
    let keys = ResourceKeys::new(&nodes.key_prefix, &watch.name)?;
    let (mut notified, subscribed) = subscribe(nodes, &keys.channel).await;
    nodes.enough(subscribed)?;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    // Polled once now, so the handler is in place before the first view:
    // a Ctrl-C from then on ends the watch, never the process.
    if futures::poll!(interrupted.as_mut()).is_ready() {
        return Ok(Status::Ok);
    }
    let mut views = 0u64;
    let mut seen = None;
    loop {
        let mut report = Report::read(nodes, &watch.name, &keys).await;
        // A lock released leaves no key behind (a mutex whose token nobody
        // asked for has no fencing counter either): what it was is still
        // what is watched.
        match (report.found(), seen) {
            (true, _) => seen = Some(report.kind),
            (false, Some(kind)) => report.absent_as(kind),
            (false, None) => {}
        }
        report.waiting = Some(waiting(nodes, &keys.channel).await);
        out.print(&report, || format!("{}\n", report.text()));
        views += 1;
        if watch.updates.is_some_and(|n| views >= n) {
            return Ok(Status::Ok);
        }
        tokio::select! {
            biased;
            _ = &mut interrupted => return Ok(Status::Ok),
            message = notified.next() => if message.is_none() {
                // Every subscription ended: the nodes went away.
                return Err(Failure::unreachable(format!(
                    "lost the connection to every node watching {}",
                    watch.name
                )));
            },
            () = tokio::time::sleep(watch.interval) => {}
        }
    }
}

/// One stream of every node's notifications on `channel`, and how many
/// nodes it listens to.
async fn subscribe(nodes: &Nodes, channel: &str) -> (BoxStream<'static, ()>, usize) {
    let mut streams = Vec::new();
    for node in &nodes.nodes {
        let subscribed = async {
            let mut pubsub = node.client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        if let Ok(Ok(pubsub)) = tokio::time::timeout(nodes.timeout, subscribed).await {
            streams.push(pubsub.into_on_message().map(|_| ()).boxed());
        }
    }
    let count = streams.len();
    (stream::select_all(streams).boxed(), count)
}

/// Processes with a waiter on the resource: other subscribers of its
/// channel (every process has one subscriber connection per node), on the
/// node where most are.
async fn waiting(nodes: &Nodes, channel: &str) -> i64 {
    let mut most = 0;
    for node in &nodes.nodes {
        let Ok(conn) = &node.conn else { continue };
        let reply: redis::RedisResult<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut conn.clone())
            .await;
        if let Ok((_, n)) = reply {
            // Less this watch's own subscription.
            most = most.max(n - 1);
        }
    }
    most
}
