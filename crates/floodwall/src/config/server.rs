//! `[server]` and `[log]`: the proxy's own listeners, headers and timeouts.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::check;
use super::error::ConfigError;
use super::tls::TlsConfig;

/// The longest `server.max_tenant_id_len` accepted. Tenant ids are kept as
/// map keys; anything longer is not an id but a payload.
const MAX_TENANT_ID_LEN: usize = 1024;

/// The proxy's own listeners, the request headers it reads, and the limits
/// that protect it from slow or abusive clients (`[server]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where the proxy accepts client traffic. Loopback by default so a
    /// fresh install is not exposed by accident.
    pub listen: SocketAddr,
    /// Where the admin server (metrics, health, readiness) listens. Kept
    /// apart from `listen` so it can stay private.
    pub admin: SocketAddr,
    /// How long a shutdown waits for in-flight requests before cutting them
    /// off. Raise it if your upstreams have long requests.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// The request header that selects a priority class by name. A request
    /// without it, or naming an unknown class, gets its route's class or
    /// `default_class`.
    pub priority_header: String,
    /// The request header that names the tenant, for per-tenant fairness.
    pub tenant_header: String,
    /// The class of a request that neither its route nor its header assigns
    /// to one. Must be the name of a `[[classes]]` entry.
    pub default_class: String,
    /// Longest tenant id accepted, in bytes. Tenant ids become map keys, so
    /// this bounds the memory a client can make floodwall spend.
    pub max_tenant_id_len: usize,
    /// Cap on the `Retry-After` floodwall sends with a rejection, so clients
    /// never back off for absurdly long. Retry-After has whole-second
    /// resolution, so this must be at least 1s.
    #[serde(with = "humantime_serde")]
    pub retry_after_max: Duration,
    /// How long a client may take to send a request's headers: the first
    /// request's counted from the moment the connection is accepted (so a
    /// connection that never sends a byte is closed too), a later one's
    /// from its first byte. Bounds slow-loris connections.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a connection with no request in flight stays open waiting
    /// for the next one (HTTP/1.1 keep-alive, an idle HTTP/2 connection).
    /// Idle connections hold a file descriptor each, so they must not live
    /// forever; longer than a load balancer's own idle timeout (60 s on
    /// AWS ALB) so it is never floodwall that closes a connection the
    /// balancer is about to reuse.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// The most client connections the proxy listener holds open at once;
    /// one more is accepted and closed at once. Unset, it is derived from
    /// the file-descriptor limit (see `docs/architecture.md`, "The
    /// connection budget"), so the proxy refuses connections before the
    /// process runs out of descriptors.
    pub max_connections: Option<usize>,
    /// The most connections the admin listener holds open at once. Its
    /// descriptors are reserved out of the budget, so `/healthz` and
    /// `/metrics` keep answering whatever the proxy port suffers.
    pub admin_max_connections: usize,
    /// How long a priority class counts as active after its last request.
    /// An active class's unused reserved slots are held for it; an idle
    /// class lends them to others. Longer protects sparse interactive
    /// traffic better; shorter wastes less capacity when a class goes quiet.
    #[serde(with = "humantime_serde")]
    pub class_idle_window: Duration,
    /// How long a request body may take to arrive, before the allowance
    /// `body_min_rate` earns (Apache `mod_reqtimeout`'s `body=20`). A body
    /// still incomplete at its deadline gets 408 `body_timeout`.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Every this many bytes of request body received extends the body's
    /// deadline by one second (`mod_reqtimeout`'s `MinRate=500`): a large
    /// upload at any usable speed is never cut, a trickle always is.
    pub body_min_rate: u64,
    /// How much of a request body is read before the request takes a slot
    /// (an integer in bytes or `"64KiB"`). A body this small or smaller is
    /// read whole first, so a slow upload never holds a slot; a larger one
    /// streams once its head has arrived.
    #[serde(deserialize_with = "bytes")]
    pub request_buffer: u64,
    /// How much of one upstream response floodwall holds for a client
    /// slower than the upstream, so the slot is released when the upstream
    /// finishes, not when the client does.
    #[serde(deserialize_with = "bytes")]
    pub response_buffer: u64,
    /// The most held for slow clients over all responses: what slow readers
    /// can make floodwall spend. Past it, a response waits for its client.
    #[serde(deserialize_with = "bytes")]
    pub response_buffer_total: u64,
    /// How long a client may take nothing from a response before it is
    /// abandoned (nginx's `send_timeout`, there 60 s).
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// TLS on the proxy listener (`server.tls`); plain HTTP without it.
    pub tls: Option<TlsConfig>,
    /// How many threads serve the proxy port, each with its own
    /// single-threaded runtime, its own `SO_REUSEPORT` listener and its
    /// own upstream connections (nginx's `worker_processes`, Pingora's
    /// threads). Unset: one per core the process may use. See
    /// `docs/architecture.md`, "Workers", for why not one work-stealing
    /// runtime.
    pub workers: Option<usize>,
    /// A file where what each route's adaptive limit has learned (its
    /// limit and baseline samples) is written every 5 s and at shutdown,
    /// and read at start: a restart resumes where the last process left
    /// off instead of measuring from cold (see `docs/operations.md`,
    /// "Restarts"). Unset: nothing is written, and a restart starts cold.
    pub state_file: Option<PathBuf>,
    /// A state file written longer ago than this is ignored: the upstream
    /// may have changed while nothing watched it. Default 15 minutes,
    /// longer than a deploy or a rescheduled pod takes.
    #[serde(with = "humantime_serde")]
    pub state_max_age: Duration,
}

/// The most proxy workers accepted: far beyond any machine's cores, and a
/// thread and a listener each.
const MAX_WORKERS: usize = 1024;

/// The most any of the buffer keys accepts: 1 GiB.
const MAX_BUFFER: u64 = 1 << 30;

/// A size in bytes: an integer, or a string with a binary unit
/// (`"64KiB"`, `"8MiB"`).
fn bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Int(n) => Ok(n),
        Raw::Text(s) => super::probe::parse_bytes(&s).map_err(serde::de::Error::custom),
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            admin: SocketAddr::from((Ipv4Addr::LOCALHOST, 9464)),
            drain_timeout: Duration::from_secs(30),
            priority_header: "x-priority".to_owned(),
            tenant_header: "x-tenant-id".to_owned(),
            default_class: "interactive".to_owned(),
            max_tenant_id_len: 128,
            retry_after_max: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            max_connections: None,
            admin_max_connections: 64,
            class_idle_window: Duration::from_secs(1),
            body_timeout: Duration::from_secs(20),
            body_min_rate: 500,
            request_buffer: 64 << 10,
            response_buffer: 8 << 20,
            response_buffer_total: 128 << 20,
            send_timeout: Duration::from_secs(30),
            tls: None,
            workers: None,
            state_file: None,
            state_max_age: Duration::from_secs(15 * 60),
        }
    }
}

impl ServerConfig {
    /// The proxy workers to start: `workers`, else one per core this
    /// process may run on (the scheduler affinity and cgroup quota, as
    /// [`std::thread::available_parallelism`] reads them).
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(MAX_WORKERS)
        })
    }

    /// Checks `[server]` on its own: distinct listeners, usable timeouts
    /// and headers. Whether `default_class` names a class is checked with
    /// the other references ([`super::validate`]).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.listen == self.admin && self.listen.port() != 0 {
            return Err(ConfigError::invalid(
                "server.admin",
                format!("must differ from server.listen (both are {})", self.listen),
            ));
        }
        check::positive_at_most("server.drain_timeout", self.drain_timeout, check::HOUR)?;
        check::positive_at_most(
            "server.header_read_timeout",
            self.header_read_timeout,
            check::HOUR,
        )?;
        check::positive_at_most(
            "server.keepalive_timeout",
            self.keepalive_timeout,
            check::HOUR,
        )?;
        if let Some(n) = self.workers {
            check::count("server.workers", n, 1, MAX_WORKERS)?;
        }
        if self
            .state_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty() || p.file_name().is_none())
        {
            return Err(ConfigError::invalid(
                "server.state_file",
                "must name a file (unset it to keep no state)",
            ));
        }
        check::positive_at_most("server.state_max_age", self.state_max_age, check::DAY)?;
        if let Some(n) = self.max_connections {
            check::count("server.max_connections", n, 1, check::MAX_COUNT)?;
        }
        check::count(
            "server.admin_max_connections",
            self.admin_max_connections,
            1,
            check::MAX_COUNT,
        )?;
        check::positive_at_most(
            "server.class_idle_window",
            self.class_idle_window,
            check::HOUR,
        )?;
        if self.retry_after_max < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "server.retry_after_max",
                format!(
                    "must be at least 1s, since Retry-After counts whole seconds (got {})",
                    humantime::format_duration(self.retry_after_max)
                ),
            ));
        }
        check::duration(
            "server.retry_after_max",
            self.retry_after_max,
            Duration::from_secs(1),
            check::HOUR,
        )?;
        check::positive_at_most("server.body_timeout", self.body_timeout, check::HOUR)?;
        check::positive_at_most("server.send_timeout", self.send_timeout, check::HOUR)?;
        if !(1..=1 << 40).contains(&self.body_min_rate) {
            return Err(ConfigError::invalid(
                "server.body_min_rate",
                format!(
                    "must be between 1 and {} bytes a second (got {})",
                    1u64 << 40,
                    self.body_min_rate
                ),
            ));
        }
        for (key, n, min) in [
            ("server.request_buffer", self.request_buffer, 0),
            ("server.response_buffer", self.response_buffer, 0),
            (
                "server.response_buffer_total",
                self.response_buffer_total,
                0,
            ),
        ] {
            if !(min..=MAX_BUFFER).contains(&n) {
                return Err(ConfigError::invalid(
                    key,
                    format!("must be at most 1GiB (got {n} bytes)"),
                ));
            }
        }
        let priority = header_name("server.priority_header", &self.priority_header)?;
        let tenant = header_name("server.tenant_header", &self.tenant_header)?;
        if priority == tenant {
            return Err(ConfigError::invalid(
                "server.tenant_header",
                format!("must differ from server.priority_header (both are \"{priority}\")"),
            ));
        }
        if !(1..=MAX_TENANT_ID_LEN).contains(&self.max_tenant_id_len) {
            return Err(ConfigError::invalid(
                "server.max_tenant_id_len",
                format!(
                    "must be between 1 and {MAX_TENANT_ID_LEN} (got {})",
                    self.max_tenant_id_len
                ),
            ));
        }
        Ok(())
    }
}

impl ServerConfig {
    /// What the proxy holds request bodies to.
    pub fn upload_limits(&self) -> crate::proxy::UploadLimits {
        crate::proxy::UploadLimits {
            timeout: self.body_timeout,
            min_rate: self.body_min_rate,
            buffer: self.request_buffer as usize,
        }
    }

    /// What the proxy holds response bodies to.
    pub fn response_limits(&self) -> crate::proxy::ResponseLimits {
        crate::proxy::ResponseLimits::new(
            self.response_buffer as usize,
            self.response_buffer_total as usize,
            self.send_timeout,
        )
    }
}

fn header_name(key: &str, name: &str) -> Result<http::HeaderName, ConfigError> {
    http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        ConfigError::invalid(key, format!("not a valid HTTP header name (got {name:?})"))
    })
}

/// What floodwall logs and how (`[log]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` `EnvFilter` directive, e.g. `"info"` or
    /// `"info,floodwall=debug"`. The `FLOODWALL_LOG` environment variable
    /// overrides it at run time, so you can debug without editing the file.
    pub level: String,
    /// Human-readable text or one JSON object per line.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::default(),
        }
    }
}

impl LogConfig {
    /// Checks `[log]`: the level must be a filter `tracing` accepts, or the
    /// process would start with logging it cannot set up.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.level).map_err(|e| {
            ConfigError::invalid(
                "log.level",
                format!("not a valid filter directive (got {:?}): {e}", self.level),
            )
        })?;
        Ok(())
    }
}

/// How log lines are written (`text` or `json` in TOML).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    #[default]
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}
