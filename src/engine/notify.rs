//! Wake-up hints: one subscriber connection per node for the whole quorum
//! (per shard, for a Redis Cluster node, on sharded pub/sub), shared by
//! every waiter of the process through a map from channel to [`Notify`].
//!
//! Release scripts `PUBLISH` on the resource's channel. A message is only a
//! hint to try again now. A released lease frees room for one waiter, so its
//! message wakes one (in arrival order), and the copies of the same message
//! from other nodes are dropped; waking them all would have every waiter of
//! the process race for one lock. Latch and barrier messages (`*`) wake
//! everyone. After a reconnect every waiter looks again: messages sent
//! meanwhile are lost.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use redis::cluster::ClusterClientBuilder;
use redis::{ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::{Notify, mpsc, oneshot};

use super::node::{Node, Target};
use crate::config::Config;

/// Wake-up hints per channel, fed by one subscriber task per node.
pub(crate) struct Notifier {
    registry: Arc<Registry>,
    subscribers: Vec<Subscriber>,
    ack_timeout: Duration,
}

#[derive(Default)]
struct Registry {
    channels: Mutex<HashMap<String, Channel>>,
}

struct Channel {
    notify: Arc<Notify>,
    watchers: usize,
    /// The last wake-one message, to drop its copies from other nodes.
    last: Option<Vec<u8>>,
}

struct Subscriber {
    target: Target,
    connect_timeout: Duration,
    commands: OnceLock<mpsc::UnboundedSender<Command>>,
}

enum Command {
    Subscribe(String, oneshot::Sender<()>),
    Unsubscribe(String),
}

/// A waiter's interest in one channel; unsubscribes when the last one goes.
pub(crate) struct Watch<'a> {
    notifier: &'a Notifier,
    channel: String,
    pub(crate) notify: Arc<Notify>,
}

impl Notifier {
    pub(crate) fn new(nodes: &[Node], config: &Config) -> Notifier {
        let subscribers = nodes
            .iter()
            .map(|n| Subscriber {
                target: n.target.clone(),
                connect_timeout: config.connect_timeout,
                commands: OnceLock::new(),
            })
            .collect();
        Notifier {
            registry: Arc::default(),
            subscribers,
            ack_timeout: Config::DEFAULT_NODE_TIMEOUT,
        }
    }

    /// Subscribes to `channel` on every node (once per process) and waits,
    /// briefly, for the subscriptions to be confirmed.
    pub(crate) async fn watch(&self, channel: &str) -> Watch<'_> {
        let (notify, first) = {
            let mut channels = self.registry.channels.lock().unwrap();
            let entry = channels
                .entry(channel.to_owned())
                .or_insert_with(|| Channel {
                    notify: Arc::new(Notify::new()),
                    watchers: 0,
                    last: None,
                });
            entry.watchers += 1;
            (entry.notify.clone(), entry.watchers == 1)
        };
        // Made before the wait below, so a caller dropped while the
        // subscriptions are confirmed still unsubscribes.
        let watch = Watch {
            notifier: self,
            channel: channel.to_owned(),
            notify,
        };
        if first {
            let acks: Vec<_> = self
                .subscribers
                .iter()
                .map(|s| {
                    let (tx, rx) = oneshot::channel();
                    s.send(&self.registry, Command::Subscribe(channel.to_owned(), tx));
                    rx
                })
                .collect();
            let _ = tokio::time::timeout(self.ack_timeout, futures::future::join_all(acks)).await;
        }
        watch
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut channels = self.notifier.registry.channels.lock().unwrap();
        let Some(entry) = channels.get_mut(&self.channel) else {
            return;
        };
        entry.watchers -= 1;
        if entry.watchers == 0 {
            channels.remove(&self.channel);
            for s in &self.notifier.subscribers {
                s.send(
                    &self.notifier.registry,
                    Command::Unsubscribe(self.channel.clone()),
                );
            }
        }
    }
}

impl Registry {
    fn wake(&self, channel: &str, message: &[u8]) {
        let mut channels = self.channels.lock().unwrap();
        let Some(c) = channels.get_mut(channel) else {
            return;
        };
        if message == b"*" {
            c.notify.notify_waiters();
        } else if c.last.as_deref() != Some(message) {
            c.last = Some(message.to_vec());
            c.notify.notify_one();
        }
    }

    /// After a reconnect: messages sent meanwhile are lost, so everyone
    /// looks again.
    fn wake_all(&self) {
        for c in self.channels.lock().unwrap().values() {
            c.notify.notify_waiters();
        }
    }

    fn names(&self) -> Vec<String> {
        self.channels.lock().unwrap().keys().cloned().collect()
    }
}

impl Subscriber {
    /// Queues a command, starting the node's subscriber task on first use.
    fn send(&self, registry: &Arc<Registry>, command: Command) {
        let tx = self.commands.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(subscribe_loop(
                self.target.clone(),
                registry.clone(),
                rx,
                self.connect_timeout,
            ));
            tx
        });
        let _ = tx.send(command);
    }
}

/// One node's subscriber: (re)connects, restores the subscriptions, turns
/// messages into wake-ups. Ends when the [`Notifier`] is dropped.
async fn subscribe_loop(
    target: Target,
    registry: Arc<Registry>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    timeout: Duration,
) {
    let mut failures = 0u32;
    loop {
        let served = match &target {
            Target::Server(_) | Target::Sentinel(_) => match target.server().await {
                Ok(client) => serve(&client, &registry, &mut commands, timeout).await,
                Err(_) => Some(()),
            },
            Target::Cluster { seeds, .. } => {
                serve_cluster(seeds, &registry, &mut commands, timeout).await
            }
        };
        if served.is_none() {
            return;
        }
        failures += 1;
        let pause = Duration::from_millis(50 * u64::from(failures.min(10)));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            // A subscription asked for meanwhile is restored from the
            // registry on reconnect; dropping its ack lets the waiter go on.
            command = commands.recv() => if command.is_none() { return },
        }
    }
}

/// Serves one connection until it breaks (`Some`) or the notifier is gone
/// (`None`).
async fn serve(
    client: &redis::Client,
    registry: &Registry,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    timeout: Duration,
) -> Option<()> {
    let Ok(Ok(pubsub)) = tokio::time::timeout(timeout, client.get_async_pubsub()).await else {
        return Some(());
    };
    let (mut sink, mut stream) = pubsub.split();
    let names = registry.names();
    if !names.is_empty() && !within(timeout, sink.subscribe(&names)).await {
        return Some(());
    }
    registry.wake_all();
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(m) => registry.wake(m.get_channel_name(), m.get_payload_bytes()),
                None => return Some(()),
            },
            command = commands.recv() => match command {
                None => return None,
                Some(Command::Subscribe(channel, ack)) => {
                    if !within(timeout, sink.subscribe(&channel)).await {
                        return Some(());
                    }
                    let _ = ack.send(());
                }
                Some(Command::Unsubscribe(channel)) => {
                    if !within(timeout, sink.unsubscribe(&channel)).await {
                        return Some(());
                    }
                }
            },
        }
    }
}

/// Serves a cluster's sharded subscriptions until the connection cannot
/// be made (`Some`) or the notifier is gone (`None`). The cluster client
/// keeps one connection per shard, restores its subscriptions after a
/// reconnect and follows a channel's slot when it moves; a subscription
/// that fails (its shard is down) leaves its waiters to their timed
/// retries.
async fn serve_cluster(
    seeds: &[String],
    registry: &Registry,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    timeout: Duration,
) -> Option<()> {
    let (tx, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
    let client = ClusterClientBuilder::new(seeds.to_vec())
        .use_protocol(ProtocolVersion::RESP3)
        .connection_timeout(timeout)
        .push_sender(tx)
        .build()
        .ok()?;
    let Ok(Ok(mut conn)) = tokio::time::timeout(timeout, client.get_async_connection()).await
    else {
        return Some(());
    };
    for name in registry.names() {
        within(timeout, conn.ssubscribe(&name)).await;
    }
    registry.wake_all();
    loop {
        tokio::select! {
            push = pushes.recv() => match push {
                Some(push) => on_push(registry, push),
                None => return Some(()),
            },
            command = commands.recv() => match command {
                None => return None,
                Some(Command::Subscribe(channel, ack)) => {
                    within(timeout, conn.ssubscribe(&channel)).await;
                    let _ = ack.send(());
                }
                Some(Command::Unsubscribe(channel)) => {
                    within(timeout, conn.sunsubscribe(&channel)).await;
                }
            },
        }
    }
}

fn on_push(registry: &Registry, push: PushInfo) {
    match push.kind {
        PushKind::SMessage | PushKind::Message => {
            if let [Value::BulkString(channel), Value::BulkString(message)] = &push.data[..] {
                registry.wake(&String::from_utf8_lossy(channel), message);
            }
        }
        // Messages sent while a shard was out of reach are lost.
        PushKind::Disconnection => registry.wake_all(),
        _ => {}
    }
}

async fn within(timeout: Duration, f: impl Future<Output = redis::RedisResult<()>>) -> bool {
    matches!(tokio::time::timeout(timeout, f).await, Ok(Ok(())))
}
