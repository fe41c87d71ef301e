//! The decisions every adaptive limit shares: the baseline measurement and
//! shaping, around one algorithm-specific rule.
//!
//! An algorithm (`aimd`, `gradient`, `vegas`, `wip`) is only its rule: given
//! a closed window and the baseline, return an [`Evaluation`] — decrease to
//! X, increase to X, or hold, and why. Everything else happens here, once,
//! under the [`Adaptive`](super::Adaptive) limit's lock:
//!
//! 1. `Ignored` samples are dropped; the first sample starts the ramp clock.
//! 2. While a baseline measurement runs, samples feed it only and the limit
//!    stays pinned at the floor; when it ends the limit goes back to its
//!    value before ([`baseline`](super::baseline)).
//! 3. Otherwise samples fill the window ([`window`](super::window)); when it
//!    closes the algorithm evaluates it, and the controller applies the
//!    result through the shaping rules ([`shaping`](super::shaping)):
//!    decreases at once (and the window restarts, so samples admitted under
//!    the old limit are not counted twice), trims at once without arming
//!    hysteresis, increases only past hysteresis, the growth guard and the
//!    ramp cap, and always within `[min, max]`. Until the first decrease a
//!    healthy window that filled the limit at least doubles it (TCP's slow
//!    start), still under the ramp cap.
//! 4. A latency cut that does not lower latency, or a window much faster
//!    than the baseline, starts a baseline measurement at once; one that
//!    finds the upstream changed speed undoes the run of cuts, back to the
//!    higher of the highest cut whose latency fits the new baseline (is
//!    within `shift` of it) and
//!    Little's law's concurrency at that allowance (the rate the queued
//!    windows completed at, times `shift` times the new baseline; see
//!    `CutRun::rollback`)
//!    ([`baseline`](super::baseline), `BaselineProbe::shift`).
//! 5. The outcome is kept as the last [`Decision`], for `/status`.
//!
//! The open window itself is not in here: it lives beside the lock, in
//! atomics, so that samples fill it without taking the lock (see
//! [`Adaptive`](super::Adaptive)). The controller is handed it whenever it
//! closes or restarts it.

use super::baseline::{Baseline, ProbeEnd, Prober};
use super::decision::{ms, Cause, Decision};
use super::evaluation::{Evaluation, Step};
use super::histogram::{LatencyStats, Recorder};
use super::learned::Learned;
use super::shaping::{Shaping, ShapingConfig};
use super::window::{Statistic, Window, WindowSummary};
use crate::clock::Nanos;
use crate::limit::Sample;
use std::time::Duration;

#[derive(Debug, Clone)]
enum Source {
    Fixed(Duration),
    Probe(Box<Prober>),
}

/// See the module doc.
#[derive(Debug)]
pub(crate) struct Controller {
    /// Where a closing window's latencies are drained to.
    scratch: Recorder,
    min_rtt: Duration,
    shaping: Shaping,
    source: Source,
    statistic: Statistic,
    /// The rule's `min_queue_delay`, for the cold start's open measurement.
    queue_floor: Duration,
    limit: f64,
    before_probe: Option<f64>,
    floor_streak: usize,
    /// The run of latency cuts in progress, if any (see `note_cut`).
    cuts: Option<CutRun>,
    /// Until the first decrease, a healthy window at least doubles the
    /// limit (see `apply`).
    slow_start: bool,
    /// Whether the cold start's open measurement was tried (it is, at
    /// most once).
    open_tried: bool,
    last: Option<Decision>,
}

/// How many cuts of a run are remembered for the rollback.
const STEPS: usize = 8;

/// A run of latency cuts with no healthy window between them.
#[derive(Debug, Clone, Copy)]
struct CutRun {
    /// Each cut's old limit, the window latency measured at it and the
    /// rate that window completed requests at (the first `STEPS`): on a
    /// change of speed, these say where the limit goes back to.
    steps: [Cut; STEPS],
    /// How many of `steps` are filled.
    n: usize,
    /// The window latency that triggered the last cut.
    latency: Duration,
    /// The factor of the last cut (new ÷ old).
    ratio: f64,
}

/// One cut of a [`CutRun`].
#[derive(Debug, Clone, Copy)]
struct Cut {
    limit: f64,
    latency: Duration,
    /// Timed successes per second.
    rate: f64,
}

impl CutRun {
    /// Where a run of cuts made against a stale baseline rolls back to,
    /// given the baseline the probe found: the higher of two lower bounds
    /// on the new knee (or nothing, and the limit stays where the probe
    /// found it and grows from there, hysteresis cleared).
    ///
    /// - The highest limit of the run whose window latency was within
    ///   `shift` of the new baseline: it was not queueing much even at the
    ///   new speed.
    /// - Little's law, from the windows that did queue at the new speed:
    ///   they completed requests as fast as the upstream now can, and at
    ///   that rate the concurrency whose latency is `shift` times the new
    ///   baseline is `rate × shift × baseline`: the same allowance the
    ///   first bound gives a cut's latency. (`rate × baseline` alone is the
    ///   upstream's worker count, a limit with no request waiting to take a
    ///   freed worker; on the bench's 8 workers it served a tenth less than
    ///   10.) The lowest such estimate is taken, because the run's first
    ///   window may have run partly at the old, faster speed.
    ///
    /// Going back to the limit before the whole run would often be too
    /// far: that limit was set before the slowdown, and at the new speed
    /// it queues. Without the second bound, a run whose only fitting cut
    /// was well under the knee (26 → 13 → 6 with a knee of 8-10) left the
    /// limit to climb +1 a window for seconds, the backend part idle.
    fn rollback(&self, new_baseline: Duration, shift: f64) -> f64 {
        let base = new_baseline.as_secs_f64();
        let fits = base * shift;
        let steps = &self.steps[..self.n];
        let fitting = steps
            .iter()
            .filter(|s| s.latency.as_secs_f64() <= fits)
            .map(|s| s.limit)
            .fold(0.0, f64::max);
        let knee = steps
            .iter()
            .filter(|s| s.latency.as_secs_f64() > fits && s.rate > 0.0)
            .map(|s| (s.rate * fits).min(s.limit))
            .fold(f64::INFINITY, f64::min);
        if knee.is_finite() {
            fitting.max(knee)
        } else {
            fitting
        }
    }
}

impl Controller {
    pub(crate) fn new(
        shaping: ShapingConfig,
        min_rtt: Duration,
        baseline: Baseline,
        statistic: Statistic,
        queue_floor: Duration,
    ) -> Self {
        Self {
            queue_floor,
            scratch: Recorder::new(),
            min_rtt,
            shaping: Shaping::new(shaping),
            source: match baseline {
                Baseline::Fixed(d) => Source::Fixed(d),
                Baseline::Measured(p) => Source::Probe(Box::new(Prober::new(p))),
            },
            statistic,
            // A cold start with a measured baseline admits up to `initial`
            // from the first request: its first measurement runs open.
            limit: match baseline {
                Baseline::Measured(_) => Shaping::new(shaping).initial(),
                Baseline::Fixed(_) => shaping.min as f64,
            },
            before_probe: None,
            floor_streak: 0,
            cuts: None,
            slow_start: shaping.slow_start,
            open_tried: false,
            last: None,
        }
    }

    /// The limit to enforce.
    pub(crate) fn limit(&self) -> usize {
        (self.limit.floor() as usize).max(1)
    }

    /// The limit before rounding, which the rules compute on.
    pub(crate) fn value(&self) -> f64 {
        self.limit
    }

    pub(crate) fn decision(&self) -> Option<Decision> {
        self.last.clone()
    }

    /// The last decision, without a copy.
    pub(crate) fn last(&self) -> Option<&Decision> {
        self.last.as_ref()
    }

    /// The baseline summarised with `statistic`, if there is one yet.
    pub(crate) fn baseline(&self, statistic: Statistic) -> Option<Duration> {
        match &self.source {
            Source::Fixed(d) => Some(*d),
            Source::Probe(p) => p.baseline().map(|s| statistic.of(s)),
        }
    }

    pub(crate) fn probing(&self) -> bool {
        matches!(&self.source, Source::Probe(p) if p.probing())
    }

    /// From when on a sample must come here, under the lock, instead of
    /// only filling the window: `0` (always) before the ramp clock starts,
    /// while a baseline measurement runs or one is requested; else the
    /// time the next scheduled one is due (never, for a fixed baseline).
    /// A sample before it can only fill the window, which needs no lock.
    pub(crate) fn locked_from(&self) -> u64 {
        if !self.shaping.started() {
            return 0;
        }
        match &self.source {
            Source::Fixed(_) => u64::MAX,
            Source::Probe(p) if p.probing() || p.requested() => 0,
            Source::Probe(p) => p.next_at().map_or(0, |t| t.0),
        }
    }

    /// Takes one (not `Ignored`) sample under the lock. Returns a closed
    /// window for the algorithm to evaluate, or `None` while the window is
    /// filling or a baseline measurement runs.
    pub(crate) fn sample(&mut self, now: Nanos, s: &Sample, win: &Window) -> Option<WindowSummary> {
        self.shaping.start(now);
        let floor = self.shaping.config().min;
        if let Source::Probe(p) = &mut self.source {
            // A restored baseline's first probe is an interval from here.
            p.schedule_from(now);
            if p.probing() {
                p.offer(s, floor, self.min_rtt);
                if let Some(end) = p.finish(now) {
                    self.end_probe(now, end, win);
                }
                return None;
            }
            if p.due(now) {
                self.begin_probe(now, win);
                return None;
            }
        }
        if win.push(now, s) {
            self.close(now, win)
        } else {
            None
        }
    }

    /// Closes `win` if it is still due at `now` and no baseline
    /// measurement runs (samples pushed without the lock may have raced a
    /// measurement's start; they are discarded when it ends).
    pub(crate) fn close(&mut self, now: Nanos, win: &Window) -> Option<WindowSummary> {
        if self.probing() {
            return None;
        }
        win.close(now, &mut self.scratch)
    }

    fn begin_probe(&mut self, now: Nanos, win: &Window) {
        let Source::Probe(p) = &mut self.source else {
            return;
        };
        // The first measurement of a cold start runs open, at the
        // traffic's concurrency under the `initial` limit (see
        // `Prober::begin_open`); a crowded one falls back to the floor.
        let initial = self.shaping.initial();
        if p.baseline().is_none() && !self.open_tried && initial > self.shaping.floor() {
            self.open_tried = true;
            p.begin_open(now, initial as usize, self.queue_floor);
            let from = self.limit;
            self.limit = initial;
            win.restart(now, &mut self.scratch);
            self.record(
                now,
                from,
                Cause::Probing,
                None,
                format!(
                    "cold start: measuring the unloaded latency at the traffic's own \
                     concurrency under a limit of {initial:.0}; pinned at the floor \
                     instead if that limit is reached"
                ),
            );
            return;
        }
        p.begin(now);
        let cfg = *p.config();
        let from = self.limit;
        self.before_probe = Some(from);
        self.limit = self.shaping.floor();
        win.restart(now, &mut self.scratch);
        self.record(
            now,
            from,
            Cause::Probing,
            None,
            format!(
                "measuring the unloaded latency: pinned at the floor until {} \
                 successes admitted from now (at most {:.0}s)",
                cfg.samples,
                cfg.max_duration.as_secs_f64()
            ),
        );
    }

    fn end_probe(&mut self, now: Nanos, end: ProbeEnd, win: &Window) {
        let from = self.limit;
        if end == ProbeEnd::Crowded {
            self.record(
                now,
                from,
                Cause::Probed,
                None,
                format!(
                    "cold start: the limit of {from:.0} was reached, or latency grew, \
                     while measuring: a queue is forming; measuring pinned at the floor"
                ),
            );
            // Back to the floor for good: slow start climbs from there.
            self.limit = self.shaping.floor();
            self.begin_probe(now, win);
            return;
        }
        // An open measurement: start from twice the most that was in
        // flight, as a slow-start doubling would, rather than from the
        // floor (the traffic needed that much, and more may be needed)
        // or from `initial` (far above what traffic needed, which
        // protects nothing when the first spike comes).
        let opened = match &self.source {
            Source::Probe(p)
                if self.before_probe.is_none() && self.open_tried && p.open_peak() > 0 =>
            {
                Some(2.0 * p.open_peak() as f64)
            }
            _ => None,
        };
        let mut back = self.before_probe.take().unwrap_or(from);
        // The upstream changed speed: the cuts since the last healthy
        // window were made against a stale baseline. Undo them, and let
        // the limit grow again at once.
        if let (ProbeEnd::Shifted { probe, .. }, Some(run), Source::Probe(p)) =
            (&end, self.cuts, &self.source)
        {
            back = back.max(run.rollback(self.statistic.of(probe), p.shift()));
            self.shaping.clear_hold();
        }
        self.cuts = None;
        let back = opened.unwrap_or(back);
        self.limit = back.clamp(self.shaping.floor(), self.shaping.cap(now));
        win.restart(now, &mut self.scratch);
        self.floor_streak = 0;
        let next = match &self.source {
            Source::Probe(p) => p.next_at().map(|t| t.since(now)),
            Source::Fixed(_) => None,
        }
        .unwrap_or_default();
        let detail = match end {
            ProbeEnd::Measured(s) => format!(
                "baseline measured from {} requests: {}; next probe in {:.0}s",
                s.count,
                describe(&s),
                next.as_secs_f64()
            ),
            ProbeEnd::Shifted { probe, was } => format!(
                "the upstream changed speed: probe median {} against baseline {} \
                 from {} requests ({}); baseline restarted from this probe, \
                 limit back to the highest cut that fits the new baseline, or to the \
                 queued windows' completion rate times that allowance if higher; \
                 next probe in {:.0}s",
                ms(probe.p50),
                ms(was),
                probe.count,
                describe(&probe),
                next.as_secs_f64()
            ),
            ProbeEnd::Kept { timed } => format!(
                "probe timed only {timed} requests: baseline kept; next probe in {:.0}s",
                next.as_secs_f64()
            ),
            ProbeEnd::Crowded => unreachable!("handled above"),
        };
        self.record(now, from, Cause::Probed, None, detail);
    }

    /// What this limit has learned, for a warm start of another process:
    /// nothing until a baseline is measured (or, with a fixed baseline,
    /// until traffic came), since a limit that has measured nothing would
    /// only hand on its starting guess.
    pub(crate) fn learned(&self, algorithm: &str) -> Option<Learned> {
        let baseline = match &self.source {
            Source::Probe(p) => {
                p.baseline()?;
                p.pooled().collect()
            }
            Source::Fixed(_) if self.shaping.started() => Vec::new(),
            Source::Fixed(_) => return None,
        };
        Some(Learned {
            algorithm: algorithm.to_owned(),
            limit: self.before_probe.unwrap_or(self.limit),
            baseline,
        })
    }

    /// Starts from what a previous process learned instead of cold: its
    /// limit (within `[min, max]`, the ramp starting there), and its
    /// baseline samples, so no cold-start measurement runs and the first
    /// probe is a full interval after the first request. Slow start is
    /// off: the limit is already where traffic put it. Only before the
    /// first sample; false, and nothing changed, if it is too late, the
    /// limit is not a number, or a measured baseline comes without samples.
    pub(crate) fn warm(&mut self, now: Nanos, learned: &Learned) -> bool {
        if self.shaping.started() || !learned.limit.is_finite() {
            return false;
        }
        if let Source::Probe(p) = &mut self.source {
            if !p.restore(&learned.baseline) {
                return false;
            }
        }
        let from = self.limit;
        self.limit = learned
            .limit
            .clamp(self.shaping.floor(), self.shaping.max());
        self.shaping.warm(self.limit);
        self.slow_start = false;
        self.open_tried = true;
        let detail = match self.baseline(self.statistic) {
            Some(b) if !learned.baseline.is_empty() => format!(
                "warm start: the limit and a baseline of {} from {} probe samples, \
                 restored from what the previous process learned; next probe an interval \
                 after the first request",
                ms(b),
                learned.baseline.len()
            ),
            _ => "warm start: the limit restored from what the previous process learned".into(),
        };
        self.record(now, from, Cause::Restored, None, detail);
        true
    }

    /// Applies an algorithm's evaluation of a closed window `w`.
    pub(crate) fn apply(&mut self, now: Nanos, w: &WindowSummary, e: Evaluation, win: &Window) {
        let from = self.limit;
        let cap = self.shaping.cap(now);
        // Slow start ends at the first decrease, or at the first window
        // that did not fill the limit: from then on the limit is above
        // what traffic needs, and doubling it later, when a slowdown makes
        // requests pile up to it, would be exactly wrong.
        let filled = w.max_inflight >= from.floor() as usize;
        if matches!(e.step, Step::Decrease(_) | Step::Trim(_)) || !filled {
            self.slow_start = false;
        }
        let (to, cause, note) = match e.step {
            Step::Decrease(to) => {
                self.shaping.note_decrease(now);
                win.restart(now, &mut self.scratch);
                (to.min(from), e.cause, None)
            }
            Step::Trim(to) => (to.min(from), e.cause, None),
            Step::Increase(to) => {
                if let Some(left) = self.shaping.held(now) {
                    let note = format!(
                        "held: the last decrease was {:.1}s ago, growth waits {:.0}s",
                        (self.shaping.config().stable_for - left).as_secs_f64(),
                        self.shaping.config().stable_for.as_secs_f64()
                    );
                    (from, Cause::Hysteresis, Some(note))
                } else if !self.shaping.busy(w.max_inflight, from) {
                    let note = format!(
                        "held: at most {} in flight, under {:.0}% of the limit",
                        w.max_inflight,
                        self.shaping.config().busy_ratio * 100.0
                    );
                    (from, Cause::AppLimited, Some(note))
                } else {
                    // TCP's slow start: from a cold start at the floor,
                    // growing by ×1.1 (or +1) a window takes a dozen
                    // windows to reach a limit of 20, refusing traffic the
                    // backend could serve all the while. Double instead
                    // until the first overload, and only while the limit
                    // is what holds traffic back (every window filled it):
                    // doubling a limit that traffic does not reach builds
                    // a limit far above the load, which protects nothing
                    // when capacity drops (RFC 7661's lesson for cwnd).
                    // The ramp cap still bounds it.
                    let slow = self.slow_start && from * 2.0 > to;
                    let to = if slow { from * 2.0 } else { to };
                    if to > cap && cap < self.shaping.max() {
                        let note = format!("capped by the cold-start ramp at {cap:.0}");
                        (cap, Cause::RampUp, Some(note))
                    } else if slow {
                        let note = "slow start: doubling until the first overload".to_string();
                        (to, e.cause, Some(note))
                    } else {
                        (to, e.cause, None)
                    }
                }
            }
            Step::Hold => (from, e.cause, None),
        };
        let to = to.clamp(self.shaping.floor(), cap.max(self.shaping.floor()));
        self.limit = to;
        self.note_cut(w, &e, from, to);
        self.note_speed(w, e.latency);
        self.note_floor(to);
        let detail = match note {
            Some(n) => format!("{}; {n}", e.detail),
            None => e.detail,
        };
        self.record(now, from, cause, e.latency, detail);
    }

    /// Tells a slowdown from a queue. Cutting the limit of a queueing
    /// upstream shortens the queue, so latency falls about as much as the
    /// limit did; when the upstream itself got slower it does not fall at
    /// all. After a cut that lowered latency by less than half as much as
    /// the one before it lowered the limit, the baseline is suspect: probe
    /// now. A false alarm costs one probe (well under a second at the
    /// floor); a missed slowdown costs a backend left half idle. If the
    /// probe finds the upstream changed speed, `end_probe` undoes the run
    /// of cuts (see `rollback`).
    fn note_cut(&mut self, w: &WindowSummary, e: &Evaluation, from: f64, to: f64) {
        // A latency verdict at the floor counts too (ratio 1): the limit
        // cannot go lower, and latency not falling there is the clearest
        // sign of a slowdown.
        let latency_cut = matches!(e.step, Step::Decrease(_)) && matches!(e.cause, Cause::Latency);
        if matches!(e.step, Step::Increase(_)) {
            self.cuts = None;
            return;
        }
        let (true, Some(latency)) = (latency_cut, e.latency) else {
            return;
        };
        let mut run = self.cuts.unwrap_or(CutRun {
            steps: [Cut {
                limit: 0.0,
                latency: Duration::ZERO,
                rate: 0.0,
            }; STEPS],
            n: 0,
            latency,
            ratio: 1.0,
        });
        let expected = 1.0 - (1.0 - run.ratio) / 2.0;
        let flat = run.n > 0 && latency.as_secs_f64() >= run.latency.as_secs_f64() * expected;
        if run.n < STEPS {
            let span = w.span.as_secs_f64();
            let timed = w.latency.map_or(0, |l| l.count) as f64;
            run.steps[run.n] = Cut {
                limit: from,
                latency,
                rate: if span > 0.0 { timed / span } else { 0.0 },
            };
            run.n += 1;
        }
        run.latency = latency;
        run.ratio = to / from;
        self.cuts = Some(run);
        if flat {
            if let Source::Probe(p) = &mut self.source {
                p.request_now();
            }
        }
    }

    /// A window faster than `baseline ÷ shift`: the upstream got faster,
    /// and a stale baseline would let a queue build until the next
    /// scheduled probe. Probe now.
    fn note_speed(&mut self, w: &WindowSummary, latency: Option<Duration>) {
        let Source::Probe(p) = &mut self.source else {
            return;
        };
        let (Some(lat), Some(base)) = (latency, p.baseline().map(|b| self.statistic.of(b))) else {
            return;
        };
        if w.max_inflight > 0 && lat.as_secs_f64() * p.shift() < base.as_secs_f64() {
            p.request_now();
        }
    }

    /// Envoy PR #10647: a limit stuck at the floor suggests a baseline
    /// measured too low; the probe is free there, so take it.
    fn note_floor(&mut self, to: f64) {
        let Source::Probe(p) = &mut self.source else {
            return;
        };
        if to > self.shaping.floor() {
            self.floor_streak = 0;
            return;
        }
        self.floor_streak += 1;
        if p.config().floor_windows > 0 && self.floor_streak >= p.config().floor_windows {
            self.floor_streak = 0;
            p.request_early();
        }
    }

    fn record(
        &mut self,
        now: Nanos,
        from: f64,
        cause: Cause,
        latency: Option<Duration>,
        detail: String,
    ) {
        self.last = Some(Decision {
            at: now,
            cause,
            from: (from.floor() as usize).max(1),
            to: self.limit(),
            latency,
            baseline: self.baseline(self.statistic),
            detail,
        });
    }
}

/// `"mean 20.1ms, p50 20.0ms, p90 24.2ms, p99 24.9ms"`.
fn describe(s: &LatencyStats) -> String {
    format!(
        "mean {}, p50 {}, p90 {}, p99 {}",
        ms(s.mean),
        ms(s.p50),
        ms(s.p90),
        ms(s.p99)
    )
}

/// Synthetic samples for the algorithms' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use crate::clock::Nanos;
    use crate::limit::{Limit, Outcome, Sample};
    use std::time::Duration;

    /// A virtual clock and the samples it feeds a limit.
    pub(crate) struct Feeder {
        pub now: Nanos,
    }

    impl Feeder {
        pub(crate) fn new() -> Self {
            Self {
                now: Nanos(1_000_000_000),
            }
        }

        /// Feeds samples 50 ms apart, the `i`-th with `outcome(i)` and
        /// latency `rtt`, admitted with the limit in flight, until the limit
        /// makes a new decision; returns the limit after it.
        pub(crate) fn window(
            &mut self,
            l: &impl Limit,
            rtt: Duration,
            outcome: impl Fn(usize) -> Outcome,
        ) -> usize {
            let before = l.explain().map(|d| d.at);
            for i in 0..10_000 {
                self.now = self.now.plus(Duration::from_millis(50));
                let s = Sample {
                    start: Nanos(self.now.0 - rtt.as_nanos() as u64),
                    rtt,
                    inflight: l.limit(),
                    outcome: outcome(i),
                };
                l.on_sample(self.now, &s);
                if l.explain().map(|d| d.at) != before {
                    return l.limit();
                }
            }
            panic!("no decision after 10 000 samples");
        }

        /// A window of successes.
        pub(crate) fn ok(&mut self, l: &impl Limit, rtt_ms: u64) -> usize {
            self.window(l, Duration::from_millis(rtt_ms), |_| Outcome::Success)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cuts: &[(f64, u64, f64)]) -> CutRun {
        let mut steps = [Cut {
            limit: 0.0,
            latency: Duration::ZERO,
            rate: 0.0,
        }; STEPS];
        for (s, &(limit, ms, rate)) in steps.iter_mut().zip(cuts) {
            *s = Cut {
                limit,
                latency: Duration::from_millis(ms),
                rate,
            };
        }
        CutRun {
            steps,
            n: cuts.len(),
            latency: Duration::ZERO,
            ratio: 1.0,
        }
    }

    #[test]
    fn a_rollback_takes_the_higher_of_the_fitting_cut_and_littles_knee() {
        let ms = Duration::from_millis;
        // 8 workers slowed to 40 ms: 200/s. The cuts at 26 and 13 queued
        // (130 and 65 ms) and completed at that rate, so the concurrency
        // at 1.25 × the new baseline is 200 × 50 ms = 10; the cut at 6 fit.
        let slowed = run(&[(26.0, 130, 200.0), (13.0, 65, 200.0), (6.0, 41, 150.0)]);
        assert_eq!(slowed.rollback(ms(40), 1.25), 10.0);
        // The run's first window ran partly at the old speed (300/s): the
        // lowest estimate is the one taken.
        let mixed = run(&[(26.0, 90, 300.0), (13.0, 65, 200.0), (6.0, 41, 150.0)]);
        assert_eq!(mixed.rollback(ms(40), 1.25), 10.0);
        // A cut that fits above Little's estimate wins.
        let fits = run(&[(13.0, 65, 150.0), (11.0, 45, 250.0)]);
        assert_eq!(fits.rollback(ms(40), 1.25), 11.0);
        // An estimate is never above the limit its window ran at.
        let capped = run(&[(5.0, 80, 1000.0)]);
        assert_eq!(capped.rollback(ms(40), 1.25), 5.0);
        // No rate measured, nothing fits: nothing to go back to.
        let none = run(&[(13.0, 65, 0.0)]);
        assert_eq!(none.rollback(ms(40), 1.25), 0.0);
    }
}
