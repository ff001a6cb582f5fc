//! A small seeded generator: the same seed gives the same choices.

/// SplitMix64: tiny, fast and good enough to pick faults and timings.
///
/// ```
/// let mut rng = quorate::testkit::torture::Rng::new(7);
/// let again = quorate::testkit::torture::Rng::new(7).next_u64();
/// assert_eq!(rng.next_u64(), again); // seeded: the same run again
/// ```
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    ///
    /// ```
    /// let rng = quorate::testkit::torture::Rng::new(42);
    /// ```
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    ///
    /// ```
    /// let mut rng = quorate::testkit::torture::Rng::new(42);
    /// assert_ne!(rng.next_u64(), rng.next_u64());
    /// ```
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    ///
    /// ```
    /// let mut rng = quorate::testkit::torture::Rng::new(42);
    /// assert!(rng.below(5) < 5);
    /// ```
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A number in `lo..hi` milliseconds, as a duration.
    ///
    /// ```
    /// let mut rng = quorate::testkit::torture::Rng::new(42);
    /// let d = rng.millis(10, 20);
    /// assert!(d >= std::time::Duration::from_millis(10));
    /// ```
    pub fn millis(&mut self, lo: u64, hi: u64) -> std::time::Duration {
        std::time::Duration::from_millis(lo + self.below(hi - lo))
    }

    /// True with probability `percent / 100`.
    ///
    /// ```
    /// let mut rng = quorate::testkit::torture::Rng::new(42);
    /// assert!(!rng.chance(0));
    /// ```
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
