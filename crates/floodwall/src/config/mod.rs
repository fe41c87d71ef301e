//! The TOML config file: plain serde structs, their defaults, and validation
//! whose errors name the offending key.
//!
//! The file is read in three steps, each in its own place:
//!
//! 1. **Parse** ([`Config::from_toml_str`], [`Config::load`]): serde with
//!    `deny_unknown_fields`, so a misspelt key is an error with a line and
//!    column instead of a silently ignored setting. Every optional key has a
//!    default, so a minimal file is one upstream and one route.
//! 2. **Override** ([`Config::apply_overrides`]): command-line flags win over
//!    the file, so an operator can move a listener or lower a limit without
//!    editing it.
//! 3. **Validate** ([`Config::validate`]): ranges and rules that serde cannot
//!    express. Each section checks itself, in its own file; the references
//!    between sections (a route's upstream and class, unique names) are
//!    checked in one place, `validate.rs`. Parsing and overriding both end by
//!    validating, so a `Config` you got from them is ready to serve.
//!
//! Every key is documented, with its default and why you would change it, in
//! `docs/config.md`.

mod adaptive;
mod admin;
mod check;
mod class;
mod error;
mod events;
mod file;
mod limit;
mod overrides;
pub mod probe;
mod resilience;
mod route;
mod server;
mod store;
mod tls;
mod upstream;
mod validate;

pub use adaptive::{AdaptiveConfig, AimdKeys, GradientKeys, VegasKeys, WipKeys};
pub use admin::{AdminConfig, AdminTokens, READ_TOKEN_ENV, TOKEN_ENV};
pub(crate) use check::redact_url;
pub use class::ClassConfig;
pub use error::ConfigError;
pub use events::{EventsConfig, EventsSink};
pub use file::Config;
pub use limit::LimitConfig;
pub use overrides::Overrides;
pub use probe::{FailurePolicy, ProbeConfig, ProbeKind};
pub use resilience::{BreakerKeys, BulkheadKeys, RetryBudgetKeys, RouteMode};
pub use route::{
    QueueConfig, QueueOrder, RouteConfig, TenantConfig, TenantQuota, MAX_TENANT_QUOTAS,
};
pub use server::{LogConfig, LogFormat, ServerConfig};
pub use store::{SentinelTarget, StoreConfig, StoreFailure, StoreMode};
pub use tls::TlsConfig;
pub use upstream::{Balance, HashOn, UpstreamConfig};
