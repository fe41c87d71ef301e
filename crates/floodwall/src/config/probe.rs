//! `[[probes]]`: bottleneck probes, constraints on the limit that come from
//! outside the request stream (see [`crate::probe`]).
//!
//! One flat table per probe rather than one struct per kind: serde cannot
//! combine `deny_unknown_fields` with a flattened common part, and a flat
//! table keeps TOML's line and column in every parse error. The price is that
//! a key of another kind parses; validation refuses it by name
//! (`probes[0].dsn: only applies to kind = "postgres"`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::check;
use super::error::ConfigError;
use super::upstream::UpstreamConfig;

/// Default `interval`: a bottleneck's state changes over seconds, and a
/// probe that queries PostgreSQL should cost it next to nothing.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// gate: the share of a route's limit in flight that raises the flag.
pub const DEFAULT_GATE_SATURATED_AT: f64 = 1.0;
/// gate: `recover_at` is this times `saturated_at` unless set.
pub const DEFAULT_GATE_RECOVER_FACTOR: f64 = 0.8;
/// Default `timeout` (or `interval`, if shorter): half the default
/// interval, so a slow check never overlaps the next one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
/// Default `backoff`: the ×0.7 multiplicative decrease of AIMD in the article
/// "How I Slashed P99 Latency by 82% ... with Adaptive Concurrency Sharding",
/// which halves the limit in two intervals without dropping it to the floor
/// at once.
pub const DEFAULT_BACKOFF: f64 = 0.7;
/// Default `cooldown`: readings must stay healthy this long before the
/// constraint grows again, so a convoy that just cleared because the load
/// dropped is not fed again at once (the Phoenix WIP-gate article, "WIP Limit
/// Too Aggressive").
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(2);
/// Default `conn_ratio` of a postgres probe: the 80 % of the Phoenix WIP-gate
/// article, whose gate sits in front of PostgreSQL. Past it a burst runs into
/// `too many connections` before any limit can react.
pub const DEFAULT_CONN_RATIO: f64 = 0.8;
/// Default `lock_waits` of a postgres probe. One waiter is ordinary row
/// contention (two transactions updating the same row); three at one instant
/// is a convoy that more concurrency only lengthens. The Phoenix WIP-gate
/// article used "any", which would throttle a healthy OLTP database most of
/// the time.
pub const DEFAULT_LOCK_WAITS: usize = 3;
/// Default `ratio` of a memory probe (the adaptive concurrency sharding
/// article used 0.8 of the container limit against Go's heap; resident memory
/// includes allocator slack, so 0.9).
pub const DEFAULT_MEMORY_RATIO: f64 = 0.9;
/// Default `max_backlog` of a backlog probe: the threshold of the
/// backlog_reporter gem (Puma's backlog, reported to nginx). A
/// deeper accept queue is latency nobody is working on yet.
pub const DEFAULT_MAX_BACKLOG: usize = 16;
/// Default `multiplier` of a latency probe: twice the baseline, as in the
/// Phoenix WIP-gate article's `MaxLatencyMultiplier`.
pub const DEFAULT_LATENCY_MULTIPLIER: f64 = 2.0;
/// Default `baseline_half_life` of a latency probe: how fast a higher latency
/// becomes the new normal. Long enough that an overload is not learned as
/// normal while the probe is fighting it, short enough that a slower release
/// does not keep the limit down for good.
pub const DEFAULT_BASELINE_HALF_LIFE: Duration = Duration::from_secs(300);

/// The largest `max_bytes` of a memory probe: 1 PiB, beyond any host.
const MAX_BYTES: u64 = 1 << 50;
/// The largest `multiplier` of a latency probe: a latency a hundred times
/// its baseline is an outage, not a threshold.
const MAX_MULTIPLIER: f64 = 100.0;

/// What a probe measures (`kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// PostgreSQL connection saturation and lock waits (`pg_stat_activity`).
    Postgres,
    /// This process's memory, or its cgroup v2's, against a limit.
    Memory,
    /// The accept queue of the upstream's listening socket on this host.
    Backlog,
    /// Upstream latency against a learned baseline.
    Latency,
    /// The gate itself: full or refusing. Drives a flag file only; it never
    /// constrains the limit.
    Gate,
}

impl ProbeKind {
    /// The name used in the config file, logs, `/status` and as the default
    /// probe name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Postgres => "postgres",
            ProbeKind::Memory => "memory",
            ProbeKind::Backlog => "backlog",
            ProbeKind::Latency => "latency",
            ProbeKind::Gate => "gate",
        }
    }
}

/// What a probe's constraint does while the probe cannot read its bottleneck
/// (`on_failure`). Unlike the Phoenix WIP-gate article, an unreadable
/// bottleneck is not taken for a saturated one unless you ask for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Lift the probe's constraint: the limit is the algorithm's (and the
    /// other probes'). The probe shows as failing in `/status`, metrics and
    /// logs. Right when the probe is an optimisation, not a safety net.
    #[default]
    Ignore,
    /// Keep the probe's last constraint as it is until a check succeeds.
    Hold,
    /// Constrain to `min_limit`: fail closed, for a bottleneck that must
    /// never be overrun blind.
    Closed,
}

impl FailurePolicy {
    /// The name used in the config file and `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Ignore => "ignore",
            FailurePolicy::Hold => "hold",
            FailurePolicy::Closed => "closed",
        }
    }
}

/// One bottleneck probe (`[[probes]]`). Probes are global: the bottleneck
/// they watch is shared by every route, so each route's limit is capped by
/// every probe.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// What the probe measures.
    pub kind: ProbeKind,
    /// The probe's name in logs, `/status` and metric labels; defaults to the
    /// kind. Unique among probes.
    #[serde(default)]
    pub name: Option<String>,
    /// How often the probe checks.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// How long one check may take before it counts as a failure; unset
    /// means 500 ms or `interval`, whichever is shorter (see
    /// [`ProbeConfig::timeout`]).
    #[serde(default, with = "humantime_serde::option")]
    pub timeout: Option<Duration>,
    /// What the constraint does while checks fail.
    #[serde(default)]
    pub on_failure: FailurePolicy,
    /// The factor the limit is multiplied by at each saturated reading.
    #[serde(default = "default_backoff")]
    pub backoff: f64,
    /// The lowest constraint the probe sets, so some traffic always flows.
    #[serde(default = "default_min_limit")]
    pub min_limit: usize,
    /// How long readings must stay healthy before the constraint grows.
    #[serde(default = "default_cooldown", with = "humantime_serde")]
    pub cooldown: Duration,
    /// A file created while the probe is saturated and removed when it
    /// recovers, for a web server in front to answer 503 from (as the
    /// backlog_reporter gem does for nginx).
    #[serde(default)]
    pub flag_file: Option<PathBuf>,

    /// postgres: the connection string, `"host=… port=… user=… dbname=…"`
    /// or `"postgresql://user@host:port/db"`.
    #[serde(default)]
    pub dsn: Option<String>,
    /// postgres: saturated when client connections reach this fraction of
    /// `max_connections`.
    #[serde(default)]
    pub conn_ratio: Option<f64>,
    /// postgres: saturated when this many sessions wait on a lock.
    #[serde(default)]
    pub lock_waits: Option<usize>,

    /// memory: saturated (and throttled straight to `min_limit`) above this
    /// fraction of the limit.
    #[serde(default)]
    pub ratio: Option<f64>,
    /// memory: the resident-memory budget of this process, for when it does
    /// not run in a cgroup v2 with a `memory.max`. An integer (bytes) or a
    /// string such as `"512MiB"`.
    #[serde(default, deserialize_with = "deserialize_bytes")]
    pub max_bytes: Option<u64>,

    /// backlog: the TCP port of the listening socket to watch.
    #[serde(default)]
    pub port: Option<u16>,
    /// backlog: the upstream whose port to watch, when `port` is unset.
    #[serde(default)]
    pub upstream: Option<String>,
    /// backlog: saturated when this many connections wait to be accepted.
    #[serde(default)]
    pub max_backlog: Option<usize>,
    /// backlog: once saturated, it stays so (and its flag file stays
    /// raised) until the backlog falls to this or below, so a backlog
    /// hovering at the threshold does not flap the flag. Default: half of
    /// `max_backlog`.
    #[serde(default)]
    pub recover_backlog: Option<usize>,

    /// latency: saturated when smoothed latency exceeds the baseline by this
    /// factor.
    #[serde(default)]
    pub multiplier: Option<f64>,
    /// latency: how fast the baseline follows latency upward.
    #[serde(default, with = "humantime_serde::option")]
    pub baseline_half_life: Option<Duration>,

    /// gate: saturated (the flag raised) while a route refuses, or holds
    /// this share of its limit in flight. Default 1.0.
    #[serde(default)]
    pub saturated_at: Option<f64>,
    /// gate: lowered once no route refuses and each holds this share of its
    /// limit or less. Default 0.8 × `saturated_at`.
    #[serde(default)]
    pub recover_at: Option<f64>,
}

impl ProbeConfig {
    /// A probe of `kind` with every key at its default (a postgres probe
    /// still needs its `dsn`).
    pub fn new(kind: ProbeKind) -> ProbeConfig {
        ProbeConfig {
            kind,
            name: None,
            interval: DEFAULT_INTERVAL,
            timeout: None,
            on_failure: FailurePolicy::default(),
            backoff: DEFAULT_BACKOFF,
            min_limit: default_min_limit(),
            cooldown: DEFAULT_COOLDOWN,
            flag_file: None,
            dsn: None,
            conn_ratio: None,
            lock_waits: None,
            ratio: None,
            max_bytes: None,
            port: None,
            upstream: None,
            max_backlog: None,
            saturated_at: None,
            recover_at: None,
            recover_backlog: None,
            multiplier: None,
            baseline_half_life: None,
        }
    }

    /// The probe's name: `name` if set, else the kind.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.kind.as_str())
    }

    /// The timeout of one check: `timeout`, else 500 ms or `interval`,
    /// whichever is shorter.
    pub fn timeout(&self) -> Duration {
        self.timeout
            .unwrap_or_else(|| DEFAULT_TIMEOUT.min(self.interval))
    }

    /// The backlog port: `port`, else the port of `upstream`, else the port
    /// of the only upstream. An error message (without the key) when none
    /// applies.
    pub fn backlog_port(&self, upstreams: &[UpstreamConfig]) -> Result<u16, String> {
        if let Some(port) = self.port {
            return Ok(port);
        }
        let upstream = match &self.upstream {
            Some(name) => upstreams
                .iter()
                .find(|u| &u.name == name)
                .ok_or_else(|| format!("no upstream named {name:?}"))?,
            None => match upstreams {
                [only] => only,
                _ => {
                    return Err(format!(
                        "set port or upstream: there are {} upstreams, so the port to watch is ambiguous",
                        upstreams.len()
                    ))
                }
            },
        };
        Ok(upstream.port())
    }
}

fn default_interval() -> Duration {
    DEFAULT_INTERVAL
}

fn default_backoff() -> f64 {
    DEFAULT_BACKOFF
}

fn default_min_limit() -> usize {
    1
}

fn default_cooldown() -> Duration {
    DEFAULT_COOLDOWN
}

/// Bytes as an integer or as a string with a binary unit (`"512MiB"`,
/// `"1.5 GiB"`); a budget written as `536870912` is hard to check by eye.
fn deserialize_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Int(n) => Ok(Some(n)),
        Raw::Text(s) => parse_bytes(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

/// Parses `"512MiB"`, `"1.5 GiB"`, `"4096"` or `"4096B"` into bytes.
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}; use B, KiB, MiB, GiB or TiB"
            ))
        }
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as \"512MiB\""))?;
    Ok((n * factor as f64).round() as u64)
}

/// Checks `[[probes]]` on its own: names usable as labels, durations,
/// ranges, that each kind-specific key is used with its kind, and what each
/// kind requires. Unique names and the upstream a backlog probe watches are
/// checked with the other references ([`super::validate`]).
pub(super) fn validate(probes: &[ProbeConfig]) -> Result<(), ConfigError> {
    for (i, p) in probes.iter().enumerate() {
        p.validate(&format!("probes[{i}]."))?;
    }
    Ok(())
}

impl ProbeConfig {
    /// gate: `saturated_at` or its default.
    pub fn gate_saturated_at(&self) -> f64 {
        self.saturated_at.unwrap_or(DEFAULT_GATE_SATURATED_AT)
    }

    /// gate: `recover_at` or its default, 0.8 × `saturated_at`.
    pub fn gate_recover_at(&self) -> f64 {
        self.recover_at
            .unwrap_or(DEFAULT_GATE_RECOVER_FACTOR * self.gate_saturated_at())
    }

    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("{prefix}{field}");
        let bad = |field: &str, message: String| Err(ConfigError::invalid(key(field), message));
        check::label(&key("name"), self.name())?;
        if self.interval.is_zero() {
            return bad("interval", "must be greater than 0".into());
        }
        check::positive_at_most(&key("interval"), self.interval, check::HOUR)?;
        let timeout = self.timeout();
        if timeout.is_zero() || timeout > self.interval {
            return bad(
                    "timeout",
                    format!(
                        "must be greater than 0 and at most interval ({}), so checks never overlap (got {})",
                        humantime::format_duration(self.interval),
                        humantime::format_duration(timeout)
                    ),
                );
        }
        if !(self.backoff > 0.0 && self.backoff < 1.0) {
            return bad(
                "backoff",
                format!("must be between 0 and 1, exclusive (got {})", self.backoff),
            );
        }
        if self.min_limit == 0 {
            return bad("min_limit", "must be at least 1".into());
        }
        check::count(&key("min_limit"), self.min_limit, 1, check::MAX_COUNT)?;
        check::duration(&key("cooldown"), self.cooldown, Duration::ZERO, check::HOUR)?;
        if let Some(path) = &self.flag_file {
            if !path.is_absolute() || path.file_name().is_none() {
                return bad(
                        "flag_file",
                        format!(
                            "must be an absolute file path, the one the web server in front checks (got {:?})",
                            path.display().to_string()
                        ),
                    );
            }
        }
        for (field, set, owner) in [
            ("dsn", self.dsn.is_some(), ProbeKind::Postgres),
            ("conn_ratio", self.conn_ratio.is_some(), ProbeKind::Postgres),
            ("lock_waits", self.lock_waits.is_some(), ProbeKind::Postgres),
            ("ratio", self.ratio.is_some(), ProbeKind::Memory),
            ("max_bytes", self.max_bytes.is_some(), ProbeKind::Memory),
            ("port", self.port.is_some(), ProbeKind::Backlog),
            ("upstream", self.upstream.is_some(), ProbeKind::Backlog),
            (
                "max_backlog",
                self.max_backlog.is_some(),
                ProbeKind::Backlog,
            ),
            (
                "recover_backlog",
                self.recover_backlog.is_some(),
                ProbeKind::Backlog,
            ),
            ("multiplier", self.multiplier.is_some(), ProbeKind::Latency),
            (
                "baseline_half_life",
                self.baseline_half_life.is_some(),
                ProbeKind::Latency,
            ),
            ("saturated_at", self.saturated_at.is_some(), ProbeKind::Gate),
            ("recover_at", self.recover_at.is_some(), ProbeKind::Gate),
        ] {
            if set && self.kind != owner {
                return bad(
                    field,
                    format!(
                        "only applies to kind = {:?} (this probe is kind = {:?})",
                        owner.as_str(),
                        self.kind.as_str()
                    ),
                );
            }
        }
        match self.kind {
            ProbeKind::Postgres => {
                let Some(dsn) = &self.dsn else {
                    return bad(
                            "dsn",
                            "required for kind = \"postgres\", e.g. \"host=127.0.0.1 port=5432 user=floodwall dbname=postgres\"".into(),
                        );
                };
                // The message of a parse error never contains the DSN, which
                // may hold a password.
                let parsed: tokio_postgres::Config = dsn.parse().map_err(|e| {
                    ConfigError::invalid(
                        key("dsn"),
                        format!("not a PostgreSQL connection string: {e}"),
                    )
                })?;
                if parsed.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
                    return bad(
                            "dsn",
                            "sslmode=require is not supported: the probe connects without TLS (use a local socket or a trusted network)".into(),
                        );
                }
                if let Some(r) = self.conn_ratio {
                    if !(r > 0.0 && r <= 1.0) {
                        return bad(
                            "conn_ratio",
                            format!("must be greater than 0 and at most 1.0 (got {r})"),
                        );
                    }
                }
                if self.lock_waits == Some(0) {
                    return bad("lock_waits", "must be at least 1".into());
                }
                if let Some(n) = self.lock_waits {
                    check::count(&key("lock_waits"), n, 1, check::MAX_COUNT)?;
                }
            }
            ProbeKind::Memory => {
                if let Some(r) = self.ratio {
                    if !(r > 0.0 && r <= 1.0) {
                        return bad(
                            "ratio",
                            format!("must be greater than 0 and at most 1.0 (got {r})"),
                        );
                    }
                }
                if self.max_bytes == Some(0) {
                    return bad("max_bytes", "must be greater than 0".into());
                }
                if let Some(n) = self.max_bytes.filter(|n| *n > MAX_BYTES) {
                    return bad(
                        "max_bytes",
                        format!("must be at most 1 PiB ({MAX_BYTES} bytes) (got {n})"),
                    );
                }
            }
            ProbeKind::Backlog => {
                if self.port == Some(0) {
                    return bad("port", "must be a port between 1 and 65535".into());
                }
                if self.port.is_some() && self.upstream.is_some() {
                    return bad("upstream", "set port or upstream, not both".into());
                }
                if self.max_backlog == Some(0) {
                    return bad("max_backlog", "must be at least 1".into());
                }
                let max = self.max_backlog.unwrap_or(DEFAULT_MAX_BACKLOG);
                if let Some(r) = self.recover_backlog {
                    if r >= max {
                        return bad(
                            "recover_backlog",
                            format!("must be below max_backlog ({max}), or the flag never holds (got {r})"),
                        );
                    }
                }
                if let Some(n) = self.max_backlog {
                    check::count(&key("max_backlog"), n, 1, check::MAX_COUNT)?;
                }
            }
            ProbeKind::Latency => {
                if let Some(m) = self.multiplier {
                    if !(m > 1.0 && m.is_finite()) {
                        return bad("multiplier", format!("must be greater than 1.0 (got {m})"));
                    }
                    check::factor_above(&key("multiplier"), m, 1.0, MAX_MULTIPLIER)?;
                }
                if self.baseline_half_life.is_some_and(|d| d.is_zero()) {
                    return bad("baseline_half_life", "must be greater than 0".into());
                }
                if let Some(d) = self.baseline_half_life {
                    check::positive_at_most(&key("baseline_half_life"), d, check::DAY)?;
                }
            }
            ProbeKind::Gate => {
                if self.flag_file.is_none() {
                    return bad(
                        "flag_file",
                        "required for kind = \"gate\": the flag file is all this probe drives (it never constrains the limit)".into(),
                    );
                }
                let (at, recover) = (self.gate_saturated_at(), self.gate_recover_at());
                if !(at > 0.0 && at <= 1.0) {
                    return bad(
                        "saturated_at",
                        format!("must be greater than 0 and at most 1.0 (got {at})"),
                    );
                }
                if !(recover >= 0.0 && recover < at) {
                    return bad(
                        "recover_at",
                        format!("must be at least 0 and below saturated_at ({at}), or the flag never holds (got {recover})"),
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::Config;

    const BASE: &str = r#"
[[upstreams]]
name = "api"
url = "http://127.0.0.1:3000"

[[routes]]
name = "all"
upstream = "api"
"#;

    fn parse(probes: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(&format!("{BASE}\n{probes}"))
    }

    #[track_caller]
    fn refused(probes: &str, key: &str, part: &str) {
        let err = parse(probes).expect_err("expected an error");
        assert_eq!(err.key(), Some(key), "{err}");
        assert!(err.to_string().contains(part), "{err}");
    }

    #[test]
    fn defaults_apply() {
        let c = parse("[[probes]]\nkind = \"memory\"\n").unwrap();
        assert_eq!(c.probes, vec![ProbeConfig::new(ProbeKind::Memory)]);
        assert_eq!(c.probes[0].name(), "memory");
        assert_eq!(c.probes[0].timeout(), DEFAULT_TIMEOUT);
        let fast = parse("[[probes]]\nkind = \"memory\"\ninterval = \"100ms\"\n").unwrap();
        assert_eq!(fast.probes[0].timeout(), Duration::from_millis(100));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("5MB").unwrap_err().contains("unknown unit"));
        let c = parse("[[probes]]\nkind = \"memory\"\nmax_bytes = \"2GiB\"\n").unwrap();
        assert_eq!(c.probes[0].max_bytes, Some(2 << 30));
    }

    #[test]
    fn errors_name_the_key() {
        refused(
            "[[probes]]\nkind = \"postgres\"\n",
            "probes[0].dsn",
            "required",
        );
        refused(
            "[[probes]]\nkind = \"memory\"\ndsn = \"host=x\"\n",
            "probes[0].dsn",
            "only applies to kind = \"postgres\"",
        );
        refused(
            "[[probes]]\nkind = \"postgres\"\ndsn = \"host=x sslmode=require\"\n",
            "probes[0].dsn",
            "sslmode=require",
        );
        refused(
            "[[probes]]\nkind = \"postgres\"\ndsn = \"nonsense=1\"\n",
            "probes[0].dsn",
            "connection string",
        );
        refused(
            "[[probes]]\nkind = \"memory\"\n[[probes]]\nkind = \"memory\"\n",
            "probes[1].name",
            "more than one probe",
        );
        refused(
            "[[probes]]\nkind = \"memory\"\ntimeout = \"2s\"\n",
            "probes[0].timeout",
            "at most interval",
        );
        refused(
            "[[probes]]\nkind = \"memory\"\nbackoff = 1.0\n",
            "probes[0].backoff",
            "between 0 and 1",
        );
        refused(
            "[[probes]]\nkind = \"backlog\"\nupstream = \"nope\"\n",
            "probes[0].upstream",
            "no upstream named",
        );
        refused(
            "[[probes]]\nkind = \"latency\"\nmultiplier = 0.5\n",
            "probes[0].multiplier",
            "greater than 1.0",
        );
        refused(
            "[[probes]]\nkind = \"backlog\"\nflag_file = \"relative.flag\"\n",
            "probes[0].flag_file",
            "absolute",
        );
        refused(
            "[[probes]]\nkind = \"gate\"\n",
            "probes[0].flag_file",
            "required for kind = \"gate\"",
        );
        refused(
            "[[probes]]\nkind = \"gate\"\nflag_file = \"/run/g.flag\"\nsaturated_at = 0.5\nrecover_at = 0.5\n",
            "probes[0].recover_at",
            "below saturated_at",
        );
        refused(
            "[[probes]]\nkind = \"gate\"\nflag_file = \"/run/g.flag\"\nsaturated_at = 1.5\n",
            "probes[0].saturated_at",
            "at most 1.0",
        );
        refused(
            "[[probes]]\nkind = \"latency\"\nsaturated_at = 0.9\n",
            "probes[0].saturated_at",
            "only applies to kind = \"gate\"",
        );
        refused(
            "[[probes]]\nkind = \"memory\"\nmin_limit = 0\n",
            "probes[0].min_limit",
            "at least 1",
        );
    }

    #[test]
    fn backlog_port_defaults_to_the_only_upstream() {
        let c = parse("[[probes]]\nkind = \"backlog\"\n").unwrap();
        assert_eq!(c.probes[0].backlog_port(&c.upstreams), Ok(3000));
        let two = format!(
            "{BASE}\n[[upstreams]]\nname = \"b\"\nurl = \"http://h\"\n[[probes]]\nkind = \"backlog\"\n"
        );
        let err = Config::from_toml_str(&two).unwrap_err();
        assert_eq!(err.key(), Some("probes[0].port"), "{err}");
        let named = format!(
            "{BASE}\n[[upstreams]]\nname = \"b\"\nurl = \"http://h\"\n[[probes]]\nkind = \"backlog\"\nupstream = \"b\"\n"
        );
        let c = Config::from_toml_str(&named).unwrap();
        assert_eq!(c.probes[0].backlog_port(&c.upstreams), Ok(80));
    }
}
