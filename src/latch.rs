//! The countdown latch.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::client::Quorum;
use crate::config::Timing;
#[cfg(doc)]
use crate::error::Error;
use crate::error::{Error as E, Result};
use crate::key::{Keys, MAX_KEY_LEN};
use crate::lease::owner_token;
use crate::quorum::{Attempt, Call, invocation};
use crate::scripts;
use crate::wait::wait_for;

/// A distributed countdown latch: it opens once `count` distinct
/// count-downs have happened, and then stays open. "Start when all 3 shards
/// are ready."
///
/// Each count-down carries an operation id and the latch keeps the set of
/// ids on every node, so a count-down retried after a timeout or reconnect
/// counts once. [`count_down_as`](Self::count_down_as) lets the caller name
/// the id (a shard name), which makes even a restarted process count once.
///
/// # Guarantees
///
/// A count-down returns `Ok` once a majority of nodes has recorded it. A
/// reader unions the ids a majority of nodes returns; since every finished
/// count-down is on a majority, and two majorities share a node, a reader
/// never misses one. The union may also hold ids of count-downs that
/// failed (they reached a minority), so before a reader reports the latch
/// open it writes every id it relies on to a majority (read repair): any
/// later reader then finds them too, and once a reader has seen the latch
/// open, no later read sees it closed, until its state expires. A repaired
/// latch is then marked open on the nodes, so later reads take one round.
///
/// The state (ids and count) expires [`with_ttl`](Self::with_ttl) after the
/// last count-down, one hour by default, so an abandoned latch does not stay
/// forever; an opened latch reads as closed again after that.
///
/// # Examples
///
/// ```no_run
/// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
/// use quorate::Latch;
///
/// let boot = Latch::new(&q, "boot", 3);
/// // on each shard, once ready:
/// boot.count_down_as("shard-1").await?;
/// // on the service that needs all three:
/// boot.wait().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Latch {
    quorum: Quorum,
    name: String,
    count: u32,
    ttl: Duration,
}

impl Latch {
    /// How long the state lives after the last count-down, by default.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(60 * 60);
    /// Largest count: readers union the ids.
    pub const MAX_COUNT: u32 = 10_000;

    /// A latch called `name` that opens after `count` count-downs.
    ///
    /// Checked at the first call: `count` must be in
    /// `1..=`[`MAX_COUNT`](Self::MAX_COUNT) ([`Error::InvalidArgument`]
    /// otherwise, and nothing is sent).
    pub fn new(quorum: &Quorum, name: impl Into<String>, count: u32) -> Latch {
        Latch {
            quorum: quorum.clone(),
            name: name.into(),
            count,
            ttl: Self::DEFAULT_TTL,
        }
    }

    /// Sets how long the state lives after the last count-down. Defaults to
    /// one hour.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Latch {
        self.ttl = ttl;
        self
    }

    /// The resource name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counts down once, under a fresh operation id. Retries through node
    /// failures (with the same id) for up to the quorum's
    /// [`Config::ttl`](crate::Config::ttl).
    ///
    /// # Errors
    ///
    /// [`Error::Quorum`] when no majority recorded it in that time (it may
    /// still count later, once); [`Error::ConfigMismatch`] when the latch
    /// exists with another count; bad input before any I/O.
    ///
    /// # Cancel safety
    ///
    /// Dropped midway, the count-down may or may not have counted. Use
    /// [`count_down_as`](Self::count_down_as) and call it again to be sure.
    pub async fn count_down(&self) -> Result<()> {
        self.count_down_as(&owner_token()).await
    }

    /// Counts down once for `id`: however often it is called with the same
    /// id, it counts once.
    ///
    /// # Errors
    ///
    /// As [`count_down`](Self::count_down); [`Error::InvalidArgument`] for
    /// an empty or over-long id.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in effect: call it again with the same id.
    pub async fn count_down_as(&self, id: &str) -> Result<()> {
        if id.is_empty() || id.len() > MAX_KEY_LEN {
            return Err(E::argument(
                "id",
                format!("must be 1 to {MAX_KEY_LEN} bytes"),
            ));
        }
        let (keys, timing) = self.keys()?;
        let call = self.count_down_call(&keys, timing, &[id]);
        let deadline = Some(self.quorum.config().ttl);
        wait_for(&self.quorum, &keys[2], deadline, || async {
            match self.record(call.clone(), timing).await {
                Ok(()) => Ok(Attempt::Done(())),
                Err(e) => unavailable(e),
            }
        })
        .await
    }

    fn count_down_call(&self, keys: &[String; 3], timing: Timing, ids: &[&str]) -> Call {
        let mut inv = invocation(&scripts::LATCH_COUNT_DOWN, &keys[..2]);
        inv.arg(self.count)
            .arg(timing.ttl_ms())
            .arg(&keys[2])
            .arg(ids);
        Call::new(inv)
    }

    /// Records count-downs on a majority.
    async fn record(&self, call: Call, timing: Timing) -> Result<()> {
        let round = self.quorum.round_majority(call, timing.node_timeout).await;
        if round.granted() >= self.quorum.majority() {
            return Ok(());
        }
        Err(round.shortfall(&self.quorum, &self.name))
    }

    /// Waits until the latch is open. Wakes on each count-down's message.
    ///
    /// # Errors
    ///
    /// [`Error::ConfigMismatch`]; bad input before any I/O.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: waiting changes nothing.
    pub async fn wait(&self) -> Result<()> {
        self.wait_inner(None).await
    }

    /// Waits until the latch is open, at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when it is still closed at the deadline;
    /// [`Error::Quorum`] when too few nodes answered at the last look.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: waiting changes nothing.
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        self.wait_inner(Some(timeout)).await
    }

    /// Count-downs still missing before the latch opens: 0 once open.
    ///
    /// # Errors
    ///
    /// [`Error::Quorum`] when fewer than a majority answered.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn count(&self) -> Result<u32> {
        let (keys, timing) = self.keys()?;
        self.remaining(&keys, timing).await
    }

    async fn wait_inner(&self, timeout: Option<Duration>) -> Result<()> {
        let (keys, timing) = self.keys()?;
        wait_for(&self.quorum, &keys[2], timeout, || async {
            match self.remaining(&keys, timing).await {
                Ok(0) => Ok(Attempt::Done(())),
                Ok(_) => Ok(Attempt::Busy { retry_after: None }),
                Err(e) => unavailable(e),
            }
        })
        .await
    }

    /// Count-downs missing, by a majority read; 0 only once the ids that
    /// make it open are durable on a majority.
    async fn remaining(&self, keys: &[String; 3], timing: Timing) -> Result<u32> {
        let mut inv = invocation(&scripts::LATCH_READ, &keys[..2]);
        inv.arg(self.count);
        let round = self.quorum.round_majority(inv, timing.node_timeout).await;
        if round.yes().any(|(_, p)| p.int(0) == Some(1)) {
            return Ok(0);
        }
        if round.granted() < self.quorum.majority() {
            return Err(round.shortfall(&self.quorum, &self.name));
        }
        let ids: BTreeSet<String> = round.yes().flat_map(|(_, p)| p.strings_from(1)).collect();
        let missing = self.count.saturating_sub(ids.len() as u32);
        if missing > 0 {
            return Ok(missing);
        }
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.record(self.count_down_call(keys, timing, &ids), timing)
            .await?;
        self.seal(keys, timing);
        Ok(0)
    }

    /// Marks the latch open on every node, in the background: a majority
    /// holds its ids now, so a reader may trust the mark alone.
    fn seal(&self, keys: &[String; 3], timing: Timing) {
        let mut inv = invocation(&scripts::LATCH_SEAL, &keys[..2]);
        inv.arg(self.count).arg(timing.ttl_ms());
        let quorum = self.quorum.clone();
        tokio::spawn(async move {
            quorum.round_all(inv, timing.node_timeout).await;
        });
    }

    /// The keys (ids, count, channel) and timing, checked.
    fn keys(&self) -> Result<([String; 3], Timing)> {
        if self.count == 0 || self.count > Self::MAX_COUNT {
            return Err(E::argument(
                "count",
                format!("{} is outside 1..={}", self.count, Self::MAX_COUNT),
            ));
        }
        let timing = self.quorum.config().state_timing(self.ttl)?;
        let keys = Keys::new(&self.quorum.config().key_prefix, &self.name)?;
        let names = [
            keys.main.clone(),
            keys.sibling("count")?,
            keys.sibling("ready")?,
        ];
        Ok((names, timing))
    }
}

/// Turns a quorum shortfall into a retry; other errors stand.
pub(crate) fn unavailable<T>(e: E) -> Result<Attempt<T>> {
    match e {
        E::Quorum(_) => Ok(Attempt::Unavailable(e)),
        other => Err(other),
    }
}
