//! The cyclic barrier.
//!
//! # Implementation details
//!
//! Counting arrivals per node and taking each party's majority is the
//! semaphore's pigeonhole trap again: with three nodes and two parties,
//! parties that each miss a different node can fill a generation on every
//! node with different pairs, and three go through. So the barrier decides
//! each generation once, on a majority:
//!
//! - **Outcome.** Every node keeps, per generation, a register that takes
//!   the first outcome written and keeps it. An outcome is `broken`, or the
//!   list of exactly `parties` members in seat order. A waiter acts on an
//!   outcome only when a majority of nodes holds the same one. Two
//!   majorities share a node, so a generation has at most one outcome: at
//!   most `parties` waiters are released, one of them (the first member) is
//!   the leader, and no waiter is both released and broken.
//! - **Seats.** A list is proposed only when each of its seats was seen
//!   held by the same party on a majority of nodes, so every member had
//!   arrived. A node gives a seat to one party at a time, so proposals
//!   agree and the first one decides on every node; a party that holds a
//!   seat on too few nodes asks for a seat free on enough of them, leaving
//!   its old one.
//! - **Breaking.** A waiter whose deadline passes proposes `broken`. If the
//!   generation was complete, the members' list may win instead, and then
//!   that waiter is released after all.
//!
//! The current generation of a node is only where an arrival that names
//! none starts; a party then names the generation a majority of nodes has
//! reached. Decisions are written to every node, and a released waiter
//! writes its outcome to the nodes that missed it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Timing;
use crate::engine::{self, Call, Payload, Reply, Round, backoff, invocation, random_unit, scripts};
use crate::error::{Error, Result};
use crate::key::Keys;
use crate::lease::owner_token;
use crate::observe::{self, Subject};
use crate::quorum::Quorum;

/// A distributed cyclic barrier: `parties` waiters across processes block
/// until the last one arrives, then all are released together and the
/// barrier is ready for the next generation. "Workers in lock-step phases."
///
/// # Guarantees
///
/// A generation releases at most `parties` waiters, only after each of them
/// arrived, with exactly one leader among them
/// ([`BarrierWaitResult::is_leader`]), whatever subsets of the nodes each
/// client reaches. A waiter whose [`wait_timeout`](Self::wait_timeout)
/// runs out breaks the generation: every waiter of that generation gets
/// [`Error::BrokenBarrier`] (none is released) unless the generation
/// completed first, and the next generation starts with no arrivals.
///
/// Each generation's outcome is written once on every node and counts when
/// a majority holds it, so with a node down the barrier keeps working. When
/// clients see different nodes, a waiter that cannot read a majority's
/// outcome in time fails with [`Error::Timeout`] or [`Error::Quorum`]: its
/// generation may have been released without it.
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
    keys: Result<BarrierKeys>,
}

/// What [`Barrier::wait`] returns: the generation released, and whether
/// this waiter is its leader.
///
/// ```no_run
/// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
/// let result = quorate::Barrier::new(&q, "phase", 4).wait().await?;
/// println!("generation {} released, leader: {}", result.generation(), result.is_leader());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarrierWaitResult {
    leader: bool,
    generation: u64,
}

impl BarrierWaitResult {
    /// True for exactly one waiter of each generation.
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// if quorate::Barrier::new(&q, "phase", 4).wait().await?.is_leader() {
    ///     // merge the four parts, once per generation
    /// }
    /// # Ok(()) }
    /// ```
    pub fn is_leader(&self) -> bool {
        self.leader
    }

    /// The generation released, counting from 0.
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let phase = quorate::Barrier::new(&q, "phase", 4);
    /// let first = phase.wait().await?.generation();
    /// assert_eq!(phase.wait().await?.generation(), first + 1);
    /// # Ok(()) }
    /// ```
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl Barrier {
    /// How long the state lives after the last arrival, by default.
    ///
    /// ```
    /// assert_eq!(quorate::Barrier::DEFAULT_TTL, std::time::Duration::from_secs(3600));
    /// ```
    pub const DEFAULT_TTL: Duration = Duration::from_secs(60 * 60);
    /// Most parties one barrier may have.
    ///
    /// ```
    /// assert_eq!(quorate::Barrier::MAX_PARTIES, 10_000);
    /// ```
    pub const MAX_PARTIES: u32 = 10_000;

    /// A barrier called `name` for `parties` waiters.
    ///
    /// Checked at the first call: `parties` must be in
    /// `2..=`[`MAX_PARTIES`](Self::MAX_PARTIES) ([`Error::InvalidArgument`]
    /// otherwise, and nothing is sent).
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// let phase = quorate::Barrier::new(&q, "phase", 4);
    /// # }
    /// ```
    pub fn new(quorum: &Quorum, name: impl Into<String>, parties: u32) -> Barrier {
        let name = name.into();
        Barrier {
            keys: keys(quorum, &name, parties, Self::DEFAULT_TTL),
            quorum: quorum.clone(),
            name,
            parties,
            ttl: Self::DEFAULT_TTL,
        }
    }

    /// Sets how long the state lives after the last arrival. Defaults to one
    /// hour.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// let phase = quorate::Barrier::new(&q, "phase", 4).with_ttl(std::time::Duration::from_secs(600));
    /// # }
    /// ```
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Barrier {
        self.ttl = ttl;
        self.keys = keys(&self.quorum, &self.name, self.parties, ttl);
        self
    }

    /// The resource name.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// assert_eq!(quorate::Barrier::new(&q, "phase", 4).name(), "phase");
    /// # }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of parties per generation.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// assert_eq!(quorate::Barrier::new(&q, "phase", 4).parties(), 4);
    /// # }
    /// ```
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
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> quorate::Result<()> {
    /// # let servers = quorate::testkit::ServerGroup::start(1).unwrap();
    /// # let q = quorate::Quorum::connect(servers.urls()).await?;
    /// let phase = quorate::Barrier::new(&q, "phase", 2);
    /// let other = tokio::spawn({
    ///     let phase = phase.clone();
    ///     async move { phase.wait().await }
    /// });
    /// let mine = phase.wait().await?;
    /// let theirs = other.await.unwrap()?;
    /// assert_ne!(mine.is_leader(), theirs.is_leader());
    /// # Ok(()) }
    /// ```
    pub async fn wait(&self) -> Result<BarrierWaitResult> {
        self.wait_inner(None).await
    }

    /// Arrives and waits at most `timeout`; at the deadline, breaks the
    /// generation unless it completed.
    ///
    /// # Errors
    ///
    /// [`Error::BrokenBarrier`] when the generation broke (by this waiter's
    /// timeout or another's); [`Error::Timeout`] or [`Error::Quorum`] when
    /// no majority's outcome could be read by the deadline; otherwise as
    /// [`wait`](Self::wait).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`wait`](Self::wait).
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let phase = quorate::Barrier::new(&q, "phase", 4);
    /// match phase.wait_timeout(std::time::Duration::from_secs(30)).await {
    ///     Ok(result) => println!("released generation {}", result.generation()),
    ///     Err(quorate::Error::BrokenBarrier) => println!("a party did not come"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<BarrierWaitResult> {
        self.wait_inner(Some(timeout)).await
    }

    async fn wait_inner(&self, timeout: Option<Duration>) -> Result<BarrierWaitResult> {
        let subject = Subject::new("barrier", &self.name);
        observe::waiting(subject, self.arrive_and_wait(timeout)).await
    }

    async fn arrive_and_wait(&self, timeout: Option<Duration>) -> Result<BarrierWaitResult> {
        let party = Party {
            barrier: self,
            keys: self.keys.as_ref().map_err(Clone::clone)?,
            id: owner_token(),
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        let nodes = self.quorum.nodes();
        let watch = nodes.notifier().watch(&party.keys.channel).await;
        let state = Mutex::new(Seating::default());
        let mut pause = 0u32;
        loop {
            let notified = watch.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let seating = *state.lock().unwrap();
            let views = party.arrive(seating).await;
            match party.settle(views, &state).await {
                Step::Done(result) => return result,
                Step::Again => continue,
                Step::Wait(e) => {
                    if let Some(d) = deadline
                        && Instant::now() >= d
                    {
                        let generation = state.lock().unwrap().generation;
                        return party
                            .give_up(generation, e, timeout.unwrap_or_default())
                            .await;
                    }
                    let backoff = backoff(nodes.config(), pause);
                    let wake = deadline.map_or(Instant::now() + backoff, |d| {
                        d.min(Instant::now() + backoff)
                    });
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(wake.into()) => {}
                    }
                    pause = pause.saturating_add(1);
                }
            }
        }
    }
}

/// The keys and timing of a barrier, checked.
fn keys(quorum: &Quorum, name: &str, parties: u32, ttl: Duration) -> Result<BarrierKeys> {
    if !(2..=Barrier::MAX_PARTIES).contains(&parties) {
        return Err(Error::argument(
            "parties",
            format!("{parties} is outside 2..={}", Barrier::MAX_PARTIES),
        ));
    }
    let config = quorum.config();
    let timing = config.state_timing(ttl)?;
    let keys = Keys::new(&config.key_prefix, name)?;
    Ok(BarrierKeys {
        channel: keys.sibling("ready")?,
        state: keys.main,
        timing,
    })
}

#[derive(Debug, Clone)]
struct BarrierKeys {
    state: String,
    channel: String,
    timing: Timing,
}

/// Where a party stands: the generation it is in (none until the first
/// round names one) and what it asks the nodes for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Seating {
    generation: Option<u64>,
    ask: Ask,
}

/// What a party asks each node for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Ask {
    /// Keep its seat there, or take the first free one.
    #[default]
    First,
    /// This seat (leaving another it holds there).
    Seat(u32),
    /// Leave its seat.
    Leave,
}

impl Ask {
    fn arg(self) -> String {
        match self {
            Ask::First => String::new(),
            Ask::Seat(s) => s.to_string(),
            Ask::Leave => "-1".to_owned(),
        }
    }
}

/// What the wait loop does after a round.
enum Step {
    Done(Result<BarrierWaitResult>),
    /// Act again at once (a new seat, a new generation).
    Again,
    /// Wait for news; the error says why, if the round fell short.
    Wait(Option<Error>),
}

/// One waiter's arrival.
struct Party<'a> {
    barrier: &'a Barrier,
    keys: &'a BarrierKeys,
    id: String,
}

impl Party<'_> {
    fn quorum(&self) -> &Quorum {
        &self.barrier.quorum
    }

    /// Takes or reads a seat on every node.
    async fn arrive(&self, seating: Seating) -> Round {
        let mut inv = invocation(&scripts::BARRIER_ARRIVE, &[&self.keys.state]);
        inv.arg(&self.id)
            .arg(self.barrier.parties)
            .arg(
                seating
                    .generation
                    .map(|g| g.to_string())
                    .unwrap_or_default(),
            )
            .arg(seating.ask.arg())
            .arg(self.keys.timing.ttl_ms())
            .arg(&self.keys.channel)
            .arg(u8::from(self.quorum().node_count() == 1));
        let timeout = self.keys.timing.node_timeout;
        engine::gather(self.quorum().nodes(), Call::recall(inv), timeout).await
    }

    /// Proposes an outcome on every node.
    async fn decide(&self, generation: u64, outcome: &str) -> Round {
        let call = self.decide_call(generation, outcome, &self.id);
        let timeout = self.keys.timing.node_timeout;
        engine::gather(self.quorum().nodes(), call, timeout).await
    }

    /// The proposal of `outcome`, replying about `party`'s membership.
    fn decide_call(&self, generation: u64, outcome: &str, party: &str) -> Call {
        let mut inv = invocation(&scripts::BARRIER_DECIDE, &[&self.keys.state]);
        inv.arg(generation)
            .arg(outcome)
            .arg(party)
            .arg(self.barrier.parties)
            .arg(self.keys.timing.ttl_ms())
            .arg(&self.keys.channel);
        Call::recall(inv)
    }

    /// Acts on a round's answers: returns, moves on, or waits. A proposal's
    /// answers are read the same way, once.
    async fn settle(&self, mut round: Round, state: &Mutex<Seating>) -> Step {
        let mut proposed = false;
        loop {
            let views = views(&round);
            let next = next(&views, self.barrier.parties, self.quorum().majority());
            match next {
                Next::Released { generation, leader } => {
                    self.repair(generation, &views);
                    return Step::Done(Ok(BarrierWaitResult { leader, generation }));
                }
                Next::Broken => return Step::Done(Err(Error::BrokenBarrier)),
                Next::Passed { generation } => {
                    self.repair(generation, &views);
                    *state.lock().unwrap() = Seating {
                        generation: Some(generation + 1),
                        ask: Ask::First,
                    };
                    return Step::Again;
                }
                Next::Propose {
                    generation,
                    outcome,
                } if !proposed => {
                    state.lock().unwrap().generation = Some(generation);
                    round = self.decide(generation, &outcome).await;
                    proposed = true;
                }
                Next::Propose { generation, .. } | Next::Wait { generation } => {
                    state.lock().unwrap().generation = Some(generation);
                    return Step::Wait(None);
                }
                Next::Sit { generation, seat } => {
                    let again = Seating {
                        generation: Some(generation),
                        ask: Ask::Seat(seat),
                    };
                    let mut current = state.lock().unwrap();
                    let repeat = *current == again;
                    *current = again;
                    // Asking again for the seat just asked for waits a
                    // little: the party in the way may be moving.
                    return if repeat {
                        Step::Wait(None)
                    } else {
                        Step::Again
                    };
                }
                Next::Yield { generation } => {
                    // Every seat it could take is contested: leave, and
                    // come back after a random pause, as colliding senders
                    // on a shared wire do, so one of the rivals gets ahead.
                    let leave = Seating {
                        generation: Some(generation),
                        ask: Ask::Leave,
                    };
                    self.arrive(leave).await;
                    let jitter = self.quorum().config().retry_jitter;
                    tokio::time::sleep(jitter.mul_f64(random_unit())).await;
                    *state.lock().unwrap() = Seating {
                        generation: Some(generation),
                        ask: Ask::First,
                    };
                    return Step::Again;
                }
                Next::Unavailable => {
                    let e = round.shortfall(&self.barrier.name);
                    return match e {
                        Error::Quorum(_) => Step::Wait(Some(e)),
                        other => Step::Done(Err(other)),
                    };
                }
            }
        }
    }

    /// Writes a majority's outcome to the nodes that missed it, in the
    /// background.
    fn repair(&self, generation: u64, views: &[Option<View>]) {
        let Some(outcome) = majority_outcome(views, generation, self.quorum().majority()) else {
            return;
        };
        let behind: Vec<usize> = views
            .iter()
            .enumerate()
            .filter(|(_, v)| !matches!(v, Some(View::Decided { outcome: o, .. }) if *o == outcome))
            .map(|(i, _)| i)
            .collect();
        let call = self.decide_call(generation, &outcome, "");
        let nodes = self.quorum().nodes();
        engine::spread(nodes, call, behind, self.keys.timing.node_timeout);
    }

    /// At the deadline: proposes `broken` for the party's generation and
    /// takes the majority's outcome, which may be a release.
    async fn give_up(
        &self,
        generation: Option<u64>,
        last: Option<Error>,
        timeout: Duration,
    ) -> Result<BarrierWaitResult> {
        let unknown = last.unwrap_or(Error::Timeout(timeout));
        let Some(generation) = generation else {
            return Err(unknown);
        };
        let round = self.decide(generation, BROKEN).await;
        let views = views(&round);
        match next(&views, self.barrier.parties, self.quorum().majority()) {
            Next::Released { generation, leader } => Ok(BarrierWaitResult { leader, generation }),
            Next::Broken => Err(Error::BrokenBarrier),
            _ => Err(unknown),
        }
    }
}

const BROKEN: &str = "broken";

/// One node's answer about a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum View {
    /// Still open there: the party's seat and every seat's holder ("" when
    /// free).
    Open {
        generation: u64,
        mine: Option<u32>,
        holders: Vec<String>,
    },
    /// Decided there: the outcome, the party's place among its members, and
    /// how many members it has (0 when broken).
    Decided {
        generation: u64,
        outcome: String,
        index: Option<u32>,
        members: u32,
    },
    /// Older than the node remembers.
    Forgotten { generation: u64 },
}

impl View {
    fn generation(&self) -> u64 {
        match self {
            View::Open { generation, .. }
            | View::Decided { generation, .. }
            | View::Forgotten { generation } => *generation,
        }
    }

    fn parse(p: &Payload) -> Option<View> {
        let generation = u64::try_from(p.int(0)?).ok()?;
        let seat = |v: Option<i64>| v.and_then(|s| u32::try_from(s).ok());
        Some(match p.int(1)? {
            0 => View::Open {
                generation,
                mine: seat(p.int(2)),
                holders: p.strings_from(3),
            },
            1 => View::Decided {
                generation,
                outcome: p.string(2)?,
                index: seat(p.int(3)),
                members: seat(p.int(4))?,
            },
            _ => View::Forgotten { generation },
        })
    }
}

fn views(round: &Round) -> Vec<Option<View>> {
    round
        .replies()
        .iter()
        .map(|r| match r {
            Some(Reply::Yes(p)) => View::parse(p),
            _ => None,
        })
        .collect()
}

/// What a party does next, given one round's views.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Next {
    /// A majority decided the generation with this party in it.
    Released { generation: u64, leader: bool },
    /// A majority decided it broken.
    Broken,
    /// A majority decided it without this party: on to the next one.
    Passed { generation: u64 },
    /// Every seat has a winner (or some node holds an outcome): write it.
    Propose { generation: u64, outcome: String },
    /// Ask for this seat.
    Sit { generation: u64, seat: u32 },
    /// Holds contested seats only, none free to move to: leave them.
    Yield { generation: u64 },
    /// Seated, or in nobody's way: wait for news.
    Wait { generation: u64 },
    /// Too few nodes answered.
    Unavailable,
}

/// The outcome a majority of views holds for `generation`.
fn majority_outcome(views: &[Option<View>], generation: u64, majority: usize) -> Option<String> {
    let decided: Vec<&String> = views
        .iter()
        .flatten()
        .filter_map(|v| match v {
            View::Decided {
                generation: g,
                outcome,
                ..
            } if *g == generation => Some(outcome),
            _ => None,
        })
        .collect();
    decided
        .iter()
        .find(|o| decided.iter().filter(|p| p == o).count() >= majority)
        .map(|o| (*o).clone())
}

/// Decides the next step from one round's views (see the module docs).
fn next(views: &[Option<View>], parties: u32, majority: usize) -> Next {
    let answered: Vec<&View> = views.iter().flatten().collect();
    if answered.len() < majority {
        return Next::Unavailable;
    }
    // The generation a majority of the answering nodes has reached.
    let mut gens: Vec<u64> = answered.iter().map(|v| v.generation()).collect();
    gens.sort_unstable();
    let generation = gens[majority - 1];
    let here: Vec<&View> = answered
        .into_iter()
        .filter(|v| v.generation() == generation)
        .collect();

    if let Some(outcome) = majority_outcome(views, generation, majority) {
        let view = here
            .iter()
            .find(|v| matches!(v, View::Decided { outcome: o, .. } if *o == outcome));
        return match view {
            Some(View::Decided { index: Some(i), .. }) => Next::Released {
                generation,
                leader: *i == 0,
            },
            Some(View::Decided { members: 0, .. }) => Next::Broken,
            _ => Next::Passed { generation },
        };
    }
    let forgotten = here
        .iter()
        .filter(|v| matches!(v, View::Forgotten { .. }))
        .count();
    if forgotten >= majority {
        return Next::Passed { generation };
    }

    let open: Vec<(Option<u32>, &[String])> = here
        .iter()
        .filter_map(|v| match v {
            View::Open { mine, holders, .. } => Some((*mine, holders.as_slice())),
            _ => None,
        })
        .collect();
    let seats = parties as usize;
    let holder_of = |seat: usize| {
        open.iter()
            .map(move |(_, h)| h.get(seat).map_or("", String::as_str))
    };
    let winner = |seat: usize| -> Option<&str> {
        holder_of(seat)
            .filter(|h| !h.is_empty())
            .find(|h| holder_of(seat).filter(|o| o == h).count() >= majority)
    };
    let winners: Vec<Option<&str>> = (0..seats).map(winner).collect();
    if winners.iter().all(Option::is_some) {
        let members: Vec<&str> = winners.into_iter().flatten().collect();
        return Next::Propose {
            generation,
            outcome: format!("done:{}", members.join(",")),
        };
    }
    if let Some(View::Decided { outcome, .. }) =
        here.iter().find(|v| matches!(v, View::Decided { .. }))
    {
        return Next::Propose {
            generation,
            outcome: outcome.clone(),
        };
    }
    choose_seat(&open, &winners, generation, majority)
}

/// A party that won a seat waits, once it holds that seat on every node
/// that answered. One not yet seated asks for the seat it can most likely
/// win: free (or its own) on a majority of the answering nodes, preferring
/// the one it holds on most, spreading racing parties at random. With none
/// to ask for, it leaves the contested seats it holds, or waits when it
/// holds none.
fn choose_seat(
    open: &[(Option<u32>, &[String])],
    winners: &[Option<&str>],
    generation: u64,
    majority: usize,
) -> Next {
    let held = |seat: usize| {
        open.iter()
            .filter(|(mine, _)| *mine == Some(seat as u32))
            .count()
    };
    if let Some(seat) = (0..winners.len()).find(|&s| held(s) >= majority) {
        // Won: take the same seat on the other nodes too, leaving the seats
        // it holds there, which no other party could win otherwise.
        let strays = open.iter().any(|(mine, _)| *mine != Some(seat as u32));
        return if strays {
            Next::Sit {
                generation,
                seat: seat as u32,
            }
        } else {
            Next::Wait { generation }
        };
    }
    let free = |seat: usize| {
        open.iter()
            .filter(|(mine, h)| {
                *mine == Some(seat as u32) || h.get(seat).is_none_or(String::is_empty)
            })
            .count()
    };
    let candidates: Vec<usize> = (0..winners.len())
        .filter(|&s| winners[s].is_none() && free(s) >= majority)
        .collect();
    let Some(best) = candidates.iter().map(|&s| (held(s), free(s))).max() else {
        let seated = open.iter().any(|(mine, _)| mine.is_some());
        return if seated {
            Next::Yield { generation }
        } else {
            Next::Wait { generation }
        };
    };
    let ties: Vec<usize> = candidates
        .into_iter()
        .filter(|&s| (held(s), free(s)) == best)
        .collect();
    let pick = ties[(random_unit() * ties.len() as f64) as usize % ties.len()];
    Next::Sit {
        generation,
        seat: pick as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(generation: u64, mine: Option<u32>, holders: &[&str]) -> Option<View> {
        Some(View::Open {
            generation,
            mine,
            holders: holders.iter().map(|h| (*h).to_owned()).collect(),
        })
    }

    fn decided(generation: u64, outcome: &str, index: Option<u32>) -> Option<View> {
        let members = outcome
            .strip_prefix("done:")
            .map_or(0, |m| m.split(',').count() as u32);
        Some(View::Decided {
            generation,
            outcome: outcome.to_owned(),
            index,
            members,
        })
    }

    #[test]
    fn a_seating_won_on_a_majority_per_seat_is_proposed() {
        // The pattern that let three through: x misses node 1, y node 2.
        let views = [
            open(0, None, &["x", "y"]),
            open(0, None, &["z", "y"]),
            open(0, None, &["x", "z"]),
        ];
        assert_eq!(
            next(&views, 2, 2),
            Next::Propose {
                generation: 0,
                outcome: "done:x,y".into()
            }
        );
    }

    #[test]
    fn one_outcome_on_a_majority_releases_its_members_only() {
        let views = [
            decided(4, "done:x,y", Some(1)),
            decided(4, "done:x,y", Some(1)),
            None,
        ];
        assert_eq!(
            next(&views, 2, 2),
            Next::Released {
                generation: 4,
                leader: false
            }
        );
        let views = [
            decided(4, "done:x,y", None),
            decided(4, "done:x,y", None),
            None,
        ];
        assert_eq!(next(&views, 2, 2), Next::Passed { generation: 4 });
        let views = [decided(4, "broken", None), decided(4, "broken", None), None];
        assert_eq!(next(&views, 2, 2), Next::Broken);
    }

    #[test]
    fn split_outcomes_decide_nothing() {
        let views = [
            decided(4, "done:x,y", Some(0)),
            decided(4, "broken", None),
            None,
        ];
        assert!(matches!(next(&views, 2, 2), Next::Propose { .. }));
    }

    #[test]
    fn an_outcome_one_node_holds_is_copied_to_the_others() {
        let views = [
            decided(4, "broken", None),
            open(4, Some(0), &["z", ""]),
            None,
        ];
        assert_eq!(
            next(&views, 2, 2),
            Next::Propose {
                generation: 4,
                outcome: "broken".into()
            }
        );
    }

    #[test]
    fn a_party_seated_on_too_few_nodes_asks_for_a_seat_it_can_win() {
        // z got seat 0 on node 1 only, seat 1 on node 2; seat 0 is x's.
        let views = [
            open(0, None, &["x", "y"]),
            open(0, Some(0), &["z", "y"]),
            open(0, Some(1), &["x", "z"]),
        ];
        // Every seat is won, by x and y: z is not in this generation.
        assert!(matches!(next(&views, 2, 2), Next::Propose { .. }));
        let views = [
            open(0, None, &["x", ""]),
            open(0, Some(0), &["z", ""]),
            open(0, None, &["x", ""]),
        ];
        assert_eq!(
            next(&views, 2, 2),
            Next::Sit {
                generation: 0,
                seat: 1
            }
        );
    }

    #[test]
    fn rivals_on_split_seats_with_nothing_free_yield() {
        // Two live nodes of three, each seating a and b the other way.
        let views = [
            open(0, Some(0), &["a", "b"]),
            open(0, Some(1), &["b", "a"]),
            None,
        ];
        assert_eq!(next(&views, 2, 2), Next::Yield { generation: 0 });
        // A party holding no seat just waits.
        let views = [open(0, None, &["a", "b"]), open(0, None, &["b", "a"]), None];
        assert_eq!(next(&views, 2, 2), Next::Wait { generation: 0 });
    }

    #[test]
    fn a_party_that_won_a_seat_takes_it_everywhere() {
        // p won seat 0 on nodes 0 and 1; on node 2 it holds seat 1, which
        // nobody else could then win.
        let views = [
            open(0, Some(0), &["p", ""]),
            open(0, Some(0), &["p", ""]),
            open(0, Some(1), &["q", "p"]),
        ];
        assert_eq!(
            next(&views, 2, 2),
            Next::Sit {
                generation: 0,
                seat: 0
            }
        );
    }

    #[test]
    fn a_seated_party_waits() {
        let views = [
            open(0, Some(1), &["", "z"]),
            open(0, Some(1), &["", "z"]),
            None,
        ];
        assert_eq!(next(&views, 2, 2), Next::Wait { generation: 0 });
    }

    #[test]
    fn the_generation_a_majority_reached_is_the_one_to_join() {
        let views = [
            open(3, Some(0), &["p", ""]),
            open(5, Some(0), &["p", ""]),
            open(5, Some(0), &["p", ""]),
        ];
        assert_eq!(next(&views, 2, 2), Next::Wait { generation: 5 });
    }

    #[test]
    fn too_few_answers_are_unavailable() {
        let views = [open(0, Some(0), &["p", ""]), None, None];
        assert_eq!(next(&views, 2, 2), Next::Unavailable);
    }
}
