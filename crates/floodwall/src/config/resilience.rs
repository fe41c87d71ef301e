//! `[upstreams.breaker]`, `[upstreams.bulkhead]`, `[routes.retry_budget]`
//! and a route's `mode`: what protects an upstream from its callers' and
//! its own failures, beyond the route's limit.
//!
//! All three are off unless their table is present. Why, for a breaker
//! especially: a gateway in front of one upstream has nowhere else to send
//! a request, so an open breaker turns a partial failure (one bad
//! instance behind a balancer, 5 % errors) into a total one, and the
//! numbers that make a breaker safe come from the upstream's own history
//! (Semian's "Tuning bulkheads and circuit breakers"), which a default
//! cannot know. The adaptive limit already backs off on errors and
//! timeouts without refusing everything. Turn the breaker on per upstream,
//! in shadow mode first (`mode = "shadow"`, see docs/operations.md).

use std::time::Duration;

use serde::Deserialize;

use floodwall_core::breaker::{RateWindow, Trip};
use floodwall_core::{BreakerConfig, HttpFailures, RetryBudgetConfig};

use super::check;
use super::error::ConfigError;

/// A circuit breaker on an upstream (`[upstreams.breaker]`), Semian's
/// keys. Count mode (`error_threshold` within `error_threshold_timeout`)
/// unless `failure_rate` is set, which selects rate mode.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerKeys {
    /// Count mode: failures that open it. Default 3.
    #[serde(default)]
    pub error_threshold: Option<u32>,
    /// Count mode: the window those failures must fall in. Default 10 s.
    #[serde(default, with = "humantime_serde")]
    pub error_threshold_timeout: Option<Duration>,
    /// Rate mode: the failure fraction in (0, 1] that opens it.
    #[serde(default)]
    pub failure_rate: Option<f64>,
    /// Rate mode: the window is the last N calls...
    #[serde(default)]
    pub window_calls: Option<usize>,
    /// ...or the last T (default 10 s when neither is set).
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
    /// Rate mode: fewer calls than this in the window never open it.
    /// Default 10.
    #[serde(default)]
    pub minimum_calls: Option<u32>,
    /// How long it stays open before the first trial. Default 10 s.
    #[serde(default = "default_error_timeout", with = "humantime_serde")]
    pub error_timeout: Duration,
    /// The factor on the open time per consecutive re-open. Default 2.
    #[serde(default = "default_backoff")]
    pub backoff: f64,
    /// The longest open time backoff reaches. Default 2 minutes.
    #[serde(default = "default_error_timeout_max", with = "humantime_serde")]
    pub error_timeout_max: Duration,
    /// Trial requests in flight at once while half-open. Default 1.
    #[serde(default = "one")]
    pub half_open_trials: u32,
    /// The response timeout of a trial, shorter than the upstream's
    /// `response_timeout` so a trial against a hung upstream fails fast.
    /// Default: the upstream's `response_timeout`.
    #[serde(default, with = "humantime_serde")]
    pub half_open_resource_timeout: Option<Duration>,
    /// Trial successes that close it. Default 2.
    #[serde(default = "two")]
    pub success_threshold: u32,
    /// Count a 5xx answer as a failure (Semian's
    /// `open_circuit_server_errors`). Connect errors and timeouts always
    /// count. Default true.
    #[serde(default = "yes")]
    pub open_on_server_errors: bool,
    /// Leave 503 and 429 out: the upstream shedding on purpose is neither
    /// a success nor a failure. Default false.
    #[serde(default)]
    pub ignore_overload: bool,
}

fn default_error_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_error_timeout_max() -> Duration {
    Duration::from_secs(120)
}
fn default_backoff() -> f64 {
    2.0
}
fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn yes() -> bool {
    true
}

impl BreakerKeys {
    /// The engine's breaker settings; `key` prefixes error keys.
    pub fn breaker_config(&self, key: &str) -> Result<BreakerConfig, ConfigError> {
        let k = |f: &str| format!("{key}{f}");
        let trip = match self.failure_rate {
            None => {
                for (set, name) in [
                    (self.window_calls.is_some(), "window_calls"),
                    (self.window.is_some(), "window"),
                    (self.minimum_calls.is_some(), "minimum_calls"),
                ] {
                    if set {
                        return Err(ConfigError::invalid(
                            k(name),
                            "only applies in rate mode: set failure_rate too",
                        ));
                    }
                }
                Trip::Count {
                    error_threshold: self.error_threshold.unwrap_or(3),
                    error_threshold_timeout: self
                        .error_threshold_timeout
                        .unwrap_or(Duration::from_secs(10)),
                }
            }
            Some(rate) => {
                for (set, name) in [
                    (self.error_threshold.is_some(), "error_threshold"),
                    (
                        self.error_threshold_timeout.is_some(),
                        "error_threshold_timeout",
                    ),
                ] {
                    if set {
                        return Err(ConfigError::invalid(
                            k(name),
                            "only applies in count mode: remove failure_rate, or this key",
                        ));
                    }
                }
                let window = match (self.window_calls, self.window) {
                    (Some(_), Some(_)) => {
                        return Err(ConfigError::invalid(
                            k("window"),
                            "set window_calls or window, not both",
                        ))
                    }
                    (Some(n), None) => {
                        check::count(&k("window_calls"), n, 1, check::MAX_COUNT)?;
                        RateWindow::Calls(n)
                    }
                    (None, Some(t)) => {
                        check::positive_at_most(&k("window"), t, check::HOUR)?;
                        RateWindow::Time(t)
                    }
                    (None, None) => RateWindow::Time(Duration::from_secs(10)),
                };
                Trip::Rate {
                    failure_rate: rate,
                    window,
                    minimum_calls: self.minimum_calls.unwrap_or(10),
                }
            }
        };
        if let Trip::Count {
            error_threshold,
            error_threshold_timeout,
        } = &trip
        {
            check::count(
                &k("error_threshold"),
                *error_threshold as usize,
                1,
                check::MAX_COUNT,
            )?;
            check::positive_at_most(
                &k("error_threshold_timeout"),
                *error_threshold_timeout,
                check::HOUR,
            )?;
        }
        check::positive_at_most(&k("error_timeout"), self.error_timeout, check::HOUR)?;
        check::positive_at_most(&k("error_timeout_max"), self.error_timeout_max, check::DAY)?;
        check::float(&k("backoff"), self.backoff, 1.0, 100.0)?;
        check::count(
            &k("half_open_trials"),
            self.half_open_trials as usize,
            1,
            check::MAX_COUNT,
        )?;
        check::count(
            &k("success_threshold"),
            self.success_threshold as usize,
            1,
            check::MAX_COUNT,
        )?;
        if let Some(t) = self.half_open_resource_timeout {
            check::positive_at_most(&k("half_open_resource_timeout"), t, check::HOUR)?;
        }
        let config = BreakerConfig {
            trip,
            error_timeout: self.error_timeout,
            backoff: self.backoff,
            error_timeout_max: self.error_timeout_max,
            half_open_trials: self.half_open_trials,
            half_open_resource_timeout: self.half_open_resource_timeout,
            success_threshold: self.success_threshold,
        };
        // The engine's own checks (failure_rate, minimum_calls, the max
        // against the timeout) name the key; prefix it.
        config.validate().map_err(|e| {
            let (name, msg) = e.0.split_once(": ").unwrap_or(("breaker", &e.0));
            ConfigError::invalid(k(name), msg.to_owned())
        })?;
        Ok(config)
    }

    /// What counts as a failure.
    pub fn failures(&self) -> HttpFailures {
        HttpFailures {
            server_errors: self.open_on_server_errors,
            ignore_overload: self.ignore_overload,
        }
    }
}

/// A bulkhead on an upstream (`[upstreams.bulkhead]`): `tickets = N`, or
/// `quota = F` of the summed limit ceilings of the routes that use it.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkheadKeys {
    /// Requests in flight to the upstream at once, across every route.
    #[serde(default)]
    pub tickets: Option<usize>,
    /// A fraction in (0, 1] of the routes' limits (their ceilings, summed
    /// over the routes that use this upstream), at least 1.
    #[serde(default)]
    pub quota: Option<f64>,
}

impl BulkheadKeys {
    /// Checks it; `key` prefixes error keys.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        match (self.tickets, self.quota) {
            (Some(n), None) => check::count(&format!("{key}tickets"), n, 1, check::MAX_COUNT),
            (None, Some(q)) => check::factor_above(&format!("{key}quota"), q, 0.0, 1.0),
            (Some(_), Some(_)) => Err(ConfigError::invalid(
                format!("{key}quota"),
                "set tickets or quota, not both",
            )),
            (None, None) => Err(ConfigError::invalid(
                format!("{key}tickets"),
                "a bulkhead needs tickets = N or quota = F",
            )),
        }
    }
}

/// A route's retry budget (`[routes.retry_budget]`), Finagle's keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryBudgetKeys {
    /// Retries allowed per first attempt over `ttl`. Default 0.2.
    pub ratio: f64,
    /// The window. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Retries a second allowed whatever the first attempts. Default 10.
    pub min_per_s: u32,
    /// No retry is let through for this long after a first attempt was
    /// refused for lack of capacity: fresh requests first. Default 500 ms;
    /// `"0s"` turns it off.
    #[serde(with = "humantime_serde")]
    pub yield_window: Duration,
    /// A request with this header at 1 or more is a retry (the number of
    /// retries before it). Default `x-retry-attempt`; `""` turns it off.
    pub attempt_header: String,
    /// A request with this header above 1 is a retry (the attempt's
    /// number, Envoy's way). Default `x-envoy-attempt-count`; `""` turns
    /// it off.
    pub attempt_count_header: String,
}

impl Default for RetryBudgetKeys {
    fn default() -> Self {
        let d = RetryBudgetConfig::default();
        Self {
            ratio: d.ratio,
            ttl: d.ttl,
            min_per_s: d.min_per_s,
            yield_window: d.yield_window,
            attempt_header: "x-retry-attempt".into(),
            attempt_count_header: "x-envoy-attempt-count".into(),
        }
    }
}

impl RetryBudgetKeys {
    /// The engine's settings; `key` prefixes error keys.
    pub fn budget_config(&self, key: &str) -> Result<RetryBudgetConfig, ConfigError> {
        let c = RetryBudgetConfig {
            ratio: self.ratio,
            ttl: self.ttl,
            min_per_s: self.min_per_s,
            yield_window: self.yield_window,
        };
        c.validate().map_err(|e| {
            let (name, msg) = e.0.split_once(": ").unwrap_or(("ratio", &e.0));
            ConfigError::invalid(format!("{key}{name}"), msg.to_owned())
        })?;
        for (name, v) in [
            ("attempt_header", &self.attempt_header),
            ("attempt_count_header", &self.attempt_count_header),
        ] {
            if !v.is_empty() && http::HeaderName::from_bytes(v.as_bytes()).is_err() {
                return Err(ConfigError::invalid(
                    format!("{key}{name}"),
                    format!("must be a header name or \"\" (got {v:?})"),
                ));
            }
        }
        if self.attempt_header.is_empty() && self.attempt_count_header.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}attempt_header"),
                "with attempt_count_header also \"\", no request is ever a retry",
            ));
        }
        Ok(c)
    }
}

/// Whether a route enforces its decisions (`mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteMode {
    /// Refusals are answered.
    #[default]
    Enforce,
    /// Every decision is computed and a would-be refusal counted, logged
    /// and marked (`X-Floodwall-Shadow`), but the request is forwarded.
    Shadow,
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError};

    fn with(upstream_tables: &str, route_tables: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(&format!(
            "[[upstreams]]\nname = \"api\"\nurl = \"http://127.0.0.1:3000\"\n{upstream_tables}\n\
             [[routes]]\nname = \"all\"\nupstream = \"api\"\n{route_tables}\n"
        ))
    }

    #[test]
    fn absent_tables_mean_off_and_present_ones_take_defaults() {
        let c = with("", "").unwrap();
        assert!(c.upstreams[0].breaker.is_none() && c.upstreams[0].bulkhead.is_none());
        assert!(c.routes[0].retry_budget.is_none());
        let c = with(
            "[upstreams.breaker]\n[upstreams.bulkhead]\ntickets = 4\n",
            "[routes.retry_budget]\n",
        )
        .unwrap();
        let b = c.upstreams[0].breaker.as_ref().unwrap();
        let bc = b.breaker_config("").unwrap();
        assert_eq!(bc, floodwall_core::BreakerConfig::default());
        assert_eq!(c.upstreams[0].bulkhead.unwrap().tickets, Some(4));
        assert_eq!(c.routes[0].retry_budget.as_ref().unwrap().ratio, 0.2);
    }

    #[test]
    fn the_shadow_flag_puts_every_route_in_shadow_mode() {
        let mut c = with("", "mode = \"enforce\"\n").unwrap();
        assert_eq!(c.routes[0].mode, super::RouteMode::Enforce);
        c.apply_overrides(&super::super::Overrides {
            shadow: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.routes[0].mode, super::RouteMode::Shadow);
        let c = with("", "mode = \"shadow\"\n").unwrap();
        assert_eq!(c.routes[0].mode, super::RouteMode::Shadow);
        assert!(with("", "mode = \"observe\"\n").is_err());
    }

    #[test]
    fn bad_keys_are_named() {
        let key = |u: &str, r: &str| with(u, r).unwrap_err().key().map(str::to_owned);
        assert_eq!(
            key("[upstreams.breaker]\nerror_threshold = 0\n", "").as_deref(),
            Some("upstreams[0].breaker.error_threshold")
        );
        assert_eq!(
            key("[upstreams.breaker]\nfailure_rate = 1.5\n", "").as_deref(),
            Some("upstreams[0].breaker.failure_rate")
        );
        assert_eq!(
            key("[upstreams.breaker]\nwindow_calls = 5\n", "").as_deref(),
            Some("upstreams[0].breaker.window_calls")
        );
        assert_eq!(
            key(
                "[upstreams.breaker]\nerror_timeout = \"1m\"\nerror_timeout_max = \"1s\"\n",
                ""
            )
            .as_deref(),
            Some("upstreams[0].breaker.error_timeout_max")
        );
        assert_eq!(
            key("[upstreams.bulkhead]\n", "").as_deref(),
            Some("upstreams[0].bulkhead.tickets")
        );
        assert_eq!(
            key("[upstreams.bulkhead]\ntickets = 2\nquota = 0.5\n", "").as_deref(),
            Some("upstreams[0].bulkhead.quota")
        );
        assert_eq!(
            key("", "[routes.retry_budget]\nratio = -1\n").as_deref(),
            Some("routes[0].retry_budget.ratio")
        );
        assert_eq!(
            key("", "[routes.retry_budget]\nattempt_header = \"a b\"\n").as_deref(),
            Some("routes[0].retry_budget.attempt_header")
        );
    }
}
