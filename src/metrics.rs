//! Metrics (feature `metrics`) through the [`metrics`](https://docs.rs/metrics)
//! facade: install any recorder (Prometheus, StatsD, OpenTelemetry, ...)
//! and quorate's operations show up in it. Without a recorder they cost
//! next to nothing.
//!
//! Every name starts with `quorate_`; durations are in seconds. Labels:
//!
//! - `primitive`: `mutex`, `semaphore`, `reentrant`, `latch` or `barrier`;
//! - `node`: the node's address (`host:port`), on node metrics;
//! - `outcome`, where the table says so;
//! - `resource`: the resource name, only after
//!   [`label_resources(true)`](label_resources). One series per lock name
//!   can overwhelm a metrics store, so it is off by default.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | [`quorate_acquire_seconds`](ACQUIRE_SECONDS) | histogram | primitive | a granted acquisition attempt, from its first send to the grant |
//! | [`quorate_acquire_attempts_total`](ACQUIRE_ATTEMPTS) | counter | primitive, outcome | acquisition attempts: `granted`, `contended` (held by someone else), `unavailable` (too few nodes), `error` |
//! | [`quorate_wait_seconds`](WAIT_SECONDS) | histogram | primitive, outcome | a waiting call (`lock`, `acquire`, latch `count_down` and `wait`, barrier `wait`) from start to end: `done`, `timeout`, `error` |
//! | [`quorate_hold_seconds`](HOLD_SECONDS) | histogram | primitive | a lease from its grant to its release (or drop) |
//! | [`quorate_extensions_total`](EXTENSIONS) | counter | primitive, outcome | renewals and `extend` calls: `extended`, `failed` (too few nodes; a renewal is retried until the deadline) |
//! | [`quorate_leases_lost_total`](LEASES_LOST) | counter | primitive | leases lost before their release |
//! | [`quorate_script_reloads_total`](SCRIPT_RELOADS) | counter | script | scripts sent again in full after a node lost its script cache |
//! | [`quorate_node_errors_total`](NODE_ERRORS) | counter | node | node requests that failed (not connected, connection broken, error reply) |
//! | [`quorate_node_timeouts_total`](NODE_TIMEOUTS) | counter | node | node requests not answered within the per-node timeout |
//! | [`quorate_nodes_quarantined`](NODES_QUARANTINED) | gauge | node | 1 while a node presumed restarted sits out, 0 after |
//! | [`quorate_waiters`](WAITERS) | gauge | primitive | callers of this process queued for a resource |
//!
//! ```
//! // Any recorder works; this one keeps the values in memory.
//! let recorder = metrics_util::debugging::DebuggingRecorder::new();
//! let snapshotter = recorder.snapshotter();
//! metrics::with_local_recorder(&recorder, || {
//!     quorate::metrics::describe();
//! });
//! # let _ = snapshotter;
//! ```

use std::sync::atomic::{AtomicBool, Ordering};

use metrics::{Label, Unit, describe_counter, describe_gauge, describe_histogram};

/// Histogram: a granted acquisition attempt, from its first send to the
/// grant. Labels: `primitive`.
///
/// ```
/// assert_eq!(quorate::metrics::ACQUIRE_SECONDS, "quorate_acquire_seconds");
/// ```
pub const ACQUIRE_SECONDS: &str = "quorate_acquire_seconds";
/// Counter: acquisition attempts. Labels: `primitive`, `outcome`
/// (`granted`, `contended`, `unavailable`, `error`).
///
/// ```
/// assert!(quorate::metrics::ACQUIRE_ATTEMPTS.ends_with("_total"));
/// ```
pub const ACQUIRE_ATTEMPTS: &str = "quorate_acquire_attempts_total";
/// Histogram: a waiting call from its start to its end. Labels:
/// `primitive`, `outcome` (`done`, `timeout`, `error`).
///
/// ```
/// assert_eq!(quorate::metrics::WAIT_SECONDS, "quorate_wait_seconds");
/// ```
pub const WAIT_SECONDS: &str = "quorate_wait_seconds";
/// Histogram: a lease from its grant to its release or drop. Labels:
/// `primitive`.
///
/// ```
/// assert_eq!(quorate::metrics::HOLD_SECONDS, "quorate_hold_seconds");
/// ```
pub const HOLD_SECONDS: &str = "quorate_hold_seconds";
/// Counter: lease renewals and `extend` calls. Labels: `primitive`,
/// `outcome` (`extended`, `failed`). An extension that came after the
/// deadline loses the lease and counts in [`LEASES_LOST`].
///
/// ```
/// assert_eq!(quorate::metrics::EXTENSIONS, "quorate_extensions_total");
/// ```
pub const EXTENSIONS: &str = "quorate_extensions_total";
/// Counter: leases lost before their release. Labels: `primitive`.
///
/// ```
/// assert_eq!(quorate::metrics::LEASES_LOST, "quorate_leases_lost_total");
/// ```
pub const LEASES_LOST: &str = "quorate_leases_lost_total";
/// Counter: scripts sent again in full after a node lost its script
/// cache. Labels: `script`.
///
/// ```
/// assert_eq!(quorate::metrics::SCRIPT_RELOADS, "quorate_script_reloads_total");
/// ```
pub const SCRIPT_RELOADS: &str = "quorate_script_reloads_total";
/// Counter: node requests that failed other than by timing out. Labels:
/// `node`.
///
/// ```
/// assert_eq!(quorate::metrics::NODE_ERRORS, "quorate_node_errors_total");
/// ```
pub const NODE_ERRORS: &str = "quorate_node_errors_total";
/// Counter: node requests not answered within the per-node timeout.
/// Labels: `node`.
///
/// ```
/// assert_eq!(quorate::metrics::NODE_TIMEOUTS, "quorate_node_timeouts_total");
/// ```
pub const NODE_TIMEOUTS: &str = "quorate_node_timeouts_total";
/// Gauge: 1 while a node presumed restarted sits out of the vote. Labels:
/// `node`.
///
/// ```
/// assert_eq!(quorate::metrics::NODES_QUARANTINED, "quorate_nodes_quarantined");
/// ```
pub const NODES_QUARANTINED: &str = "quorate_nodes_quarantined";
/// Gauge: callers of this process queued for a resource. Labels:
/// `primitive`.
///
/// ```
/// assert_eq!(quorate::metrics::WAITERS, "quorate_waiters");
/// ```
pub const WAITERS: &str = "quorate_waiters";

static RESOURCE_LABELS: AtomicBool = AtomicBool::new(false);

/// Adds the resource name as a `resource` label to the metrics about
/// operations, from now on. Off by default: one series per resource name
/// can overwhelm a metrics store when names are many (one lock per order,
/// per user). Turn it on when names are few and fixed.
///
/// ```
/// quorate::metrics::label_resources(true);
/// # quorate::metrics::label_resources(false);
/// ```
pub fn label_resources(on: bool) {
    RESOURCE_LABELS.store(on, Ordering::Relaxed);
}

/// Registers a description and unit for every metric with the installed
/// recorder, for exporters that show them (Prometheus `# HELP`). Call it
/// once, after installing the recorder; metrics work without it.
///
/// ```
/// quorate::metrics::describe();
/// ```
pub fn describe() {
    describe_histogram!(
        ACQUIRE_SECONDS,
        Unit::Seconds,
        "granted acquisition attempt, first send to grant"
    );
    describe_counter!(ACQUIRE_ATTEMPTS, "acquisition attempts by outcome");
    describe_histogram!(WAIT_SECONDS, Unit::Seconds, "waiting call, start to end");
    describe_histogram!(HOLD_SECONDS, Unit::Seconds, "lease, grant to release");
    describe_counter!(EXTENSIONS, "lease renewals and extensions by outcome");
    describe_counter!(LEASES_LOST, "leases lost before their release");
    describe_counter!(
        SCRIPT_RELOADS,
        "scripts sent again after a node lost its script cache"
    );
    describe_counter!(NODE_ERRORS, "node requests that failed");
    describe_counter!(NODE_TIMEOUTS, "node requests not answered in time");
    describe_gauge!(NODES_QUARANTINED, "1 while a node sits out after a restart");
    describe_gauge!(WAITERS, "callers of this process queued for a resource");
}

/// The labels of a metric about an operation on `resource`.
pub(crate) fn labels(primitive: &'static str, resource: &str, extra: &[Label]) -> Vec<Label> {
    let mut labels = Vec::with_capacity(2 + extra.len());
    labels.push(Label::from_static_parts("primitive", primitive));
    if RESOURCE_LABELS.load(Ordering::Relaxed) {
        labels.push(Label::new("resource", resource.to_owned()));
    }
    labels.extend_from_slice(extra);
    labels
}
