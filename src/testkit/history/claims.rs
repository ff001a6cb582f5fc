//! Checks of what guards claimed against what the servers held.
//!
//! The window checks only see an overlap when a second holder happens to
//! get in while the first one's window lasts. A guard whose keys expire
//! long before its deadline is unsafe whether or not anyone got in, so the
//! `claim` check compares each sampled deadline with the nodes' own
//! expiries: a majority of nodes must keep the key at least that long. The
//! `lost` check holds the guard to what `lost()` told its holder.

use std::time::{Duration, Instant};

use super::leases::Window;
use super::{Event, NodeHold, Sample, Timeline, Violation};

/// Allowance when comparing a node's expiry with a claimed deadline: the
/// server keeps whole milliseconds of its wall clock, which the sampler
/// maps to the monotonic clock. The library's own drift allowance (at least
/// 2 ms) keeps correct claims further away than this.
const SLACK: Duration = Duration::from_millis(1);

/// Every node data loss recorded: `(node, at)`.
pub(super) fn node_losses(events: &[Event]) -> Vec<(usize, Instant)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::NodeLost { node, at } => Some((*node, *at)),
            _ => None,
        })
        .collect()
}

/// Samples in which fewer than a majority of nodes cover the claimed
/// deadline; one violation per lease, for its first such sample.
pub(super) fn claims(
    resource: &str,
    ws: &[&Window<'_>],
    losses: &[(usize, Instant)],
    time: Timeline,
) -> Vec<Violation> {
    ws.iter()
        .filter_map(|w| {
            let short: Vec<&Sample> = w
                .samples
                .iter()
                .copied()
                .filter(|s| s.read_by < s.deadline)
                .filter(|s| covering(s, w.since(), losses) < majority(s))
                .collect();
            let first = short.first()?;
            let detail = format!(
                "{} claimed at {} to be valid until {}, but only {} of {} nodes held it that long \
                 ({}); {} of its {} samples fell short",
                w.describe(time),
                time.at(first.at),
                time.at(first.deadline),
                covering(first, w.since(), losses),
                first.nodes.len(),
                nodes(first, time),
                short.len(),
                w.samples.len()
            );
            Some(Violation::new("claim", resource, detail))
        })
        .collect()
}

/// Leases sampled valid after their `lost()` fired; one violation each.
pub(super) fn revived(resource: &str, ws: &[&Window<'_>], time: Timeline) -> Vec<Violation> {
    ws.iter()
        .filter_map(|w| {
            let lost = w.lost?;
            let later = w
                .samples
                .iter()
                .filter(|s| s.at > lost)
                .min_by_key(|s| s.at)?;
            let detail = format!(
                "{}: lost() fired at {}, then the guard said at {} it was valid until {}",
                w.describe(time),
                time.at(lost),
                time.at(later.at),
                time.at(later.deadline)
            );
            Some(Violation::new("lost", resource, detail))
        })
        .collect()
}

fn majority(s: &Sample) -> usize {
    s.nodes.len() / 2 + 1
}

/// Nodes that hold the key until the deadline, may do so unseen (no
/// answer), or lost their data since the lease's keys were written (the
/// restart quarantine keeps such a node out of other clients' votes).
fn covering(s: &Sample, since: Instant, losses: &[(usize, Instant)]) -> usize {
    let restarted = |n: usize| {
        losses
            .iter()
            .any(|&(node, at)| node == n && at >= since && at <= s.read_by)
    };
    s.nodes
        .iter()
        .enumerate()
        .filter(|&(n, hold)| covers(*hold, s.deadline) || restarted(n))
        .count()
}

fn covers(hold: NodeHold, deadline: Instant) -> bool {
    match hold {
        NodeHold::Until(None) | NodeHold::Unreachable => true,
        NodeHold::Until(Some(expiry)) => expiry + SLACK >= deadline,
        NodeHold::Missing => false,
    }
}

fn nodes(s: &Sample, time: Timeline) -> String {
    let each: Vec<String> = s
        .nodes
        .iter()
        .enumerate()
        .map(|(n, hold)| format!("node {n} {}", hold_text(*hold, time)))
        .collect();
    each.join(", ")
}

/// One node's hold, as the history's timeline prints it.
pub(super) fn hold_text(hold: NodeHold, time: Timeline) -> String {
    match hold {
        NodeHold::Until(Some(expiry)) => format!("until {}", time.at(expiry)),
        NodeHold::Until(None) => "without expiry".to_owned(),
        NodeHold::Missing => "missing".to_owned(),
        NodeHold::Unreachable => "unreachable".to_owned(),
    }
}
