//! Waiters of this process for one resource, in arrival order.
//!
//! Only the head of a resource's queue attempts on Redis; the others wait
//! here and cost nothing there, however many they are. When the head gets
//! the lease (or gives up), the next waiter becomes head. A lease of this
//! process released on that resource hands over to the head at once: the
//! release tells the head as soon as its requests are queued on the
//! connections, so the head's attempt follows the release on every node,
//! ahead of any new attempt from the releasing task.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Every resource's queue of this process (for one quorum).
#[derive(Debug, Default)]
pub(crate) struct Queues {
    queues: Mutex<HashMap<String, Arc<Queue>>>,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    next: u64,
    /// In arrival order; the first is the head.
    tickets: VecDeque<(u64, Arc<Notify>)>,
    /// A waiter of this process got the lease and has not released it:
    /// the head waits for that release rather than attempting in vain.
    held_here: bool,
}

/// A waiter's place in a queue; leaving it (drop) passes the head on.
#[derive(Debug)]
pub(crate) struct Ticket<'a> {
    queues: &'a Queues,
    key: String,
    queue: Arc<Queue>,
    id: u64,
    /// Woken when this ticket becomes head, and when a local release hands
    /// over to it as head.
    pub(crate) notify: Arc<Notify>,
    /// This waiter got the lease: the next head waits for its release.
    acquired: bool,
}

impl Queues {
    /// Joins the queue of `key`.
    pub(crate) fn join(&self, key: &str) -> Ticket<'_> {
        let queue = self
            .queues
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default()
            .clone();
        let notify = Arc::new(Notify::new());
        let id = {
            let mut waiting = queue.waiting.lock().unwrap();
            let id = waiting.next;
            waiting.next += 1;
            waiting.tickets.push_back((id, notify.clone()));
            id
        };
        Ticket {
            queues: self,
            key: key.to_owned(),
            queue,
            id,
            notify,
            acquired: false,
        }
    }

    /// A lease of this process on `key` was released: its queue's head may
    /// go now.
    pub(crate) fn released(&self, key: &str) {
        let queue = self.queues.lock().unwrap().get(key).cloned();
        if let Some(queue) = queue {
            let mut waiting = queue.waiting.lock().unwrap();
            waiting.held_here = false;
            if let Some((_, head)) = waiting.tickets.front() {
                head.notify_one();
            }
        }
    }
}

impl Ticket<'_> {
    /// True once this ticket is the head.
    pub(crate) fn is_head(&self) -> bool {
        self.queue
            .waiting
            .lock()
            .unwrap()
            .tickets
            .front()
            .map(|(id, _)| *id)
            == Some(self.id)
    }

    /// Marks that this waiter got the lease, before it leaves the queue.
    pub(crate) fn acquired(&mut self) {
        self.acquired = true;
    }

    /// Whether the lease is held by a waiter of this process that has not
    /// released it yet: then a new head waits for the release.
    pub(crate) fn held_here(&self) -> bool {
        self.queue.waiting.lock().unwrap().held_here
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut waiting = self.queue.waiting.lock().unwrap();
        let was_head = waiting.tickets.front().map(|(id, _)| *id) == Some(self.id);
        waiting.held_here |= self.acquired;
        waiting.tickets.retain(|(id, _)| *id != self.id);
        if waiting.tickets.is_empty() {
            drop(waiting);
            let mut queues = self.queues.queues.lock().unwrap();
            // Another waiter may have joined meanwhile; keep its queue.
            if queues.get(&self.key).is_some_and(|q| {
                Arc::ptr_eq(q, &self.queue) && q.waiting.lock().unwrap().tickets.is_empty()
            }) {
                queues.remove(&self.key);
            }
            return;
        }
        if was_head && let Some((_, next)) = waiting.tickets.front() {
            next.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_to_join_is_head_and_the_next_takes_over_when_it_leaves() {
        let queues = Queues::default();
        let first = queues.join("r");
        let second = queues.join("r");
        let other = queues.join("s");
        assert!(first.is_head() && !second.is_head() && other.is_head());
        drop(first);
        assert!(second.is_head());
        drop(second);
        drop(other);
        assert!(queues.queues.lock().unwrap().is_empty());
    }

    #[test]
    fn a_waiter_leaving_from_the_middle_keeps_the_order() {
        let queues = Queues::default();
        let a = queues.join("r");
        let b = queues.join("r");
        let c = queues.join("r");
        drop(b);
        drop(a);
        assert!(c.is_head());
    }
}
