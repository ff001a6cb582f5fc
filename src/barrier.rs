//! The cyclic barrier.

use std::time::{Duration, Instant};

use crate::client::Quorum;
use crate::config::Timing;
use crate::error::{Error, Result};
use crate::key::Keys;
use crate::latch::unavailable;
use crate::lease::owner_token;
use crate::mutex::Mutex;
use crate::quorum::{Attempt, Call, Round, invocation};
use crate::scripts;
use crate::wait::wait_for;

/// A distributed cyclic barrier: `parties` waiters across processes block
/// until the last one arrives, then all are released together and the
/// barrier is ready for the next generation. "Workers in lock-step phases."
///
/// # Guarantees
///
/// Each generation releases exactly `parties` waiters, only after the last
/// one arrives, and exactly one of them is the leader
/// ([`BarrierWaitResult::is_leader`]). A waiter whose
/// [`wait_timeout`](Self::wait_timeout) runs out breaks the generation: every
/// waiter of that generation gets [`Error::BrokenBarrier`] (none is
/// released) unless the generation completed first, and the next generation
/// starts with no arrivals.
///
/// On several nodes, each node decides each generation once (first decision
/// wins) and a waiter takes the decision of a majority. With a node down the
/// barrier keeps working; with nodes that saw different arrivals (a
/// partition during arrival) a generation waits until a majority agrees.
///
/// The state expires [`with_ttl`](Self::with_ttl) after the last arrival,
/// one hour by default.
///
/// # Examples
///
/// ```no_run
/// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
/// use quorate::Barrier;
///
/// let phase = Barrier::new(&q, "phase", 4);
/// let result = phase.wait().await?; // returns when all 4 have arrived
/// if result.is_leader() {
///     // exactly one of the 4 gets here per generation
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Barrier {
    quorum: Quorum,
    name: String,
    parties: u32,
    ttl: Duration,
}

/// What [`Barrier::wait`] returns: the generation released, and whether
/// this waiter is its leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarrierWaitResult {
    leader: bool,
    generation: u64,
}

impl BarrierWaitResult {
    /// True for exactly one waiter of each generation.
    pub fn is_leader(&self) -> bool {
        self.leader
    }

    /// The generation released, counting from 0.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// A generation's outcome, as a majority reads it.
enum Outcome {
    Released,
    Broken,
}

impl Barrier {
    /// How long the state lives after the last arrival, by default.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(60 * 60);
    /// Most parties one barrier may have.
    pub const MAX_PARTIES: u32 = 10_000;

    /// A barrier called `name` for `parties` waiters.
    ///
    /// Checked at the first call: `parties` must be in
    /// `2..=`[`MAX_PARTIES`](Self::MAX_PARTIES) ([`Error::InvalidArgument`]
    /// otherwise, and nothing is sent).
    pub fn new(quorum: &Quorum, name: impl Into<String>, parties: u32) -> Barrier {
        Barrier {
            quorum: quorum.clone(),
            name: name.into(),
            parties,
            ttl: Self::DEFAULT_TTL,
        }
    }

    /// Sets how long the state lives after the last arrival. Defaults to one
    /// hour.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Barrier {
        self.ttl = ttl;
        self
    }

    /// The resource name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of parties per generation.
    pub fn parties(&self) -> u32 {
        self.parties
    }

    /// Arrives and waits until all parties of this generation have.
    ///
    /// # Errors
    ///
    /// [`Error::BrokenBarrier`] when another waiter of the generation broke
    /// it; [`Error::ConfigMismatch`] when the barrier exists with another
    /// number of parties; bad input before any I/O.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: once arrived, the arrival counts even if the future
    /// is dropped, so the generation may be released one waiter short of
    /// the parties actually waiting. Use [`wait_timeout`](Self::wait_timeout)
    /// to give up cleanly.
    pub async fn wait(&self) -> Result<BarrierWaitResult> {
        self.wait_inner(None).await
    }

    /// Arrives and waits at most `timeout`; at the deadline, breaks the
    /// generation unless it completed.
    ///
    /// # Errors
    ///
    /// [`Error::BrokenBarrier`] when the generation broke (by this waiter's
    /// timeout or another's); [`Error::Quorum`] when the arrival could not
    /// reach a majority in time; otherwise as [`wait`](Self::wait).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`wait`](Self::wait).
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<BarrierWaitResult> {
        self.wait_inner(Some(timeout)).await
    }

    async fn wait_inner(&self, timeout: Option<Duration>) -> Result<BarrierWaitResult> {
        let (keys, timing) = self.keys()?;
        let started = Instant::now();
        let id = owner_token();
        let (generation, leader) = match self.arrive(&keys, timing, &id, timeout).await {
            Ok(arrival) => arrival,
            // The arrival may have landed where its replies were lost: break
            // the generation it joined, or learn that it completed.
            Err(e @ (Error::Timeout(_) | Error::Quorum(_))) if timeout.is_some() => {
                return match self.give_up(&keys, timing, None, &id).await {
                    Some(result) => result,
                    None => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let left = timeout.map(|t| t.saturating_sub(started.elapsed()));
        let outcome = wait_for(&self.quorum, &keys[2], left, || async {
            self.outcome(&keys, timing, generation).await
        })
        .await;
        match outcome {
            Ok(Outcome::Released) => Ok(BarrierWaitResult { leader, generation }),
            Ok(Outcome::Broken) => Err(Error::BrokenBarrier),
            // Without a majority decision the outcome is unknown: say so
            // with the error that ended the wait, not "broken".
            Err(e @ (Error::Timeout(_) | Error::Quorum(_))) if timeout.is_some() => self
                .give_up(&keys, timing, Some(generation), &id)
                .await
                .unwrap_or(Err(e)),
            Err(e) => Err(e),
        }
    }

    /// Arrives on a majority (retrying with the same id); returns the
    /// generation the majority put it in, and whether this arrival completed
    /// it (the leader).
    ///
    /// One node orders arrivals by itself. Several nodes would each order
    /// racing arrivals their own way and split a generation differently, so
    /// there arrivals take turns under a lock.
    async fn arrive(
        &self,
        keys: &[String; 4],
        timing: Timing,
        id: &str,
        timeout: Option<Duration>,
    ) -> Result<(u64, bool)> {
        let started = Instant::now();
        let turn = if self.quorum.node_count() > 1 {
            let lock = Mutex::internal(&self.quorum, keys[3].clone());
            Some(match timeout {
                Some(t) => lock.lock_timeout(t).await?,
                None => lock.lock().await?,
            })
        } else {
            None
        };
        let left = timeout.map(|t| t.saturating_sub(started.elapsed()));
        let arrival = self.arrive_in_turn(keys, timing, id, left).await;
        if let Some(turn) = turn {
            // Failing to release only delays the next arrival until the TTL.
            let _ = turn.release().await;
        }
        arrival
    }

    async fn arrive_in_turn(
        &self,
        keys: &[String; 4],
        timing: Timing,
        id: &str,
        timeout: Option<Duration>,
    ) -> Result<(u64, bool)> {
        let mut inv = invocation(&scripts::BARRIER_ARRIVE, &keys[..2]);
        inv.arg(id)
            .arg(self.parties)
            .arg(timing.ttl_ms())
            .arg(&keys[2]);
        let call = Call::new(inv);
        let parties = i64::from(self.parties);
        wait_for(&self.quorum, &keys[2], timeout, || async {
            let mut round = self
                .quorum
                .round_majority(call.clone(), timing.node_timeout)
                .await;
            // Every node hears this arrival before the turn passes on: the
            // next one goes over another connection and could overtake it on
            // a slow node, which would then split the generation otherwise.
            round.finish().await;
            if let Some(((Some(generation), Some(arrived)), _)) =
                round.agreed(|p| (p.int(0), p.int(1)))
            {
                return Ok(Attempt::Done((
                    generation.max(0) as u64,
                    arrived == parties,
                )));
            }
            match round.agreed(|p| p.int(0)) {
                Some((Some(generation), _)) => Ok(Attempt::Done((generation.max(0) as u64, false))),
                _ => Err(round.shortfall(&self.quorum, &self.name)).or_else(unavailable),
            }
        })
        .await
    }

    /// One majority read of a generation's outcome.
    async fn outcome(
        &self,
        keys: &[String; 4],
        timing: Timing,
        generation: u64,
    ) -> Result<Attempt<Outcome>> {
        let mut inv = invocation(&scripts::BARRIER_STATE, &keys[..1]);
        inv.arg(generation);
        let round = self.quorum.round_majority(inv, timing.node_timeout).await;
        match round.agreed(|p| p.int(0)) {
            Some((Some(1), _)) => {
                self.repair(keys, timing, generation, &round);
                Ok(Attempt::Done(Outcome::Released))
            }
            Some((Some(2), _)) => Ok(Attempt::Done(Outcome::Broken)),
            _ if round.granted() < self.quorum.majority() => {
                Err(round.shortfall(&self.quorum, &self.name)).or_else(unavailable)
            }
            _ => Ok(Attempt::Busy { retry_after: None }),
        }
    }

    /// Breaks the generation (the given one, or the one this party's arrival
    /// joined) on every node where it is undecided, then takes the majority's
    /// decision: it may have completed first. `None` when no majority
    /// decision can be read (too few nodes, or the arrival did not land).
    async fn give_up(
        &self,
        keys: &[String; 4],
        timing: Timing,
        generation: Option<u64>,
        id: &str,
    ) -> Option<Result<BarrierWaitResult>> {
        let settle = self.settle_call(keys, timing, generation, "broken", id);
        let round = self.quorum.round_all(settle, timing.node_timeout).await;
        let parties = i64::from(self.parties);
        let (decision, nodes) = round.agreed(|p| (p.int(0), p.int(1)))?;
        // Leader only if a majority recorded this arrival as the completing
        // one, as when the arrival's own round says so: one node's view
        // could crown a second leader.
        let completed = round
            .yes()
            .filter(|(i, p)| nodes.contains(i) && p.int(2) == Some(parties))
            .count();
        match decision {
            (Some(generation), Some(1)) => Some(Ok(BarrierWaitResult {
                leader: completed >= self.quorum.majority(),
                generation: generation.max(0) as u64,
            })),
            (Some(_), Some(2)) => Some(Err(Error::BrokenBarrier)),
            _ => None,
        }
    }

    /// Brings nodes that missed a released generation up to date, in the
    /// background, so they keep counting in step with the majority.
    fn repair(&self, keys: &[String; 4], timing: Timing, generation: u64, round: &Round) {
        let behind: Vec<usize> = round
            .yes()
            .filter(|(_, p)| p.int(0) == Some(0))
            .map(|(i, _)| i)
            .collect();
        if behind.is_empty() {
            return;
        }
        let settle = self.settle_call(keys, timing, Some(generation), "done", "");
        let quorum = self.quorum.clone();
        tokio::spawn(async move {
            // A node may look behind only because the last arrival is still
            // on its way there; give that arrival time to land first.
            tokio::time::sleep(timing.node_timeout * 4).await;
            quorum
                .round(settle, &behind, timing.node_timeout, usize::MAX)
                .await;
        });
    }

    fn settle_call(
        &self,
        keys: &[String; 4],
        timing: Timing,
        generation: Option<u64>,
        outcome: &str,
        party: &str,
    ) -> Call {
        let mut inv = invocation(&scripts::BARRIER_SETTLE, &keys[..2]);
        inv.arg(generation.map(|g| g.to_string()).unwrap_or_default())
            .arg(outcome)
            .arg(&keys[2])
            .arg(timing.ttl_ms())
            .arg(party);
        Call::new(inv)
    }

    /// The keys (state, arrivals, channel, turn lock) and timing, checked.
    fn keys(&self) -> Result<([String; 4], Timing)> {
        if self.parties < 2 || self.parties > Self::MAX_PARTIES {
            return Err(Error::argument(
                "parties",
                format!("{} is outside 2..={}", self.parties, Self::MAX_PARTIES),
            ));
        }
        let timing = self.quorum.config().timing(self.ttl)?;
        let keys = Keys::new(&self.quorum.config().key_prefix, &self.name)?;
        let names = [
            keys.main.clone(),
            keys.sibling("arrived")?,
            keys.sibling("ready")?,
            keys.sibling("turn")?,
        ];
        Ok((names, timing))
    }
}
