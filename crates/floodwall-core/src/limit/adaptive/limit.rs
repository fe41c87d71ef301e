//! The one [`Limit`] implementation every adaptive algorithm shares:
//! [`Adaptive`], a [`Rule`] behind windows, a baseline and shaping.

use super::baseline::Baseline;
use super::controller::Controller;
use super::decision::Decision;
use super::learned::Learned;
use super::rule::Rule;
use super::shaping::ShapingConfig;
use super::window::{Window, WindowConfig, WindowSummary};
use crate::clock::Nanos;
use crate::limit::{Limit, Outcome, Sample};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// An adaptive limit: the algorithm `R` (see [`AimdLimit`],
/// [`GradientLimit`], [`VegasLimit`], [`WipLimit`]) evaluated once per
/// window, with the windowing, baseline measurement, failure cuts and
/// shaping every algorithm shares.
///
/// **It takes its lock once per window, not once per sample.** The open
/// window is a set of atomics beside the lock, so a finished request adds
/// itself to it with a handful of atomic additions; only the sample that
/// finds the window due to close takes the lock, evaluates the window and
/// moves the limit (others keep adding to the next window meanwhile, and
/// a thread that finds the window already closed does nothing). The lock
/// is also taken per sample in the two phases that need the controller
/// for every sample: the very first one (it starts the ramp clock), and
/// while a baseline measurement runs — a few hundred samples a minute at
/// the floor. An atomic "locked from" time, republished under the lock
/// after every step, tells the hot path whether it may skip the lock.
/// This is how Netflix concurrency-limits' `WindowedLimit` works.
///
/// On one thread it behaves exactly as if every sample took the lock: the
/// same windows close at the same samples. Across threads, a sample that
/// races a window's close may count in that window or the next (see the
/// `window` module); a restart (after a decrease, around a baseline
/// measurement) discards the open window, with whatever was racing into it.
///
/// [`AimdLimit`]: crate::AimdLimit
/// [`GradientLimit`]: crate::GradientLimit
/// [`VegasLimit`]: crate::VegasLimit
/// [`WipLimit`]: crate::WipLimit
pub struct Adaptive<R> {
    rule: R,
    /// The open window, filled without the lock.
    window: Window,
    /// `Controller::locked_from`: samples at or after it take the lock.
    locked_from: AtomicU64,
    /// Whether a baseline measurement runs: `Rule::observe` skips samples
    /// then, as the window does.
    probing: AtomicBool,
    /// `Controller::limit`, for [`Limit::limit`] without the lock.
    limit: AtomicUsize,
    ctl: Mutex<Controller>,
}

// `Rule` is crate-private on purpose (a rule reads the controller's
// internals), and users name these types only through the aliases.
#[allow(private_bounds)]
impl<R: Rule> Adaptive<R> {
    /// The limit of `rule`, starting at `shaping.min`. The caller has
    /// validated the settings.
    pub(crate) fn build(
        rule: R,
        shaping: ShapingConfig,
        window: WindowConfig,
        baseline: Baseline,
    ) -> Self {
        let ctl = Controller::new(
            shaping,
            window.min_rtt,
            baseline,
            rule.statistic(),
            rule.queue_floor(),
        );
        Self {
            window: Window::new(window),
            locked_from: AtomicU64::new(ctl.locked_from()),
            probing: AtomicBool::new(ctl.probing()),
            limit: AtomicUsize::new(ctl.limit()),
            ctl: Mutex::new(ctl),
            rule,
        }
    }

    /// The current baseline latency, once known: the unloaded latency the
    /// windows are compared with, summarised with the algorithm's
    /// statistic (the mean for `vegas` and `wip`).
    pub fn baseline(&self) -> Option<Duration> {
        self.lock().baseline(self.rule.statistic())
    }

    /// The limit before rounding, which the rules compute on.
    #[cfg(test)]
    pub(crate) fn value(&self) -> f64 {
        self.lock().value()
    }

    fn lock(&self) -> MutexGuard<'_, Controller> {
        self.ctl.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Evaluates a closed window and applies the verdict.
    fn decide(&self, ctl: &mut Controller, now: Nanos, w: &WindowSummary) {
        let e = self.rule.evaluate(ctl, w);
        let step = e.step;
        ctl.apply(now, w, e, &self.window);
        if let Some(d) = ctl.last() {
            self.rule.applied(step, d.cause);
        }
    }

    /// Makes what the hot path reads agree with the controller. Called
    /// under the lock, so the last publisher is the latest state.
    fn publish(&self, ctl: &Controller) {
        self.limit.store(ctl.limit(), Ordering::Release);
        self.probing.store(ctl.probing(), Ordering::Release);
        self.locked_from.store(ctl.locked_from(), Ordering::Release);
    }
}

impl<R: Rule> Limit for Adaptive<R> {
    fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    fn on_sample(&self, now: Nanos, sample: &Sample) -> usize {
        if sample.outcome == Outcome::Ignored {
            return self.limit();
        }
        if R::OBSERVES && !self.probing.load(Ordering::Acquire) && self.window.times(sample) {
            self.rule.observe(sample);
        }
        if now.0 >= self.locked_from.load(Ordering::Acquire) {
            // The first sample, or a baseline measurement runs or is due.
            let mut ctl = self.lock();
            if let Some(w) = ctl.sample(now, sample, &self.window) {
                self.decide(&mut ctl, now, &w);
            }
            self.publish(&ctl);
        } else if self.window.push(now, sample) {
            // The window is due: close it, unless another thread just did.
            let mut ctl = self.lock();
            if let Some(w) = ctl.close(now, &self.window) {
                self.decide(&mut ctl, now, &w);
            }
            self.publish(&ctl);
        }
        self.limit()
    }

    fn name(&self) -> &'static str {
        self.rule.name()
    }

    fn explain(&self) -> Option<Decision> {
        self.lock().decision()
    }

    fn learned(&self) -> Option<Learned> {
        self.lock().learned(self.rule.name())
    }

    fn warm(&self, now: Nanos, learned: &Learned) -> bool {
        if learned.algorithm != self.rule.name() {
            return false;
        }
        let mut ctl = self.lock();
        let warmed = ctl.warm(now, learned);
        self.publish(&ctl);
        warmed
    }
}

impl<R: Rule> std::fmt::Debug for Adaptive<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adaptive")
            .field("rule", &self.rule.name())
            .field("limit", &self.limit())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::super::rng::Rng;
    use super::super::window::Tally;
    use crate::clock::Nanos;
    use crate::limit::{
        AimdConfig, AimdLimit, Baseline, Cause, Limit, Outcome, Sample, ShapingConfig, WindowConfig,
    };
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// Several threads hammer one limit, with windows closing every few
    /// dozen samples and frequent cuts (each restarts the window). Every
    /// sample that is not ignored must end up in exactly one place: skipped
    /// (admitted before a restart), in a closed window, discarded by a
    /// restart, or in the window still open — its count, its error and its
    /// latency each.
    #[test]
    fn samples_from_many_threads_land_in_exactly_one_window() {
        const THREADS: u64 = 4;
        const PER_THREAD: u64 = 40_000;
        let l = AimdLimit::new(AimdConfig {
            shaping: ShapingConfig {
                ramp_up: Duration::ZERO,
                stable_for: Duration::ZERO,
                ..ShapingConfig::default()
            },
            window: WindowConfig {
                min_samples: 20,
                min_duration: Duration::from_micros(500),
                min_rtt: Duration::from_millis(1),
            },
            baseline: Baseline::Fixed(Duration::from_millis(10)),
            ..AimdConfig::default()
        })
        .unwrap();
        let clock = AtomicU64::new(1_000_000_000);
        // [samples, errors, timed] offered, not ignored.
        let offered: [AtomicU64; 3] = Default::default();
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let (l, clock, offered) = (&l, &clock, &offered);
                scope.spawn(move || {
                    let mut rng = Rng::new(t);
                    for i in 0..PER_THREAD {
                        let now = clock.fetch_add(200_000, Ordering::Relaxed);
                        // 0.5–24 ms: some untimed, many over the threshold.
                        let rtt = Duration::from_micros(500 + rng.next_u64() % 23_500);
                        let outcome = match i % 29 {
                            0 => Outcome::Error,
                            1 => Outcome::Ignored,
                            _ => Outcome::Success,
                        };
                        if outcome != Outcome::Ignored {
                            offered[0].fetch_add(1, Ordering::Relaxed);
                        }
                        if outcome == Outcome::Error {
                            offered[1].fetch_add(1, Ordering::Relaxed);
                        }
                        if outcome == Outcome::Success && rtt >= Duration::from_millis(1) {
                            offered[2].fetch_add(1, Ordering::Relaxed);
                        }
                        let sample = Sample {
                            start: Nanos(now.saturating_sub(rtt.as_nanos() as u64)),
                            rtt,
                            inflight: l.limit(),
                            outcome,
                        };
                        l.on_sample(Nanos(now), &sample);
                    }
                });
            }
        });
        let tally = &l.window.tally;
        let skipped = Tally::get(&tally.skipped);
        let closed = Tally::get(&tally.closed);
        let discarded = Tally::get(&tally.discarded);
        let open = l.window.open_counts();
        for (k, what) in ["samples", "errors", "timed"].iter().enumerate() {
            assert_eq!(
                offered[k].load(Ordering::Relaxed),
                skipped[k] + closed[k] + discarded[k] + open[k],
                "{what}: skipped {skipped:?} closed {closed:?} discarded {discarded:?} open {open:?}"
            );
        }
        // The test means something only if windows closed and restarted
        // many times while the threads raced.
        assert!(closed[0] > 10_000, "{closed:?}");
        assert!(discarded[0] > 0 || skipped[0] > 0, "no restart raced");
        let d = l.explain().expect("decisions were made");
        assert!(
            matches!(d.cause, Cause::Latency | Cause::Healthy | Cause::Errors),
            "{d}"
        );
    }

    /// What one limit learned starts another where the first left off:
    /// its limit and baseline, no cold-start measurement and no pin at the
    /// floor when the traffic fills the limit from the first request (a
    /// restart into a spike), where a cold limit pins the floor.
    #[test]
    fn a_warm_start_takes_the_limit_and_baseline_and_does_not_pin_the_floor() {
        use super::super::controller::testing::Feeder;
        let fresh = || AimdLimit::new(AimdConfig::default()).unwrap();
        let first = fresh();
        assert_eq!(first.learned(), None, "nothing learned before traffic");
        let mut f = Feeder::new();
        // Traffic at 10 in flight, 20 ms each: the open cold-start
        // measurement, then windows at the limit that grow it.
        for i in 0..400u64 {
            f.now = f.now.plus(Duration::from_millis(5));
            let s = Sample {
                start: Nanos(f.now.0 - 20_000_000),
                rtt: Duration::from_millis(20 + i % 3),
                inflight: 10,
                outcome: Outcome::Success,
            };
            first.on_sample(f.now, &s);
        }
        for _ in 0..5 {
            f.ok(&first, 20);
        }
        let learned = first.learned().expect("a baseline was measured");
        assert_eq!(learned.algorithm, "aimd");
        assert_eq!(learned.baseline.len(), 200, "the whole pool");
        assert!(learned.limit >= 20.0, "{learned:?}");

        // Another algorithm does not take it; a limit that has seen a
        // sample does not either.
        let other = crate::limit::VegasLimit::new(crate::limit::VegasConfig::default()).unwrap();
        assert!(!other.warm(f.now, &learned));
        let late = fresh();
        Feeder::new().ok(&late, 20);
        assert!(!late.warm(f.now, &learned), "too late: it has seen traffic");

        let (warm, cold) = (fresh(), fresh());
        assert!(warm.warm(Nanos(0), &learned));
        assert_eq!(warm.limit(), learned.limit.floor() as usize);
        assert_eq!(warm.baseline(), first.baseline());
        let d = warm.explain().unwrap();
        assert_eq!(d.cause, Cause::Restored, "{d}");

        // A spike from the first request, for 40 s (the first scheduled
        // probe is 51–69 s away): every sample admitted with the limit
        // full, at the baseline's latency.
        let lowest = |l: &AimdLimit| {
            let mut f = Feeder::new();
            let end = f.now.plus(Duration::from_secs(40));
            let mut lowest = usize::MAX;
            while f.now < end {
                f.ok(l, 20);
                lowest = lowest.min(l.limit());
            }
            lowest
        };
        assert!(lowest(&warm) >= learned.limit.floor() as usize);
        assert_eq!(lowest(&cold), 3, "a cold start into a spike pins the floor");
    }
}
