//! `[routes.limit]`: which algorithm sets a route's concurrency limit, and
//! how it is turned into a limit from `floodwall-core`.
//!
//! This is the one file of the config that uses core's limit types, and
//! building is the one place a limit is validated: core's constructors check
//! the algorithm's settings and return a structured error naming the key,
//! which only needs the route's key prefix in front.

use std::time::Duration;

use serde::Deserialize;

use super::adaptive::{AdaptiveConfig, AimdKeys, GradientKeys, RuleBounds, VegasKeys, WipKeys};
use super::check;
use super::error::ConfigError;
use floodwall_core::limit::{
    AimdConfig, AimdLimit, Baseline, Failures, FixedLimit, GradientConfig, GradientLimit, Limit,
    LimitConfigError, ShapingConfig, VegasConfig, VegasLimit, WindowConfig, WipConfig, WipLimit,
};

/// How the concurrency limit of a route is set (`[routes.limit]`, chosen by
/// its `algorithm` key). Adaptive (`aimd`) is the default: a static limit
/// must be tuned by hand, and a mis-tuned one either wastes capacity or lets
/// the bottleneck collapse.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "algorithm", rename_all = "snake_case", deny_unknown_fields)]
pub enum LimitConfig {
    /// A constant limit: at most `value` requests in flight. Right when you
    /// know what the upstream can take (HAProxy `maxconn`, nginx
    /// `limit_conn`).
    Fixed {
        /// The number of requests allowed in flight at once; at least 1.
        #[serde(default = "default_limit")]
        value: usize,
    },
    /// Additive increase, multiplicative decrease per window, as in the
    /// article "How I Slashed P99 Latency by 82% ... with Adaptive
    /// Concurrency Sharding": errors → ×0.7, latency above tolerance ×
    /// baseline → ×0.85, else ×1.1. Follows capacity changes fastest; the
    /// default.
    Aimd(AdaptiveConfig<AimdKeys>),
    /// Latency gradient (Netflix Gradient2, Envoy adaptive concurrency):
    /// the smoothest, parks a little above the knee.
    Gradient(AdaptiveConfig<GradientKeys>),
    /// TCP Vegas queue estimate: steady, slow to follow a capacity drop.
    Vegas(AdaptiveConfig<VegasKeys>),
    /// The rule of the Phoenix WIP-gate article: halve while latency is
    /// above `multiplier` × baseline, recover gradually.
    Wip(AdaptiveConfig<WipKeys>),
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig::Aimd(AdaptiveConfig::default())
    }
}

impl LimitConfig {
    /// The algorithm's name, as written in the config.
    pub fn algorithm(&self) -> &'static str {
        match self {
            LimitConfig::Fixed { .. } => "fixed",
            LimitConfig::Aimd(_) => "aimd",
            LimitConfig::Gradient(_) => "gradient",
            LimitConfig::Vegas(_) => "vegas",
            LimitConfig::Wip(_) => "wip",
        }
    }

    /// The default settings of algorithm `name` (for `--algorithm`).
    pub fn named(name: &str) -> Option<LimitConfig> {
        Some(match name {
            "fixed" => LimitConfig::Fixed {
                value: default_limit(),
            },
            "aimd" => LimitConfig::Aimd(AdaptiveConfig::default()),
            "gradient" => LimitConfig::Gradient(AdaptiveConfig::default()),
            "vegas" => LimitConfig::Vegas(AdaptiveConfig::default()),
            "wip" => LimitConfig::Wip(AdaptiveConfig::default()),
            _ => return None,
        })
    }

    /// The highest the limit can ever be: a fixed limit's value, an
    /// adaptive limit's `max`. Distributed mode shares this as the route's
    /// global limit.
    pub fn ceiling(&self) -> usize {
        match self {
            LimitConfig::Fixed { value } => *value,
            LimitConfig::Aimd(a) => a.max,
            LimitConfig::Gradient(a) => a.max,
            LimitConfig::Vegas(a) => a.max,
            LimitConfig::Wip(a) => a.max,
        }
    }

    /// The lowest the algorithm itself ever sets the limit: a fixed
    /// limit's value, an adaptive limit's `min` (probes and shares may cap
    /// it lower). `/metrics` shows it, so an alert can tell a limit held at
    /// its floor by a sick upstream from one that is merely low.
    pub fn floor(&self) -> usize {
        match self {
            LimitConfig::Fixed { value } => *value,
            LimitConfig::Aimd(a) => a.min,
            LimitConfig::Gradient(a) => a.min,
            LimitConfig::Vegas(a) => a.min,
            LimitConfig::Wip(a) => a.min,
        }
    }

    /// Checks the limit by building it (see the module doc). The probe
    /// seed only staggers baseline probes in time, which does not change
    /// what is valid, so any will do.
    pub(super) fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.build(prefix, 0).map(drop)
    }

    /// Builds the algorithm, or says which key is wrong. `prefix` is the key
    /// path for errors (e.g. `routes[0].limit.`); `seed` decorrelates
    /// baseline probes across replicas and routes.
    pub fn build(&self, prefix: &str, seed: u64) -> Result<Box<dyn Limit>, ConfigError> {
        // Core validates with no prefix; the key it names is under ours.
        let err =
            |e: LimitConfigError| ConfigError::invalid(format!("{prefix}{}", e.key), e.message);
        let algorithm = self.algorithm();
        Ok(match self {
            LimitConfig::Fixed { value } => {
                check_limit(*value)
                    .map_err(|m| ConfigError::invalid(format!("{prefix}value"), m))?;
                Box::new(FixedLimit::new(*value))
            }
            LimitConfig::Aimd(a) => {
                let (shaping, window, baseline, failures) = common(a, prefix, algorithm, seed)?;
                let mut c = AimdConfig {
                    shaping,
                    window,
                    baseline,
                    failures,
                    ..AimdConfig::default()
                };
                let r = &a.rule;
                if let Some(x) = r.tolerance {
                    c.tolerance = x;
                }
                if let Some(x) = r.backoff {
                    c.backoff = x;
                }
                if let Some(x) = r.max_cut {
                    c.max_cut = x;
                }
                if let Some(x) = r.increase {
                    c.increase = x;
                }
                if let Some(d) = r.min_queue_delay {
                    c.min_queue_delay = d;
                }
                Box::new(AimdLimit::new(c).map_err(err)?)
            }
            LimitConfig::Gradient(a) => {
                let (shaping, window, baseline, failures) = common(a, prefix, algorithm, seed)?;
                let mut c = GradientConfig {
                    shaping,
                    window,
                    baseline,
                    failures,
                    ..GradientConfig::default()
                };
                let r = &a.rule;
                if let Some(x) = r.tolerance {
                    c.tolerance = x;
                }
                if let Some(x) = r.smoothing {
                    c.smoothing = x;
                }
                if let Some(d) = r.min_queue_delay {
                    c.min_queue_delay = d;
                }
                Box::new(GradientLimit::new(c).map_err(err)?)
            }
            LimitConfig::Vegas(a) => {
                let (shaping, window, baseline, failures) = common(a, prefix, algorithm, seed)?;
                let mut c = VegasConfig {
                    shaping: ShapingConfig {
                        slow_start: a.slow_start.unwrap_or(false),
                        ..shaping
                    },
                    window,
                    baseline,
                    failures,
                    ..VegasConfig::default()
                };
                let r = &a.rule;
                if let Some(x) = r.alpha {
                    c.alpha = x;
                }
                if let Some(x) = r.beta {
                    c.beta = x;
                }
                if let Some(x) = r.threshold {
                    c.threshold = x;
                }
                if let Some(d) = r.min_queue_delay {
                    c.min_queue_delay = d;
                }
                Box::new(VegasLimit::new(c).map_err(err)?)
            }
            LimitConfig::Wip(a) => {
                let (shaping, window, baseline, failures) = common(a, prefix, algorithm, seed)?;
                let mut c = WipConfig {
                    shaping,
                    window,
                    baseline,
                    failures,
                    ..WipConfig::default()
                };
                if let Some(x) = a.rule.multiplier {
                    c.multiplier = x;
                }
                if let Some(d) = a.rule.min_queue_delay {
                    c.min_queue_delay = d;
                }
                Box::new(WipLimit::new(c).map_err(err)?)
            }
        })
    }
}

fn default_limit() -> usize {
    64
}

/// A fixed limit's value must admit something. Shared with `--limit`, so
/// the flag gets the same message as the key.
pub(super) fn check_limit(value: usize) -> Result<(), String> {
    if value == 0 {
        return Err(format!("must be at least 1 (got {value})"));
    }
    if value > check::MAX_COUNT {
        return Err(format!(
            "must be at most {} (got {value})",
            check::MAX_COUNT
        ));
    }
    Ok(())
}

/// The parts every adaptive algorithm shares, from the keys every one
/// reads; refuses a key of another algorithm first.
fn common<R: RuleBounds>(
    a: &AdaptiveConfig<R>,
    prefix: &str,
    algorithm: &str,
    seed: u64,
) -> Result<(ShapingConfig, WindowConfig, Baseline, Failures), ConfigError> {
    a.validate_keys(prefix, algorithm)?;
    a.validate_bounds(prefix)?;
    a.rule.validate_bounds(prefix)?;
    let mut shaping = ShapingConfig {
        min: a.min,
        max: a.max,
        ramp_up: a.ramp_up,
        ..ShapingConfig::default()
    };
    if let Some(s) = a.stable_for {
        shaping.stable_for = s;
    }
    if let Some(s) = a.slow_start {
        shaping.slow_start = s;
    }
    if let Some(n) = a.initial {
        shaping.initial = n;
    }
    let mut window = WindowConfig::default();
    if let Some(n) = a.window_min_samples {
        window.min_samples = n;
    }
    if let Some(d) = a.window_min_duration {
        window.min_duration = d;
    }
    if let Some(d) = a.min_rtt {
        window.min_rtt = d;
    }
    let mut baseline = match a.baseline.as_deref() {
        None | Some("probe") => Baseline::default(),
        Some(d) => {
            let d = humantime::parse_duration(d).map_err(|e| {
                ConfigError::invalid(
                    format!("{prefix}baseline"),
                    format!("expected \"probe\" or a duration such as \"50ms\" ({e})"),
                )
            })?;
            check::duration(&format!("{prefix}baseline"), d, Duration::ZERO, check::HOUR)?;
            Baseline::Fixed(d)
        }
    };
    if let Baseline::Measured(p) = &mut baseline {
        if let Some(i) = a.probe_interval {
            p.interval = i;
        }
        if let Some(x) = a.probe_shift {
            p.shift = x;
        }
        // Replicas must not probe in lockstep.
        p.seed = seed;
    } else if let Some(key) = [
        ("probe_interval", a.probe_interval.is_some()),
        ("probe_shift", a.probe_shift.is_some()),
    ]
    .into_iter()
    .find_map(|(k, set)| set.then_some(k))
    {
        return Err(ConfigError::invalid(
            format!("{prefix}{key}"),
            "only with baseline = \"probe\"",
        ));
    }
    let mut failures = Failures::default();
    if let Some(x) = a.error_rate {
        failures.error_rate = x;
    }
    if let Some(x) = a.drop_rate {
        failures.drop_rate = x;
    }
    if let Some(x) = a.failure_backoff {
        failures.backoff = x;
    }
    Ok((shaping, window, baseline, failures))
}
