//! The crate's one error type, and the per-node tally quorum errors carry.

use std::fmt;
use std::time::Duration;

/// `Result` with [`Error`] as its default error type.
///
/// ```
/// fn ttl_in_range(ms: u64) -> quorate::Result<u64> {
///     Ok(ms)
/// }
/// # assert_eq!(ttl_in_range(5).unwrap(), 5);
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in quorate.
///
/// Callers branch on the variant (or on helpers such as [`Error::is_timeout`]);
/// the messages are for people.
///
/// ```no_run
/// use quorate::{Error, Mutex};
///
/// # async fn demo(lock: Mutex) -> quorate::Result<()> {
/// match lock.lock_timeout(std::time::Duration::from_secs(5)).await {
///     Ok(guard) => guard.release().await?,
///     Err(Error::Timeout(waited)) => eprintln!("still held after {waited:?}"),
///     Err(Error::Quorum(tally)) => eprintln!("too few nodes: {tally}"),
///     Err(other) => return Err(other),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is out of range. Raised before any network I/O.
    #[error("invalid {field}: {reason}")]
    InvalidConfig {
        /// The setting, as named in [`Config`](crate::Config) or the builder.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// Configuration could not be loaded (feature `config`): a file that
    /// cannot be read or is not TOML, a field quorate does not know, a value
    /// of the wrong type, a duration without a unit. Raised before any
    /// network I/O.
    #[cfg(feature = "config")]
    #[cfg_attr(docsrs, doc(cfg(feature = "config")))]
    #[error("{origin}: {}{reason}", field.as_deref().map(|f| format!("invalid {f}: ")).unwrap_or_default())]
    ConfigLoad {
        /// Where it came from: the file's path, or the environment
        /// variable (`QUORATE_TTL`).
        origin: String,
        /// The field, as named in [`Config`](crate::Config), when one is
        /// to blame.
        field: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// An argument of a call is out of range. Raised before any network I/O.
    #[error("invalid argument {name}: {reason}")]
    InvalidArgument {
        /// The argument's name.
        name: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// Not enough nodes answered yes for the operation to count.
    #[error("quorum not reached: {0}")]
    Quorum(Tally),
    /// A deadline passed while waiting (`lock_timeout`, `acquire_timeout`, ...).
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The lease ended (expired or taken away) while the body of a `run`
    /// used it; the body was cancelled.
    #[error("lease lost")]
    LeaseLost,
    /// Release or extension of a lease that is no longer held: it expired, or
    /// its key now belongs to someone else. Nothing was changed on the nodes.
    #[error("lease not held")]
    NotHeld,
    /// The state on the servers was created with other parameters.
    #[error("configuration mismatch for {resource}: {reason}")]
    ConfigMismatch {
        /// The resource name.
        resource: String,
        /// What differs.
        reason: String,
    },
    /// The keys of one resource would land in different cluster hash slots.
    #[error("keys of {resource} span several hash slots")]
    CrossSlot {
        /// The resource name.
        resource: String,
    },
    /// A party of a barrier generation did not arrive in time.
    #[error("barrier broken")]
    BrokenBarrier,
    /// A node could not be reached or checked while connecting.
    #[error("node {node}: {source}")]
    Connect {
        /// The node's address.
        node: String,
        /// What Redis said.
        #[source]
        source: redis::RedisError,
    },
    /// A node refused to run a script for a reason retrying will not fix: a
    /// key of another type under the resource's name, a command the server
    /// denies (ACLs), a server too old for the script.
    #[error("node {node} failed a script for {resource}: {message}")]
    Script {
        /// The resource name.
        resource: String,
        /// The node's address.
        node: String,
        /// What the node said.
        message: String,
    },
}

impl Error {
    /// True for [`Error::Timeout`].
    ///
    /// ```
    /// let e = quorate::Error::Timeout(std::time::Duration::from_secs(1));
    /// assert!(e.is_timeout());
    /// assert!(!quorate::Error::NotHeld.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }

    /// True for [`Error::Quorum`].
    ///
    /// ```no_run
    /// # async fn demo(lock: quorate::Mutex) {
    /// if let Err(e) = lock.try_lock().await {
    ///     if e.is_quorum() {
    ///         // Too few nodes answered: worth retrying later.
    ///     }
    /// }
    /// # }
    /// ```
    pub fn is_quorum(&self) -> bool {
        matches!(self, Error::Quorum(_))
    }

    /// True for [`Error::NotHeld`] and [`Error::LeaseLost`].
    ///
    /// ```
    /// assert!(quorate::Error::NotHeld.is_not_held());
    /// assert!(quorate::Error::LeaseLost.is_not_held());
    /// ```
    pub fn is_not_held(&self) -> bool {
        matches!(self, Error::NotHeld | Error::LeaseLost)
    }

    /// True for errors raised before any network I/O because of bad input.
    ///
    /// ```
    /// assert!(!quorate::Error::BrokenBarrier.is_invalid_input());
    /// ```
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) {
    /// let e = quorate::Mutex::new(&q, "").try_lock().await.unwrap_err();
    /// assert!(e.is_invalid_input()); // an empty name, refused before any I/O
    /// # }
    /// ```
    pub fn is_invalid_input(&self) -> bool {
        #[cfg(feature = "config")]
        if let Error::ConfigLoad { .. } = self {
            return true;
        }
        matches!(
            self,
            Error::InvalidConfig { .. } | Error::InvalidArgument { .. } | Error::CrossSlot { .. }
        )
    }

    /// The per-node tally of a failed quorum operation.
    ///
    /// ```no_run
    /// # async fn demo(lock: quorate::Mutex) {
    /// if let Err(e) = lock.try_lock().await {
    ///     if let Some(tally) = e.tally() {
    ///         eprintln!("{} of {} needed", tally.granted(), tally.needed());
    ///     }
    /// }
    /// # }
    /// ```
    pub fn tally(&self) -> Option<&Tally> {
        match self {
            Error::Quorum(tally) => Some(tally),
            _ => None,
        }
    }

    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn argument(name: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            name,
            reason: reason.into(),
        }
    }
}

/// How each node voted in one quorum operation.
///
/// ```no_run
/// # async fn demo(lock: quorate::Mutex) {
/// if let Err(quorate::Error::Quorum(tally)) = lock.try_lock().await {
///     // "1 of 2 needed (10.0.0.1:6379: granted, 10.0.0.2:6379: failed (...), ...)"
///     eprintln!("{tally}");
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tally {
    granted: usize,
    needed: usize,
    expired: bool,
    nodes: Vec<NodeReport>,
}

/// One node's part in a [`Tally`].
///
/// ```no_run
/// # fn demo(tally: &quorate::Tally) {
/// for report in tally.nodes() {
///     eprintln!("{}: {}", report.node(), report.vote());
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeReport {
    node: String,
    vote: Vote,
}

/// A node's vote.
///
/// ```no_run
/// use quorate::Vote;
///
/// # fn demo(tally: &quorate::Tally) {
/// let down: Vec<&str> = tally
///     .nodes()
///     .iter()
///     .filter(|n| matches!(n.vote(), Vote::Failed(_)))
///     .map(|n| n.node())
///     .collect();
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Vote {
    /// It granted the request.
    Granted,
    /// It refused: the resource is held by someone else, or the lease is
    /// not ours there.
    Refused,
    /// It failed to answer in time or returned an error.
    Failed(String),
    /// Its answer was not needed: the outcome was decided without it.
    Uncounted,
    /// It restarted recently and may have forgotten leases, so its grants do
    /// not count yet: for about `remaining` more.
    Quarantined {
        /// How long its grants will not count yet, as of the vote.
        remaining: Duration,
    },
}

impl Tally {
    pub(crate) fn new(
        granted: usize,
        needed: usize,
        expired: bool,
        nodes: Vec<NodeReport>,
    ) -> Tally {
        Tally {
            granted,
            needed,
            expired,
            nodes,
        }
    }

    /// Nodes that said yes.
    ///
    /// ```no_run
    /// # fn demo(tally: &quorate::Tally) {
    /// let short_by = tally.needed().saturating_sub(tally.granted());
    /// # }
    /// ```
    pub fn granted(&self) -> usize {
        self.granted
    }

    /// Yes votes the operation needed.
    ///
    /// ```no_run
    /// # fn demo(tally: &quorate::Tally) {
    /// assert!(tally.needed() <= tally.nodes().len());
    /// # }
    /// ```
    pub fn needed(&self) -> usize {
        self.needed
    }

    /// True when the quorum was reached but too late: the lease's validity
    /// was used up by the time the votes were in.
    ///
    /// ```no_run
    /// # fn demo(tally: &quorate::Tally) {
    /// if tally.expired() {
    ///     // The nodes were slow: a longer TTL leaves more validity.
    /// }
    /// # }
    /// ```
    pub fn expired(&self) -> bool {
        self.expired
    }

    /// One entry per node, in configuration order.
    ///
    /// ```no_run
    /// # fn demo(tally: &quorate::Tally) {
    /// let answered = tally.nodes().len() - tally.failed();
    /// # }
    /// ```
    pub fn nodes(&self) -> &[NodeReport] {
        &self.nodes
    }

    /// Number of nodes that refused.
    ///
    /// ```no_run
    /// # fn demo(tally: &quorate::Tally) {
    /// let contended = tally.refused() > 0;
    /// # }
    /// ```
    pub fn refused(&self) -> usize {
        self.count(|v| matches!(v, Vote::Refused))
    }

    /// Number of nodes that failed or did not count.
    ///
    /// ```no_run
    /// # fn demo(tally: &quorate::Tally) {
    /// if tally.failed() > tally.nodes().len() / 2 {
    ///     eprintln!("most nodes are down");
    /// }
    /// # }
    /// ```
    pub fn failed(&self) -> usize {
        self.count(|v| matches!(v, Vote::Failed(_) | Vote::Quarantined { .. }))
    }

    fn count(&self, pred: impl Fn(&Vote) -> bool) -> usize {
        self.nodes.iter().filter(|n| pred(&n.vote)).count()
    }
}

impl NodeReport {
    pub(crate) fn new(node: String, vote: Vote) -> NodeReport {
        NodeReport { node, vote }
    }

    /// The node's address.
    ///
    /// ```no_run
    /// # fn demo(report: &quorate::NodeReport) {
    /// assert!(report.node().contains(':')); // host:port
    /// # }
    /// ```
    pub fn node(&self) -> &str {
        &self.node
    }

    /// How it voted.
    ///
    /// ```no_run
    /// # fn demo(report: &quorate::NodeReport) {
    /// if let quorate::Vote::Quarantined { remaining } = report.vote() {
    ///     eprintln!("{} counts again in {remaining:?}", report.node());
    /// }
    /// # }
    /// ```
    pub fn vote(&self) -> &Vote {
        &self.vote
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} needed", self.granted, self.needed)?;
        if self.expired {
            f.write_str(", validity used up")?;
        }
        f.write_str(" (")?;
        for (i, n) in self.nodes.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}: {}", n.node, n.vote)?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for Vote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Vote::Granted => f.write_str("granted"),
            Vote::Refused => f.write_str("refused"),
            Vote::Failed(why) => write!(f, "failed ({why})"),
            Vote::Uncounted => f.write_str("uncounted"),
            Vote::Quarantined { remaining } => {
                write!(f, "quarantined after a restart for another {remaining:.1?}")
            }
        }
    }
}
