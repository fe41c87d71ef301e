//! The arithmetic of `floodwall tune`, pure: from the decisions of the
//! decision log, how many requests were in use when each was decided, and
//! what a given limit would have refused.
//!
//! The method is the one the Shopify engineering article "Tuning
//! bulkheads and circuit breakers" applies to Semian's events by hand:
//! take a quiet baseline (incident windows left out), read the maximum and
//! the 99.9th, 99.99th and 99.999th percentiles of the in-use count, and
//! check the chosen number against an incident, where it should have cut
//! the excess. floodwall's `count` is the in-use count itself (Semian's
//! `tickets - count - 1`); a refused request was not counted in it, so its
//! demand is `count + 1`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One decision as `tune` reads it (the other fields are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct Decision {
    /// Seconds since the Unix epoch.
    pub ts: f64,
    /// `success`, `busy`, `shadow_refused`, ...
    pub event: String,
    /// The route.
    pub resource: String,
    /// The route's limit at the decision.
    pub tickets: Option<usize>,
    /// In use at the decision.
    pub count: Option<usize>,
    /// From arrival to the decision (to the response head for `success`).
    #[serde(default)]
    pub duration_ms: Option<f64>,
}

impl Decision {
    /// What the request wanted in use, itself included: `count` for an
    /// admitted request (it counts itself), `count + 1` for one refused or
    /// let through by shadow mode. `None` for events without a count (a
    /// breaker's state change) or refused for another reason than room.
    pub fn demand(&self) -> Option<usize> {
        let count = self.count?;
        match self.event.as_str() {
            "success" => Some(count.max(1)),
            "busy" | "shadow_refused" => Some(count + 1),
            _ => None,
        }
    }
}

/// A time window, Unix seconds, end excluded.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Window {
    /// Start.
    pub start: f64,
    /// End.
    pub end: f64,
}

impl Window {
    fn contains(&self, t: f64) -> bool {
        (self.start..self.end).contains(&t)
    }
}

/// One resource's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Tuning {
    /// The route.
    pub resource: String,
    /// Decisions in the baseline (the excluded and incident windows left
    /// out).
    pub baseline: usize,
    /// The most in use.
    pub max: usize,
    /// The 99.9th, 99.99th and 99.999th percentiles of in use.
    pub p999: usize,
    /// See `p999`.
    pub p9999: usize,
    /// See `p999`.
    pub p99999: usize,
    /// The highest limit the route had in the baseline.
    pub tickets: Option<usize>,
    /// Where throughput stopped rising with concurrency: the fewest in use
    /// whose completions per second (Little's law, in use ÷ the mean time
    /// to the response head of requests answered at that count) are within
    /// 5 % of the most seen. Needs a log that saw the upstream loaded past
    /// its best (a spike recorded in shadow mode), else `None`.
    pub knee: Option<usize>,
    /// The suggestion: the 99.99th percentile of the baseline (the
    /// article's service "wound up with a cutoff at 28, which was
    /// 99.99%"), raised to the knee if the log shows the upstream finishing
    /// more at a higher concurrency: a limit under the knee refuses work
    /// the upstream could have done.
    pub recommended: usize,
    /// Every percentile equals the limit the route already had: it was
    /// full throughout, so no number is acceptable and the upstream needs
    /// more capacity (the article's "no acceptable number").
    pub no_acceptable_number: bool,
    /// For each candidate limit, the share of baseline decisions (and of
    /// incident decisions, if an incident was given) it would have refused.
    pub what_if: Vec<WhatIf>,
    /// Decisions in the incident window, if one was given.
    pub incident: Option<usize>,
}

/// One candidate limit.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct WhatIf {
    /// The candidate.
    pub limit: usize,
    /// Share of the baseline's decisions whose demand exceeds it.
    pub baseline_refused: f64,
    /// The same in the incident window.
    pub incident_refused: Option<f64>,
}

/// The smallest value with at least `q` of `sorted` at or below it.
fn percentile(sorted: &[usize], q: f64) -> usize {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Share of `sorted` above `limit`.
fn above(sorted: &[usize], limit: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at_or_below = sorted.partition_point(|d| *d <= limit);
    (sorted.len() - at_or_below) as f64 / sorted.len() as f64
}

/// One resource's demands: in the baseline, in the incident, and the
/// highest limit seen in the baseline.
type Split = (Vec<usize>, Vec<usize>, Option<usize>);

/// Tunes every resource of `decisions`, leaving `exclude` out of the
/// baseline and checking against `incident`.
pub fn tune(decisions: &[Decision], exclude: &[Window], incident: Option<Window>) -> Vec<Tuning> {
    let mut by: BTreeMap<&str, Split> = BTreeMap::new();
    for d in decisions {
        let Some(demand) = d.demand() else { continue };
        let e = by.entry(&d.resource).or_default();
        if incident.is_some_and(|w| w.contains(d.ts)) {
            e.1.push(demand);
        } else if !exclude.iter().any(|w| w.contains(d.ts)) {
            e.0.push(demand);
            e.2 = e.2.max(d.tickets);
        }
    }
    by.into_iter()
        .filter(|(_, (base, inc, _))| !base.is_empty() || !inc.is_empty())
        .map(|(resource, (mut base, mut inc, tickets))| {
            base.sort_unstable();
            inc.sort_unstable();
            let (p999, p9999, p99999) = (
                percentile(&base, 0.999),
                percentile(&base, 0.9999),
                percentile(&base, 0.99999),
            );
            let max = base.last().copied().unwrap_or(0);
            let no_acceptable_number =
                !base.is_empty() && tickets.is_some_and(|t| p999 >= t && p9999 >= t && p99999 >= t);
            // Candidates: from a little under the 99th percentile to one
            // above the most seen, at most 16 rows.
            let lo = percentile(&base, 0.99).saturating_sub(2).max(1);
            let hi = (max + 1).max(lo);
            let step = (hi - lo).div_ceil(15).max(1);
            let mut limits: Vec<usize> = (lo..=hi).step_by(step).collect();
            for l in [p999, p9999, p99999, max] {
                if l >= 1 && !limits.contains(&l) {
                    limits.push(l);
                }
            }
            let knee = knee(decisions, resource);
            if let Some(k) = knee {
                if !limits.contains(&k) {
                    limits.push(k);
                }
            }
            limits.sort_unstable();
            let what_if = limits
                .into_iter()
                .map(|limit| WhatIf {
                    limit,
                    baseline_refused: above(&base, limit),
                    incident_refused: incident.map(|_| above(&inc, limit)),
                })
                .collect();
            Tuning {
                resource: resource.to_owned(),
                baseline: base.len(),
                max,
                p999,
                p9999,
                p99999,
                tickets,
                recommended: p9999.max(knee.unwrap_or(0)).max(1),
                knee,
                no_acceptable_number,
                what_if,
                incident: incident.map(|_| inc.len()),
            }
        })
        .collect()
}

/// The knee of `resource`'s throughput curve (see [`Tuning::knee`]), from
/// every answered request of the log (the incident included: that is where
/// the upstream was pushed past its best). Counts are bucketed a tenth of
/// their value wide; buckets with fewer than 20 answers are left out as
/// noise; the curve must rise and then fall back
/// below 95 % of its peak, or there is no knee to see.
fn knee(decisions: &[Decision], resource: &str) -> Option<usize> {
    let mut at: BTreeMap<usize, (f64, usize)> = BTreeMap::new();
    for d in decisions {
        if d.resource != resource || d.event != "success" {
            continue;
        }
        let (Some(c), Some(ms)) = (d.count, d.duration_ms) else {
            continue;
        };
        // Buckets a tenth of their value wide (exact up to 10), so a
        // spike's climb through hundreds in use still fills them.
        let c = c.max(1);
        let width = (c / 10).max(1);
        let e = at.entry(c - c % width).or_default();
        e.0 += ms.max(0.001);
        e.1 += 1;
    }
    let curve: Vec<(usize, f64)> = at
        .into_iter()
        .filter(|(_, (_, n))| *n >= 20)
        .map(|(c, (sum, n))| (c, c as f64 / (sum / n as f64)))
        .collect();
    let (peak_at, peak) =
        curve.iter().copied().fold(
            (0, 0.0),
            |best, (c, x)| if x > best.1 { (c, x) } else { best },
        );
    let falls = curve.iter().any(|(c, x)| *c > peak_at && *x < 0.95 * peak);
    if peak == 0.0 || !falls {
        return None;
    }
    curve
        .iter()
        .find(|(_, x)| *x >= 0.95 * peak)
        .map(|(c, _)| *c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(ts: f64, event: &str, count: usize) -> Decision {
        Decision {
            ts,
            event: event.into(),
            resource: "api".into(),
            tickets: Some(20),
            count: Some(count),
            duration_ms: None,
        }
    }

    #[test]
    fn the_knee_is_where_completions_stop_rising() {
        // A backend of 8 workers at 10 ms each: up to 8 in use a request
        // takes 10 ms (throughput c / 10 ms rises), past 8 the extra ones
        // queue (c / (10 × c / 8) ms: flat at 0.8 per ms), and with
        // contention past 12 it falls.
        let mut log = Vec::new();
        for c in 1..=20usize {
            let ms = if c <= 8 {
                10.0
            } else if c <= 12 {
                10.0 * c as f64 / 8.0
            } else {
                10.0 * c as f64 / 8.0 * (1.0 + 0.1 * (c - 12) as f64)
            };
            for i in 0..30 {
                log.push(Decision {
                    duration_ms: Some(ms),
                    ..d(c as f64 * 100.0 + i as f64, "success", c)
                });
            }
        }
        let t = &tune(&log, &[], None)[0];
        assert_eq!(t.knee, Some(8), "{t:?}");
        // This baseline saw 20 in use, above the knee: the percentile wins.
        assert_eq!(t.recommended, 20, "{t:?}");
        // Its quiet part alone (up to 6 in use) is raised to the knee.
        let quiet = [Window {
            start: 650.0,
            end: 1e9,
        }];
        assert_eq!(tune(&log, &quiet, None)[0].recommended, 8);
        // Without a fall there is nothing to call a knee.
        let rising: Vec<Decision> = (1..=8usize)
            .flat_map(|c| {
                (0..30).map(move |i| Decision {
                    duration_ms: Some(10.0),
                    ..d(i as f64, "success", c)
                })
            })
            .collect();
        assert_eq!(tune(&rising, &[], None)[0].knee, None);
    }

    #[test]
    fn percentiles_of_in_use_and_what_a_limit_would_refuse() {
        // 10,000 decisions: in use 1..=10 evenly, plus 5 at 15 and one 18.
        let mut log: Vec<Decision> = (0..10_000)
            .map(|i| d(i as f64, "success", 1 + i % 10))
            .collect();
        log.extend((0..5).map(|i| d(20_000.0 + i as f64, "success", 15)));
        log.push(d(30_000.0, "success", 18));
        let t = &tune(&log, &[], None)[0];
        assert_eq!((t.max, t.baseline), (18, 10_006));
        assert_eq!(t.p999, 10);
        assert_eq!(t.p9999, 15);
        assert_eq!(t.p99999, 18);
        assert_eq!(t.recommended, 15);
        assert!(!t.no_acceptable_number);
        let at = |l: usize| {
            t.what_if
                .iter()
                .find(|w| w.limit == l)
                .unwrap()
                .baseline_refused
        };
        assert_eq!(at(18), 0.0);
        assert!((at(15) - 1.0 / 10_006.0).abs() < 1e-12);
        assert!((at(10) - 6.0 / 10_006.0).abs() < 1e-12);
    }

    #[test]
    fn refused_requests_count_themselves_and_windows_split_the_log() {
        let mut log = vec![
            d(1.0, "success", 3),
            d(2.0, "busy", 3),
            d(3.0, "state_change", 0),
        ];
        log.extend((0..100).map(|i| d(100.0 + i as f64, "busy", 19)));
        log.push(d(500.0, "success", 30));
        let incident = Window {
            start: 100.0,
            end: 200.0,
        };
        let exclude = [Window {
            start: 400.0,
            end: 600.0,
        }];
        let t = &tune(&log, &exclude, Some(incident))[0];
        assert_eq!(t.baseline, 2, "the state change has no count");
        assert_eq!(t.max, 4, "a refused request wanted count + 1");
        assert_eq!(t.incident, Some(100));
        let w = t.what_if.iter().find(|w| w.limit == 4).unwrap();
        assert_eq!((w.baseline_refused, w.incident_refused), (0.0, Some(1.0)));
    }

    #[test]
    fn a_limit_full_throughout_has_no_acceptable_number() {
        let log: Vec<Decision> = (0..1000).map(|i| d(i as f64, "busy", 19)).collect();
        let t = &tune(&log, &[], None)[0];
        assert!(t.no_acceptable_number, "{t:?}");
    }
}
