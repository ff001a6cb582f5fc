//! The barrier check: full generations, one leader each, no release before
//! the last arrival, no wait both released and broken.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Event, Timeline, Violation};

/// One wait's outcome: who, when, and (for a release) which generation.
#[derive(Debug, Clone, Copy)]
struct Outcome<'a> {
    party: &'a str,
    at: Instant,
    generation: u64,
    leader: bool,
}

/// One barrier's events.
#[derive(Debug, Default)]
struct Barrier<'a> {
    /// Each party's arrival invokes, sorted.
    arrivals: BTreeMap<&'a str, Vec<Instant>>,
    /// Releases by generation.
    released: BTreeMap<u64, Vec<Outcome<'a>>>,
    broken: Vec<(&'a str, Instant)>,
    /// Waits that ended without a known outcome: (arrival, end).
    unknown: Vec<(Instant, Instant)>,
}

impl Barrier<'_> {
    /// Which of `party`'s waits ended at `at`: the index of its latest
    /// arrival invoked at or before `at` (a party waits one wait at a time).
    /// `None` when no arrival was recorded: then all its outcomes count as
    /// one wait.
    fn wait_of(&self, party: &str, at: Instant) -> Option<usize> {
        let arrivals = self.arrivals.get(party)?;
        arrivals.partition_point(|&a| a <= at).checked_sub(1)
    }

    fn arrival(&self, party: &str, at: Instant) -> Option<Instant> {
        let i = self.wait_of(party, at)?;
        self.arrivals.get(party).map(|a| a[i])
    }

    /// Waits of unknown outcome that could have been part of a generation:
    /// they arrived before its last release and ended after its first
    /// arrival.
    fn could_belong(&self, released: &[Outcome<'_>]) -> usize {
        let last_release = released.iter().map(|o| o.at).max();
        let first_arrival = released
            .iter()
            .filter_map(|o| self.arrival(o.party, o.at))
            .min();
        let (Some(last), Some(first)) = (last_release, first_arrival) else {
            return self.unknown.len();
        };
        self.unknown
            .iter()
            .filter(|&&(arrived, ended)| arrived <= last && ended >= first)
            .count()
    }
}

/// All barrier checks for `resource`.
pub(super) fn check(
    resource: &str,
    parties: u32,
    all_or_none: bool,
    events: &[Event],
    time: Timeline,
) -> Vec<Violation> {
    let barrier = collect(resource, events);
    let mut out = Vec::new();
    for (&generation, released) in &barrier.released {
        // Safety only: as if every missing party's outcome were unknown.
        let unknown = if all_or_none {
            barrier.could_belong(released)
        } else {
            parties as usize
        };
        let problems = [
            full(generation, parties, released, unknown),
            one_leader(generation, released, unknown),
            after_last_arrival(generation, released, &barrier, time),
        ];
        out.extend(problems.into_iter().flatten());
    }
    out.extend(broken_not_released(&barrier, time));
    out.into_iter()
        .map(|detail| Violation::new("barrier", resource, detail))
        .collect()
}

fn collect<'a>(resource: &str, events: &'a [Event]) -> Barrier<'a> {
    let mut b = Barrier::default();
    let mut unknown = Vec::new();
    for event in events {
        match event {
            Event::Arrived {
                resource: r,
                party,
                invoked,
            } if r == resource => b.arrivals.entry(party).or_default().push(*invoked),
            Event::BarrierReleased {
                resource: r,
                party,
                generation,
                leader,
                at,
            } if r == resource => b.released.entry(*generation).or_default().push(Outcome {
                party,
                at: *at,
                generation: *generation,
                leader: *leader,
            }),
            Event::BarrierBroken {
                resource: r,
                party,
                at,
            } if r == resource => b.broken.push((party, *at)),
            Event::BarrierUnknown {
                resource: r,
                party,
                at,
            } if r == resource => unknown.push((party.as_str(), *at)),
            _ => {}
        }
    }
    for arrivals in b.arrivals.values_mut() {
        arrivals.sort();
    }
    b.unknown = unknown
        .into_iter()
        .map(|(party, at)| (b.arrival(party, at).unwrap_or(at), at))
        .collect();
    b
}

fn names(released: &[Outcome<'_>]) -> String {
    let names: Vec<&str> = released.iter().map(|o| o.party).collect();
    names.join(", ")
}

/// Exactly `parties` waiters released per generation: never more, and
/// fewer only by as many waits of unknown outcome as could belong to it.
fn full(generation: u64, parties: u32, released: &[Outcome<'_>], unknown: usize) -> Option<String> {
    let n = released.len();
    let wrong = n > parties as usize || n + unknown < parties as usize;
    wrong.then(|| {
        format!(
            "generation {generation} released {} waiters, not {parties}: {}",
            released.len(),
            names(released)
        )
    })
}

/// Exactly one leader per generation: never two, and none only when a wait
/// of unknown outcome could have been the leader.
fn one_leader(generation: u64, released: &[Outcome<'_>], unknown: usize) -> Option<String> {
    let leaders: Vec<Outcome<'_>> = released.iter().filter(|o| o.leader).copied().collect();
    (leaders.len() > 1 || leaders.is_empty() && unknown == 0).then(|| {
        format!(
            "generation {generation} has {} leaders: [{}]",
            leaders.len(),
            names(&leaders)
        )
    })
}

/// No waiter of a generation returns before the last of its members
/// invoked its arrival.
fn after_last_arrival(
    generation: u64,
    released: &[Outcome<'_>],
    barrier: &Barrier<'_>,
    time: Timeline,
) -> Option<String> {
    let (last, arriver) = released
        .iter()
        .filter_map(|o| Some((barrier.arrival(o.party, o.at)?, o.party)))
        .max()?;
    let early = released
        .iter()
        .filter(|o| o.at < last)
        .min_by_key(|o| o.at)?;
    Some(format!(
        "generation {generation}: {} was released at {}, before {arriver} arrived at {}",
        early.party,
        time.at(early.at),
        time.at(last)
    ))
}

/// A wait that broke was not also released.
fn broken_not_released(barrier: &Barrier<'_>, time: Timeline) -> Vec<String> {
    let released: BTreeMap<(&str, Option<usize>), u64> = barrier
        .released
        .values()
        .flatten()
        .map(|o| ((o.party, barrier.wait_of(o.party, o.at)), o.generation))
        .collect();
    barrier
        .broken
        .iter()
        .filter_map(|&(party, at)| {
            let generation = released.get(&(party, barrier.wait_of(party, at)))?;
            Some(format!(
                "{party}'s wait broke at {} but was also released (generation {generation})",
                time.at(at)
            ))
        })
        .collect()
}
