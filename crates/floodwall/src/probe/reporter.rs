//! `floodwall backlog-reporter`: the backlog probe and its flag file alone,
//! for a host that wants only what the backlog_reporter gem does (watch a
//! server's accept backlog, touch a flag file that nginx answers 503 from
//! while it is too deep, remove it when the backlog falls), for any server
//! that listens on a TCP port, not only Puma.
//!
//! ```nginx
//! location / {
//!     if (-f /run/app/congested.flag) { return 503; }
//!     proxy_pass http://127.0.0.1:3000;
//! }
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use super::backlog::BacklogProbe;
use super::check::Probe;
use super::flag_file::FlagFile;

/// What the reporter watches and where it raises its flag.
#[derive(Debug, Clone)]
pub struct ReporterConfig {
    /// The TCP port whose LISTEN sockets' accept queue is read.
    pub port: u16,
    /// The flag file, present while the backlog is too deep.
    pub flag: PathBuf,
    /// Raised from this many queued connections.
    pub max_backlog: usize,
    /// Lowered again at this many or fewer (default half of
    /// `max_backlog`).
    pub recover_backlog: Option<usize>,
    /// How often the backlog is read (the gem's `check_interval`, 10 ms).
    pub interval: Duration,
}

/// Watches the backlog until `stop` completes, keeping the flag in step
/// (one log line per change), then lowers the flag: a stopped reporter
/// never leaves nginx answering 503. A failed read (nothing listens on
/// the port) lowers the flag, since the reporter no longer knows: failing
/// open is what the gem's nginx recipe needs.
pub async fn run(config: ReporterConfig, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut probe =
        BacklogProbe::with_thresholds(config.port, config.max_backlog, config.recover_backlog);
    let mut flag = FlagFile::new(&config.flag);
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: Option<String> = None;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = &mut stop => break,
        }
        let (raise, why) = match probe.check().await {
            Ok(r) => {
                last_error = None;
                (r.saturated, r.detail)
            }
            Err(e) => {
                let e = e.to_string();
                if last_error.as_deref() != Some(&e) {
                    tracing::warn!(error = %e, "backlog-reporter: cannot read the backlog; flag lowered");
                }
                last_error = Some(e.clone());
                (false, e)
            }
        };
        let was = flag.is_raised();
        if let Err(e) = flag.set(raise, &format!("backlog-reporter: {why}")) {
            tracing::error!(error = %e, path = %config.flag.display(), "backlog-reporter: cannot write the flag file");
        } else if was != raise {
            tracing::info!(raised = raise, %why, "backlog-reporter: flag {}", if raise { "raised" } else { "lowered" });
        }
    }
    flag.set(false, "stopped")
        .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", config.flag.display()))?;
    Ok(())
}
