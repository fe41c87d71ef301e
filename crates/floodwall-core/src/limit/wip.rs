//! WIP: seed 000's dynamic WIP limit — a configured base, halved while the
//! upstream is slow.
//!
//! ```text
//! per success:        ema ← 0.1 × rtt + 0.9 × ema
//! per closed window, with L the limit, base = shaping.max:
//!   failures over threshold (see `failures`)   → L × 0.7
//!   ema / baseline > multiplier (2.0)          → L / 2
//!   otherwise                                  → min(base, L + 5 % × base)
//! ```
//!
//! This is the simplest of the four and the least ambitious: it does not
//! look for the best limit, it keeps latency under `multiplier ×` the
//! unloaded latency. With the default 2.0 it settles anywhere between the
//! upstream's parallelism W (where latency starts to rise) and 2W (where it
//! doubles): full goodput, up to 2× latency. Use it where the base is known
//! and the goal is "never twice as slow"; prefer `gradient` to find the
//! limit.
//!
//! Seed 000 switches between exactly two values, base and base / 2, on
//! every request. Here the halving repeats per window while the ratio stays
//! high (a base tuned for peak may be 4× too high), and the way back is
//! gradual (+5 % of base a window) and only after `stable_for` — the
//! seed's own fix for its flapping ("the WIP limit only increases if
//! latency is stable for 30 seconds").
//!
//! **Defaults** (seed 000): multiplier 2.0 (`MaxLatencyMultiplier`), moving
//! average α 0.1 (`RecordLatency`), base 64 (floodwall's fixed default, as
//! `shaping.max`), `stable_for` 30 s, ramp-up 60 s; recovery 5 % of base a
//! window (ours: back from half in 10 windows). The baseline is probed like
//! the others' (seed 000 hard-codes 50 ms: `Baseline::Fixed` does that).
//!
//! **Source**: seed 000 ("Phoenix" WIP gate: `BaseWIPLimit`,
//! `MaxLatencyMultiplier`, `BottleneckProbe.RecordLatency`, and its
//! pitfall 4 on hysteresis and the floor).

use super::controller::{Controller, Evaluation, Step};
use super::decision::{ms, Cause, Decision};
use super::failures::Failures;
use super::probe::Baseline;
use super::shaping::ShapingConfig;
use super::window::{Statistic, WindowConfig, WindowSummary};
use super::{Limit, LimitConfigError, Sample};
use crate::clock::Nanos;
use std::time::Duration;

/// Settings of [`WipLimit`]; see the module doc for the formula and why
/// each default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WipConfig {
    /// Floor, cap, ramp-up, hysteresis, growth guard. `max` is seed 000's
    /// `BaseWIPLimit`. Default: [`ShapingConfig::default`] with `max` 64
    /// and `stable_for` 30 s.
    pub shaping: ShapingConfig,
    /// Window size.
    pub window: WindowConfig,
    /// Where the unloaded latency comes from.
    pub baseline: Baseline,
    /// Failure thresholds and their cut.
    pub failures: Failures,
    /// The limit halves while `ema / baseline` is above this. Default 2.0.
    pub multiplier: f64,
    /// Weight of each new latency in the moving average. Default 0.1.
    pub ema_alpha: f64,
    /// Fraction of the base added back per healthy window. Default 0.05.
    pub recovery: f64,
}

impl Default for WipConfig {
    fn default() -> Self {
        Self {
            shaping: ShapingConfig {
                max: 64,
                stable_for: Duration::from_secs(30),
                ..ShapingConfig::default()
            },
            window: WindowConfig::default(),
            baseline: Baseline::default(),
            failures: Failures::default(),
            multiplier: 2.0,
            ema_alpha: 0.1,
            recovery: 0.05,
        }
    }
}

impl WipConfig {
    /// Checks the settings; errors name the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<(), LimitConfigError> {
        self.shaping.validate(prefix)?;
        self.baseline.validate(prefix)?;
        self.failures.validate(prefix)?;
        let key = |k: &str| format!("{prefix}{k}");
        if self.multiplier.is_nan() || self.multiplier <= 1.0 {
            return Err(LimitConfigError::new(
                key("multiplier"),
                format!("must be above 1.0, got {}", self.multiplier),
            ));
        }
        if !(self.ema_alpha > 0.0 && self.ema_alpha <= 1.0) {
            return Err(LimitConfigError::new(
                key("ema_alpha"),
                format!("must be in (0, 1], got {}", self.ema_alpha),
            ));
        }
        if !(self.recovery > 0.0 && self.recovery <= 1.0) {
            return Err(LimitConfigError::new(
                key("recovery"),
                format!("must be in (0, 1], got {}", self.recovery),
            ));
        }
        Ok(())
    }
}

/// Seed 000's dynamic WIP limit; see the module doc.
#[derive(Debug, Clone)]
pub struct WipLimit {
    cfg: WipConfig,
    ctl: Controller,
    ema: Option<f64>,
}

impl WipLimit {
    /// A WIP limit starting at `cfg.shaping.min` and ramping to the base
    /// (`cfg.shaping.max`), or the key of the first invalid setting.
    pub fn new(cfg: WipConfig) -> Result<Self, LimitConfigError> {
        cfg.validate("")?;
        Ok(Self {
            ctl: Controller::new(cfg.shaping, cfg.window, cfg.baseline, Statistic::Mean),
            cfg,
            ema: None,
        })
    }

    /// The current baseline (mean latency at the floor), once known.
    pub fn baseline(&self) -> Option<Duration> {
        self.ctl.baseline(Statistic::Mean)
    }

    fn evaluate(&self, w: &WindowSummary) -> Evaluation {
        let limit = self.ctl.value();
        if let Some(cut) = self.cfg.failures.check(w, limit) {
            return cut;
        }
        let latency = self.ema.map(Duration::from_secs_f64);
        let base = self.cfg.shaping.max as f64;
        let step_up = (self.cfg.recovery * base).max(1.0);
        let (Some(ema), Some(baseline)) = (latency, self.ctl.baseline(Statistic::Mean)) else {
            return Evaluation {
                step: Step::Increase(limit + step_up),
                cause: Cause::Healthy,
                latency,
                detail: format!("no latency to compare → +{step_up:.1}"),
            };
        };
        let ratio = ema.as_secs_f64() / baseline.as_secs_f64().max(1e-9);
        let what = format!(
            "latency ratio {ratio:.2} = ema {} / baseline {}",
            ms(ema),
            ms(baseline)
        );
        if ratio > self.cfg.multiplier {
            Evaluation {
                step: Step::Decrease(limit / 2.0),
                cause: Cause::Latency,
                latency,
                detail: format!("{what} > {:.2} → ÷2", self.cfg.multiplier),
            }
        } else {
            Evaluation {
                step: Step::Increase((limit + step_up).min(base)),
                cause: Cause::Healthy,
                latency,
                detail: format!(
                    "{what} ≤ {:.2} → +{step_up:.1} toward base {base:.0}",
                    self.cfg.multiplier
                ),
            }
        }
    }
}

impl Limit for WipLimit {
    fn limit(&self) -> usize {
        self.ctl.limit()
    }

    fn on_sample(&mut self, now: Nanos, sample: &Sample) -> usize {
        if self.ctl.times(sample) {
            let x = sample.rtt.as_secs_f64();
            let a = self.cfg.ema_alpha;
            self.ema = Some(self.ema.map_or(x, |e| a * x + (1.0 - a) * e));
        }
        if let Some(w) = self.ctl.sample(now, sample) {
            let e = self.evaluate(&w);
            self.ctl.apply(now, &w, e);
        }
        self.ctl.limit()
    }

    fn name(&self) -> &'static str {
        "wip"
    }

    fn explain(&self) -> Option<Decision> {
        self.ctl.decision()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::controller::testing::Feeder;
    use crate::limit::Cause;

    #[test]
    fn halves_above_the_multiplier_and_recovers_by_steps_toward_base() {
        let mut l = WipLimit::new(WipConfig {
            shaping: ShapingConfig {
                slow_start: false,
                min: 3,
                max: 40,
                ramp_up: Duration::ZERO,
                stable_for: Duration::ZERO,
                ..ShapingConfig::default()
            },
            baseline: Baseline::Fixed(Duration::from_millis(10)),
            ..WipConfig::default()
        })
        .unwrap();
        let mut f = Feeder::new();
        // +5 % of base 40 = +2 per window, from 3 up to the base.
        assert_eq!(f.ok(&mut l, 10), 5);
        for _ in 0..30 {
            f.ok(&mut l, 10);
        }
        assert_eq!(l.limit(), 40);
        // 20 ms ≤ 2 × 10 ms: at the base, stays.
        assert_eq!(f.ok(&mut l, 20), 40);
        // 25 ms: the moving average passes 2× within the window → ÷2.
        assert_eq!(f.ok(&mut l, 25), 20);
        assert_eq!(l.explain().unwrap().cause, Cause::Latency);
        assert_eq!(f.ok(&mut l, 25), 10, "still slow: halves again");
        assert_eq!(f.ok(&mut l, 10), 12, "back by 2 a window");
    }
}
