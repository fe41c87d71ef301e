//! When requests arrive: phases at constant rates, played back to back.

use std::{fmt, str::FromStr, time::Duration};

use serde::Serialize;

/// A stretch of the schedule at a constant arrival rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Phase {
    /// How long this phase lasts.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Arrivals per second during the phase; 0 means a quiet pause.
    pub rate_rps: f64,
}

impl Phase {
    /// How many arrivals the phase schedules: `duration × rate`, rounded.
    pub fn arrivals(&self) -> u64 {
        (self.duration.as_secs_f64() * self.rate_rps).round() as u64
    }
}

/// The whole load pattern: phases played back to back.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Schedule {
    /// The phases, in order.
    pub phases: Vec<Phase>,
}

impl Schedule {
    /// Total length of the schedule.
    pub fn duration(&self) -> Duration {
        self.phases.iter().map(|p| p.duration).sum()
    }

    /// How many requests the schedule sends in total.
    pub fn total_requests(&self) -> u64 {
        self.phases.iter().map(Phase::arrivals).sum()
    }

    /// How many per-second rows a result has: the duration, rounded up.
    pub fn seconds(&self) -> usize {
        self.duration().as_secs_f64().ceil() as usize
    }

    /// Every arrival's offset from the start of the run, in order.
    pub fn arrivals(&self) -> impl Iterator<Item = Duration> + '_ {
        let mut phase_start = Duration::ZERO;
        self.phases.iter().flat_map(move |phase| {
            let start = phase_start;
            phase_start += phase.duration;
            let rate = phase.rate_rps;
            (0..phase.arrivals()).map(move |i| start + Duration::from_secs_f64(i as f64 / rate))
        })
    }
}

impl fmt::Display for Schedule {
    /// The same `10s@500,20s@1500` form [`parse_schedule`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, phase) in self.phases.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let duration = humantime::format_duration(phase.duration).to_string();
            write!(f, "{}@{}", duration.replace(' ', ""), phase.rate_rps)?;
        }
        Ok(())
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_schedule(s)
    }
}

/// Why a schedule string was refused; the message names the bad phase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schedule {input:?}: {reason} (expected phases like \"10s@500,20s@1500\": duration@requests-per-second)")]
pub struct ScheduleError {
    input: String,
    reason: String,
}

/// Parses `"10s@500,20s@1500,10s@500"`: comma-separated phases, each a
/// humantime duration (`500ms`, `10s`, `1m`), `@`, and a rate in req/s.
pub fn parse_schedule(input: &str) -> Result<Schedule, ScheduleError> {
    let fail = |reason: String| ScheduleError {
        input: input.to_owned(),
        reason,
    };
    if input.trim().is_empty() {
        return Err(fail("it is empty".into()));
    }
    let mut phases = Vec::new();
    for (n, part) in input.split(',').map(str::trim).enumerate() {
        let n = n + 1;
        let (duration, rate) = part
            .split_once('@')
            .ok_or_else(|| fail(format!("phase {n} {part:?} has no '@'")))?;
        let duration = humantime::parse_duration(duration.trim())
            .map_err(|e| fail(format!("phase {n} duration {duration:?}: {e}")))?;
        if duration.is_zero() {
            return Err(fail(format!("phase {n} lasts zero time")));
        }
        let rate_rps: f64 = rate
            .trim()
            .parse()
            .map_err(|_| fail(format!("phase {n} rate {rate:?} is not a number")))?;
        if !rate_rps.is_finite() || rate_rps < 0.0 {
            return Err(fail(format!(
                "phase {n} rate {rate:?} must be a finite number >= 0"
            )));
        }
        phases.push(Phase { duration, rate_rps });
    }
    Ok(Schedule { phases })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_example() {
        let schedule = parse_schedule("10s@500,20s@1500,10s@500").unwrap();
        assert_eq!(
            schedule.phases,
            vec![
                Phase {
                    duration: Duration::from_secs(10),
                    rate_rps: 500.0
                },
                Phase {
                    duration: Duration::from_secs(20),
                    rate_rps: 1500.0
                },
                Phase {
                    duration: Duration::from_secs(10),
                    rate_rps: 500.0
                },
            ]
        );
        assert_eq!(schedule.duration(), Duration::from_secs(40));
        assert_eq!(schedule.total_requests(), 5_000 + 30_000 + 5_000);
        assert_eq!(schedule.to_string(), "10s@500,20s@1500,10s@500");
        assert_eq!(schedule.to_string().parse::<Schedule>().unwrap(), schedule);
        let fractional: Schedule = " 500ms @ 2.5 , 1m30s@0".parse().unwrap();
        assert_eq!(fractional.duration(), Duration::from_millis(90_500));
        assert_eq!(fractional.seconds(), 91);
    }

    #[test]
    fn rejects_garbage_with_a_clear_error() {
        for (input, mentions) in [
            ("", "empty"),
            ("garbage", "phase 1 \"garbage\" has no '@'"),
            ("10s@500,abc@5", "phase 2 duration \"abc\""),
            ("10s@fast", "phase 1 rate \"fast\" is not a number"),
            ("10s@-5", "must be a finite number >= 0"),
            ("10s@inf", "must be a finite number >= 0"),
            ("0s@5", "zero time"),
            ("10s@500,", "phase 2"),
        ] {
            let err = parse_schedule(input).unwrap_err().to_string();
            assert!(err.contains(mentions), "{input:?} gave {err:?}");
            assert!(err.contains("10s@500,20s@1500"), "hint missing: {err}");
        }
    }

    #[test]
    fn arrivals_follow_the_phases() {
        let schedule = parse_schedule("1s@4,500ms@0,1s@2").unwrap();
        let arrivals: Vec<_> = schedule.arrivals().map(|d| d.as_millis()).collect();
        assert_eq!(arrivals, vec![0, 250, 500, 750, 1500, 2000]);
    }
}
