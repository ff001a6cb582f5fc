//! The counting semaphore.

use std::time::Duration;

use crate::config::Timing;
use crate::engine::{
    self, Call, FenceTarget, Holding, Invocation, LeaseSpec, invocation, random_unit, scripts,
};
#[cfg(doc)]
use crate::error::Error;
use crate::error::{Error as E, Result};
use crate::key::Keys;
use crate::lease::{self, Kind, Leases, owner_token};
use crate::quorum::Quorum;

/// A distributed counting semaphore: at most `permits` permits are held at
/// once across every process using the same name on the same nodes.
///
/// Each permit is a **slot** numbered `0..permits`. On every node a sorted
/// set maps slots to their expiry in server time (the script reads `TIME`,
/// never the client's clock) and every script reaps expired slots first, so
/// the permits of a crashed holder come back after its TTL.
///
/// # Guarantees
///
/// A holder must win the *same* slots on a majority of nodes. Two majorities
/// share a node, and a node gives a slot to one owner at a time, so one slot
/// never has two valid holders: at most `permits` permits are valid at once,
/// under the same assumptions as [`Mutex`](crate::Mutex). This keeps the
/// mutex's fault tolerance: with 3 nodes one may fail, with 5 nodes two.
///
/// (A plain majority over per-node counters is not enough: with 5 nodes and
/// 2 permits, holders on {0,1,2}, {0,1,3} and {2,3,4} never put more than 2
/// on one node, yet 3 hold a permit. Raising the quorum to
/// `floor(N·L/(L+1)) + 1` would fix it at the price of fault tolerance: 3
/// nodes of 3 for any `L ≥ 2`.)
///
/// The number of permits is stored with the set while any permit is held;
/// opening it with another number fails with [`Error::ConfigMismatch`].
///
/// # Examples
///
/// ```no_run
/// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
/// use quorate::Semaphore;
///
/// let exports = Semaphore::new(&q, "exports", 8);
/// let permit = exports.acquire().await?;
/// // ... at most 8 of these run at once, across all processes ...
/// permit.release().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Semaphore {
    leases: Leases<Permits>,
}

/// A semaphore's keys: slots by expiry, slot owners (and the capacity),
/// the fencing counter, the wake-up channel.
struct SemaphoreKeys {
    slots: String,
    owners: String,
    fence: String,
    channel: String,
}

/// The semaphore as a kind of lease: slots won on a majority.
#[derive(Debug)]
struct Permits {
    permits: u32,
}

impl Kind for Permits {
    /// How many permits one acquisition takes.
    type Ask = u32;

    fn spec(&self, keys: &Keys) -> Result<LeaseSpec> {
        if self.permits == 0 || self.permits > Semaphore::MAX_PERMITS {
            return Err(E::argument(
                "permits",
                format!("{} is outside 1..={}", self.permits, Semaphore::MAX_PERMITS),
            ));
        }
        let k = SemaphoreKeys {
            slots: keys.main.clone(),
            owners: keys.sibling("owners")?,
            fence: keys.sibling("fence")?,
            channel: keys.sibling("ready")?,
        };
        Ok(LeaseSpec {
            resource: keys.resource.clone(),
            acquire: &scripts::SEMAPHORE_ACQUIRE,
            extend: &scripts::SEMAPHORE_EXTEND,
            release: &scripts::SEMAPHORE_RELEASE,
            acquire_keys: vec![k.slots.clone(), k.owners.clone(), k.fence.clone()],
            lease_keys: vec![k.slots, k.owners.clone()],
            channel: k.channel,
            fence: FenceTarget {
                lease_key: k.owners,
                counter_key: k.fence,
                owner_field: None,
                store_field: None,
            },
            eager_fence: false,
            line: None,
            set_nx: false,
        })
    }

    fn check(&self, k: u32) -> Result<()> {
        if k == 0 || k > self.permits {
            return Err(E::argument(
                "k",
                format!("{k} permits asked of a semaphore of {}", self.permits),
            ));
        }
        Ok(())
    }

    fn attempt(&self, k: u32, timing: Timing, acquire: &mut Invocation) -> (String, Holding) {
        let token = owner_token();
        // Racing holders start at different slots, so fewer votes split.
        let first = (random_unit() * f64::from(self.permits)) as u32 % self.permits;
        acquire
            .arg(&token)
            .arg(timing.ttl_ms())
            .arg(self.permits)
            .arg(k)
            .arg(first);
        (token, Holding::Slots(Vec::new()))
    }
}

impl Semaphore {
    /// Most permits one semaphore may have: acquisition scans the slots.
    ///
    /// ```
    /// assert_eq!(quorate::Semaphore::MAX_PERMITS, 10_000);
    /// ```
    pub const MAX_PERMITS: u32 = 10_000;

    /// A semaphore called `name` with `permits` permits.
    ///
    /// The name and count are checked at the first call: an empty or
    /// over-long name, and `permits` of 0 or above
    /// [`MAX_PERMITS`](Self::MAX_PERMITS), are refused then with
    /// [`Error::InvalidArgument`] and nothing is sent.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// let exports = quorate::Semaphore::new(&q, "exports", 8);
    /// # }
    /// ```
    pub fn new(quorum: &Quorum, name: impl Into<String>, permits: u32) -> Semaphore {
        Semaphore {
            leases: Leases::new(quorum, name.into(), Permits { permits }),
        }
    }

    /// Sets the permit lease TTL. Defaults to the quorum's
    /// [`Config::ttl`](crate::Config::ttl). The permits of a crashed holder
    /// come back after at most this long.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// let exports = quorate::Semaphore::new(&q, "exports", 8).with_ttl(std::time::Duration::from_secs(30));
    /// # }
    /// ```
    #[must_use]
    pub fn with_ttl(self, ttl: Duration) -> Semaphore {
        Semaphore {
            leases: self.leases.with_ttl(ttl),
        }
    }

    /// Turns automatic extension on or off. Defaults to on.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// let exports = quorate::Semaphore::new(&q, "exports", 8).auto_extend(false);
    /// # }
    /// ```
    #[must_use]
    pub fn auto_extend(self, on: bool) -> Semaphore {
        Semaphore {
            leases: self.leases.auto_extend(on),
        }
    }

    /// Fair mode: waiters get their permits in arrival order, across
    /// processes, as for [`Mutex::fair`](crate::Mutex::fair). A waiter for
    /// several permits is not overtaken by later waiters for fewer: freed
    /// permits go to the front of the line while they fit.
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let exports = quorate::Semaphore::new(&q, "exports", 8).fair();
    /// let permit = exports.acquire().await?;
    /// permit.release().await?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn fair(self) -> Semaphore {
        Semaphore {
            leases: self.leases.fair(),
        }
    }

    /// The resource name.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// assert_eq!(quorate::Semaphore::new(&q, "exports", 8).name(), "exports");
    /// # }
    /// ```
    pub fn name(&self) -> &str {
        self.leases.name()
    }

    /// The number of permits.
    ///
    /// ```no_run
    /// # fn demo(q: quorate::Quorum) {
    /// assert_eq!(quorate::Semaphore::new(&q, "exports", 8).permits(), 8);
    /// # }
    /// ```
    pub fn permits(&self) -> u32 {
        self.leases.kind().permits
    }

    /// Acquires one permit, waiting as long as it takes.
    ///
    /// Waiting is push based: a release wakes the waiters. Waiters are not
    /// queued: whoever retries first after a release wins.
    ///
    /// # Errors
    ///
    /// Bad input before any I/O; [`Error::ConfigMismatch`] when the
    /// semaphore exists with another number of permits.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped call holds nothing; slots its scripts took are
    /// released from a spawned task.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> quorate::Result<()> {
    /// # let servers = quorate::testkit::ServerGroup::start(1).unwrap();
    /// # let q = quorate::Quorum::connect(servers.urls()).await?;
    /// let exports = quorate::Semaphore::new(&q, "exports", 2);
    /// let first = exports.acquire().await?;
    /// let second = exports.acquire().await?;
    /// assert!(exports.try_acquire().await?.is_none()); // both permits held
    /// first.release().await?;
    /// second.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn acquire(&self) -> Result<SemaphorePermit> {
        self.acquire_many(1).await
    }

    /// Acquires `k` permits at once, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] at once when `k` is 0 or more than the
    /// semaphore has; otherwise as [`acquire`](Self::acquire).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`acquire`](Self::acquire).
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let cpus = quorate::Semaphore::new(&q, "cpus", 16);
    /// let four = cpus.acquire_many(4).await?;
    /// assert_eq!(four.num_permits(), 4);
    /// four.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn acquire_many(&self, k: u32) -> Result<SemaphorePermit> {
        let lease = self.leases.acquire(k, None).await?;
        Ok(SemaphorePermit { lease })
    }

    /// Acquires one permit, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when no permit came free in time;
    /// [`Error::Quorum`] when the last attempt failed because too few nodes
    /// answered; otherwise as [`acquire`](Self::acquire).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`acquire`](Self::acquire).
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let exports = quorate::Semaphore::new(&q, "exports", 8);
    /// let permit = exports.acquire_timeout(std::time::Duration::from_secs(5)).await?;
    /// permit.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<SemaphorePermit> {
        self.acquire_many_timeout(1, timeout).await
    }

    /// Acquires `k` permits, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`acquire_many`](Self::acquire_many) and
    /// [`acquire_timeout`](Self::acquire_timeout).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`acquire`](Self::acquire).
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let cpus = quorate::Semaphore::new(&q, "cpus", 16);
    /// let four = cpus.acquire_many_timeout(4, std::time::Duration::from_secs(5)).await?;
    /// four.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn acquire_many_timeout(&self, k: u32, timeout: Duration) -> Result<SemaphorePermit> {
        let lease = self.leases.acquire(k, Some(timeout)).await?;
        Ok(SemaphorePermit { lease })
    }

    /// Makes one attempt at one permit: `Ok(None)` when none is free.
    ///
    /// # Errors
    ///
    /// [`Error::Quorum`] when too few nodes answered to decide; otherwise as
    /// [`acquire`](Self::acquire).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`acquire`](Self::acquire).
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let exports = quorate::Semaphore::new(&q, "exports", 8);
    /// match exports.try_acquire().await? {
    ///     Some(permit) => permit.release().await?,
    ///     None => println!("all 8 exports running"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn try_acquire(&self) -> Result<Option<SemaphorePermit>> {
        self.try_acquire_many(1).await
    }

    /// Makes one attempt at `k` permits: `Ok(None)` when fewer are free.
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](Self::try_acquire) and
    /// [`acquire_many`](Self::acquire_many).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`acquire`](Self::acquire).
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let cpus = quorate::Semaphore::new(&q, "cpus", 16);
    /// if let Some(four) = cpus.try_acquire_many(4).await? {
    ///     four.release().await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn try_acquire_many(&self, k: u32) -> Result<Option<SemaphorePermit>> {
        let lease = self.leases.try_acquire(k).await?;
        Ok(lease.map(|lease| SemaphorePermit { lease }))
    }

    /// Acquires one permit, runs `body` while the lease lives, and releases
    /// it. When the lease is lost first, `body` is cancelled and the result
    /// is [`Error::LeaseLost`].
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`] when the lease ended before `body` did; as
    /// [`acquire`](Self::acquire) otherwise.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it drops `body` and releases the permit in the
    /// background.
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// # async fn export() -> quorate::Result<()> { Ok(()) }
    /// let exports = quorate::Semaphore::new(&q, "exports", 8);
    /// exports.run(async |_permit| export().await).await??;
    /// # Ok(()) }
    /// ```
    pub async fn run<T>(&self, body: impl AsyncFnOnce(&SemaphorePermit) -> T) -> Result<T> {
        lease::run(self.acquire().await?, body).await
    }

    /// The number of permits that could be granted now: slots free on a
    /// majority of nodes. A snapshot: it may change before you act on it.
    ///
    /// # Errors
    ///
    /// [`Error::Quorum`] when fewer than a majority answered;
    /// [`Error::ConfigMismatch`]; bad input before any I/O.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads (and reaps expired permits).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> quorate::Result<()> {
    /// # let servers = quorate::testkit::ServerGroup::start(1).unwrap();
    /// # let q = quorate::Quorum::connect(servers.urls()).await?;
    /// let exports = quorate::Semaphore::new(&q, "exports", 8);
    /// let permit = exports.acquire().await?;
    /// assert_eq!(exports.available_permits().await?, 7);
    /// permit.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn available_permits(&self) -> Result<u32> {
        let plan = self.leases.plan()?;
        let permits = self.permits();
        let keys: Vec<&str> = plan.spec.lease_keys.iter().map(String::as_str).collect();
        let mut inv = invocation(&scripts::SEMAPHORE_AVAILABLE, &keys);
        inv.arg(permits);
        let nodes = self.leases.quorum().nodes();
        let timeout = plan.timing.node_timeout;
        let round = engine::read_all(nodes, Call::new(inv), timeout, self.name()).await?;
        // A slot can be granted only where a majority has it free.
        let mut free_on = vec![0usize; permits as usize];
        for (_, held) in round.yes() {
            let mut taken = vec![false; free_on.len()];
            for slot in held.ints_from(0) {
                if let Some(t) = usize::try_from(slot).ok().and_then(|s| taken.get_mut(s)) {
                    *t = true;
                }
            }
            for (count, taken) in free_on.iter_mut().zip(taken) {
                *count += usize::from(!taken);
            }
        }
        let majority = round.need();
        Ok(free_on.iter().filter(|&&n| n >= majority).count() as u32)
    }
}

/// Proof of holding permits of a [`Semaphore`], until
/// [`release`](Self::release) or drop. It derefs to its
/// [`Lease`](crate::Lease), as [`MutexGuard`](crate::MutexGuard) does.
///
/// Dropping it without `release` releases in a spawned task (when a tokio
/// runtime is running; otherwise the TTL frees the permits).
///
/// ```no_run
/// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
/// let permit = quorate::Semaphore::new(&q, "exports", 8).acquire().await?;
/// println!("slot {:?}, {:?} left", permit.slots(), permit.remaining());
/// permit.release().await?;
/// # Ok(()) }
/// ```
#[must_use = "the permits are released when the permit is dropped"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct SemaphorePermit {
    lease: lease::Lease,
}

impl SemaphorePermit {
    /// The number of permits held.
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let permits = quorate::Semaphore::new(&q, "cpus", 16).acquire_many(4).await?;
    /// assert_eq!(permits.num_permits(), 4);
    /// # Ok(()) }
    /// ```
    pub fn num_permits(&self) -> u32 {
        self.slots().len() as u32
    }

    /// The slots held, each in `0..permits`.
    ///
    /// ```no_run
    /// # async fn demo(q: quorate::Quorum) -> quorate::Result<()> {
    /// let permit = quorate::Semaphore::new(&q, "exports", 8).acquire().await?;
    /// assert!(permit.slots().iter().all(|&slot| slot < 8));
    /// # Ok(()) }
    /// ```
    pub fn slots(&self) -> Vec<u32> {
        match self.lease.holding() {
            Holding::Slots(slots) => slots.clone(),
            _ => Vec::new(),
        }
    }
}

lease::guard!(SemaphorePermit);
