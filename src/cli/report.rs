//! A resource over every node: what a quorum of them says, and each node's
//! own view, printed as text for people or JSON for scripts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;

use futures::future::join_all;
use serde::Serialize;

use super::nodes::Nodes;
use super::state::{self, Counts, Held, NodeState, ResourceKeys};

/// How to print.
#[derive(Debug, Clone, Copy)]
pub(super) struct Output {
    pub(super) json: bool,
}

impl Output {
    /// Prints a value as JSON (one line), or its text.
    pub(super) fn print<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) {
        let out = if self.json {
            serde_json::to_string(value).unwrap_or_default() + "\n"
        } else {
            text()
        };
        // Written, not printed: the library forbids print macros, and a
        // closed pipe (`quorate list | head`) is no error worth a panic.
        let mut stdout = std::io::stdout().lock();
        let _ = stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush());
    }
}

/// One resource on every node.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Report {
    pub(super) name: String,
    /// The kind most nodes show; `absent` when no node holds anything.
    pub(super) kind: &'static str,
    /// What a majority of the nodes says, in a sentence.
    pub(super) summary: String,
    pub(super) majority: usize,
    pub(super) nodes: Vec<NodeState>,
    /// Processes with a waiter subscribed to the resource's notifications,
    /// on the node where most are (`watch` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) waiting: Option<i64>,
}

impl Report {
    /// Reads `name` on every node.
    pub(super) async fn read(nodes: &Nodes, name: &str, keys: &ResourceKeys) -> Report {
        let states = join_all(nodes.nodes.iter().map(|n| state::read(n, keys))).await;
        Report::of(name, nodes.majority(), states)
    }

    fn of(name: &str, majority: usize, nodes: Vec<NodeState>) -> Report {
        let kind = most_common(
            nodes
                .iter()
                .map(|n| n.held.kind())
                .filter(|k| *k != "absent"),
        )
        .unwrap_or("absent");
        let mut report = Report {
            name: name.to_owned(),
            kind,
            summary: String::new(),
            majority,
            nodes,
            waiting: None,
        };
        report.summary = report.summarize();
        report
    }

    /// Nodes that answered.
    pub(super) fn answered(&self) -> usize {
        self.nodes.iter().filter(|n| n.answered()).count()
    }

    /// Some node holds something under the name.
    pub(super) fn found(&self) -> bool {
        self.kind != "absent"
    }

    /// Reads an absent resource as one of `kind` with nothing held: what a
    /// watch saw before, a lock released since.
    pub(super) fn absent_as(&mut self, kind: &'static str) {
        self.kind = kind;
        self.summary = self.summarize();
    }

    fn summarize(&self) -> String {
        let of = |k: usize| format!("{k} of {} nodes", self.nodes.len());
        match self.kind {
            "absent" => {
                let fences = self.nodes.iter().filter(|n| n.fence.is_some()).count();
                if fences > 0 {
                    format!("not held (a fencing counter on {})", of(fences))
                } else {
                    "not found".to_owned()
                }
            }
            "mutex" => self.mutex(&of),
            "semaphore" => self.semaphore(),
            "reentrant" => self.reentrant(&of),
            "latch" => self.latch(),
            "barrier" => self.barrier(),
            _ => "a key quorate did not write".to_owned(),
        }
    }

    fn mutex(&self, of: &dyn Fn(usize) -> String) -> String {
        let holders = tally(self.nodes.iter().filter_map(|n| match &n.held {
            Held::Mutex { holder } => Some(holder.clone()),
            _ => None,
        }));
        match holders.into_iter().max_by_key(|(_, k)| *k) {
            Some((holder, k)) if k >= self.majority => format!("held by {holder} on {}", of(k)),
            Some((holder, k)) => format!(
                "held by {holder} on {} only: not a majority ({} needed)",
                of(k),
                self.majority
            ),
            None => "not held".to_owned(),
        }
    }

    fn semaphore(&self) -> String {
        let mut capacity = None;
        let mut slots: BTreeMap<(u32, String), usize> = BTreeMap::new();
        for n in &self.nodes {
            if let Held::Semaphore {
                capacity: c,
                slots: held,
            } = &n.held
            {
                capacity = capacity.or(*c);
                for s in held {
                    *slots.entry((s.slot, s.holder.clone())).or_default() += 1;
                }
            }
        }
        let mut holders: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for ((slot, holder), k) in &slots {
            if *k >= self.majority {
                holders.entry(holder).or_default().push(*slot);
            }
        }
        let held: usize = holders.values().map(Vec::len).sum();
        let capacity = capacity.map_or("?".to_owned(), |c| c.to_string());
        let mut line = format!("{held} of {capacity} permits held on a majority");
        for (i, (holder, slots)) in holders.iter().enumerate() {
            let slots: Vec<String> = slots.iter().map(u32::to_string).collect();
            let sep = if i == 0 { ": " } else { ", " };
            let _ = write!(line, "{sep}{holder} (slot {})", slots.join(", "));
        }
        line
    }

    fn reentrant(&self, of: &dyn Fn(usize) -> String) -> String {
        let owners = tally(self.nodes.iter().filter_map(|n| match &n.held {
            Held::Reentrant { owner, holds } if *holds > 0 => Some((owner.clone(), *holds)),
            _ => None,
        }));
        match owners.into_iter().max_by_key(|(_, k)| *k) {
            Some(((owner, holds), k)) if k >= self.majority => {
                format!(
                    "held by owner {owner:?}, {}, on {}",
                    count(holds as usize, "hold"),
                    of(k)
                )
            }
            Some(((owner, _), k)) => format!("held by owner {owner:?} on {} only", of(k)),
            None => "not held".to_owned(),
        }
    }

    fn latch(&self) -> String {
        let mut count = None;
        let mut ids = BTreeSet::new();
        let mut sealed = false;
        for n in &self.nodes {
            if let Held::Latch {
                count: c,
                ids: seen,
                open,
            } = &n.held
            {
                count = count.or(*c);
                ids.extend(seen.iter().cloned());
                sealed |= open;
            }
        }
        let count = count.unwrap_or(0);
        let ids: Vec<String> = ids.into_iter().collect();
        let state = if sealed || ids.len() as u32 >= count {
            "open"
        } else {
            "closed"
        };
        format!(
            "{state}: {} of {count} count-downs ({})",
            ids.len(),
            ids.join(", ")
        )
    }

    fn barrier(&self) -> String {
        let mut generations: Vec<u64> = Vec::new();
        let mut parties = None;
        let mut last = None;
        for n in &self.nodes {
            if let Held::Barrier {
                parties: p,
                generation,
                last: l,
                ..
            } = &n.held
            {
                generations.push(*generation);
                parties = parties.or(*p);
                if l.is_some() {
                    last.clone_from(l);
                }
            }
        }
        generations.sort_unstable();
        // The generation a majority has reached, as the library reckons.
        let generation = generations
            .get(
                self.majority
                    .saturating_sub(1)
                    .min(generations.len().saturating_sub(1)),
            )
            .copied()
            .unwrap_or(0);
        let arrivals = self
            .nodes
            .iter()
            .filter_map(|n| match &n.held {
                Held::Barrier {
                    generation: g,
                    arrivals,
                    ..
                } if *g == generation => Some(arrivals.len()),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let parties = parties.map_or("?".to_owned(), |p| p.to_string());
        let mut line = format!("generation {generation}: {arrivals} of {parties} arrived");
        if let Some(o) = last {
            if o.broken {
                let _ = write!(line, "; generation {} broke", o.generation);
            } else {
                let leader = o.released.first().cloned().unwrap_or_default();
                let _ = write!(
                    line,
                    "; generation {} released {} (leader {leader})",
                    o.generation,
                    o.released.len()
                );
            }
        }
        line
    }

    /// The report as text: the summary, then one line per node.
    pub(super) fn text(&self) -> String {
        let mut out = if self.found() {
            format!("{} {}: {}\n", self.kind, self.name, self.summary)
        } else {
            format!("{}: {}\n", self.name, self.summary)
        };
        if let Some(w) = self.waiting {
            let _ = writeln!(out, "waiting: {w} process(es) subscribed");
        }
        let _ = writeln!(
            out,
            "  {:<22} {:<12} {:>8} {:>20}  {:<14} detail",
            "node", "counts", "ttl", "fence", "holder"
        );
        for n in &self.nodes {
            let _ = writeln!(out, "  {}", node_line(n));
        }
        out
    }
}

fn node_line(n: &NodeState) -> String {
    let counts = match &n.counts {
        Counts::Yes => "yes".to_owned(),
        Counts::Quarantined { left_ms } => format!("no ({:.1}s)", *left_ms as f64 / 1000.0),
        Counts::Replica => "no (replica)".to_owned(),
        Counts::Unreachable { error } => return format!("{:<22} unreachable: {error}", n.node),
    };
    let ttl = match n.ttl_ms {
        Some(ms) if ms >= 0 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(_) => "none".to_owned(),
        None => "-".to_owned(),
    };
    let fence = n.fence.map_or("-".to_owned(), |f| f.to_string());
    let (holder, detail) = held_text(&n.held);
    format!(
        "{:<22} {counts:<12} {ttl:>8} {fence:>20}  {holder:<14} {detail}",
        n.node
    )
}

/// The holder column and the detail column of one node.
fn held_text(held: &Held) -> (String, String) {
    match held {
        Held::Absent => ("-".into(), String::new()),
        Held::Mutex { holder } => (holder.clone(), String::new()),
        Held::Semaphore { capacity, slots } => {
            let holders: BTreeSet<&str> = slots.iter().map(|s| s.holder.as_str()).collect();
            let each: Vec<String> = slots
                .iter()
                .map(|s| {
                    format!(
                        "slot {} {} {:.1}s",
                        s.slot,
                        s.holder,
                        s.ttl_ms as f64 / 1000.0
                    )
                })
                .collect();
            let capacity = capacity.map_or("?".into(), |c| c.to_string());
            (
                count(holders.len(), "holder"),
                format!("{}/{capacity} slots: {}", slots.len(), each.join(", ")),
            )
        }
        Held::Reentrant { owner, holds } => (owner.clone(), count(*holds as usize, "hold")),
        Held::Latch { count, ids, open } => (
            format!("{}/{}", ids.len(), count.unwrap_or(0)),
            format!(
                "{}ids: {}",
                if *open { "open; " } else { "" },
                ids.join(", ")
            ),
        ),
        Held::Barrier {
            parties,
            generation,
            arrivals,
            ..
        } => (
            format!("{}/{}", arrivals.len(), parties.unwrap_or(0)),
            format!("generation {generation}: {}", arrivals.join(", ")),
        ),
        Held::Other { key_type } => ("-".into(), format!("a {key_type} key")),
    }
}

/// `n` and the word, plural but for one.
fn count(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn tally<T: Ord>(items: impl Iterator<Item = T>) -> BTreeMap<T, usize> {
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(item).or_default() += 1;
    }
    counts
}

fn most_common<T: Ord + Copy>(items: impl Iterator<Item = T>) -> Option<T> {
    tally(items)
        .into_iter()
        .max_by_key(|(_, k)| *k)
        .map(|(t, _)| t)
}
