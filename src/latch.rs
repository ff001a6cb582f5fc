//! The countdown latch.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::config::Timing;
use crate::engine::{self, Attempt, Call, invocation, scripts};
#[cfg(doc)]
use crate::error::Error;
use crate::error::{Error as E, Result};
use crate::key::{Keys, MAX_KEY_LEN};
use crate::lease::owner_token;
use crate::observe::Subject;
use crate::quorum::Quorum;

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
/// A node that restarts empty forgets the ids it held. While it is
/// presumed restarted (see the restart quarantine) its answer does not
/// count, and a reader that sees the latch open repairs it; a count-down
/// that reached only a bare majority, one of whose nodes restarted and
/// came out of its quarantine unrepaired, is on a minority after that, and
/// a reader of the other nodes can see the latch closed again.
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
    plan: Result<Plan>,
}

/// A latch's keys and timing, checked.
#[derive(Debug, Clone)]
struct Plan {
    /// The set of count-down ids.
    ids: String,
    /// The count it was created with, and the mark that it is open.
    state: String,
    channel: String,
    timing: Timing,
}

impl Latch {
    /// How long the state lives after the last count-down, by default.
    ///
    /// ```
    /// assert_eq!(quorate::Latch::DEFAULT_TTL, std::time::Duration::from_secs(3600));
    /// ```
    pub const DEFAULT_TTL: Duration = Duration::from_secs(60 * 60);
    /// Largest count: readers union the ids.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// let all_shards = quorate::Latch::new(&q, "shards", quorate::Latch::MAX_COUNT);
    /// # }
    /// ```
    pub const MAX_COUNT: u32 = 10_000;

    /// A latch called `name` that opens after `count` count-downs.
    ///
    /// Checked at the first call: `count` must be in
    /// `1..=`[`MAX_COUNT`](Self::MAX_COUNT) ([`Error::InvalidArgument`]
    /// otherwise, and nothing is sent).
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// let boot = quorate::Latch::new(&q, "boot", 3);
    /// # }
    /// ```
    pub fn new(quorum: &Quorum, name: impl Into<String>, count: u32) -> Latch {
        let name = name.into();
        Latch {
            plan: plan(quorum, &name, count, Self::DEFAULT_TTL),
            quorum: quorum.clone(),
            name,
            count,
            ttl: Self::DEFAULT_TTL,
        }
    }

    /// Sets how long the state lives after the last count-down. Defaults to
    /// one hour.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// let nightly = quorate::Latch::new(&q, "nightly", 3).with_ttl(std::time::Duration::from_secs(6 * 3600));
    /// # }
    /// ```
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Latch {
        self.ttl = ttl;
        self.plan = plan(&self.quorum, &self.name, self.count, ttl);
        self
    }

    /// The resource name.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// assert_eq!(quorate::Latch::new(&q, "boot", 3).name(), "boot");
    /// # }
    /// ```
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
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// quorate::Latch::new(&q, "workers-ready", 8).count_down().await?;
    /// # Ok(()) }
    /// ```
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
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> quorate::Result<()> {
    /// # let servers = quorate::testkit::ServerGroup::start(1).unwrap();
    /// # let q = quorate::Quorum::connect(servers.urls()).await?;
    /// let boot = quorate::Latch::new(&q, "boot", 2);
    /// boot.count_down_as("shard-1").await?;
    /// boot.count_down_as("shard-1").await?; // the same id counts once
    /// assert_eq!(boot.count().await?, 1);
    /// # Ok(()) }
    /// ```
    pub async fn count_down_as(&self, id: &str) -> Result<()> {
        if id.is_empty() || id.len() > MAX_KEY_LEN {
            return Err(E::argument(
                "id",
                format!("must be 1 to {MAX_KEY_LEN} bytes"),
            ));
        }
        let plan = self.plan()?;
        let call = self.count_down_call(plan, &[id]);
        let nodes = self.quorum.nodes();
        let deadline = Some(self.quorum.config().ttl);
        engine::wait_for(nodes, self.subject(), &plan.channel, deadline, || async {
            Attempt::retry_on_quorum(self.record(plan, call.clone()).await)
        })
        .await
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
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// quorate::Latch::new(&q, "boot", 3).wait().await?;
    /// // all three shards counted down
    /// # Ok(()) }
    /// ```
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
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let boot = quorate::Latch::new(&q, "boot", 3);
    /// if let Err(e) = boot.wait_timeout(std::time::Duration::from_secs(30)).await {
    ///     assert!(e.is_timeout() || e.is_quorum());
    /// }
    /// # Ok(()) }
    /// ```
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
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> quorate::Result<()> {
    /// # let servers = quorate::testkit::ServerGroup::start(1).unwrap();
    /// # let q = quorate::Quorum::connect(servers.urls()).await?;
    /// let boot = quorate::Latch::new(&q, "boot", 3);
    /// boot.count_down().await?;
    /// assert_eq!(boot.count().await?, 2);
    /// # Ok(()) }
    /// ```
    pub async fn count(&self) -> Result<u32> {
        self.remaining(self.plan()?).await
    }

    fn plan(&self) -> Result<&Plan> {
        self.plan.as_ref().map_err(Clone::clone)
    }

    fn subject(&self) -> Subject<'_> {
        Subject::new("latch", &self.name)
    }

    async fn wait_inner(&self, timeout: Option<Duration>) -> Result<()> {
        let plan = self.plan()?;
        let nodes = self.quorum.nodes();
        engine::wait_for(nodes, self.subject(), &plan.channel, timeout, || async {
            match Attempt::retry_on_quorum(self.remaining(plan).await)? {
                Attempt::Done(0) => Ok(Attempt::Done(())),
                Attempt::Done(_) => Ok(Attempt::Busy { retry_after: None }),
                other => Ok(other.map(|_| ())),
            }
        })
        .await
    }

    fn count_down_call(&self, plan: &Plan, ids: &[&str]) -> Call {
        let mut inv = invocation(&scripts::LATCH_COUNT_DOWN, &[&plan.ids, &plan.state]);
        inv.arg(self.count)
            .arg(plan.timing.ttl_ms())
            .arg(&plan.channel)
            .arg(ids);
        Call::new(inv)
    }

    /// Records count-downs on a majority.
    async fn record(&self, plan: &Plan, call: Call) -> Result<()> {
        let nodes = self.quorum.nodes();
        engine::write(nodes, call, plan.timing.node_timeout, &self.name).await
    }

    /// Count-downs missing, by a majority read; 0 only once the ids that
    /// make it open are durable on a majority.
    async fn remaining(&self, plan: &Plan) -> Result<u32> {
        let mut inv = invocation(&scripts::LATCH_READ, &[&plan.ids, &plan.state]);
        inv.arg(self.count);
        let nodes = self.quorum.nodes();
        let timeout = plan.timing.node_timeout;
        let round = engine::read(nodes, Call::recall(inv), timeout, &self.name).await?;
        if round.yes().any(|(_, p)| p.int(0) == Some(1)) {
            return Ok(0);
        }
        let ids: BTreeSet<String> = round.yes().flat_map(|(_, p)| p.strings_from(1)).collect();
        let missing = self.count.saturating_sub(ids.len() as u32);
        if missing > 0 {
            return Ok(missing);
        }
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.record(plan, self.count_down_call(plan, &ids)).await?;
        self.seal(plan);
        Ok(0)
    }

    /// Marks the latch open on every node, in the background: a majority
    /// holds its ids now, so a reader may trust the mark alone.
    fn seal(&self, plan: &Plan) {
        let mut inv = invocation(&scripts::LATCH_SEAL, &[&plan.ids, &plan.state]);
        inv.arg(self.count).arg(plan.timing.ttl_ms());
        let nodes = self.quorum.nodes();
        let all = (0..nodes.len()).collect();
        engine::spread(nodes, Call::new(inv), all, plan.timing.node_timeout);
    }
}

/// The keys and timing of a latch, checked.
fn plan(quorum: &Quorum, name: &str, count: u32, ttl: Duration) -> Result<Plan> {
    if count == 0 || count > Latch::MAX_COUNT {
        return Err(E::argument(
            "count",
            format!("{count} is outside 1..={}", Latch::MAX_COUNT),
        ));
    }
    let config = quorum.config();
    let timing = config.state_timing(ttl)?;
    let keys = Keys::new(&config.key_prefix, name)?;
    Ok(Plan {
        state: keys.sibling("count")?,
        channel: keys.sibling("ready")?,
        ids: keys.main,
        timing,
    })
}
