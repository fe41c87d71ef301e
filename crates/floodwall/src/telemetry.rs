//! Logging setup.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// The environment variable that overrides the configured log level, in
/// `tracing` filter syntax (e.g. `info,floodwall=debug`).
pub const LOG_ENV: &str = "FLOODWALL_LOG";

/// Installs the global subscriber, writing to stderr so stdout stays free
/// for the machine-readable ready line and reports.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_env(LOG_ENV)
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
