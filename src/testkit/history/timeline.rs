//! The history as readable text: one line per event, times from the first.

use std::fmt;

use super::claims::hold_text;
use super::{Event, History, Timeline};

impl fmt::Display for History {
    /// One line per event in recording order, for a failing test to print
    /// next to its [`Violation`](super::Violation)s.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let events = self.lock().events.clone();
        let time = Timeline::of(&events);
        for event in &events {
            line(f, event, time)?;
            writeln!(f)?;
        }
        Ok(())
    }
}

fn line(f: &mut fmt::Formatter<'_>, event: &Event, time: Timeline) -> fmt::Result {
    match event {
        Event::Lease(l) => write!(
            f,
            "{} {} lease {} {:?} holder {} token {} permits {} until {}",
            time.at(l.granted),
            l.resource,
            l.id,
            l.kind,
            l.holder,
            l.token.map_or("none".to_owned(), |t| t.to_string()),
            l.permits,
            time.at(l.deadline)
        ),
        Event::Invoked { id, at } => write!(f, "{} lease {id} acquire invoked", time.at(*at)),
        Event::Extended { id, deadline } => {
            write!(f, "lease {id} extended until {}", time.at(*deadline))
        }
        Event::Released { id, at } => write!(f, "{} lease {id} released", time.at(*at)),
        Event::Lost { id, at } => write!(f, "{} lease {id} lost", time.at(*at)),
        Event::Sampled { id, sample } => {
            let nodes: Vec<String> = sample.nodes.iter().map(|h| hold_text(*h, time)).collect();
            write!(
                f,
                "{} lease {id} claims until {}; nodes by {}: {}",
                time.at(sample.at),
                time.at(sample.deadline),
                time.at(sample.read_by),
                nodes.join(", ")
            )
        }
        Event::NodeLost { node, at } => write!(f, "{} node {node} lost its data", time.at(*at)),
        Event::Failed {
            resource,
            op,
            error,
            at,
        } => write!(f, "{} {resource} {op} failed: {error}", time.at(*at)),
        _ => sync_line(f, event, time),
    }
}

/// The latch and barrier events.
fn sync_line(f: &mut fmt::Formatter<'_>, event: &Event, time: Timeline) -> fmt::Result {
    match event {
        Event::CountDown {
            resource,
            id,
            invoked,
            ok,
        } => {
            let how = if *ok { "ok" } else { "failed" };
            write!(f, "{} {resource} count-down {id} {how}", time.at(*invoked))
        }
        Event::LatchObserved { resource, open, at } => {
            let how = if *open { "open" } else { "closed" };
            write!(f, "{} {resource} seen {how}", time.at(*at))
        }
        Event::Arrived {
            resource,
            party,
            invoked,
        } => write!(f, "{} {resource} {party} arrives", time.at(*invoked)),
        Event::BarrierReleased {
            resource,
            party,
            generation,
            leader,
            at,
        } => {
            let how = if *leader { " as leader" } else { "" };
            write!(
                f,
                "{} {resource} {party} released in generation {generation}{how}",
                time.at(*at)
            )
        }
        Event::BarrierBroken {
            resource,
            party,
            at,
        } => write!(f, "{} {resource} {party} broken", time.at(*at)),
        Event::BarrierUnknown {
            resource,
            party,
            at,
        } => write!(f, "{} {resource} {party} outcome unknown", time.at(*at)),
        _ => Ok(()),
    }
}
