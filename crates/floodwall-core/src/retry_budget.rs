//! The retry budget: retries may be at most a fraction of first attempts.
//!
//! A fixed "retry up to 3 times" multiplies load by 4 exactly when the
//! service is least able to take it: every client that times out comes
//! back, and its retries time out too. A budget bounds the multiplication
//! instead. This one follows Finagle's `RetryBudget` (and Linkerd's, which
//! copies it): over a sliding window of `ttl` (default 10 s), retries may
//! be at most `ratio` (default 0.2) of the first attempts seen, plus a
//! reserve of `min_per_s` (default 10) retries a second so that a quiet
//! service can still retry at all:
//!
//! ```text
//! allowed = min_per_s × ttl + ratio × first_attempts(ttl) − retries(ttl)
//! ```
//!
//! A retry is admitted while `allowed ≥ 1` and then withdraws one token; a
//! first attempt deposits `ratio`. Only admitted retries withdraw: a retry
//! refused for the budget cost the service nothing, so it does not make
//! the next one less likely.
//!
//! **What is refused.** Finagle fails the retries and keeps first attempts
//! flowing; the Phoenix WIP-gate article's answer to a retry storm hard-
//! fails *every* new request above a 20 % retry ratio. floodwall refuses
//! the retries only ([`RetryBudget::try_retry`]): a fresh request is the
//! one a client still waits for, while a retry is often for a request
//! whose client has already given up, so under a storm the fresh ones
//! should win.
//!
//! **Fresh requests first.** A ratio alone does not make fresh requests
//! win: in a 3x spike the first attempts alone earn 0.2 × three times the
//! capacity in retries, which the gate then admits beside the fresh
//! requests in proportion to their arrivals. Those retries are mostly for
//! requests already past their client's patience, so the capacity they
//! take is goodput lost. So while the gate is refusing *first attempts*
//! (one was refused within `yield_window`, default 500 ms), the budget has
//! no room for any retry ([`RetryBudget::first_attempt_refused`]): every
//! slot goes to a request whose client still waits for it, and retries
//! come back as soon as fresh traffic leaves room. Nothing is wasted: the
//! gate refuses fresh requests only when it is full. The refused retry is
//! told to come back in a second, the wait nginx's and HAProxy's clients
//! use by default, so it is not pushed past the end of the overload.
//!
//! The window is ten buckets of `ttl / 10`, so it slides in tenths and
//! holds two counters per bucket whatever the rate. Time comes from the
//! injected [`Clock`]; one mutex guards the buckets, held for a few
//! additions per request.

use crate::clock::{duration_nanos, Clock, Nanos};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many buckets the window is cut into.
const BUCKETS: usize = 10;

/// A retry budget's settings (Finagle's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    /// Retries allowed per first attempt, in `[0, 1000]`. Default 0.2.
    pub ratio: f64,
    /// How long a first attempt's deposit (and a retry's withdrawal)
    /// counts. Default 10 s.
    pub ttl: Duration,
    /// Retries a second allowed whatever the first attempts, so a service
    /// with little traffic can still retry. Default 10.
    pub min_per_s: u32,
    /// How long after a first attempt was refused for lack of capacity no
    /// retry is let through (fresh requests first, see the module doc).
    /// Default 500 ms; zero turns it off; at most `ttl`.
    pub yield_window: Duration,
}

/// The wait a retry refused while first attempts are being refused is
/// told: one second, as long as nginx's and HAProxy's clients wait when
/// told nothing, so retries come back soon after the overload ends.
pub const YIELD_RETRY_AFTER: Duration = Duration::from_secs(1);

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            ttl: Duration::from_secs(10),
            min_per_s: 10,
            yield_window: Duration::from_millis(500),
        }
    }
}

/// Why a [`RetryBudgetConfig`] was refused; names the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryBudgetConfigError(pub String);

impl fmt::Display for RetryBudgetConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RetryBudgetConfigError {}

impl RetryBudgetConfig {
    /// Checks the settings a budget cannot work with.
    pub fn validate(&self) -> Result<(), RetryBudgetConfigError> {
        if !(self.ratio.is_finite() && (0.0..=1000.0).contains(&self.ratio)) {
            return Err(RetryBudgetConfigError(format!(
                "ratio: must be a number from 0 to 1000 (got {})",
                self.ratio
            )));
        }
        if self.ttl < Duration::from_millis(10) || self.ttl > Duration::from_secs(3600) {
            return Err(RetryBudgetConfigError(format!(
                "ttl: must be from 10ms to 1h (got {:?})",
                self.ttl
            )));
        }
        if self.min_per_s > 1_000_000 {
            return Err(RetryBudgetConfigError(format!(
                "min_per_s: must be at most 1000000 (got {})",
                self.min_per_s
            )));
        }
        if self.yield_window > self.ttl {
            return Err(RetryBudgetConfigError(format!(
                "yield_window: must be at most ttl ({:?}) (got {:?})",
                self.ttl, self.yield_window
            )));
        }
        Ok(())
    }
}

/// The refusal of a retry over budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudgetExhausted {
    retry_after: Duration,
}

impl RetryBudgetExhausted {
    /// The reason's wire name.
    pub const REASON: &'static str = "retry_budget_exhausted";

    /// How long until the window has forgotten enough retries (or the
    /// reserve has refilled enough) for one more: the oldest bucket whose
    /// expiry makes room, at least one bucket's width.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for RetryBudgetExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "retry_budget_exhausted (retry after {} ms)",
            self.retry_after.as_millis()
        )
    }
}

impl std::error::Error for RetryBudgetExhausted {}

#[derive(Debug, Default, Clone, Copy)]
struct Bucket {
    /// Which tick (`now / width`) it holds; stale when older than the
    /// window.
    tick: u64,
    first: u64,
    retries: u64,
}

/// A retry budget over one route (see the module doc).
pub struct RetryBudget {
    config: RetryBudgetConfig,
    width: u64,
    clock: Arc<dyn Clock>,
    buckets: Mutex<[Bucket; BUCKETS]>,
    /// When a first attempt was last refused for lack of capacity, in
    /// clock nanoseconds plus one (0: never).
    fresh_refused: AtomicU64,
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RetryBudget {
    /// A budget with `config`, reading time from `clock`.
    pub fn new(
        config: RetryBudgetConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, RetryBudgetConfigError> {
        config.validate()?;
        Ok(Self {
            width: (duration_nanos(config.ttl) / BUCKETS as u64).max(1),
            config,
            clock,
            buckets: Mutex::new([Bucket::default(); BUCKETS]),
            fresh_refused: AtomicU64::new(0),
        })
    }

    /// The settings.
    pub fn config(&self) -> &RetryBudgetConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [Bucket; BUCKETS]> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bucket for `tick`, emptied if it held an older tick.
    fn bucket(b: &mut [Bucket; BUCKETS], tick: u64) -> &mut Bucket {
        let slot = &mut b[(tick % BUCKETS as u64) as usize];
        if slot.tick != tick {
            *slot = Bucket {
                tick,
                ..Bucket::default()
            };
        }
        slot
    }

    /// Totals (first attempts, retries) of the buckets still in the window
    /// at `tick`.
    fn totals(b: &[Bucket; BUCKETS], tick: u64) -> (u64, u64) {
        b.iter()
            .filter(|x| tick.saturating_sub(x.tick) < BUCKETS as u64 && x.tick <= tick)
            .fold((0, 0), |(f, r), x| (f + x.first, r + x.retries))
    }

    fn allowed(&self, first: u64, retries: u64) -> f64 {
        let reserve = f64::from(self.config.min_per_s) * self.config.ttl.as_secs_f64();
        reserve + self.config.ratio * first as f64 - retries as f64
    }

    fn tick(&self, now: Nanos) -> u64 {
        // Tick 0 is never a live bucket (the buckets start at tick 0 and
        // empty), so count from 1.
        now.0 / self.width + 1
    }

    /// Counts a first attempt: deposits `ratio`.
    pub fn deposit(&self) {
        let tick = self.tick(self.clock.now());
        let mut b = self.lock();
        Self::bucket(&mut b, tick).first += 1;
    }

    /// Records that a first attempt was just refused for lack of capacity
    /// (the gate, the bulkhead or the global limit was full): for
    /// `yield_window` from now, retries get no room. One relaxed store; a
    /// refusal path calls it, never an admission.
    pub fn first_attempt_refused(&self) {
        if !self.config.yield_window.is_zero() {
            let now = self.clock.now();
            self.fresh_refused.store(now.0 + 1, Ordering::Relaxed);
        }
    }

    /// Whether retries yield at `now`: a first attempt was refused within
    /// `yield_window`.
    fn yielding(&self, now: Nanos) -> bool {
        match self.fresh_refused.load(Ordering::Relaxed) {
            0 => false,
            at => now.0.saturating_sub(at - 1) < duration_nanos(self.config.yield_window),
        }
    }

    /// Asks to let a retry through: withdraws one token, or refuses when
    /// fewer than one is left or while first attempts are being refused.
    pub fn try_retry(&self) -> Result<(), RetryBudgetExhausted> {
        let now = self.clock.now();
        if self.yielding(now) {
            return Err(RetryBudgetExhausted {
                retry_after: YIELD_RETRY_AFTER,
            });
        }
        let tick = self.tick(now);
        let mut b = self.lock();
        let (first, retries) = Self::totals(&b, tick);
        if self.allowed(first, retries) >= 1.0 {
            Self::bucket(&mut b, tick).retries += 1;
            return Ok(());
        }
        // Walk the window oldest first: when the buckets that have expired
        // by then take more retries than deposits with them, there is room.
        let mut left = self.allowed(first, retries);
        let oldest = tick.saturating_sub(BUCKETS as u64 - 1);
        let mut wait_ticks = BUCKETS as u64;
        for t in oldest..=tick {
            if let Some(x) = b.iter().find(|x| x.tick == t) {
                left += x.retries as f64 - self.config.ratio * x.first as f64;
            }
            if left >= 1.0 {
                // Bucket `t` leaves the window when tick t + BUCKETS begins.
                wait_ticks = t + BUCKETS as u64 - tick;
                break;
            }
        }
        Err(RetryBudgetExhausted {
            retry_after: Duration::from_nanos(self.width.saturating_mul(wait_ticks.max(1))),
        })
    }

    /// Retries allowed now (whole tokens, never negative; zero while
    /// retries yield to refused first attempts).
    pub fn remaining(&self) -> u64 {
        let now = self.clock.now();
        if self.yielding(now) {
            return 0;
        }
        let tick = self.tick(now);
        let b = self.lock();
        let (first, retries) = Self::totals(&b, tick);
        self.allowed(first, retries).max(0.0).floor() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use proptest::prelude::*;

    fn budget(config: RetryBudgetConfig) -> (RetryBudget, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        (RetryBudget::new(config, clock.clone()).unwrap(), clock)
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_reserve_alone_allows_min_per_s_times_ttl() {
        let (b, _) = budget(RetryBudgetConfig {
            min_per_s: 2,
            ttl: 5 * S,
            ..RetryBudgetConfig::default()
        });
        assert_eq!(b.remaining(), 10);
        for _ in 0..10 {
            b.try_retry().unwrap();
        }
        let e = b.try_retry().unwrap_err();
        assert_eq!(b.remaining(), 0);
        // All ten withdrawals sit in the newest bucket: room comes back
        // when it leaves the window, a whole ttl later.
        assert_eq!(e.retry_after(), 5 * S);
    }

    #[test]
    fn first_attempts_earn_ratio_retries_each() {
        let (b, _) = budget(RetryBudgetConfig {
            min_per_s: 0,
            ..RetryBudgetConfig::default()
        });
        assert!(b.try_retry().is_err(), "no reserve, no deposits");
        for _ in 0..100 {
            b.deposit();
        }
        let admitted = (0..100).filter(|_| b.try_retry().is_ok()).count();
        assert_eq!(admitted, 20, "0.2 of 100 first attempts");
    }

    #[test]
    fn the_window_forgets_after_ttl_and_retry_after_points_at_the_room() {
        let (b, clock) = budget(RetryBudgetConfig {
            min_per_s: 0,
            ratio: 0.5,
            ttl: 10 * S,
            ..RetryBudgetConfig::default()
        });
        for _ in 0..10 {
            b.deposit();
        }
        clock.advance(3 * S);
        for _ in 0..5 {
            b.try_retry().unwrap();
        }
        // Over budget; deposits and withdrawals expire together at worst.
        let e = b.try_retry().unwrap_err();
        // With no reserve only new deposits make room: the answer is the
        // whole window.
        assert_eq!(e.retry_after(), 10 * S);
        clock.advance(7 * S);
        // The deposits expired, the withdrawals have not: still nothing.
        assert_eq!(b.remaining(), 0);
        clock.advance(3 * S);
        assert_eq!(b.remaining(), 0, "no deposits and no reserve");
        for _ in 0..2 {
            b.deposit();
        }
        assert_eq!(b.remaining(), 1);
    }

    #[test]
    fn retries_yield_while_first_attempts_are_refused() {
        let (b, clock) = budget(RetryBudgetConfig::default());
        b.try_retry().unwrap();
        b.first_attempt_refused();
        let e = b.try_retry().unwrap_err();
        assert_eq!(e.retry_after(), YIELD_RETRY_AFTER);
        assert_eq!(b.remaining(), 0);
        clock.advance(Duration::from_millis(499));
        assert!(b.try_retry().is_err(), "still within the 500 ms window");
        clock.advance(Duration::from_millis(1));
        b.try_retry().unwrap();
        assert!(b.remaining() > 0);
        // A refused retry withdrew nothing: the reserve is the same as if
        // they had never been asked for, less the two admitted.
        assert_eq!(b.remaining(), 100 - 2);
    }

    #[test]
    fn a_zero_yield_window_never_yields() {
        let (b, _) = budget(RetryBudgetConfig {
            yield_window: Duration::ZERO,
            ..RetryBudgetConfig::default()
        });
        b.first_attempt_refused();
        b.try_retry().unwrap();
    }

    #[test]
    fn bad_settings_name_their_key() {
        for (c, key) in [
            (
                RetryBudgetConfig {
                    ratio: f64::NAN,
                    ..RetryBudgetConfig::default()
                },
                "ratio:",
            ),
            (
                RetryBudgetConfig {
                    ratio: -0.1,
                    ..RetryBudgetConfig::default()
                },
                "ratio:",
            ),
            (
                RetryBudgetConfig {
                    ttl: Duration::ZERO,
                    ..RetryBudgetConfig::default()
                },
                "ttl:",
            ),
            (
                RetryBudgetConfig {
                    min_per_s: u32::MAX,
                    ..RetryBudgetConfig::default()
                },
                "min_per_s:",
            ),
            (
                RetryBudgetConfig {
                    ttl: S,
                    yield_window: 2 * S,
                    ..RetryBudgetConfig::default()
                },
                "yield_window:",
            ),
        ] {
            let e = c.validate().unwrap_err();
            assert!(e.0.starts_with(key), "{e}");
        }
    }

    proptest! {
        /// Over any run of first attempts, retries and clock steps, the
        /// retries admitted within any one window never exceed
        /// `reserve + ratio × first attempts` of that window (plus one
        /// bucket of slack, as the window slides in tenths).
        #[test]
        fn admitted_retries_stay_within_the_budget(
            ops in proptest::collection::vec((0u8..3, 0u64..1500), 1..400),
            ratio in 0.0f64..1.0,
            min_per_s in 0u32..5,
        ) {
            let ttl = 10 * S;
            let (b, clock) = budget(RetryBudgetConfig { ratio, ttl, min_per_s, yield_window: Duration::ZERO });
            let mut log: Vec<(u64, bool)> = Vec::new(); // (ms, is_retry)
            let mut now_ms = 0u64;
            for (op, ms) in ops {
                match op {
                    0 => { b.deposit(); log.push((now_ms, false)); }
                    1 => if b.try_retry().is_ok() { log.push((now_ms, true)); },
                    _ => { clock.advance(Duration::from_millis(ms)); now_ms += ms; }
                }
            }
            // The budget's window reaches at least 9 s and at most 10 s
            // back: so for each admitted retry, the retries of the 9 s
            // before it (itself included, later ones not) fit the reserve
            // plus the deposits of the 10 s before it.
            for (i, &(end, retry)) in log.iter().enumerate() {
                if !retry {
                    continue;
                }
                let retries = log[..=i].iter().filter(|(t, r)| *r && *t + 9_000 >= end).count();
                let first = log.iter().filter(|(t, r)| !*r && *t + 10_000 >= end && *t <= end).count();
                let cap = f64::from(min_per_s) * 10.0 + ratio * first as f64;
                prop_assert!(retries as f64 <= cap + 1e-9, "{} retries over {} first attempts", retries, first);
            }
        }
    }
}
