//! What quorate tells the people who run it: `tracing` spans and events at
//! the levels an operator would pick, and, with the `metrics` feature, the
//! metrics named in `metrics.rs`. One function per thing that happens, so
//! the engine and the primitives report it in one line.
//!
//! Levels: a lost lease and a node entering quarantine are `warn`; a quorum
//! out of reach and a node leaving quarantine `info`; contention, node
//! failures, script reloads and the spans of operations `debug`. Owner
//! tokens are never logged at any level: whoever has one can release
//! someone else's lease.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tracing::field::{Empty, display};
use tracing::{Instrument, Span};

use crate::error::{Error, Tally};

/// What an operation is about: the kind of primitive and the resource.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Subject<'a> {
    pub(crate) primitive: &'static str,
    pub(crate) resource: &'a str,
}

impl<'a> Subject<'a> {
    pub(crate) fn new(primitive: &'static str, resource: &'a str) -> Subject<'a> {
        Subject {
            primitive,
            resource,
        }
    }

    /// The subject of a lease acquired by the script `acquire`
    /// (`mutex_acquire`): the primitive is the script's first word.
    pub(crate) fn of_script(acquire: &'static str, resource: &'a str) -> Subject<'a> {
        let primitive = acquire.split_once('_').map_or(acquire, |(p, _)| p);
        Subject::new(primitive, resource)
    }
}

/// The span of one acquisition attempt; [`votes`] fills in the tally.
pub(crate) fn acquire_span(s: Subject<'_>) -> Span {
    tracing::debug_span!(
        "acquire",
        primitive = s.primitive,
        resource = s.resource,
        granted = Empty,
        needed = Empty,
        votes = Empty,
    )
}

/// Records a round's per-node votes on `span`, when something listens
/// (the tally is built only then).
pub(crate) fn votes(span: &Span, tally: impl FnOnce() -> Tally) {
    if span.is_disabled() {
        return;
    }
    let tally = tally();
    span.record("granted", tally.granted());
    span.record("needed", tally.needed());
    span.record("votes", display(&tally));
}

pub(crate) fn granted(s: Subject<'_>, elapsed: Duration) {
    tracing::debug!(elapsed = ?elapsed, "acquired");
    #[cfg(feature = "metrics")]
    {
        attempt(s, "granted");
        ::metrics::histogram!(
            crate::metrics::ACQUIRE_SECONDS,
            crate::metrics::labels(s.primitive, s.resource, &[])
        )
        .record(elapsed);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = s;
}

/// Held by someone else: the failed attempts of contention.
pub(crate) fn contended(s: Subject<'_>, retry_after: Option<Duration>) {
    tracing::debug!(?retry_after, "held by someone else");
    #[cfg(feature = "metrics")]
    attempt(s, "contended");
    #[cfg(not(feature = "metrics"))]
    let _ = s;
}

/// Too few nodes answered to decide.
pub(crate) fn unavailable(s: Subject<'_>, error: &Error) {
    tracing::info!(primitive = s.primitive, resource = s.resource, %error, "acquisition failed");
    #[cfg(feature = "metrics")]
    attempt(s, "unavailable");
}

/// A node refused for a reason retrying will not fix.
pub(crate) fn failed(s: Subject<'_>, error: &Error) {
    tracing::warn!(primitive = s.primitive, resource = s.resource, %error, "acquisition refused");
    #[cfg(feature = "metrics")]
    attempt(s, "error");
}

#[cfg(feature = "metrics")]
fn attempt(s: Subject<'_>, outcome: &'static str) {
    let outcome = ::metrics::Label::from_static_parts("outcome", outcome);
    ::metrics::counter!(
        crate::metrics::ACQUIRE_ATTEMPTS,
        crate::metrics::labels(s.primitive, s.resource, &[outcome])
    )
    .increment(1);
}

/// Runs a waiting call in a span, and reports how long it took and how
/// it ended.
pub(crate) async fn waiting<T>(
    s: Subject<'_>,
    call: impl Future<Output = crate::error::Result<T>>,
) -> crate::error::Result<T> {
    let started = std::time::Instant::now();
    let span = tracing::debug_span!("wait", primitive = s.primitive, resource = s.resource);
    let outcome = call.instrument(span.clone()).await;
    span.in_scope(|| waited(s, started.elapsed(), &outcome));
    outcome
}

fn waited<T>(s: Subject<'_>, elapsed: Duration, outcome: &crate::error::Result<T>) {
    let label = match outcome {
        Ok(_) => "done",
        Err(Error::Timeout(_)) => "timeout",
        Err(_) => "error",
    };
    tracing::debug!(elapsed = ?elapsed, outcome = label, "wait ended");
    #[cfg(feature = "metrics")]
    {
        let outcome = ::metrics::Label::from_static_parts("outcome", label);
        ::metrics::histogram!(
            crate::metrics::WAIT_SECONDS,
            crate::metrics::labels(s.primitive, s.resource, &[outcome])
        )
        .record(elapsed);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = s;
}

/// A caller queued for a resource, counted in the waiters gauge until it
/// leaves the queue (dropped).
#[derive(Debug)]
pub(crate) struct Queued {
    #[cfg(feature = "metrics")]
    gauge: ::metrics::Gauge,
}

impl Queued {
    pub(crate) fn join(s: Subject<'_>) -> Queued {
        tracing::debug!("queued behind the holder");
        #[cfg(feature = "metrics")]
        {
            let gauge = ::metrics::gauge!(
                crate::metrics::WAITERS,
                crate::metrics::labels(s.primitive, s.resource, &[])
            );
            gauge.increment(1.0);
            Queued { gauge }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = s;
            Queued {}
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        self.gauge.decrement(1.0);
    }
}

/// The span of an explicit extension.
pub(crate) fn extend_span(s: Subject<'_>) -> Span {
    tracing::debug_span!(
        "extend",
        primitive = s.primitive,
        resource = s.resource,
        granted = Empty,
        needed = Empty,
        votes = Empty,
    )
}

/// The span of one batch of renewals.
pub(crate) fn renew_span(leases: usize) -> Span {
    tracing::debug_span!("renew", leases)
}

/// A quorum extended a lease in time. (One that came after the deadline
/// loses the lease: see [`lost`].)
pub(crate) fn extended(s: Subject<'_>) {
    tracing::debug!(primitive = s.primitive, resource = s.resource, "extended");
    #[cfg(feature = "metrics")]
    extension(s, "extended");
}

/// A renewal fell short; it is retried until the deadline.
pub(crate) fn renewal_failed(s: Subject<'_>, error: &Error) {
    tracing::debug!(primitive = s.primitive, resource = s.resource, %error, "renewal failed; retrying");
    #[cfg(feature = "metrics")]
    extension(s, "failed");
}

#[cfg(feature = "metrics")]
fn extension(s: Subject<'_>, outcome: &'static str) {
    let outcome = ::metrics::Label::from_static_parts("outcome", outcome);
    ::metrics::counter!(
        crate::metrics::EXTENSIONS,
        crate::metrics::labels(s.primitive, s.resource, &[outcome])
    )
    .increment(1);
}

/// A lease was lost before its release.
pub(crate) fn lost(s: Subject<'_>, why: &str) {
    let _span =
        tracing::warn_span!("loss", primitive = s.primitive, resource = s.resource).entered();
    tracing::warn!(why, "lease lost");
    #[cfg(feature = "metrics")]
    ::metrics::counter!(
        crate::metrics::LEASES_LOST,
        crate::metrics::labels(s.primitive, s.resource, &[])
    )
    .increment(1);
}

/// The span of a release.
pub(crate) fn release_span(s: Subject<'_>) -> Span {
    tracing::debug_span!("release", primitive = s.primitive, resource = s.resource)
}

/// A lease was released (or dropped) after being held `held`.
pub(crate) fn released(s: Subject<'_>, held: Duration) {
    #[cfg(feature = "metrics")]
    ::metrics::histogram!(
        crate::metrics::HOLD_SECONDS,
        crate::metrics::labels(s.primitive, s.resource, &[])
    )
    .record(held);
    #[cfg(not(feature = "metrics"))]
    let _ = (s, held);
}

/// A node request failed: `timed_out` when no answer came within the
/// per-node timeout.
pub(crate) fn node_failed(node: &str, cause: &str, timed_out: bool) {
    tracing::debug!(node, cause, timed_out, "node request failed");
    #[cfg(feature = "metrics")]
    {
        let name = if timed_out {
            crate::metrics::NODE_TIMEOUTS
        } else {
            crate::metrics::NODE_ERRORS
        };
        ::metrics::counter!(name, "node" => node.to_owned()).increment(1);
    }
}

/// Runs `reload`, the full source of `script` sent to a node that lost it.
pub(crate) async fn script_reload<F: Future>(script: &'static str, reload: F) -> F::Output {
    let span = tracing::debug_span!("script_reload", script);
    span.in_scope(|| tracing::debug!("node lost its scripts; sending the source"));
    #[cfg(feature = "metrics")]
    ::metrics::counter!(crate::metrics::SCRIPT_RELOADS, "script" => script).increment(1);
    reload.instrument(span).await
}

/// A node presumed restarted sits out for `left`; its leaving is reported
/// when that has passed.
pub(crate) fn quarantined(node: &str, left: Duration, why: &dyn fmt::Debug) {
    let span = tracing::warn_span!("quarantine", node);
    span.in_scope(|| {
        tracing::warn!(?why, quarantine = ?left, "node presumed restarted; its grants do not count for a while");
    });
    #[cfg(feature = "metrics")]
    let gauge = ::metrics::gauge!(crate::metrics::NODES_QUARANTINED, "node" => node.to_owned());
    #[cfg(feature = "metrics")]
    gauge.increment(1.0);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let leave = async move {
        tokio::time::sleep(left).await;
        tracing::info!("node's quarantine ended; its grants count again");
        #[cfg(feature = "metrics")]
        gauge.decrement(1.0);
    };
    runtime.spawn(leave.instrument(span));
}
