//! Fair mode: waiters served in arrival order across processes.
//!
//! Each resource in fair mode has a queue on every node (see the prelude's
//! fair queues): a sorted set of waiter ids by ticket, and each waiter's
//! entry with its expiry. The ticket is the waiter's arrival time on its
//! own clock, sent alike to every node, so the nodes agree on the order and
//! their votes do not split. An acquire script grants only to the waiters
//! first in line, so a quorum of grants means the waiter was first on a
//! quorum; mutual exclusion does not rest on the queue at all, only the
//! order does. A waiter renews its entry on every attempt and attempts at
//! least every third of the entry's TTL; a waiter that died stops renewing,
//! and its entry expires and is dropped, so it blocks the line for at most
//! that TTL. A waiter that gives up leaves the line at once.
//!
//! A release wakes only the waiters whose turn it makes, each on a channel
//! of its own, so a crowd of fair waiters costs the releaser one message.
//! Fair waiters skip this process's local queue: every one must hold its
//! place in Redis. Fairness holds among fair handles; a default-mode handle
//! on the same name does not queue and may take a free lock first.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::node::{Call, invocation};
use super::nodes::Nodes;
use super::round::{self, Need};
use super::scripts::{self, Invocation};
use super::wait::{Attempt, backoff, until};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::key::Keys;

/// A resource's fair queue on every node.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    /// Sorted set: waiter id -> ticket.
    order: String,
    /// Hash: waiter id -> `expiry ms,permits wanted`.
    entries: String,
}

impl Line {
    /// The queue of the resource named by `keys`.
    pub(crate) fn of(keys: &Keys) -> Result<Line> {
        Ok(Line {
            order: keys.sibling("queue")?,
            entries: keys.sibling("waiters")?,
        })
    }

    /// The queue's keys, as acquire and release scripts take them after
    /// their own.
    pub(crate) fn keys(&self) -> [&str; 2] {
        [&self.order, &self.entries]
    }
}

/// One waiter's place: its id, ticket and entry TTL.
#[derive(Debug, Clone)]
pub(crate) struct Waiter {
    id: String,
    ticket: u64,
    /// 0 for a single try, which never joins the queue.
    entry_ttl: Duration,
}

impl Waiter {
    /// A waiter arriving now.
    fn arriving(config: &Config) -> Waiter {
        let ticket = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Waiter {
            id: uuid::Uuid::new_v4().simple().to_string(),
            ticket,
            entry_ttl: entry_ttl(config),
        }
    }

    /// A single try: granted only when nobody waits in line.
    pub(crate) fn once() -> Waiter {
        Waiter {
            id: String::new(),
            ticket: 0,
            entry_ttl: Duration::ZERO,
        }
    }

    /// Appends the waiter to an acquire script's arguments, after the
    /// fencing tail.
    pub(crate) fn args(&self, inv: &mut Invocation) {
        inv.arg(&self.id)
            .arg(self.ticket)
            .arg(self.entry_ttl.as_millis() as u64);
    }

    /// The channel on which its turn is announced.
    fn channel(&self, resource_channel: &str) -> String {
        format!("{resource_channel}:{}", self.id)
    }
}

/// How long an entry outlives its waiter's last attempt: three of the
/// longest sleeps between attempts, and a node timeout.
fn entry_ttl(config: &Config) -> Duration {
    (3 * (config.max_retry_delay + config.retry_jitter) + node_timeout(config))
        .max(Duration::from_secs(1))
}

fn node_timeout(config: &Config) -> Duration {
    config.node_timeout.unwrap_or(Config::DEFAULT_NODE_TIMEOUT)
}

/// The longest a fair waiter sleeps between attempts: its entry must not
/// expire while it lives.
fn longest_sleep(config: &Config) -> Duration {
    entry_ttl(config) / 3
}

/// Runs `attempt` as one waiter in the resource's line until it is done;
/// as [`wait_for`](super::wait_for) otherwise, but woken only when its turn
/// comes. A waiter that gives up (deadline, or dropped) leaves the line on
/// every node from a spawned task.
pub(crate) async fn wait_in_line<T, F, Fut>(
    nodes: &Arc<Nodes>,
    line: &Line,
    channel: &str,
    timeout: Option<Duration>,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut(Waiter) -> Fut,
    Fut: Future<Output = Result<Attempt<T>>>,
{
    let config = nodes.config();
    let deadline = timeout.map(|t| Instant::now() + t);
    let waiter = Waiter::arriving(config);
    let mut leave = Leave {
        nodes: nodes.clone(),
        line: line.clone(),
        waiter: waiter.id.clone(),
        channel: channel.to_owned(),
        armed: true,
    };
    let mut pause = match attempt(waiter.clone()).await? {
        Attempt::Done(t) => {
            leave.after_grant();
            return Ok(t);
        }
        // The turn may have been announced before the subscription below
        // took: look again at once when it has.
        _ => Duration::ZERO,
    };
    let watch = nodes.notifier().watch(&waiter.channel(channel)).await;
    let mut round = 0u32;
    let mut last_error = None;
    loop {
        let turn = watch.notify.notified();
        tokio::pin!(turn);
        turn.as_mut().enable();
        if !pause.is_zero() {
            let wake = Instant::now() + pause;
            let wake = deadline.map_or(wake, |d| wake.min(d));
            let _ = until(Some(wake), turn).await;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(last_error.unwrap_or(Error::Timeout(timeout.unwrap_or_default())));
        }
        let most = longest_sleep(config);
        pause = match attempt(waiter.clone()).await? {
            Attempt::Done(t) => {
                leave.after_grant();
                return Ok(t);
            }
            Attempt::Busy { retry_after } => {
                last_error = None;
                retry_after.map_or(most, |r| r.min(most))
            }
            Attempt::Unavailable(e) => {
                tracing::debug!(channel, error = %e, "attempt failed; retrying");
                last_error = Some(e);
                backoff(config, round).min(most)
            }
        };
        round = round.saturating_add(1);
    }
}

/// Takes a waiter out of the line on every node unless it got its turn.
struct Leave {
    nodes: Arc<Nodes>,
    line: Line,
    waiter: String,
    channel: String,
    armed: bool,
}

impl Leave {
    /// The waiter got the lease: the nodes that granted it dropped its
    /// entry; on several nodes, the others may still keep it (they
    /// refused, or missed the attempt), so it leaves there too, in the
    /// background.
    fn after_grant(&mut self) {
        self.armed = self.nodes.len() > 1;
    }
}

impl Drop for Leave {
    fn drop(&mut self) {
        if !self.armed || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let mut inv = invocation(&scripts::FAIR_LEAVE, &self.line.keys());
        inv.arg(&self.waiter).arg(&self.channel);
        let nodes = self.nodes.clone();
        let timeout = node_timeout(nodes.config());
        tokio::spawn(async move {
            round::on_all(&nodes, Call::new(inv), Need::All, timeout).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_outlives_three_of_its_waiters_longest_sleeps() {
        let config = Config::default();
        let ttl = entry_ttl(&config);
        assert!(ttl >= 3 * (config.max_retry_delay + config.retry_jitter));
        assert!(longest_sleep(&config) * 3 <= ttl);
        let quick = Config {
            max_retry_delay: Duration::from_millis(50),
            ..Config::default()
        };
        assert_eq!(entry_ttl(&quick), Duration::from_secs(1));
    }
}
