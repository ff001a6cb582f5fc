//! How a blocked caller waits: a local queue, push wake-ups, retry-after,
//! jittered backoff.
//!
//! A waiter joins its resource's queue in this process (see `queue.rs`)
//! and only the head attempts on Redis, so ten
//! thousand waiters cost what one does, and a holder's release or extension
//! never queues behind their attempts. The head subscribes to the
//! resource's channel (see `notify.rs`) and sleeps until a wake-up, a local
//! release, the holder's lease would end, or a jittered backoff passes,
//! whichever comes first; so a lost message costs a little latency and
//! nothing else.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::nodes::Nodes;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::observe::{self, Subject};

/// The outcome of one attempt of a waiting call.
#[derive(Debug)]
pub(crate) enum Attempt<T> {
    Done(T),
    /// Held by someone else; their lease has about `retry_after` left.
    Busy {
        retry_after: Option<Duration>,
    },
    /// Too many nodes failed; worth retrying later.
    Unavailable(Error),
}

impl<T> Attempt<T> {
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Attempt<U> {
        match self {
            Attempt::Done(t) => Attempt::Done(f(t)),
            Attempt::Busy { retry_after } => Attempt::Busy { retry_after },
            Attempt::Unavailable(e) => Attempt::Unavailable(e),
        }
    }

    /// A quorum shortfall is worth retrying; other errors stand.
    pub(crate) fn retry_on_quorum(result: Result<T>) -> Result<Attempt<T>> {
        match result {
            Ok(t) => Ok(Attempt::Done(t)),
            Err(e @ Error::Quorum(_)) => Ok(Attempt::Unavailable(e)),
            Err(other) => Err(other),
        }
    }
}

/// A number in `[0, 1)` for jitter. Jitter needs spread, not quality.
pub(crate) fn random_unit() -> f64 {
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Backoff before attempt `attempt` (0-based) of a waiting call: doubling
/// from `retry_delay` up to `max_retry_delay`, plus up to `retry_jitter`.
pub(crate) fn backoff(config: &Config, attempt: u32) -> Duration {
    let base = config
        .retry_delay
        .saturating_mul(1 << attempt.min(16))
        .min(config.max_retry_delay);
    base + config.retry_jitter.mul_f64(random_unit())
}

/// Runs `attempt` until it is done, subscribing to `channel` after the first
/// miss and sleeping between misses until a wake-up, the holder's expiry or
/// the backoff, whichever comes first.
///
/// At the deadline it returns the last unavailability error if the last
/// attempt failed for want of nodes, [`Error::Timeout`] otherwise.
pub(crate) async fn wait_for<T, F, Fut>(
    nodes: &Arc<Nodes>,
    subject: Subject<'_>,
    channel: &str,
    timeout: Option<Duration>,
    attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Attempt<T>>>,
{
    observe::waiting(subject, attempts(nodes, subject, channel, timeout, attempt)).await
}

async fn attempts<T, F, Fut>(
    nodes: &Arc<Nodes>,
    subject: Subject<'_>,
    channel: &str,
    timeout: Option<Duration>,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Attempt<T>>>,
{
    let deadline = timeout.map(|t| Instant::now() + t);
    let timed_out = || Error::Timeout(timeout.unwrap_or_default());
    // Boxed, so a waiter asleep in the queue keeps only its small state,
    // not room for an attempt in flight.
    let mut attempt = move || Box::pin(attempt());
    // In the queue from the start: behind waiters of this process an
    // attempt would be in vain, and would barge ahead of them.
    let mut ticket = nodes.queues().join(channel);
    if ticket.is_head()
        && !ticket.held_here()
        && let Attempt::Done(t) = attempt().await?
    {
        ticket.acquired();
        return Ok(t);
    }
    let _queued = observe::Queued::join(subject);
    // Behind the head: wait for the turn, at no cost to Redis.
    while !ticket.is_head() {
        let turn = ticket.notify.notified();
        if !until(deadline, turn).await {
            return Err(timed_out());
        }
    }
    let watch = nodes.notifier().watch(channel).await;
    let config = nodes.config();
    let mut round = 0u32;
    let mut go = !ticket.held_here();
    // The last attempt's failure, if it failed: what a deadline reports.
    let mut unavailable: Option<Error> = None;
    loop {
        let notified = watch.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let head = ticket.notify.clone();
        let handed = head.notified();
        tokio::pin!(handed);
        handed.as_mut().enable();
        let pause = if go {
            match attempt().await? {
                Attempt::Done(t) => {
                    ticket.acquired();
                    return Ok(t);
                }
                Attempt::Busy { retry_after } => {
                    unavailable = None;
                    let backoff = backoff(config, round);
                    retry_after.map_or(backoff, |r| r.min(backoff))
                }
                Attempt::Unavailable(e) => {
                    tracing::debug!(channel, error = %e, "attempt failed; retrying");
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(e);
                    }
                    unavailable = Some(e);
                    backoff(config, round)
                }
            }
        } else {
            // The lease went to a waiter of this process: wait for its
            // release rather than try in vain.
            backoff(config, round)
        };
        go = true;
        let mut wake = Instant::now() + pause;
        if let Some(d) = deadline {
            if Instant::now() >= d {
                return Err(unavailable.take().unwrap_or_else(timed_out));
            }
            wake = wake.min(d);
        }
        tokio::select! {
            () = &mut notified => {}
            () = &mut handed => {}
            () = tokio::time::sleep_until(wake.into()) => {}
        }
        round = round.saturating_add(1);
    }
}

/// Waits for `f` until `deadline` (forever without one); false when the
/// deadline came first.
pub(crate) async fn until(deadline: Option<Instant>, f: impl Future<Output = ()>) -> bool {
    match deadline {
        Some(d) => tokio::time::timeout_at(d.into(), f).await.is_ok(),
        None => {
            f.await;
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_ceiling_plus_jitter() {
        let config = Config {
            retry_delay: Duration::from_millis(10),
            retry_jitter: Duration::from_millis(5),
            max_retry_delay: Duration::from_millis(100),
            ..Config::default()
        };
        let within = |attempt, base: u64| {
            let b = backoff(&config, attempt);
            b >= Duration::from_millis(base) && b < Duration::from_millis(base + 5)
        };
        assert!(within(0, 10));
        assert!(within(1, 20));
        assert!(within(3, 80));
        assert!(within(4, 100));
        assert!(within(u32::MAX, 100));
    }

    #[test]
    fn jitter_stays_in_the_unit_interval() {
        for _ in 0..1000 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
