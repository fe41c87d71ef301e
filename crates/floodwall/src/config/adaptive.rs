//! The keys of an adaptive `[routes.limit]`: those every adaptive algorithm
//! reads ([`AdaptiveConfig`]) and those only one algorithm reads, its rule's
//! keys ([`AimdKeys`], [`GradientKeys`], [`VegasKeys`], [`WipKeys`]).
//!
//! Which algorithm owns a key is the rule structs themselves: serde reads
//! each one's keys from its derive, so a new key is a new field and nothing
//! else. A key of another algorithm still parses, so that validation can
//! refuse it by its full key path and name the algorithm it belongs to
//! (`routes[0].limit.smoothing: not a key of algorithm = "aimd" (it belongs
//! to gradient)`); any other unknown key is a parse error with its line.

use std::cell::Cell;
use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::check;
use super::error::ConfigError;

/// The keys of an adaptive limit: those every algorithm reads, and `rule`,
/// the keys of this algorithm alone. Unset keys take the algorithm's own
/// defaults (docs/config.md lists them).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    bound(deserialize = "R: Deserialize<'de> + Default")
)]
pub struct AdaptiveConfig<R> {
    /// The floor: the limit never goes below it.
    pub min: usize,
    /// Where a cold start begins: its first baseline measurement runs at
    /// the traffic's own concurrency under this limit (pinned at `min`
    /// instead if traffic reaches it), and the ramp starts here.
    pub initial: Option<usize>,
    /// The cap: the limit never goes above it.
    pub max: usize,
    /// Cold start: the cap rises from `initial` to `max` over this time after
    /// start, so a fresh replica does not grab everything at once.
    #[serde(with = "humantime_serde")]
    pub ramp_up: Duration,
    /// Hysteresis: the limit only rises after latency has been stable for
    /// this long. Decreases are immediate.
    #[serde(with = "humantime_serde", default)]
    pub stable_for: Option<Duration>,
    /// Samples per decision window.
    pub window_min_samples: Option<usize>,
    /// Shortest decision window.
    #[serde(with = "humantime_serde", default)]
    pub window_min_duration: Option<Duration>,
    /// Samples faster than this are ignored (cache hits, errors returned at
    /// once).
    #[serde(with = "humantime_serde", default)]
    pub min_rtt: Option<Duration>,
    /// `"probe"` (measure the unloaded latency now and then by pinning the
    /// limit to `min` briefly) or a fixed duration such as `"50ms"`.
    pub baseline: Option<String>,
    /// How often the unloaded latency is re-measured.
    #[serde(with = "humantime_serde", default)]
    pub probe_interval: Option<Duration>,
    /// Double the limit each healthy window from a cold start until the
    /// first decrease (default on, off for `vegas`).
    pub slow_start: Option<bool>,
    /// A probe this many times slower or faster than the baseline means the
    /// upstream changed speed: the baseline restarts from it, and latency
    /// cuts made against the old one are undone (back to the highest cut
    /// whose latency fits the new baseline, or to the queued windows'
    /// completion rate times this factor times the new baseline, if
    /// higher).
    pub probe_shift: Option<f64>,
    /// Error + drop share of a window above which the limit backs off.
    pub error_rate: Option<f64>,
    /// Drop (timeout, upstream 503/429) share above which it backs off.
    pub drop_rate: Option<f64>,
    /// The multiplicative cut on errors or drops.
    pub failure_backoff: Option<f64>,
    /// The keys only this algorithm reads.
    #[serde(flatten)]
    pub rule: R,
    /// Keys of other algorithms found in the table; [`Self::validate_keys`]
    /// refuses them. Declared after `rule`, so `rule` has taken its own.
    #[serde(flatten)]
    foreign: ForeignKeys,
}

impl<R: Default> Default for AdaptiveConfig<R> {
    fn default() -> Self {
        AdaptiveConfig {
            min: 3,
            initial: None,
            max: 1000,
            ramp_up: Duration::from_secs(60),
            stable_for: None,
            window_min_samples: None,
            window_min_duration: None,
            min_rtt: None,
            baseline: None,
            probe_interval: None,
            slow_start: None,
            probe_shift: None,
            error_rate: None,
            drop_rate: None,
            failure_backoff: None,
            rule: R::default(),
            foreign: ForeignKeys::default(),
        }
    }
}

/// The largest latency factor (`tolerance`, `probe_shift`, `multiplier`):
/// a latency a hundred times the baseline is an outage, not a threshold.
const MAX_LATENCY_FACTOR: f64 = 100.0;
/// The largest growth factor of a healthy window (`increase`): ×10 a
/// window is already a jump, not a probe.
const MAX_INCREASE: f64 = 10.0;
/// The largest Vegas queue multiple (`alpha`, `beta`, `threshold`).
const MAX_VEGAS: f64 = 1000.0;

impl<R> AdaptiveConfig<R> {
    /// The bounds of the keys every algorithm reads that core's own checks
    /// leave open above (and floats that must be finite), so no setting
    /// that parses can overflow a clock or a window later. Core checks the
    /// rest (`min` ≤ `max`, shares in [0, 1], backoffs in (0, 1)).
    pub(super) fn validate_bounds(&self, prefix: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{prefix}{k}");
        check::count(&key("min"), self.min, 1, check::MAX_COUNT)?;
        check::count(&key("max"), self.max, 1, check::MAX_COUNT)?;
        if let Some(n) = self.initial {
            check::count(&key("initial"), n, 0, check::MAX_COUNT)?;
        }
        check::duration(&key("ramp_up"), self.ramp_up, Duration::ZERO, check::DAY)?;
        if let Some(d) = self.stable_for {
            check::duration(&key("stable_for"), d, Duration::ZERO, check::HOUR)?;
        }
        if let Some(n) = self.window_min_samples {
            check::count(&key("window_min_samples"), n, 1, check::MAX_COUNT)?;
        }
        if let Some(d) = self.window_min_duration {
            check::duration(&key("window_min_duration"), d, Duration::ZERO, check::HOUR)?;
        }
        if let Some(d) = self.min_rtt {
            check::duration(&key("min_rtt"), d, Duration::ZERO, check::MINUTE)?;
        }
        if let Some(d) = self.probe_interval {
            check::positive_at_most(&key("probe_interval"), d, check::DAY)?;
        }
        if let Some(x) = self.probe_shift {
            check::factor_above(&key("probe_shift"), x, 1.0, MAX_LATENCY_FACTOR)?;
        }
        for (k, x) in [
            ("error_rate", self.error_rate),
            ("drop_rate", self.drop_rate),
        ] {
            if let Some(x) = x {
                check::float(&key(k), x, 0.0, 1.0)?;
            }
        }
        if let Some(x) = self.failure_backoff {
            check::factor_above(&key("failure_backoff"), x, 0.0, 1.0)?;
        }
        Ok(())
    }

    /// Refuses a key that belongs to another algorithm than `algorithm`,
    /// naming the algorithms it belongs to.
    pub(super) fn validate_keys(&self, prefix: &str, algorithm: &str) -> Result<(), ConfigError> {
        match self.foreign.0.first() {
            None => Ok(()),
            Some((key, owners)) => Err(ConfigError::invalid(
                format!("{prefix}{key}"),
                format!(
                    "not a key of algorithm = \"{algorithm}\" (it belongs to {})",
                    owners.join(", ")
                ),
            )),
        }
    }
}

/// The keys of `algorithm = "aimd"` alone.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct AimdKeys {
    /// Latency may be this many times the baseline before it counts as
    /// queueing.
    pub tolerance: Option<f64>,
    /// The cut when latency is above tolerance.
    pub backoff: Option<f64>,
    /// The deepest cut one window makes when latency is far above
    /// tolerance.
    pub max_cut: Option<f64>,
    /// The growth factor of a healthy window.
    pub increase: Option<f64>,
    /// Queueing below this (window p50 minus baseline) is never overload.
    #[serde(with = "humantime_serde", default)]
    pub min_queue_delay: Option<Duration>,
}

/// The keys of `algorithm = "gradient"` alone.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct GradientKeys {
    /// Latency may be this many times the baseline before it counts as
    /// queueing.
    pub tolerance: Option<f64>,
    /// How fast the limit follows the gradient (0..1].
    pub smoothing: Option<f64>,
    /// Queueing below this never lowers the gradient below 1.
    #[serde(with = "humantime_serde", default)]
    pub min_queue_delay: Option<Duration>,
}

/// The keys of `algorithm = "vegas"` alone.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct VegasKeys {
    /// Grow while the queue estimate is below alpha × log10(limit).
    pub alpha: Option<f64>,
    /// Shrink while it is above beta × log10(limit).
    pub beta: Option<f64>,
    /// Below this queue estimate, grow fast.
    pub threshold: Option<f64>,
    /// Mean queueing below this never holds or shrinks the limit.
    #[serde(with = "humantime_serde", default)]
    pub min_queue_delay: Option<Duration>,
}

/// The keys of `algorithm = "wip"` alone.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct WipKeys {
    /// Halve while latency is above multiplier × baseline.
    pub multiplier: Option<f64>,
    /// Halve only if latency is also this much above the baseline.
    #[serde(with = "humantime_serde", default)]
    pub min_queue_delay: Option<Duration>,
}

/// The bounds of an algorithm's own keys, on top of core's checks (which
/// leave most of them open above).
pub(super) trait RuleBounds {
    /// Checks this rule's keys; errors name the key under `prefix`.
    fn validate_bounds(&self, prefix: &str) -> Result<(), ConfigError>;
}

impl RuleBounds for AimdKeys {
    fn validate_bounds(&self, prefix: &str) -> Result<(), ConfigError> {
        if let Some(x) = self.tolerance {
            check::float(&format!("{prefix}tolerance"), x, 1.0, MAX_LATENCY_FACTOR)?;
        }
        for (k, x) in [("backoff", self.backoff), ("max_cut", self.max_cut)] {
            if let Some(x) = x {
                check::factor_above(&format!("{prefix}{k}"), x, 0.0, 1.0)?;
            }
        }
        if let Some(x) = self.increase {
            check::factor_above(&format!("{prefix}increase"), x, 1.0, MAX_INCREASE)?;
        }
        check_min_queue_delay(prefix, self.min_queue_delay)
    }
}

impl RuleBounds for GradientKeys {
    fn validate_bounds(&self, prefix: &str) -> Result<(), ConfigError> {
        if let Some(x) = self.tolerance {
            check::float(&format!("{prefix}tolerance"), x, 1.0, MAX_LATENCY_FACTOR)?;
        }
        if let Some(x) = self.smoothing {
            check::factor_above(&format!("{prefix}smoothing"), x, 0.0, 1.0)?;
        }
        check_min_queue_delay(prefix, self.min_queue_delay)
    }
}

impl RuleBounds for VegasKeys {
    fn validate_bounds(&self, prefix: &str) -> Result<(), ConfigError> {
        for (k, x) in [
            ("alpha", self.alpha),
            ("beta", self.beta),
            ("threshold", self.threshold),
        ] {
            if let Some(x) = x {
                check::float(&format!("{prefix}{k}"), x, 0.0, MAX_VEGAS)?;
            }
        }
        check_min_queue_delay(prefix, self.min_queue_delay)
    }
}

impl RuleBounds for WipKeys {
    fn validate_bounds(&self, prefix: &str) -> Result<(), ConfigError> {
        if let Some(x) = self.multiplier {
            check::factor_above(&format!("{prefix}multiplier"), x, 1.0, MAX_LATENCY_FACTOR)?;
        }
        check_min_queue_delay(prefix, self.min_queue_delay)
    }
}

/// `min_queue_delay`, which every adaptive rule has: 0 (no floor) to 60 s.
fn check_min_queue_delay(prefix: &str, d: Option<Duration>) -> Result<(), ConfigError> {
    match d {
        Some(d) => check::duration(
            &format!("{prefix}min_queue_delay"),
            d,
            Duration::ZERO,
            Duration::from_secs(60),
        ),
        None => Ok(()),
    }
}

/// Every adaptive algorithm and the keys only it reads.
fn rules() -> [(&'static str, &'static [&'static str]); 4] {
    [
        ("aimd", keys_of::<AimdKeys>()),
        ("gradient", keys_of::<GradientKeys>()),
        ("vegas", keys_of::<VegasKeys>()),
        ("wip", keys_of::<WipKeys>()),
    ]
}

/// The keys of all rules together, which a [`ForeignKeys`] takes.
fn every_rule_key() -> &'static [&'static str] {
    static KEYS: OnceLock<&'static [&'static str]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys: Vec<&'static str> = rules()
            .iter()
            .flat_map(|(_, k)| k.iter().copied())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys.leak()
    })
}

/// The keys a derived `Deserialize` struct accepts: serde hands them to
/// `deserialize_struct`, and this deserializer only records them.
fn keys_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Catch<'a>(&'a Cell<&'static [&'static str]>);
    impl<'de> Deserializer<'de> for Catch<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.set(fields);
            Err(serde::de::Error::custom("keys recorded"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }
    let keys = Cell::new(&[][..]);
    let _ = T::deserialize(Catch(&keys));
    keys.get()
}

/// Keys of another algorithm's rule, in file order, each with the
/// algorithms that own it. Asking serde for exactly the rule keys
/// (`deserialize_struct`) leaves any other unknown key to
/// `deny_unknown_fields`.
#[derive(Debug, Clone, PartialEq, Default)]
struct ForeignKeys(Vec<(String, Vec<&'static str>)>);

impl<'de> Deserialize<'de> for ForeignKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = ForeignKeys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("keys of an adaptive algorithm")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ForeignKeys, A::Error> {
                let mut found = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    let owners = rules()
                        .iter()
                        .filter(|(_, keys)| keys.contains(&key.as_str()))
                        .map(|(algorithm, _)| *algorithm)
                        .collect();
                    found.push((key, owners));
                }
                Ok(ForeignKeys(found))
            }
        }
        deserializer.deserialize_struct("ForeignKeys", every_rule_key(), Keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_keys_come_from_the_structs() {
        assert_eq!(
            keys_of::<AimdKeys>(),
            [
                "tolerance",
                "backoff",
                "max_cut",
                "increase",
                "min_queue_delay"
            ]
        );
        assert_eq!(keys_of::<WipKeys>(), ["multiplier", "min_queue_delay"]);
        assert!(every_rule_key().contains(&"smoothing"));
        assert_eq!(
            every_rule_key()
                .iter()
                .filter(|k| **k == "tolerance")
                .count(),
            1
        );
    }
}
