//! One probe's task: check every interval within the timeout, record the
//! result, keep the flag file in step.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::check::{Probe, ProbeError};
use super::flag_file::FlagFile;
use super::state::{Health, ProbeState, Shared};
use crate::config::FailurePolicy;

/// Runs `probe` until `stop` changes or its sender goes away.
pub(super) async fn run<P: Probe>(
    mut probe: P,
    state: Arc<ProbeState>,
    shared: Arc<Shared>,
    mut flag: Option<FlagFile>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(state.interval);
    // A check that ran long delays the next one rather than causing a burst
    // of catch-up checks against a bottleneck that is already struggling.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut flag_failed = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => break,
        }
        let checked = tokio::select! {
            r = tokio::time::timeout(state.timeout, probe.check()) => r,
            _ = stop.changed() => break,
        };
        let result = checked.unwrap_or_else(|_| {
            Err(ProbeError::new(format!(
                "no answer within timeout ({})",
                humantime::format_duration(state.timeout)
            )))
        });
        let (health, detail) = shared.record(&state, result);
        if let Some(flag) = flag.as_mut() {
            let raise = match health {
                Health::Saturated { .. } => true,
                Health::Ok | Health::Starting => false,
                Health::Failing => match state.on_failure {
                    FailurePolicy::Ignore => false,
                    FailurePolicy::Hold => flag.is_raised(),
                    FailurePolicy::Closed => true,
                },
            };
            let why = if health == Health::Failing {
                format!("{}: failing (on_failure = closed)", state.name)
            } else {
                format!("{}: {detail}", state.name)
            };
            match flag.set(raise, &why) {
                Ok(()) => flag_failed = false,
                Err(e) if !flag_failed => {
                    flag_failed = true;
                    tracing::warn!(
                        probe = %state.name,
                        path = %flag.path().display(),
                        error = %e,
                        raise,
                        "cannot update the flag file"
                    );
                }
                Err(_) => {}
            }
            state.status().flag_raised = flag.is_raised();
        }
    }
    if let Some(mut flag) = flag {
        if let Err(e) = flag.set(false, "") {
            tracing::warn!(
                probe = %state.name,
                path = %flag.path().display(),
                error = %e,
                "cannot remove the flag file at shutdown"
            );
        }
    }
}
