//! The baseline: what the upstream's latency is when nothing queues, and
//! how it is measured without ratcheting.
//!
//! **Why these names.** The gateway has probes of its own — the bottleneck
//! probes of `[[probes]]`, which watch a database or a backlog and cap the
//! limit from outside — and they have nothing to do with this. So this
//! module is named after what it yields, the baseline, and its settings
//! after what they are, a [`BaselineProbe`]: a short measurement, at the
//! floor, of the upstream's unloaded latency ([`Baseline::Measured`], as
//! opposed to [`Baseline::Fixed`]). The configuration keys keep their
//! `probe_` prefix (`probe_interval`, `probe_shift`, …): inside
//! `[routes.limit]` they cannot be mistaken for `[[probes]]`.
//!
//! Every latency-based algorithm compares a window's latency with a
//! baseline. The baseline must come from a moment when *we* were not
//! queueing requests on the upstream, or it drifts up with the load and the
//! algorithm stops seeing the overload it causes:
//!
//! - Netflix Gradient2 learns its long-term RTT as a slow average of recent
//!   windows, so sustained load drags it up; VegasLimit resets `rtt_noload`
//!   to the current RTT every `probeMultiplier × limit` samples, and under
//!   load that is a loaded RTT (Netflix concurrency-limits issue #165:
//!   "`rtt_noload` may grow too large").
//! - Envoy's adaptive concurrency filter instead *measures* the minRTT: every
//!   `interval` (± `jitter`, so a fleet does not probe in lock-step) it pins
//!   the concurrency at `min_concurrency` until `request_count` requests
//!   complete, and takes their latency. Envoy PR #11579 then found the
//!   ratchet that remained: requests admitted *before* the pin, which queued
//!   under the old limit, completed inside the measurement and inflated it,
//!   each measurement a little more under sustained load.
//!
//! floodwall does what Envoy does, with the #11579 fix built in: while
//! probing, the limit is pinned at the floor, and a sample counts only if it
//! was a success admitted after the probe began *and* with at most the
//! floor in flight. So a probe only ever times requests that ran at the
//! floor's concurrency, whatever the load. It ends after `samples` such
//! samples (or `max_duration`, keeping the old baseline if too few came),
//! and the limit goes back to where it was.
//!
//! **The baseline pools the last `history` probes** (default 4, so 200
//! samples). One probe of 50 is too few to compare with a window of
//! hundreds: with a realistic long tail (log-normal, p99 ≈ 3 × p50) the p90
//! of 50 samples is off by ±10 % from one probe to the next, and a baseline
//! measured 10 % low makes every window look overloaded until the next
//! probe — in the simulations that pinned AIMD at its floor. Pooling is
//! safe because every pooled sample is an unloaded one: nothing from a
//! loaded period can enter, so the pool cannot ratchet. The price is that a
//! genuine change of the upstream's speed takes a few probes to be fully
//! believed; a slowdown gets there fast anyway, because it pins the limit
//! at the floor and that triggers early probes (next paragraph). A probe
//! takes `samples`; the first measurement fills the whole pool (at cold
//! start the limit sits at the floor anyway, or it runs open at the
//! traffic's own concurrency, below, where it costs nothing).
//!
//! **A cold start measures open.** Pinning the floor to measure the first
//! baseline refused 77 % of a steady 0.8 × capacity in the first second
//! after a restart (the cold-start simulation; the Envoy minRTT phase's
//! users complain of the same, Envoy #16392). So the first measurement
//! runs at whatever concurrency the traffic brings, under a limit of
//! `initial` (64): below capacity there is no queue to mistake for the
//! unloaded latency. If a request is admitted with that limit full, demand
//! may exceed what the upstream runs at once and a queue may be forming,
//! so the measurement is thrown away and a pinned one runs instead, as
//! before; the same when its last quarter of requests is slower than its
//! first by more than `shift`, which is how load a little above capacity
//! shows itself before any limit is reached. Neither counts when the queue
//! costs less than the rule's `min_queue_delay`, which the rule itself never
//! calls overload (a closed loop of 64 in front of a fast upstream fills the
//! limit exactly). A measurement whose traffic reached half its limit or
//! more is confirmed by a pinned probe at a quarter of the interval: it
//! may have been excused for filling the limit with a small queue, or be
//! a closed loop of clients waiting on a steady queue, which shows no
//! trend (32 clients in front of 16 workers measured a baseline of twice
//! the service time, and the limit sat at 70 until the first pinned
//! probe). One that stayed under half ran at the traffic's own
//! concurrency, far inside what it was allowed, and its next probe is a
//! full interval away like any other. Confirming every open measurement early
//! pinned the floor 15 s after every restart, in the middle of whatever
//! traffic the restart met: through a spike that began 5 s after a start
//! it cost 7 % of the spike's goodput over four endpoints
//! (`bench/endpoints.sh`: 237 req/s against 255 for the same gate at a
//! fixed limit). A queue in a measurement under half its limit does not go unseen
//! for the interval: one that grew ends the measurement crowded, and a
//! baseline inflated by a standing one makes the first unqueued window run
//! faster than `baseline ÷ shift`, which probes at once (the `Controller`).
//!
//! **A change of speed replaces the pool.** When a probe's median is more
//! than `shift` (1.3) away from the pool's, the upstream itself got slower
//! or faster; waiting `history` probes to believe it would keep an
//! algorithm cutting to its floor for minutes while a slower backend sits
//! half idle. The pool restarts from that probe. The `Controller` asks for
//! such a probe at once when cuts stop lowering latency (a slowdown, not a
//! queue) or a window runs faster than `baseline ÷ shift`.
//!
//! Like Envoy (PR #10647), a probe also starts early when the limit has sat
//! at the floor for `floor_windows` windows in a row: the limit is already
//! at the probe's concurrency, so it costs nothing, and a baseline measured
//! too low is what pins a limit to its floor.
//!
//! The cost: every `interval`, the route runs at the floor for about
//! `samples × latency / floor` (50 × 20 ms / 3 ≈ 0.33 s every 60 s ≈ 0.6 %
//! of capacity; 1.5 % at 50 ms), and the cold-start probe four times that
//! (capped, like every probe, at `max_duration`). A [`Baseline::Fixed`]
//! latency avoids it, at the price of retuning it whenever the upstream
//! changes.

use super::histogram::LatencyStats;
use super::rng::Rng;
use crate::clock::{duration_nanos, Nanos};
use crate::limit::{LimitConfigError, Outcome, Sample};
use std::collections::VecDeque;
use std::time::Duration;

/// Where an algorithm's baseline latency comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Baseline {
    /// Measured by periodic probes at the floor (the default).
    Measured(BaselineProbe),
    /// A fixed unloaded latency, compared with whatever statistic the
    /// algorithm uses (the Phoenix WIP-gate article's `baseLatency: 50 ms`).
    /// No probes.
    Fixed(Duration),
}

impl Default for Baseline {
    fn default() -> Self {
        Baseline::Measured(BaselineProbe::default())
    }
}

impl Baseline {
    /// Checks the settings; errors name the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<(), LimitConfigError> {
        let key = |k: &str| format!("{prefix}{k}");
        match self {
            Baseline::Fixed(d) if d.is_zero() => Err(LimitConfigError::new(
                key("baseline"),
                "a fixed baseline must be above zero",
            )),
            Baseline::Fixed(_) => Ok(()),
            Baseline::Measured(p) => {
                if p.interval.is_zero() {
                    return Err(LimitConfigError::new(
                        key("probe_interval"),
                        "must be above zero",
                    ));
                }
                if !(0.0..1.0).contains(&p.jitter) {
                    return Err(LimitConfigError::new(
                        key("probe_jitter"),
                        format!("must be in [0, 1), got {}", p.jitter),
                    ));
                }
                if p.samples == 0 {
                    return Err(LimitConfigError::new(
                        key("probe_samples"),
                        "must be at least 1",
                    ));
                }
                if p.shift.is_nan() || p.shift <= 1.0 {
                    return Err(LimitConfigError::new(
                        key("probe_shift"),
                        format!("must be above 1.0, got {}", p.shift),
                    ));
                }
                if p.history == 0 {
                    return Err(LimitConfigError::new(
                        key("probe_history"),
                        "must be at least 1",
                    ));
                }
                Ok(())
            }
        }
    }
}

/// How the baseline is measured: a probe at the floor every `interval`;
/// see the module doc.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BaselineProbe {
    /// Time between probes. Default 60 s (Envoy's documented example):
    /// upstream latency drifts over minutes (deploys, cache warm-up, data
    /// growth), and a probe costs about 0.5 % of capacity at this interval.
    pub interval: Duration,
    /// Each interval is stretched or shrunk by a uniform random fraction up
    /// to this. Default 0.15 (Envoy's default 15 %).
    pub jitter: f64,
    /// Successes a probe times before it ends. Default 50 (Envoy's
    /// `request_count`).
    pub samples: usize,
    /// A probe that has not timed `samples` requests after this long ends
    /// anyway: with at least 10 (or `samples`) it sets the baseline, with
    /// fewer it keeps the old one. Default 10 s.
    pub max_duration: Duration,
    /// The baseline pools the last `history × samples` probe samples (see
    /// the module doc). Default 4. 1 is Envoy's behaviour: each probe
    /// replaces the baseline.
    pub history: usize,
    /// Probe early once the limit has been at the floor for this many
    /// consecutive windows (Envoy PR #10647 uses 5). Zero disables it.
    pub floor_windows: usize,
    /// A probe whose median is more than this factor above or below the
    /// pooled baseline's median means the upstream itself changed speed
    /// (a slower query plan, a cold cache, a faster release): the pool is
    /// emptied and restarted from this probe, so the change is believed at
    /// once instead of after `history` probes. Default 1.3: the median of
    /// 50 log-normal samples with p99 ≈ 3 × p50 is within ±9 % (one sd)
    /// of the true one, so 1.3 is about three sd of probe-to-pool noise.
    pub shift: f64,
    /// Seeds the jitter. Give each process its own (e.g. from its pid and
    /// start time): the same seed on every pod of a fleet makes their
    /// probes line up, which is what jitter is for. Default a constant, so
    /// tests and simulations replay exactly.
    pub seed: u64,
}

impl Default for BaselineProbe {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            jitter: 0.15,
            samples: 50,
            max_duration: Duration::from_secs(10),
            history: 4,
            floor_windows: 5,
            shift: 1.3,
            seed: 0x5EED_F100_D3A1,
        }
    }
}

/// How a probe ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ProbeEnd {
    /// It timed enough samples: these are its statistics (the baseline is
    /// now those of the pool).
    Measured(LatencyStats),
    /// It timed enough samples, and their median was more than `shift`
    /// away from the old baseline's: the upstream changed speed, and the
    /// baseline is now this probe's alone.
    Shifted {
        /// This probe's statistics (now the baseline).
        probe: LatencyStats,
        /// The old baseline's median.
        was: Duration,
    },
    /// Too few samples in `max_duration`; the old baseline stays.
    Kept { timed: u64 },
    /// A first measurement at the traffic's own concurrency (see
    /// [`Prober::begin_open`]) saw the limit reached: a queue may have
    /// formed, so its samples are no baseline. Nothing was kept; measure
    /// pinned at the floor instead.
    Crowded,
}

/// The probe's state behind [`BaselineProbe`].
#[derive(Debug, Clone)]
pub(crate) struct Prober {
    cfg: BaselineProbe,
    rng: Rng,
    since: Option<Nanos>,
    next_at: Option<Nanos>,
    early: bool,
    timed: Vec<u64>,
    pool: VecDeque<u64>,
    baseline: Option<LatencyStats>,
    /// The running measurement is open (not pinned): the limit it runs
    /// at, and the highest in flight any of its samples was admitted with.
    open: Option<usize>,
    /// What a queue must cost before an open measurement calls itself
    /// crowded (nanoseconds; see [`Prober::begin_open`]).
    open_floor: u64,
    peak: usize,
    crowded: bool,
    /// When each timed sample of an open measurement was admitted, beside
    /// `timed`: to see a queue building.
    admitted: Vec<u64>,
}

impl Prober {
    pub(crate) fn new(cfg: BaselineProbe) -> Self {
        Self {
            rng: Rng::new(cfg.seed),
            cfg,
            since: None,
            next_at: None,
            early: false,
            timed: Vec::with_capacity(cfg.samples),
            pool: VecDeque::with_capacity(cfg.history * cfg.samples),
            baseline: None,
            open: None,
            open_floor: 0,
            peak: 0,
            crowded: false,
            admitted: Vec::new(),
        }
    }

    pub(crate) fn config(&self) -> &BaselineProbe {
        &self.cfg
    }

    pub(crate) fn baseline(&self) -> Option<&LatencyStats> {
        self.baseline.as_ref()
    }

    pub(crate) fn probing(&self) -> bool {
        self.since.is_some()
    }

    /// Whether a probe should start at `now`: at the very first sample, when
    /// the interval has passed, or when an early probe was requested.
    pub(crate) fn due(&self, now: Nanos) -> bool {
        !self.probing() && (self.early || self.next_at.is_none_or(|t| now >= t))
    }

    /// Whether a probe was asked for ahead of schedule.
    pub(crate) fn requested(&self) -> bool {
        self.early
    }

    pub(crate) fn request_early(&mut self) {
        if self.cfg.floor_windows > 0 {
            self.early = true;
        }
    }

    /// Probes at the next sample: the windows suggest the upstream's
    /// unloaded latency is no longer the baseline (see `Controller`).
    pub(crate) fn request_now(&mut self) {
        self.early = true;
    }

    /// The factor past which a probe counts as a change of speed.
    pub(crate) fn shift(&self) -> f64 {
        self.cfg.shift
    }

    pub(crate) fn begin(&mut self, now: Nanos) {
        self.since = Some(now);
        self.early = false;
        self.timed.clear();
        self.open = None;
        self.peak = 0;
        self.crowded = false;
        self.admitted.clear();
    }

    /// Begins the first measurement of a cold start *open*: at the
    /// traffic's own concurrency under a limit of `limit`, instead of
    /// pinned at the floor. Restarting in front of a service that runs at
    /// 0.8 of its capacity, there is no queue to mistake for the unloaded
    /// latency, and pinning the floor refused three quarters of the
    /// traffic for the second the measurement took (Envoy's minRTT phase
    /// has the same flaw: Envoy #16392). If any request is admitted with
    /// the limit full, demand may exceed what the upstream runs at once,
    /// so the measurement ends [`ProbeEnd::Crowded`] and a pinned one
    /// follows.
    ///
    /// Unless the queue that may form costs less than `floor` (the rule's
    /// `min_queue_delay`): a request admitted with the limit full but
    /// answered within `floor` does not make the measurement crowded, nor
    /// do quarters that differ by less than `floor`. The rule never calls
    /// such a queue overload, and in front of a fast upstream (64
    /// connections to one that answers at once) the closed loop fills
    /// `initial` exactly, so the pinned fallback refused most of the first
    /// second for a queue worth a fraction of a millisecond.
    pub(crate) fn begin_open(&mut self, now: Nanos, limit: usize, floor: Duration) {
        self.begin(now);
        self.open = Some(limit);
        self.open_floor = duration_nanos(floor);
    }

    /// Whether an open measurement's samples show a queue building: the
    /// last quarter admitted (median) slower than the first quarter by
    /// more than `shift`. Load a little above capacity fills a queue too
    /// slowly to reach the limit within the measurement, but every request
    /// then waits longer than the one before; unloaded, the quarters differ
    /// by sampling noise only (two medians of 50 within about ±13 %).
    fn queue_building(&self) -> bool {
        let mut by_start: Vec<(u64, u64)> = self
            .admitted
            .iter()
            .copied()
            .zip(self.timed.iter().copied())
            .collect();
        if by_start.len() < 8 {
            return false;
        }
        by_start.sort_unstable();
        let q = by_start.len() / 4;
        let median = |part: &[(u64, u64)]| {
            let mut rtts: Vec<u64> = part.iter().map(|(_, rtt)| *rtt).collect();
            rtts.sort_unstable();
            rtts[rtts.len() / 2] as f64
        };
        let first = median(&by_start[..q]);
        let last = median(&by_start[by_start.len() - q..]);
        last > self.cfg.shift * first.max(1.0) && last - first >= self.open_floor as f64
    }

    /// The most in flight any sample of the last open measurement saw.
    pub(crate) fn open_peak(&self) -> usize {
        self.peak
    }

    /// Offers a sample to a running probe; it is timed only if it is a
    /// success admitted after the probe began with at most `pin` in flight
    /// and no faster than `min_rtt` (see the module doc).
    pub(crate) fn offer(&mut self, s: &Sample, pin: usize, min_rtt: Duration) {
        let Some(since) = self.since else { return };
        if let Some(limit) = self.open {
            if s.start >= since {
                self.peak = self.peak.max(s.inflight);
                self.crowded |= s.inflight >= limit && duration_nanos(s.rtt) >= self.open_floor;
            }
            if !self.crowded
                && s.outcome == Outcome::Success
                && s.start >= since
                && s.rtt >= min_rtt
                && self.timed.len() < self.wanted()
            {
                self.timed.push(duration_nanos(s.rtt));
                self.admitted.push(s.start.0);
            }
            return;
        }
        if s.outcome == Outcome::Success
            && s.start >= since
            && s.inflight <= pin
            && s.rtt >= min_rtt
            && self.timed.len() < self.wanted()
        {
            self.timed.push(duration_nanos(s.rtt));
        }
    }

    /// Ends the probe if it is done at `now`; schedules the next one.
    pub(crate) fn finish(&mut self, now: Nanos) -> Option<ProbeEnd> {
        let since = self.since?;
        let measured = self.timed.len() >= self.wanted()
            || (now.since(since) >= self.cfg.max_duration && self.timed.len() >= 10);
        if self.open.is_some() && measured && self.queue_building() {
            self.crowded = true;
        }
        if self.crowded {
            self.since = None;
            self.open = None;
            self.timed.clear();
            self.early = true;
            return Some(ProbeEnd::Crowded);
        }
        let timed = self.timed.len() as u64;
        let enough = self.wanted() as u64;
        let end = if timed >= enough {
            self.take_measurement()
        } else if now.since(since) >= self.cfg.max_duration {
            if timed >= enough.min(10) {
                self.take_measurement()
            } else if self.baseline.is_none() {
                // Nothing to fall back on: keep the floor and try again.
                self.begin(now);
                return None;
            } else {
                Some(ProbeEnd::Kept { timed })
            }
        } else {
            None
        }?;
        self.since = None;
        // An open measurement whose traffic reached half its limit may
        // carry a queue: confirm it pinned at a quarter of the interval.
        // Any other is a full interval from the next (see the module doc).
        let interval = match self.open.take() {
            Some(limit) if self.peak.saturating_mul(2) >= limit => self.cfg.interval / 4,
            _ => self.cfg.interval,
        };
        self.schedule(now, interval);
        Some(end)
    }

    /// The pool's size: the last `history × samples` probe samples.
    fn capacity(&self) -> usize {
        self.cfg.history * self.cfg.samples
    }

    /// How many samples this probe takes: `samples`, except that the first
    /// measurement (open, which costs nothing at the traffic's own
    /// concurrency, or pinned when there is no baseline at all) fills the
    /// whole pool. Once there is a baseline, a pinned probe never takes
    /// more than `samples`: after a change of speed empties the pool,
    /// refilling it in one probe at the floor held a slowed upstream at
    /// three requests for five seconds.
    fn wanted(&self) -> usize {
        if self.open.is_some() || self.baseline.is_none() {
            self.cfg
                .samples
                .max(self.capacity().saturating_sub(self.pool.len()))
        } else {
            self.cfg.samples
        }
    }

    /// Moves the probe's samples into the pool (the oldest fall out) and
    /// recomputes the baseline over the pool. A probe more than `shift`
    /// away from the pool replaces it (see [`BaselineProbe::shift`]).
    fn take_measurement(&mut self) -> Option<ProbeEnd> {
        let this = LatencyStats::of_nanos(self.timed.iter().copied())?;
        let capacity = self.capacity();
        let shifted = self.baseline.as_ref().and_then(|old| {
            let ratio = this.p50.as_secs_f64() / old.p50.as_secs_f64().max(1e-9);
            (ratio > self.cfg.shift || ratio * self.cfg.shift < 1.0).then_some(old.p50)
        });
        if shifted.is_some() {
            self.pool.clear();
        }
        for v in self.timed.drain(..) {
            if self.pool.len() == capacity {
                self.pool.pop_front();
            }
            self.pool.push_back(v);
        }
        self.baseline = LatencyStats::of_nanos(self.pool.iter().copied());
        Some(match shifted {
            Some(was) => ProbeEnd::Shifted { probe: this, was },
            None => ProbeEnd::Measured(this),
        })
    }

    /// When the next scheduled probe starts.
    pub(crate) fn next_at(&self) -> Option<Nanos> {
        self.next_at
    }

    /// The pooled samples, oldest first: what a warm start restores.
    pub(crate) fn pooled(&self) -> impl Iterator<Item = Duration> + '_ {
        self.pool.iter().map(|n| Duration::from_nanos(*n))
    }

    /// Takes `samples` (oldest first, the newest `history × samples` of
    /// them) as the pool a previous process measured, before any traffic:
    /// the baseline is theirs, and the first probe is scheduled a full
    /// interval after the first sample ([`Prober::schedule_from`]) instead
    /// of measuring at once. False, and nothing changed, if there are
    /// none, or a measurement already ran here.
    pub(crate) fn restore(&mut self, samples: &[Duration]) -> bool {
        if samples.is_empty() || self.baseline.is_some() || self.probing() {
            return false;
        }
        let keep = samples.len().min(self.capacity());
        self.pool = samples[samples.len() - keep..]
            .iter()
            .map(|d| duration_nanos(*d).max(1))
            .collect();
        self.baseline = LatencyStats::of_nanos(self.pool.iter().copied());
        self.baseline.is_some()
    }

    /// Schedules the first probe of a restored baseline: a jittered
    /// interval from `now`, as after any measurement. Does nothing once a
    /// probe is scheduled, or without a baseline.
    pub(crate) fn schedule_from(&mut self, now: Nanos) {
        if self.next_at.is_some() || self.baseline.is_none() {
            return;
        }
        self.schedule(now, self.cfg.interval);
    }

    /// Schedules the next probe `interval` from `now`, stretched or shrunk
    /// by the jitter.
    fn schedule(&mut self, now: Nanos, interval: Duration) {
        let swing = self.cfg.jitter * (2.0 * self.rng.unit() - 1.0);
        // `mul_f64` would panic past Duration::MAX (a probe_interval of
        // centuries); the same product, saturated.
        let wait = Duration::try_from_secs_f64((1.0 + swing) * interval.as_secs_f64())
            .unwrap_or(Duration::MAX);
        self.next_at = Some(now.plus(wait));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(start_ms: u64, rtt_ms: u64, inflight: usize) -> Sample {
        Sample {
            start: Nanos(start_ms * 1_000_000),
            rtt: Duration::from_millis(rtt_ms),
            inflight,
            outcome: Outcome::Success,
        }
    }

    #[test]
    fn a_probe_times_only_requests_admitted_under_the_pin() {
        let mut p = Prober::new(BaselineProbe {
            samples: 3,
            history: 1,
            ..BaselineProbe::default()
        });
        let now = Nanos(1_000_000_000);
        assert!(p.due(now));
        p.begin(now);
        // Admitted before the probe, with 40 in flight: the Envoy #11579
        // ratchet. Not timed.
        p.offer(&s(900, 400, 40), 3, Duration::ZERO);
        // Admitted after the pin, but the limiter still had 8 in flight.
        p.offer(&s(1_050, 200, 8), 3, Duration::ZERO);
        for i in 0..3 {
            p.offer(&s(1_100 + i, 20, 3), 3, Duration::ZERO);
        }
        let end = p.finish(Nanos(1_200_000_000)).unwrap();
        let ProbeEnd::Measured(stats) = end else {
            panic!("{end:?}")
        };
        assert_eq!(stats.count, 3);
        assert_eq!(stats.p99, Duration::from_millis(20));
        assert!(!p.probing());
        // Next probe 60 s ± 15 % later.
        let next = p.next_at().unwrap().since(Nanos(1_200_000_000));
        assert!(next >= Duration::from_secs(51) && next <= Duration::from_secs(69));
    }

    #[test]
    fn an_absurd_interval_saturates_instead_of_panicking() {
        // A config can ask for any interval; the next probe is then never,
        // not an overflow.
        let mut p = Prober::new(BaselineProbe {
            samples: 1,
            history: 1,
            interval: Duration::MAX,
            ..BaselineProbe::default()
        });
        p.begin(Nanos(0));
        p.offer(&s(0, 10, 1), 3, Duration::ZERO);
        assert!(p.finish(Nanos(1)).is_some());
        assert_eq!(p.next_at(), Some(Nanos(u64::MAX)));
        assert!(!p.due(Nanos(u64::MAX - 1)));
    }

    #[test]
    fn a_starved_probe_keeps_the_old_baseline() {
        let mut p = Prober::new(BaselineProbe::default());
        p.begin_open(Nanos(0), 100, Duration::ZERO);
        for i in 0..60 {
            p.offer(&s(i, 10, 1), 3, Duration::ZERO);
        }
        assert_eq!(
            p.finish(Nanos(1)),
            None,
            "an open first probe fills the pool"
        );
        for i in 0..200 {
            p.offer(&s(i, 10, 1), 3, Duration::ZERO);
        }
        assert!(matches!(p.finish(Nanos(1)), Some(ProbeEnd::Measured(_))));
        assert_eq!(p.baseline().unwrap().count, 200, "4 × 50");
        p.begin(Nanos(100_000_000_000));
        p.offer(&s(100_001, 10, 1), 3, Duration::ZERO);
        let end = p.finish(Nanos(111_000_000_000)).unwrap();
        assert_eq!(end, ProbeEnd::Kept { timed: 1 });
        assert_eq!(p.baseline().unwrap().p50, Duration::from_millis(10));
    }

    #[test]
    fn the_baseline_pools_the_last_probes_only() {
        let mut p = Prober::new(BaselineProbe {
            samples: 2,
            history: 2,
            // No change of speed counts: this test is about pooling.
            shift: 10.0,
            ..BaselineProbe::default()
        });
        // The first (open) probe fills the pool of 2 × 2 with 10 ms; then
        // each probe of 2 pushes out the 2 oldest.
        let mut probe = |t: u64, ms: &[u64]| {
            match t {
                0 => p.begin_open(Nanos(0), 100, Duration::ZERO),
                _ => p.begin(Nanos(t * 1_000_000)),
            }
            for &ms in ms {
                p.offer(&s(t, ms, 1), 3, Duration::ZERO);
            }
            p.finish(Nanos(t * 1_000_000 + 1)).unwrap();
        };
        probe(0, &[10, 10, 10, 10]);
        probe(100_000, &[20, 20]);
        probe(200_000, &[30, 30]);
        let b = p.baseline().unwrap();
        assert_eq!(b.count, 4, "the 10 ms samples have left the pool");
        assert_eq!(b.mean, Duration::from_millis(25));
    }

    #[test]
    fn a_change_of_speed_restarts_the_pool_from_that_probe() {
        let mut p = Prober::new(BaselineProbe {
            samples: 4,
            history: 4,
            ..BaselineProbe::default()
        });
        let mut probe = |t: u64, ms: &[u64]| {
            match t {
                0 => p.begin_open(Nanos(0), 100, Duration::ZERO),
                _ => p.begin(Nanos(t * 1_000_000)),
            }
            for &ms in ms {
                p.offer(&s(t, ms, 1), 3, Duration::ZERO);
            }
            let end = p.finish(Nanos(t * 1_000_000 + 1)).unwrap();
            (end, p.baseline().unwrap().count, p.baseline().unwrap().p50)
        };
        let (end, count, _) = probe(0, &[10; 16]);
        assert!(matches!(end, ProbeEnd::Measured(_)));
        assert_eq!(count, 16);
        // 12 ms is 1.2 × the pool: noise, pooled.
        let (end, count, _) = probe(100_000, &[12; 4]);
        assert!(matches!(end, ProbeEnd::Measured(_)), "{end:?}");
        assert_eq!(count, 16);
        // 20 ms is 2 × the pool: the upstream slowed down.
        let (end, count, p50) = probe(200_000, &[20; 4]);
        assert!(
            matches!(end, ProbeEnd::Shifted { was, .. } if was == Duration::from_millis(10)),
            "{end:?}"
        );
        assert_eq!((count, p50), (4, Duration::from_millis(20)));
        // And faster again: 10 ms is 0.5 × 20 ms.
        let (end, _, p50) = probe(300_000, &[10; 16]);
        assert!(matches!(end, ProbeEnd::Shifted { .. }), "{end:?}");
        assert_eq!(p50, Duration::from_millis(10));
    }

    #[test]
    fn an_open_measurement_times_any_concurrency_until_the_limit_is_reached() {
        let mut p = Prober::new(BaselineProbe {
            samples: 4,
            history: 2,
            ..BaselineProbe::default()
        });
        p.begin_open(Nanos(0), 20, Duration::ZERO);
        for inflight in [5, 12, 19, 7, 3, 11, 9, 2] {
            p.offer(&s(0, 10, inflight), 3, Duration::ZERO);
        }
        assert!(matches!(p.finish(Nanos(1)), Some(ProbeEnd::Measured(_))));
        assert_eq!(p.baseline().unwrap().count, 8, "open: the pool filled");
        assert_eq!(p.open_peak(), 19);

        // Another cold start whose traffic reaches the limit: crowded,
        // nothing kept, a pinned probe asked for at once.
        let mut p = Prober::new(BaselineProbe::default());
        p.begin_open(Nanos(0), 20, Duration::ZERO);
        p.offer(&s(0, 10, 4), 3, Duration::ZERO);
        p.offer(&s(0, 80, 20), 3, Duration::ZERO);
        assert_eq!(p.finish(Nanos(1)), Some(ProbeEnd::Crowded));
        assert!(p.baseline().is_none());
        assert!(p.due(Nanos(2)));
    }

    #[test]
    fn a_full_limit_answered_within_the_queue_floor_is_not_crowded() {
        let sample = |rtt_us: u64, inflight| Sample {
            start: Nanos(1),
            rtt: Duration::from_micros(rtt_us),
            inflight,
            outcome: Outcome::Success,
        };
        let floor = Duration::from_millis(2);
        let cfg = BaselineProbe {
            samples: 4,
            history: 2,
            ..BaselineProbe::default()
        };
        // A fast upstream behind a closed loop of exactly `initial`: every
        // request sees the limit full, and is answered in 0.3-1.5 ms.
        let mut p = Prober::new(cfg);
        p.begin_open(Nanos(0), 64, floor);
        for rtt in [300, 900, 400, 1500, 700, 350, 1200, 600] {
            p.offer(&sample(rtt, 64), 3, Duration::ZERO);
        }
        assert!(matches!(p.finish(Nanos(2)), Some(ProbeEnd::Measured(_))));
        // The same with the upstream answering in 3 ms: a queue that
        // costs more than the floor, crowded as before.
        let mut p = Prober::new(cfg);
        p.begin_open(Nanos(0), 64, floor);
        p.offer(&sample(3000, 64), 3, Duration::ZERO);
        assert_eq!(p.finish(Nanos(2)), Some(ProbeEnd::Crowded));
    }

    #[test]
    fn only_an_open_measurement_that_reached_half_its_limit_is_confirmed_early() {
        let cfg = BaselineProbe {
            samples: 4,
            history: 2,
            ..BaselineProbe::default()
        };
        let at = |secs: u64| Nanos(secs * 1_000_000_000);
        let sample = |inflight| Sample {
            start: Nanos(1),
            rtt: Duration::from_micros(500),
            inflight,
            outcome: Outcome::Success,
        };
        // The quarter interval is 15 s ± 15 %, the interval 60 s ± 15 %.
        for (inflight, earliest, latest) in [(64, 12, 18), (32, 12, 18), (8, 51, 69)] {
            let mut p = Prober::new(cfg);
            p.begin_open(Nanos(0), 64, Duration::from_millis(2));
            for _ in 0..8 {
                p.offer(&sample(inflight), 3, Duration::ZERO);
            }
            assert!(matches!(p.finish(Nanos(2)), Some(ProbeEnd::Measured(_))));
            assert!(!p.due(at(earliest)), "{inflight} in flight of 64");
            assert!(p.due(at(latest)), "{inflight} in flight of 64");
        }
    }

    #[test]
    fn an_open_measurement_that_sees_latency_grow_is_crowded() {
        let mut p = Prober::new(BaselineProbe {
            samples: 8,
            history: 2,
            ..BaselineProbe::default()
        });
        // Far below the limit, but each request waits longer than the one
        // before: a queue filling slowly.
        p.begin_open(Nanos(0), 64, Duration::ZERO);
        for i in 0..16u64 {
            p.offer(&s(i, 80 + 10 * i, 10), 3, Duration::ZERO);
        }
        assert_eq!(p.finish(Nanos(1)), Some(ProbeEnd::Crowded));
        assert!(p.baseline().is_none());
    }
}
