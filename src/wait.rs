//! How a blocked caller waits: push wake-ups, retry-after, jittered backoff.
//!
//! Release scripts `PUBLISH` on the resource's channel. Each node has one
//! subscriber connection for the whole [`Quorum`], shared by every waiter of
//! the process through a map from channel to [`Notify`]. A message is only a
//! hint to try again now; a waiter also sleeps no longer than the holder's
//! lease has left, nor than a jittered backoff, so a lost message costs a
//! little latency and nothing else.
//!
//! A released lease frees room for one waiter, so its message wakes one
//! (in arrival order), and the copies of the same message from other nodes
//! are dropped; waking them all would have every waiter of the process race
//! for one lock. Latch and barrier messages (`*`) wake everyone.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::client::Quorum;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::quorum::Attempt;

/// A number in `[0, 1)` for jitter. Jitter needs spread, not quality.
pub(crate) fn random_unit() -> f64 {
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs `attempt` until it is done, subscribing to `channel` after the first
/// miss and sleeping between misses until a wake-up, the holder's expiry or
/// the backoff, whichever comes first.
///
/// At the deadline it returns the last unavailability error if the last
/// attempt failed for want of nodes, [`Error::Timeout`] otherwise.
pub(crate) async fn wait_for<T, F, Fut>(
    quorum: &Quorum,
    channel: &str,
    timeout: Option<Duration>,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Attempt<T>>>,
{
    let deadline = timeout.map(|t| Instant::now() + t);
    if let Attempt::Done(t) = attempt().await? {
        return Ok(t);
    }
    let watch = quorum.notifier().watch(channel).await;
    let mut round = 0u32;
    loop {
        let notified = watch.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let pause = match attempt().await? {
            Attempt::Done(t) => return Ok(t),
            Attempt::Busy { retry_after } => {
                let backoff = quorum.config().backoff(round);
                retry_after.map_or(backoff, |r| r.min(backoff))
            }
            Attempt::Unavailable(e) => {
                tracing::debug!(channel, error = %e, "attempt failed; retrying");
                match deadline {
                    Some(d) if Instant::now() >= d => return Err(e),
                    _ => quorum.config().backoff(round),
                }
            }
        };
        let mut wake = Instant::now() + pause;
        if let Some(d) = deadline {
            if Instant::now() >= d {
                return Err(Error::Timeout(timeout.unwrap_or_default()));
            }
            wake = wake.min(d);
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(wake.into()) => {}
        }
        round = round.saturating_add(1);
    }
}

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
    client: redis::Client,
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
    pub(crate) fn new(nodes: &[Arc<Node>], config: &Config) -> Notifier {
        let subscribers = nodes
            .iter()
            .map(|n| Subscriber {
                client: n.client.clone(),
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
                self.client.clone(),
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
    client: redis::Client,
    registry: Arc<Registry>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    timeout: Duration,
) {
    let mut failures = 0u32;
    loop {
        if serve(&client, &registry, &mut commands, timeout)
            .await
            .is_none()
        {
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

async fn within(timeout: Duration, f: impl Future<Output = redis::RedisResult<()>>) -> bool {
    matches!(tokio::time::timeout(timeout, f).await, Ok(Ok(())))
}
