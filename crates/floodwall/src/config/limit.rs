//! Turns `[routes.limit]` into a limit algorithm from `floodwall-core`.

use super::route::{AdaptiveConfig, LimitConfig};
use floodwall_core::limit::{
    AimdConfig, AimdLimit, Baseline, Failures, FixedLimit, GradientConfig, GradientLimit, Limit,
    ShapingConfig, VegasConfig, VegasLimit, WindowConfig, WipConfig, WipLimit,
};

/// Keys that only one algorithm reads, and which.
const OWN_KEYS: [(&str, &[&str]); 10] = [
    ("tolerance", &["aimd", "gradient"]),
    ("backoff", &["aimd"]),
    ("max_cut", &["aimd"]),
    ("increase", &["aimd"]),
    ("smoothing", &["gradient"]),
    ("alpha", &["vegas"]),
    ("beta", &["vegas"]),
    ("threshold", &["vegas"]),
    ("multiplier", &["wip"]),
    ("", &[]),
];

fn set_keys(a: &AdaptiveConfig) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut note = |k: &'static str, set: bool| {
        if set {
            keys.push(k)
        }
    };
    note("tolerance", a.tolerance.is_some());
    note("backoff", a.backoff.is_some());
    note("max_cut", a.max_cut.is_some());
    note("increase", a.increase.is_some());
    note("smoothing", a.smoothing.is_some());
    note("alpha", a.alpha.is_some());
    note("beta", a.beta.is_some());
    note("threshold", a.threshold.is_some());
    note("multiplier", a.multiplier.is_some());
    keys
}

fn common(
    a: &AdaptiveConfig,
    prefix: &str,
    seed: u64,
) -> Result<(ShapingConfig, WindowConfig, Baseline, Failures), String> {
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
        Some(d) => Baseline::Fixed(humantime::parse_duration(d).map_err(|e| {
            format!("{prefix}baseline: expected \"probe\" or a duration such as \"50ms\" ({e})")
        })?),
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
        return Err(format!("{prefix}{key}: only with baseline = \"probe\""));
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

impl LimitConfig {
    /// Builds the algorithm. `prefix` is the key path for errors (e.g.
    /// `routes[0].limit.`); `seed` decorrelates baseline probes across
    /// replicas and routes.
    pub fn build(&self, prefix: &str, seed: u64) -> Result<Box<dyn Limit>, String> {
        let a = match self {
            LimitConfig::Fixed { value } => {
                if *value == 0 {
                    return Err(format!("{prefix}value: must be at least 1 (got 0)"));
                }
                return Ok(Box::new(FixedLimit::new(*value)));
            }
            LimitConfig::Aimd(a)
            | LimitConfig::Gradient(a)
            | LimitConfig::Vegas(a)
            | LimitConfig::Wip(a) => a,
        };
        let algorithm = self.algorithm();
        for key in set_keys(a) {
            let owners = OWN_KEYS
                .iter()
                .find(|(k, _)| *k == key)
                .map_or(&[][..], |(_, o)| o);
            if !owners.contains(&algorithm) {
                return Err(format!(
                    "{prefix}{key}: not a key of algorithm = \"{algorithm}\" (it belongs to {})",
                    owners.join(", ")
                ));
            }
        }
        let (shaping, window, baseline, failures) = common(a, prefix, seed)?;
        let err = |e: floodwall_core::limit::LimitConfigError| e.to_string();
        Ok(match self {
            LimitConfig::Aimd(_) => {
                let mut c = AimdConfig {
                    shaping,
                    window,
                    baseline,
                    failures,
                    ..AimdConfig::default()
                };
                if let Some(x) = a.tolerance {
                    c.tolerance = x;
                }
                if let Some(x) = a.backoff {
                    c.backoff = x;
                }
                if let Some(x) = a.max_cut {
                    c.max_cut = x;
                }
                if let Some(x) = a.increase {
                    c.increase = x;
                }
                c.validate(prefix).map_err(err)?;
                Box::new(AimdLimit::new(c).map_err(err)?)
            }
            LimitConfig::Gradient(_) => {
                let mut c = GradientConfig {
                    shaping,
                    window,
                    baseline,
                    failures,
                    ..GradientConfig::default()
                };
                if let Some(x) = a.tolerance {
                    c.tolerance = x;
                }
                if let Some(x) = a.smoothing {
                    c.smoothing = x;
                }
                c.validate(prefix).map_err(err)?;
                Box::new(GradientLimit::new(c).map_err(err)?)
            }
            LimitConfig::Vegas(_) => {
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
                if let Some(x) = a.alpha {
                    c.alpha = x;
                }
                if let Some(x) = a.beta {
                    c.beta = x;
                }
                if let Some(x) = a.threshold {
                    c.threshold = x;
                }
                c.validate(prefix).map_err(err)?;
                Box::new(VegasLimit::new(c).map_err(err)?)
            }
            LimitConfig::Wip(_) => {
                let mut c = WipConfig {
                    shaping,
                    window,
                    baseline,
                    failures,
                    ..WipConfig::default()
                };
                if let Some(x) = a.multiplier {
                    c.multiplier = x;
                }
                c.validate(prefix).map_err(err)?;
                Box::new(WipLimit::new(c).map_err(err)?)
            }
            LimitConfig::Fixed { .. } => unreachable!("returned above"),
        })
    }
}
