//! Every adaptive limit, enforced by the real limiter in front of a
//! simulated backend in virtual time (see `floodwall_core::simulate`), with
//! its convergence, tracking, stability, resistance to ratcheting,
//! hysteresis, cold-start ramp and robustness to long-tailed latency
//! asserted in numbers.
//!
//! The reference scenario: W = 50 workers × S = 50 ms (1000 req/s), ±25 %
//! uniform service-time jitter, Poisson arrivals at twice the capacity,
//! each algorithm at its defaults. The best concurrency is C* = W (the
//! module doc of `simulate` says why). A limit is judged by its *time
//! average* over a stretch long enough to hold whole sawtooth cycles,
//! leaving out the scheduled baseline probes; AIMD is a sawtooth by design
//! and its instantaneous value is not the point.
//!
//! Convergence, tracking, stability and the long-tail test run three seeds
//! each and every seed must pass, so no bound holds by luck. No algorithm
//! holds ±10 % of C* on every seed and both latency shapes, so each is held
//! to what it does reach, and the test says why:
//!
//! - `aimd` saws between about W and 1.15 W (its tolerance): time averages
//!   of 1.0–1.11 W at W = 50, up to 1.14 W at W = 25; bound ±15 %.
//! - `gradient` parks at its tolerance, 1.1–1.18 W; bound [0.9, 1.2].
//! - `vegas` keeps alpha..beta requests queued, W + 3..6 for W < 100, so
//!   12–24 % over at W = 25 but within 10 % at W = 200.
//! - `wip` only keeps latency under 2×, swinging between W and 2 W.
//!
//! The tolerances that set these are as low as the long-tail test allows:
//! AIMD at 1.10 or gradient at 1.05 sit closer to W on tight latencies but
//! collapse toward their floor on long-tailed ones.
//!
//! Run with `--nocapture` to see the measured numbers beside the bounds.
//! Each test takes well under 2 s in a debug build and is deterministic.

use floodwall_core::simulate::{run, Backend, Change, LimitStats, Scenario, Trace};
use floodwall_core::{
    AimdConfig, AimdLimit, GradientConfig, GradientLimit, ShapingConfig, VegasConfig, VegasLimit,
    WipConfig, WipLimit,
};
use std::time::Duration;

const W: usize = 50;
const SEEDS: [u64; 3] = [1, 2, 3];

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Algo {
    Aimd,
    Gradient,
    Vegas,
    Wip,
}

/// Runs `s` with `algo` at its defaults, except `shaping` if given.
/// For `wip` the base (`shaping.max`) is 4 W: an operator who guessed the
/// base four times too high, which is the case its halving exists for (at
/// a base below 2 W it just sits at the base).
fn simulate(algo: Algo, s: &Scenario, shaping: Option<ShapingConfig>) -> Trace {
    match algo {
        Algo::Aimd => {
            let d = AimdConfig::default();
            let shaping = shaping.unwrap_or(d.shaping);
            run(s, AimdLimit::new(AimdConfig { shaping, ..d }).unwrap())
        }
        Algo::Gradient => {
            let d = GradientConfig::default();
            let shaping = shaping.unwrap_or(d.shaping);
            run(
                s,
                GradientLimit::new(GradientConfig { shaping, ..d }).unwrap(),
            )
        }
        Algo::Vegas => {
            let d = VegasConfig::default();
            let shaping = shaping.unwrap_or(d.shaping);
            run(s, VegasLimit::new(VegasConfig { shaping, ..d }).unwrap())
        }
        Algo::Wip => {
            let d = WipConfig::default();
            let shaping = shaping.unwrap_or(ShapingConfig {
                max: 4 * W,
                ..d.shaping
            });
            run(s, WipLimit::new(WipConfig { shaping, ..d }).unwrap())
        }
    }
}

fn reference(duration: u64, seed: u64) -> Scenario {
    Scenario {
        duration: secs(duration),
        seed,
        ..Scenario::default()
    }
}

fn report(test: &str, algo: Algo, what: &str, l: &LimitStats, extra: &str) {
    eprintln!(
        "{test:<12} {:<9} {what:<18} mean {:6.1} = {:.3} × best  min {:3}  max {:3}  {extra}",
        format!("{algo:?}"),
        l.mean,
        l.mean_ratio,
        l.min,
        l.max,
    );
}

fn within(algo: Algo, what: &str, l: &LimitStats, (lo, hi): (f64, f64)) {
    assert!(
        (lo..=hi).contains(&l.mean_ratio),
        "{algo:?} {what}: mean limit {:.1} = {:.3} × best, want {lo}..{hi}",
        l.mean,
        l.mean_ratio
    );
}

fn stddev(t: &Trace, from: Duration, to: Duration) -> f64 {
    let v: Vec<f64> = t
        .between(from, to)
        .filter(|p| !p.probing())
        .map(|p| p.limit as f64)
        .collect();
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
}

/// Vegas' target as a multiple of `w`: `W + alpha … W + beta` with D = 1
/// (alpha 3, beta 6) for W < 100, widened by 2 for the sampling error of
/// `rtt_noload` (a 200-sample mean: ±1 % is ±0.5 request at L = 55) and
/// the integer limit.
fn vegas_band(w: usize) -> (f64, f64) {
    let w = w as f64;
    ((w + 3.0 - 2.0) / w, (w + 6.0 + 2.0) / w)
}

// ---------------------------------------------------------------------------
// Convergence: from the floor (3) to C* = 50.
//
// N per algorithm, from its growth rule (one decision per ~1 s window, after
// a first probe that fills the baseline pool, 200 samples at 3 in flight
// ≈ 3.5 s):
// - aimd: +1 a window up to 10 (7 windows), then ×1.1 to 50 (17) → ~28 s;
//   N = 30 s.
// - gradient: +√L a window, 2(√50 − √3) ≈ 11 windows → ~15 s; N = 20 s.
// - vegas: +beta (6) a window while nothing queues, ~8 windows; N = 15 s.
// - wip: no search; the cold-start ramp (60 s to a base of 200) lets it up
//   to 2 W by ~30 s, where it halves to W; N = 45 s, averaged over 60 s
//   (a whole W..2 W cycle).
// The mean over [N, N + span] must be in the band, goodput at least 95 %
// of capacity, and mean latency at most `hi × S` (+2 %).
// ---------------------------------------------------------------------------

fn convergence(algo: Algo, n: u64, span: u64, band: (f64, f64)) {
    for seed in SEEDS {
        let s = reference(n + span, seed);
        let t = simulate(algo, &s, None);
        let (from, to) = (secs(n), secs(n + span));
        let l = t.limit(from, to);
        let goodput = t.goodput(from, to);
        let latency = t.latency(from, to);
        report(
            "convergence",
            algo,
            &format!("seed {seed} {n}s..{}s", n + span),
            &l,
            &format!("goodput {goodput:.0}/s, latency {latency:.1?}"),
        );
        within(algo, "convergence", &l, band);
        assert!(
            goodput >= 0.95 * s.backend.capacity_rps(),
            "{algo:?}: goodput {goodput:.0}"
        );
        let most = s.backend.service_time.mul_f64(band.1.max(1.0) * 1.02);
        assert!(latency <= most, "{algo:?}: latency {latency:?} > {most:?}");
    }
}

#[test]
fn aimd_converges_within_15_percent_in_30s() {
    convergence(Algo::Aimd, 30, 40, (0.9, 1.15));
}

/// Gradient parks at its tolerance (1.1 × the unloaded median), which
/// costs it the ±10 % bound: 1.10–1.18 × best here.
#[test]
fn gradient_converges_within_20_percent_in_20s() {
    convergence(Algo::Gradient, 20, 40, (0.9, 1.2));
}

#[test]
fn vegas_converges_to_its_queue_band_in_15s() {
    convergence(Algo::Vegas, 15, 40, vegas_band(W));
}

#[test]
fn wip_converges_between_w_and_2w_in_45s() {
    convergence(Algo::Wip, 45, 60, (0.9, 1.5));
}

// ---------------------------------------------------------------------------
// Tracking: at t = 60 s the backend loses half its workers (C* 50 → 25);
// the limit must follow. Mean over [60 + N, 60 + N + 40].
// - aimd: ×0.85 a window, 0.85^4 ≈ 0.52 → ~5 s; N = 10 s.
// - gradient: at most −10 % a window (smoothing 0.2 × gradient 0.5), less
//   as it nears the knee: 0.9^7 ≈ 0.48 plus the tail → N = 25 s.
// - vegas: −D = −1 a window from ~55 to ~31: ~25 windows → N = 30 s.
// - wip: ÷2 in one window → N = 5 s.
// Also reported: the first time after the drop that the limit is within
// +20 % of the new best.
// ---------------------------------------------------------------------------

fn tracking(algo: Algo, n: u64, band: (f64, f64)) {
    for seed in SEEDS {
        let s = Scenario {
            changes: vec![(secs(60), Change::Workers(W / 2))],
            ..reference(60 + n + 40, seed)
        };
        let t = simulate(algo, &s, None);
        let l = t.limit(secs(60 + n), secs(60 + n + 40));
        let first = t
            .between(secs(60), secs(60 + n + 40))
            .find(|p| !p.probing() && p.limit as f64 <= 1.2 * (W / 2) as f64)
            .map(|p| (p.t - secs(60)).as_secs_f64());
        report(
            "tracking",
            algo,
            &format!("seed {seed} {}s..{}s", 60 + n, 60 + n + 40),
            &l,
            &format!("≤ 1.2 × the new best {first:.1?} s after the drop"),
        );
        within(algo, "tracking", &l, band);
    }
}

#[test]
fn aimd_tracks_a_halving_of_capacity_in_10s() {
    tracking(Algo::Aimd, 10, (0.9, 1.15));
}

#[test]
fn gradient_tracks_a_halving_of_capacity_in_25s() {
    tracking(Algo::Gradient, 25, (0.9, 1.2));
}

/// At W = 25 Vegas' 3–6 queued requests are 12–24 % of C*.
#[test]
fn vegas_tracks_a_halving_of_capacity_in_30s() {
    tracking(Algo::Vegas, 30, vegas_band(W / 2));
}

#[test]
fn wip_tracks_a_halving_of_capacity_in_5s() {
    tracking(Algo::Wip, 5, (0.9, 1.5));
}

// ---------------------------------------------------------------------------
// Slowdown: at t = 60 s every request takes twice as long (a slower query
// plan, a cold cache), so capacity halves but the best concurrency stays
// W. A limit that reads "latency doubled" as "queueing" cuts itself to
// the floor and serves a fraction of what the backend can still do; the
// baseline must move with the upstream instead. Goodput over
// [60 + 5, 60 + 35] must be at least 90 % of the new capacity, and the
// mean limit over that stretch near W.
// ---------------------------------------------------------------------------

fn slowdown(algo: Algo, band: (f64, f64)) {
    for seed in SEEDS {
        let base = reference(100, seed);
        let slower = base.backend.service_time * 2;
        let s = Scenario {
            changes: vec![(secs(60), Change::ServiceTime(slower))],
            ..base
        };
        let t = simulate(algo, &s, None);
        let capacity = Backend {
            service_time: slower,
            ..s.backend
        }
        .capacity_rps();
        let good = t.goodput(secs(65), secs(95)) / capacity;
        let l = t.limit(secs(65), secs(95));
        report(
            "slowdown",
            algo,
            &format!("seed {seed} 65s..95s"),
            &l,
            &format!("goodput {:.1}% of the new capacity", good * 100.0),
        );
        assert!(
            good >= 0.9,
            "{algo:?} seed {seed}: goodput {:.1}% of the new capacity after a slowdown",
            good * 100.0
        );
        within(algo, "slowdown", &l, band);
    }
}

#[test]
fn aimd_keeps_the_backend_busy_when_it_slows_down() {
    slowdown(Algo::Aimd, (0.9, 1.2));
}

#[test]
fn gradient_keeps_the_backend_busy_when_it_slows_down() {
    slowdown(Algo::Gradient, (0.9, 1.25));
}

#[test]
fn vegas_keeps_the_backend_busy_when_it_slows_down() {
    let (lo, hi) = vegas_band(W);
    slowdown(Algo::Vegas, (lo, hi + 0.05));
}

// ---------------------------------------------------------------------------
// Recovery: the backend loses half its workers at 60 s and gets them back
// at 100 s. The limit must climb back (mean over [100 + N, 100 + N + 30]
// within the band) without flooding the backend on the way: at no point
// after the recovery does the limit pass 1.5 W, nor do more than W / 2
// requests wait for a worker. N covers hysteresis (10 s) and growth at
// ×1.1 a window from W / 2 back to W (about 7 windows).
// ---------------------------------------------------------------------------

fn recovery(algo: Algo, n: u64, band: (f64, f64)) {
    for seed in SEEDS {
        let s = Scenario {
            changes: vec![
                (secs(60), Change::Workers(W / 2)),
                (secs(100), Change::Workers(W)),
            ],
            ..reference(100 + n + 30, seed)
        };
        let t = simulate(algo, &s, None);
        let l = t.limit(secs(100 + n), secs(100 + n + 30));
        let after: Vec<_> = t.between(secs(100), secs(100 + n + 30)).collect();
        let peak_limit = after.iter().map(|p| p.limit).max().unwrap_or(0);
        let peak_queue = after.iter().map(|p| p.queued).max().unwrap_or(0);
        report(
            "recovery",
            algo,
            &format!("seed {seed} {}s..{}s", 100 + n, 100 + n + 30),
            &l,
            &format!("after the recovery: peak limit {peak_limit}, peak queue {peak_queue}"),
        );
        within(algo, "recovery", &l, band);
        assert!(
            peak_limit as f64 <= 1.5 * W as f64,
            "{algo:?} seed {seed}: limit overshot to {peak_limit}"
        );
        assert!(
            peak_queue <= W / 2,
            "{algo:?} seed {seed}: {peak_queue} waiting at the backend"
        );
    }
}

#[test]
fn aimd_climbs_back_after_a_recovery_without_flooding() {
    recovery(Algo::Aimd, 25, (0.9, 1.2));
}

#[test]
fn gradient_climbs_back_after_a_recovery_without_flooding() {
    recovery(Algo::Gradient, 25, (0.9, 1.25));
}

// ---------------------------------------------------------------------------
// Stability: steady load, 120 s; over the last 60 s (probe points left
// out) the limit stays in a band no wider than ±25 % of C*
// (max − min ≤ 0.5 W) and its standard deviation is at most 10 % of C*.
// ---------------------------------------------------------------------------

fn stability(algo: Algo, max_range: f64, max_sd: f64) -> Vec<LimitStats> {
    let mut all = Vec::new();
    for seed in SEEDS {
        let t = simulate(algo, &reference(120, seed), None);
        let l = t.limit(secs(60), secs(120));
        let sd = stddev(&t, secs(60), secs(120));
        let range = (l.max - l.min) as f64;
        report(
            "stability",
            algo,
            &format!("seed {seed} 60s..120s"),
            &l,
            &format!(
                "range {range:.0} = {:.2} W, stddev {sd:.1} = {:.3} W",
                range / W as f64,
                sd / W as f64
            ),
        );
        assert!(
            range <= max_range * W as f64,
            "{algo:?}: range {range} > {max_range} W"
        );
        assert!(
            sd <= max_sd * W as f64,
            "{algo:?}: stddev {sd:.1} > {max_sd} W"
        );
        all.push(l);
    }
    all
}

#[test]
fn aimd_is_stable_at_steady_load() {
    stability(Algo::Aimd, 0.5, 0.1);
}

#[test]
fn gradient_is_stable_at_steady_load() {
    stability(Algo::Gradient, 0.5, 0.1);
}

#[test]
fn vegas_is_stable_at_steady_load() {
    stability(Algo::Vegas, 0.5, 0.1);
}

/// WIP halves and climbs back by design, so it swings between W and 2 W
/// (multiplier 2.0) plus one recovery step (+5 % of its base of 4 W): it is
/// held to range ≤ 1.5 W and stddev ≤ 0.4 W, and to staying within
/// [0.9 W, 2.5 W].
#[test]
fn wip_stays_between_w_and_2w_at_steady_load() {
    for l in stability(Algo::Wip, 1.5, 0.4) {
        assert!(l.min as f64 >= 0.9 * W as f64 && l.max as f64 <= 2.5 * W as f64);
    }
}

// ---------------------------------------------------------------------------
// No upward ratchet: three times the capacity offered for 5 minutes, on a
// backend that gets slower as its queue grows (contention 0.05) with a
// 500 ms client timeout. Neither the limit nor the baseline may creep up:
// the mean limit over the last minute at most 0.1 W above the mean over
// the second minute, the baseline at 300 s within 10 % of the baseline at
// 60 s, and goodput at least 90 % of capacity throughout.
// ---------------------------------------------------------------------------

fn no_ratchet(algo: Algo, max_creep: f64) {
    let backend = Backend {
        contention: 0.05,
        timeout: Some(Duration::from_millis(500)),
        ..Backend::default()
    };
    let s = Scenario {
        offered_rps: 3.0 * backend.capacity_rps(),
        backend,
        duration: secs(300),
        resolution: Duration::from_millis(250),
        ..Scenario::default()
    };
    let t = simulate(algo, &s, None);
    let early = t.limit(secs(60), secs(120));
    let late = t.limit(secs(240), secs(300));
    let baseline_at = |at: u64| {
        t.between(secs(at - 1), secs(at))
            .find_map(|p| p.baseline)
            .expect("a baseline")
    };
    let (b60, b300) = (baseline_at(60), baseline_at(300));
    let goodput = t.goodput(secs(60), secs(300));
    report("no-ratchet", algo, "60s..120s", &early, "");
    report(
        "no-ratchet",
        algo,
        "240s..300s",
        &late,
        &format!("baseline {b60:.1?} → {b300:.1?}, goodput {goodput:.0}/s"),
    );
    assert!(
        late.mean <= early.mean + max_creep * W as f64,
        "{algo:?}: limit crept from {:.1} to {:.1}",
        early.mean,
        late.mean
    );
    assert!(
        b300.as_secs_f64() <= 1.1 * b60.as_secs_f64(),
        "{algo:?}: baseline drifted from {b60:?} to {b300:?}"
    );
    assert!(
        goodput >= 0.9 * s.backend.capacity_rps(),
        "{algo:?}: goodput {goodput:.0}"
    );
}

#[test]
fn aimd_does_not_ratchet_under_sustained_overload() {
    no_ratchet(Algo::Aimd, 0.1);
}

#[test]
fn gradient_does_not_ratchet_under_sustained_overload() {
    no_ratchet(Algo::Gradient, 0.1);
}

#[test]
fn vegas_does_not_ratchet_under_sustained_overload() {
    no_ratchet(Algo::Vegas, 0.1);
}

/// WIP's one-minute means depend on where its W..2 W sawtooth is, so it
/// gets 0.25 W of slack; what bounds it is the multiplier (checked by the
/// stability test).
#[test]
fn wip_does_not_ratchet_under_sustained_overload() {
    no_ratchet(Algo::Wip, 0.25);
}

// ---------------------------------------------------------------------------
// Long-tailed latency: service times also multiplied by a log-normal factor
// (σ = 0.5, so p99 ≈ 3.2 × p50), as real upstreams have. The limit must
// neither collapse toward the floor nor run away: mean over [30 s, 80 s]
// within the algorithm's band, goodput at least 85 % of capacity (the
// probes at the floor take longer on a slow tail). This is
// the scenario that chose the defaults (p50, 100-sample windows, a pooled
// baseline): with p99 and 20-sample windows, AIMD sat at its floor.
// ---------------------------------------------------------------------------

fn long_tail(algo: Algo, band: (f64, f64)) {
    for seed in SEEDS {
        let s = Scenario {
            backend: Backend {
                tail: 0.5,
                ..Backend::default()
            },
            offered_rps: 2000.0,
            ..reference(80, seed)
        };
        let t = simulate(algo, &s, None);
        let l = t.limit(secs(30), secs(80));
        let goodput = t.goodput(secs(30), secs(80));
        report(
            "long-tail",
            algo,
            &format!("seed {seed} 30s..80s"),
            &l,
            &format!("goodput {goodput:.0}/s of {:.0}", s.backend.capacity_rps()),
        );
        within(algo, "long tail", &l, band);
        assert!(
            goodput >= 0.85 * s.backend.capacity_rps(),
            "{algo:?}: goodput {goodput:.0}"
        );
    }
}

#[test]
fn aimd_holds_the_knee_on_long_tailed_latency() {
    long_tail(Algo::Aimd, (0.9, 1.15));
}

#[test]
fn gradient_holds_on_long_tailed_latency() {
    long_tail(Algo::Gradient, (0.9, 1.25));
}

#[test]
fn vegas_holds_on_long_tailed_latency() {
    long_tail(Algo::Vegas, (0.95, 1.3));
}

#[test]
fn wip_holds_on_long_tailed_latency() {
    long_tail(Algo::Wip, (0.8, 1.5));
}

// ---------------------------------------------------------------------------
// Hysteresis, in the simulation: the backend loses half its workers at
// 60 s and gets them back at 63 s, so every algorithm cuts and then wants
// to grow straight back. Over the whole run the limit never rises within
// `stable_for` of a fall, except when a probe hands the limit back, or the
// fall was a gradient's trim (a cut within the noise, which by design does
// not hold growth); and some rise was held back (a `hysteresis` decision).
// `stable_for` is 5 s here (10 s by default) so the 120 s run has several
// holds to check.
// ---------------------------------------------------------------------------

fn hysteresis(algo: Algo) {
    let stable_for = secs(5);
    let shaping = ShapingConfig {
        stable_for,
        max: if algo == Algo::Wip { 4 * W } else { 1000 },
        ..ShapingConfig::default()
    };
    let s = Scenario {
        changes: vec![
            (secs(60), Change::Workers(W / 2)),
            (secs(63), Change::Workers(W)),
        ],
        ..reference(120, 1)
    };
    let t = simulate(algo, &s, Some(shaping));
    let p = &t.points;
    let probe = |i: usize| {
        p[i].probing() || p[i - 1].probing() || p[i].cause.map(|c| c.as_str()) == Some("probed")
    };
    let (mut falls, mut held) = (0, 0);
    for i in 1..p.len() {
        let trim = p[i].cause.map(|c| c.as_str()) == Some("trim");
        if p[i].limit >= p[i - 1].limit || probe(i) || trim {
            continue;
        }
        falls += 1;
        // A fall between points i−1 and i: no rise before t[i−1] + stable_for.
        let until = p[i - 1].t + stable_for;
        for j in i + 1..p.len() {
            if p[j].t >= until {
                break;
            }
            if probe(j) {
                continue;
            }
            assert!(
                p[j].limit <= p[j - 1].limit,
                "{algo:?}: rose {} → {} at {:?}, {:?} after a fall at {:?}",
                p[j - 1].limit,
                p[j].limit,
                p[j].t,
                p[j].t - p[i].t,
                p[i].t
            );
            if p[j].cause.map(|c| c.as_str()) == Some("hysteresis") {
                held += 1;
            }
        }
    }
    eprintln!("hysteresis   {algo:<9?} {falls} falls checked, {held} points held by hysteresis");
    assert!(falls >= 2, "{algo:?}: only {falls} falls");
    assert!(held > 0, "{algo:?}: hysteresis never held a rise");
}

#[test]
fn aimd_never_rises_within_stable_for_of_a_fall() {
    hysteresis(Algo::Aimd);
}

#[test]
fn gradient_never_rises_within_stable_for_of_a_fall() {
    hysteresis(Algo::Gradient);
}

#[test]
fn vegas_never_rises_within_stable_for_of_a_fall() {
    hysteresis(Algo::Vegas);
}

#[test]
fn wip_never_rises_within_stable_for_of_a_fall() {
    hysteresis(Algo::Wip);
}

// ---------------------------------------------------------------------------
// Cold-start ramp: a backend with room for far more than `max` (400 workers
// × 200 ms, offered 2500 req/s), ramp 64 → 300 over 90 s (from `initial`,
// where a cold start's open measurement runs). At every point the limit is
// at most the ramp cap `64 + 236 × t / 90 s` (t from the start,
// which is a looser cap than the one from the first sample), the ramp binds
// at least once (a `ramp_up` decision), and the limit gets near `max` by
// the end.
// ---------------------------------------------------------------------------

fn ramp(algo: Algo) {
    let (min, max, ramp) = (3usize, 300usize, secs(90));
    let shaping = ShapingConfig {
        min,
        max,
        ramp_up: ramp,
        ..ShapingConfig::default()
    };
    let s = Scenario {
        backend: Backend {
            workers: 400,
            service_time: Duration::from_millis(200),
            ..Backend::default()
        },
        offered_rps: 2500.0,
        duration: secs(110),
        resolution: Duration::from_millis(250),
        ..Scenario::default()
    };
    let t = simulate(algo, &s, Some(shaping));
    let initial = shaping.initial as f64;
    let cap = |at: Duration| {
        initial + (max as f64 - initial) * (at.as_secs_f64() / ramp.as_secs_f64()).min(1.0)
    };
    let mut bound = 0usize;
    for p in &t.points {
        assert!(
            p.limit as f64 <= cap(p.t) + 1e-9,
            "{algo:?}: limit {} above the ramp cap {:.1} at {:?}",
            p.limit,
            cap(p.t),
            p.t
        );
        bound += usize::from(p.cause.map(|c| c.as_str()) == Some("ramp_up"));
    }
    let end = t.limit(secs(100), secs(110));
    report(
        "ramp-up",
        algo,
        "100s..110s",
        &end,
        &format!("{bound} points capped by the ramp"),
    );
    assert!(bound > 0, "{algo:?}: the ramp never bound");
    assert!(
        end.mean >= 0.9 * max as f64,
        "{algo:?}: ended at {:.1}",
        end.mean
    );
}

#[test]
fn aimd_stays_under_the_ramp_cap() {
    ramp(Algo::Aimd);
}

#[test]
fn gradient_stays_under_the_ramp_cap() {
    ramp(Algo::Gradient);
}

#[test]
fn vegas_stays_under_the_ramp_cap() {
    ramp(Algo::Vegas);
}

#[test]
fn wip_stays_under_the_ramp_cap() {
    ramp(Algo::Wip);
}

// ---------------------------------------------------------------------------
// Vegas' excess over C* is a number of requests, not a fraction: at
// W = 200 (D = 2: alpha 6, beta 12) it is within 10 %.
// ---------------------------------------------------------------------------

#[test]
fn vegas_is_within_10_percent_of_a_larger_backend() {
    let backend = Backend {
        workers: 200,
        service_time: Duration::from_millis(100),
        ..Backend::default()
    };
    let s = Scenario {
        offered_rps: 2.0 * backend.capacity_rps(),
        backend,
        duration: secs(60),
        resolution: Duration::from_millis(250),
        ..Scenario::default()
    };
    let t = simulate(Algo::Vegas, &s, None);
    let l = t.limit(secs(30), secs(60));
    report("vegas W=200", Algo::Vegas, "30s..60s", &l, "");
    within(Algo::Vegas, "W = 200", &l, (0.9, 1.1));
}

// ---------------------------------------------------------------------------
// A limit chosen at run time, boxed, drives the limiter like any other, and
// explains itself.
// ---------------------------------------------------------------------------

#[test]
fn a_boxed_limit_is_a_limit_and_explains_itself() {
    use floodwall_core::{FixedLimit, Limit};
    let pick = |name: &str| -> Box<dyn Limit> {
        match name {
            "aimd" => Box::new(AimdLimit::new(AimdConfig::default()).unwrap()),
            _ => Box::new(FixedLimit::new(W)),
        }
    };
    assert_eq!(pick("fixed").explain(), None);
    let t = run(&reference(20, 1), pick("aimd"));
    let last = t.points.last().unwrap();
    assert!(last.limit > 3, "it grew from the floor: {}", last.limit);
    assert!(last.cause.is_some() && last.baseline.is_some());
}

// ---------------------------------------------------------------------------
// A fast upstream that is not the bottleneck: 64 workers at 0.3 ms, offered
// 10,000 req/s (5 to 18 in flight, a quarter of what it can run at most), with noise
// that has nothing to do with load: 0.2 ms on average, 1.5 ms for one
// second in every three (a neighbour taking the CPU). A relative threshold
// reads the noisy seconds as queueing (p50 at 2-3x the baseline) and cuts
// the limit to its floor, refusing most requests; nothing here needs
// refusing. At most 0.1 % may be refused, after the first 10 s.
// ---------------------------------------------------------------------------

fn fast_upstream(algo: Algo) -> f64 {
    let backend = Backend {
        workers: 64,
        service_time: Duration::from_micros(300),
        noise: Duration::from_micros(200),
        ..Backend::default()
    };
    let mut changes = Vec::new();
    for k in 0..14u64 {
        changes.push((secs(3 * k + 2), Change::Noise(Duration::from_micros(1500))));
        changes.push((secs(3 * k + 3), Change::Noise(Duration::from_micros(200))));
    }
    let s = Scenario {
        offered_rps: 10_000.0,
        backend,
        duration: secs(40),
        changes,
        resolution: Duration::from_millis(250),
        ..Scenario::default()
    };
    let t = simulate(algo, &s, None);
    let (mut served, mut refused) = (0.0, 0.0);
    for p in t.between(secs(10), secs(40)) {
        served += p.goodput + p.failed;
        refused += p.rejected;
    }
    let share = refused / (served + refused);
    let l = t.limit(secs(10), secs(40));
    report(
        "fast upstream",
        algo,
        "10s..40s",
        &l,
        &format!("refused {:.3}%", share * 100.0),
    );
    share
}

#[test]
fn aimd_refuses_nothing_in_front_of_a_fast_upstream_that_is_not_the_bottleneck() {
    let refused = fast_upstream(Algo::Aimd);
    assert!(refused < 0.001, "refused {:.2}%", refused * 100.0);
}

// ---------------------------------------------------------------------------
// The same rule where the upstream *is* the bottleneck, at both ends of the
// range: a fast one (4 workers at 0.3 ms, about 13,000 req/s) and a slow
// one (20 workers at 200 ms, 100 req/s), each offered twice its capacity.
// The fast one is allowed its 2 ms of queueing and no more: mean latency
// within baseline + 2.5 ms, goodput at least 95 % of capacity. The slow one
// is governed by the relative term as before: the limit within 1.0-1.2 W.
// ---------------------------------------------------------------------------

#[test]
fn aimd_bounds_the_queue_of_a_fast_bottleneck_to_its_floor() {
    let backend = Backend {
        workers: 4,
        service_time: Duration::from_micros(300),
        ..Backend::default()
    };
    let capacity = backend.capacity_rps();
    let s = Scenario {
        offered_rps: 2.0 * capacity,
        backend,
        duration: secs(40),
        resolution: Duration::from_millis(250),
        ..Scenario::default()
    };
    let t = simulate(Algo::Aimd, &s, None);
    let l = t.limit(secs(10), secs(40));
    let latency = t.latency(secs(10), secs(40));
    let goodput = t.goodput(secs(10), secs(40));
    report(
        "fast bottleneck",
        Algo::Aimd,
        "10s..40s",
        &l,
        &format!(
            "latency {latency:.2?}, goodput {:.1}% of capacity",
            100.0 * goodput / capacity
        ),
    );
    assert!(
        latency <= Duration::from_micros(300 + 2500),
        "queue bounded by the floor: {latency:?}"
    );
    assert!(
        goodput >= 0.95 * capacity,
        "goodput {goodput:.0} of {capacity:.0}"
    );
}

#[test]
fn aimd_holds_the_knee_of_a_slow_bottleneck() {
    let backend = Backend {
        workers: 20,
        service_time: Duration::from_millis(200),
        ..Backend::default()
    };
    let s = Scenario {
        offered_rps: 2.0 * backend.capacity_rps(),
        backend,
        duration: secs(120),
        resolution: Duration::from_millis(500),
        ..Scenario::default()
    };
    let t = simulate(Algo::Aimd, &s, None);
    let l = t.limit(secs(60), secs(120));
    report("slow bottleneck", Algo::Aimd, "60s..120s", &l, "");
    within(Algo::Aimd, "W = 20 at 200 ms", &l, (1.0, 1.2));
}
#[test]
fn gradient_refuses_nothing_in_front_of_a_fast_upstream_that_is_not_the_bottleneck() {
    let refused = fast_upstream(Algo::Gradient);
    assert!(refused < 0.001, "refused {:.2}%", refused * 100.0);
}

#[test]
fn vegas_refuses_nothing_in_front_of_a_fast_upstream_that_is_not_the_bottleneck() {
    let refused = fast_upstream(Algo::Vegas);
    assert!(refused < 0.001, "refused {:.2}%", refused * 100.0);
}

#[test]
fn wip_refuses_nothing_in_front_of_a_fast_upstream_that_is_not_the_bottleneck() {
    let refused = fast_upstream(Algo::Wip);
    assert!(refused < 0.001, "refused {:.2}%", refused * 100.0);
}

// ---------------------------------------------------------------------------
// Cold start under a steady 0.8x load: 16 workers at 11.5 ms (about 1,390
// req/s), offered 0.8 of that from the first instant, as when floodwall
// restarts in front of a running service. Nothing needs refusing.
// ---------------------------------------------------------------------------

fn cold_start(algo: Algo) -> (f64, Vec<f64>) {
    let backend = Backend {
        workers: 16,
        service_time: Duration::from_micros(11_500),
        ..Backend::default()
    };
    let s = Scenario {
        offered_rps: 0.8 * backend.capacity_rps(),
        backend,
        duration: secs(10),
        resolution: Duration::from_millis(100),
        ..Scenario::default()
    };
    let t = simulate(algo, &s, None);
    let served = |from: u64, to: u64| {
        let (mut ok, mut all) = (0.0, 0.0);
        for p in t.between(Duration::from_millis(from), Duration::from_millis(to)) {
            ok += p.goodput + p.failed;
            all += p.goodput + p.failed + p.rejected;
        }
        ok / all.max(1e-9)
    };
    let per_second: Vec<f64> = (0..10).map(|k| served(k * 1000, (k + 1) * 1000)).collect();
    let whole = served(0, 10_000);
    eprintln!(
        "cold start   {algo:?}: {:.1}% served over 10 s; per second {:?}",
        whole * 100.0,
        per_second
            .iter()
            .map(|x| (x * 1000.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    (whole, per_second)
}

#[test]
fn a_cold_start_under_steady_load_serves_everything_from_the_first_second() {
    for algo in [Algo::Aimd, Algo::Gradient, Algo::Vegas] {
        let (whole, per_second) = cold_start(algo);
        assert!(whole >= 0.99, "{algo:?}: {:.1}% served", whole * 100.0);
        assert!(
            per_second[0] >= 0.97,
            "{algo:?}: {:.1}% in the first second",
            per_second[0] * 100.0
        );
    }
}

// A cold start straight into three times the capacity: the open
// measurement sees its limit reached and falls back to the floor, so the
// start costs what the pinned start did: goodput over seconds 2-10 within
// 2 % of capacity of a pinned start's (`initial = 3`, the previous
// behaviour) in the same scenario, and the backend's queue never deeper
// than the `initial` limit admitted in the first milliseconds.
#[test]
fn a_cold_start_into_a_spike_falls_back_to_the_floor() {
    let backend = Backend {
        workers: 16,
        service_time: Duration::from_micros(11_500),
        ..Backend::default()
    };
    let capacity = backend.capacity_rps();
    let s = Scenario {
        offered_rps: 3.0 * capacity,
        backend,
        duration: secs(10),
        resolution: Duration::from_millis(100),
        ..Scenario::default()
    };
    let pinned = simulate(
        Algo::Aimd,
        &s,
        Some(ShapingConfig {
            initial: 3,
            ..ShapingConfig::default()
        }),
    );
    let before = pinned.goodput(secs(2), secs(10));
    let t = simulate(Algo::Aimd, &s, None);
    let goodput = t.goodput(secs(2), secs(10));
    let peak_queue = t.points.iter().map(|p| p.queued).max().unwrap_or(0);
    let later_queue = t
        .between(secs(2), secs(10))
        .map(|p| p.queued)
        .max()
        .unwrap_or(0);
    eprintln!(
        "cold spike   Aimd: goodput {:.1}% of capacity over 2..10 s (pinned start {:.1}%), queue peak {peak_queue}, after 2 s {later_queue}",
        100.0 * goodput / capacity,
        100.0 * before / capacity
    );
    assert!(
        goodput >= before - 0.02 * capacity,
        "{goodput:.0} against {before:.0} with a pinned start"
    );
    assert!(peak_queue <= 64, "queue {peak_queue}");
    assert!(later_queue <= 16, "queue after 2 s {later_queue}");
}

// A restart into a spike, warm: the limit and baseline that a process
// learned in front of the same backend (30 s at 0.8 of its capacity) start
// the next one, which meets three times the capacity from its first
// request. The cold start measures its baseline pinned at the floor and
// climbs back by slow start; the warm one needs neither, so it serves at
// capacity from the first second.
#[test]
fn a_warm_start_into_a_spike_serves_at_capacity_from_the_first_second() {
    use floodwall_core::{Limit, Nanos};
    use std::sync::Arc;
    let backend = Backend {
        workers: 16,
        service_time: Duration::from_micros(11_500),
        ..Backend::default()
    };
    let capacity = backend.capacity_rps();
    let steady = Scenario {
        offered_rps: 0.8 * capacity,
        backend,
        duration: secs(30),
        ..Scenario::default()
    };
    let before = Arc::new(AimdLimit::new(AimdConfig::default()).unwrap());
    run(&steady, before.clone());
    let learned = before
        .learned()
        .expect("30 s of traffic measured a baseline");
    let spike = Scenario {
        offered_rps: 3.0 * capacity,
        backend,
        duration: secs(10),
        resolution: Duration::from_millis(100),
        ..Scenario::default()
    };
    let cold = run(&spike, AimdLimit::new(AimdConfig::default()).unwrap());
    let warm_limit = AimdLimit::new(AimdConfig::default()).unwrap();
    assert!(warm_limit.warm(Nanos(0), &learned));
    let warm = run(&spike, warm_limit);
    let share = |t: &Trace, from: u64, to: u64| t.goodput(secs(from), secs(to)) / capacity;
    eprintln!(
        "restart into 3x, Aimd, learned limit {:.1}: goodput of capacity in s 0-1 cold {:.1}% warm {:.1}%, s 0-10 cold {:.1}% warm {:.1}%",
        learned.limit,
        100.0 * share(&cold, 0, 1),
        100.0 * share(&warm, 0, 1),
        100.0 * share(&cold, 0, 10),
        100.0 * share(&warm, 0, 10)
    );
    assert!(share(&warm, 0, 1) >= 0.9, "{:.3}", share(&warm, 0, 1));
    assert!(share(&warm, 0, 10) >= 0.95, "{:.3}", share(&warm, 0, 10));
    assert!(
        share(&warm, 0, 1) >= share(&cold, 0, 1) + 0.2,
        "warm {:.3} against cold {:.3} in the first second",
        share(&warm, 0, 1),
        share(&cold, 0, 1)
    );
}

// ---------------------------------------------------------------------------
// Fairness and priority without waste, at the limiter's defaults (no tenant
// or class setting): the reference backend (W = 50 × 50 ms, 1000 req/s),
// judged over 30..60 s, once AIMD has converged, with the default AIMD and
// with a fixed limit.
//
// A fixed limit of exactly W cannot meet both bounds in either scenario,
// whatever the rule, since there is no queue: a request that finds no free
// slot is refused. Interactive at 45 slots of 50 on average is refused
// 5.4 % of the time with the whole gate to itself (Erlang B(50, 45);
// measured 94.7 %). Small tenants served at 98 % need a few slots kept
// free for them, and at W every slot kept free is an idle worker. So the
// fixed limits here are 1.3 W, where the requests beyond W wait in the
// upstream, and the tenant flood also runs at W to bound what the headroom
// costs there.
// ---------------------------------------------------------------------------

use floodwall_core::simulate::Group;
use floodwall_core::{FixedLimit, LimiterConfig};

/// The limits each scenario below runs with.
#[derive(Debug, Clone, Copy)]
enum Gate {
    Aimd,
    Fixed(usize),
}

/// The fixed limit of these tests: 1.3 W.
const FIXED: Gate = Gate::Fixed(13 * W / 10);

fn run_gate(gate: Gate, s: &Scenario) -> Trace {
    match gate {
        Gate::Aimd => run(s, AimdLimit::new(AimdConfig::default()).unwrap()),
        Gate::Fixed(n) => run(s, FixedLimit::new(n)),
    }
}

/// The reference backend offered `offered` times its capacity by `mix`,
/// the limiter at its defaults (classes interactive 0.5 and batch 0, the
/// automatic tenant share).
fn mixed(offered: f64, duration: u64, seed: u64, mix: Vec<Group>) -> Scenario {
    let backend = Backend::default();
    Scenario {
        offered_rps: offered * backend.capacity_rps(),
        backend,
        duration: secs(duration),
        seed,
        mix,
        limiter: Some(LimiterConfig::default()),
        ..Scenario::default()
    }
}

/// Twenty small tenants, `t00` … `t19`.
fn small_tenants() -> Vec<String> {
    (0..20).map(|i| format!("t{i:02}")).collect()
}

/// The tenant flood: one tenant sends 80 % of twice the capacity, twenty
/// small ones share the other 20 % (20 req/s each, about one request in
/// flight each).
fn tenant_flood(seed: u64) -> Scenario {
    mixed(
        2.0,
        60,
        seed,
        vec![
            Group::new("hot", 0.8).tenant("hot"),
            Group::new("small", 0.2).tenants(small_tenants()),
        ],
    )
}

/// The total over `(from, to]` as a fraction of capacity, then each of
/// `groups`' served fraction of its offered load; printed too.
fn shares(test: &str, gate: Gate, t: &Trace, (from, to): (u64, u64), groups: &[&str]) -> Vec<f64> {
    let capacity = Backend::default().capacity_rps();
    let total = t.goodput(secs(from), secs(to)) / capacity;
    let mut out = vec![total];
    let mut line = format!("{test:<15} {:<9} total {total:.3} C", format!("{gate:?}"));
    for g in groups {
        let s = t.group(g).between(secs(from), secs(to));
        line += &format!(
            "  {g} {:.0}/{:.0} req/s = {:.3}",
            s.served,
            s.offered,
            s.ratio()
        );
        out.push(s.ratio());
    }
    eprintln!("{line}  limit {:.1}", t.limit(secs(from), secs(to)).mean);
    out
}

/// The small tenants get what they offer, the hot one the rest, and the
/// upstream stays busy: at least `total` of its capacity.
fn tenant_flood_is_fair(gate: Gate, total: f64) {
    let capacity = Backend::default().capacity_rps();
    for seed in SEEDS {
        let t = run_gate(gate, &tenant_flood(seed));
        let f = shares("tenant flood", gate, &t, (30, 60), &["small", "hot"]);
        assert!(
            f[1] >= 0.98,
            "{gate:?} seed {seed}: small tenants got {:.3} of their load",
            f[1]
        );
        assert!(
            f[0] >= total,
            "{gate:?} seed {seed}: total {:.3} of capacity",
            f[0]
        );
        let small = t.group("small").between(secs(30), secs(60));
        let hot = t.group("hot").between(secs(30), secs(60));
        assert!(
            hot.served >= total * capacity - small.offered,
            "{gate:?} seed {seed}: the hot tenant got {:.0} req/s, not the rest",
            hot.served
        );
    }
}

#[test]
fn a_tenant_flood_leaves_the_small_tenants_their_load_behind_aimd() {
    tenant_flood_is_fair(Gate::Aimd, 0.97);
}

// At exactly W the headroom the small tenants need is idle workers: about
// 11 % of the capacity (0.89 C).
#[test]
fn a_tenant_flood_leaves_the_small_tenants_their_load_behind_a_fixed_limit() {
    tenant_flood_is_fair(FIXED, 0.97);
    tenant_flood_is_fair(Gate::Fixed(W), 0.85);
}

// A tenant alone gets the whole limit: one tenant sends twice the capacity
// alone for 40 s, twenty small tenants join it for 20 s (20 % of the
// arrivals), then leave again. Alone, it must be served as if it carried
// no tenant id at all (the same arrivals, within 1 %), and never refused
// for its tenant; while the others are there they get what they offer.
#[test]
fn a_tenant_alone_gets_the_whole_limit_and_shares_it_when_others_come() {
    let scenario = |tenant: bool, seed| {
        let hot = Group::new("hot", 1.0);
        let hot = if tenant { hot.tenant("hot") } else { hot };
        Scenario {
            changes: vec![
                (secs(40), Change::Weight(1, 0.25)),
                (secs(60), Change::Weight(1, 0.0)),
            ],
            ..mixed(
                2.0,
                90,
                seed,
                vec![hot, Group::new("small", 0.0).tenants(small_tenants())],
            )
        }
    };
    for seed in SEEDS {
        let t = run_gate(Gate::Aimd, &scenario(true, seed));
        let anonymous = run_gate(Gate::Aimd, &scenario(false, seed));
        let f = shares("joined", Gate::Aimd, &t, (45, 60), &["small", "hot"]);
        assert!(f[1] >= 0.98, "seed {seed}: small tenants got {:.3}", f[1]);
        for (from, to) in [(30, 40), (65, 90)] {
            let alone = t.group("hot").between(secs(from), secs(to)).served;
            let unnamed = anonymous.group("hot").between(secs(from), secs(to)).served;
            eprintln!(
                "alone           {from}..{to} s: {alone:.0} req/s, without a tenant id {unnamed:.0} req/s"
            );
            assert!(
                alone >= 0.99 * unnamed,
                "seed {seed}, {from}..{to} s: alone {alone:.0} req/s against {unnamed:.0}"
            );
            let refused: f64 = t
                .group("hot")
                .points
                .iter()
                .filter(|p| p.t > secs(from) && p.t <= secs(to))
                .map(|p| p.tenant_rejected)
                .sum();
            assert_eq!(
                refused, 0.0,
                "seed {seed}: refused for its tenant while alone"
            );
        }
    }
}

// Tenant ids invented per request (10 % of the arrivals, 12,000 ids over
// the run) beside the flood: the table holds an entry only per tenant
// holding a counted slot, so never more than the limit, and the rule still
// keeps the hot tenant to the rest. (Each invented id is a light tenant of
// its own: a client inventing ids is served as that many tenants, which no
// rule keyed by id can tell apart.)
#[test]
fn tenant_ids_invented_per_request_keep_the_table_within_the_limit() {
    for seed in SEEDS {
        let s = mixed(
            2.0,
            60,
            seed,
            vec![
                Group::new("hot", 0.7).tenant("hot"),
                Group::new("small", 0.2).tenants(small_tenants()),
                Group::new("fresh", 0.1).fresh_tenants(),
            ],
        );
        let t = run_gate(Gate::Aimd, &s);
        let f = shares(
            "invented ids",
            Gate::Aimd,
            &t,
            (30, 60),
            &["small", "fresh", "hot"],
        );
        let largest = t.points.iter().map(|p| p.limit).max().unwrap_or(0);
        let tenants = t.max_tenants();
        eprintln!("invented ids    table at most {tenants} entries, limit at most {largest}");
        assert!(
            tenants > 20,
            "seed {seed}: the tenants were counted ({tenants})"
        );
        assert!(
            tenants <= largest,
            "seed {seed}: {tenants} entries at a limit of {largest}"
        );
        assert!(f[1] >= 0.98 && f[2] >= 0.98, "seed {seed}: {f:?}");
        assert!(f[0] >= 0.97, "seed {seed}: total {:.3}", f[0]);
    }
}

/// The priority spike: three times the capacity, 30 % interactive (0.9 of
/// the capacity on its own), 70 % batch.
fn priority_spike(seed: u64) -> Scenario {
    mixed(
        3.0,
        60,
        seed,
        vec![
            Group::new("interactive", 0.3).class("interactive"),
            Group::new("batch", 0.7).class("batch"),
        ],
    )
}

/// Interactive gets what it offers, batch fills the upstream.
fn priority_spike_wastes_nothing(gate: Gate) {
    for seed in SEEDS {
        let t = run_gate(gate, &priority_spike(seed));
        let f = shares(
            "priority spike",
            gate,
            &t,
            (30, 60),
            &["interactive", "batch"],
        );
        assert!(
            f[1] >= 0.98,
            "{gate:?} seed {seed}: interactive got {:.3} of its load",
            f[1]
        );
        assert!(
            f[0] >= 0.97,
            "{gate:?} seed {seed}: total {:.3} of capacity",
            f[0]
        );
    }
}

#[test]
fn a_priority_spike_serves_interactive_and_fills_the_upstream_with_batch_behind_aimd() {
    priority_spike_wastes_nothing(Gate::Aimd);
}

#[test]
fn a_priority_spike_serves_interactive_and_fills_the_upstream_with_batch_behind_a_fixed_limit() {
    priority_spike_wastes_nothing(FIXED);
}

// A cold start into 1.2x capacity (16 workers at 80 ms, 240 req/s): the
// queue fills too slowly to reach `initial` during the open measurement,
// but each request waits longer than the one before, so the measurement is
// thrown away and a pinned one runs. The limit then settles near the knee,
// as with a pinned start, not at the inflated baseline's 2-3 W.
#[test]
fn a_cold_start_into_a_slow_overload_still_finds_the_knee() {
    let backend = Backend {
        workers: 16,
        service_time: Duration::from_millis(80),
        ..Backend::default()
    };
    let s = Scenario {
        offered_rps: 1.2 * backend.capacity_rps(),
        backend,
        duration: secs(30),
        resolution: Duration::from_millis(250),
        ..Scenario::default()
    };
    let t = simulate(Algo::Aimd, &s, None);
    let l = t.limit(secs(15), secs(30));
    let baseline = t
        .between(secs(12), secs(13))
        .find_map(|p| p.baseline)
        .expect("a baseline by 12 s");
    report(
        "slow overload",
        Algo::Aimd,
        "15s..30s",
        &l,
        &format!("baseline at 12 s {baseline:.1?}"),
    );
    assert!(
        baseline <= Duration::from_millis(92),
        "the first baseline carries the queue: {baseline:?} for an 80 ms service time"
    );
    within(Algo::Aimd, "cold start into 1.2x", &l, (0.9, 1.4));
}

// The bench's capacity-drop in the simulator: the bench backend (8
// workers × 20 ms, contention 0.05) at 0.9 of its capacity, its service
// time doubling at 15 s; goodput over 20-40 s against a fixed limit at the
// hand-tuned best (10), over twelve seeds. Today: worst 0.976, median
// 0.986. The rollback after the probe that finds the change of speed goes
// to Little's-law knee of the queued windows (their completion rate times
// the new baseline, 7-8 here) when the highest fitting cut is lower:
// before it went only to that cut (often 6) and climbed +1 a window, worst
// 0.962. Re-entering slow start there instead lifted the worst seed to
// 0.976 too, but on the real bench it doubled a good rollback of 11 to 23
// and the p99 of the successes went to 1.9x nginx's (BENCHMARKS.md, "At
// the knee"), so it was not kept.
#[test]
fn after_a_slowdown_a_small_backend_is_back_at_its_knee_within_the_window() {
    use floodwall_core::FixedLimit;
    let mut ratios = Vec::new();
    for seed in 1..=12u64 {
        let backend = Backend {
            workers: 8,
            service_time: Duration::from_millis(20),
            jitter: 0.1,
            contention: 0.05,
            timeout: Some(Duration::from_secs(1)),
            ..Backend::default()
        };
        let s = Scenario {
            offered_rps: 0.9 * 400.0,
            backend,
            duration: secs(40),
            changes: vec![(secs(15), Change::ServiceTime(Duration::from_millis(40)))],
            seed,
            ..Scenario::default()
        };
        let adaptive = run(&s, AimdLimit::new(AimdConfig::default()).unwrap());
        let fixed = run(&s, FixedLimit::new(10));
        ratios.push(adaptive.goodput(secs(20), secs(40)) / fixed.goodput(secs(20), secs(40)));
    }
    ratios.sort_by(f64::total_cmp);
    eprintln!("capacity drop, Aimd against fixed 10, goodput 20-40 s, 12 seeds: {ratios:.3?}");
    assert!(ratios[0] >= 0.97, "worst seed {:.3}", ratios[0]);
    assert!(ratios[6] >= 0.98, "median {:.3}", ratios[6]);
}
