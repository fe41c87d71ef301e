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
    /// From arrival to the decision (to the response head for `success`,
    /// to the client's hanging up for `abandoned`).
    #[serde(default)]
    pub duration_ms: Option<f64>,
    /// The refusal's reason, if any.
    #[serde(default)]
    pub reason: Option<String>,
    /// The status sent (the upstream's for `success`).
    #[serde(default)]
    pub status: Option<u16>,
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
            // The abandoned request's own slot was already given back when
            // it was counted.
            "busy" | "shadow_refused" | "abandoned" => Some(count + 1),
            _ => None,
        }
    }

    /// For the throughput curve: how many were in use while this request
    /// held its slot, how long it held it, and whether it was answered.
    /// Requests that held a slot and ended without an answer (the client
    /// left, the upstream timed out) count as time in use with nothing
    /// done; refusals held nothing and are left out.
    fn held(&self) -> Option<(usize, f64, bool)> {
        let (count, ms) = (self.count?, self.duration_ms?);
        match self.event.as_str() {
            "success" => Some((count.max(1), ms, true)),
            "abandoned" => Some((count + 1, ms, false)),
            "refused" if self.reason.as_deref() == Some("upstream_timeout") => {
                Some((count.max(1), ms, false))
            }
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
    /// Decisions or gauge readings: what `baseline`, `incident` and
    /// `what_if` count.
    pub basis: Basis,
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
    /// whose answers per second ([`curve`]) are within 5 % of the most
    /// seen, if the log also saw a higher concurrency. Needs a log in which
    /// the upstream worked at or past its best for a while (recorded under
    /// a limit near its capacity), else `None`.
    pub knee: Option<usize>,
    /// Answers per second by concurrency ([`curve`]): where `knee` was
    /// read.
    pub curve: Vec<Point>,
    /// The concurrency the best answer rate of the log needs at the
    /// upstream's unloaded service time ([`bdp`]): what the log says the
    /// upstream can do, even if it never stood there (an unprotected spike
    /// passes through it in milliseconds).
    pub bdp: Option<Bdp>,
    /// The suggestion: the 99.99th percentile of the baseline (the
    /// article's service "wound up with a cutoff at 28, which was
    /// 99.99%"), raised to the knee if the log shows the upstream finishing
    /// more at a higher concurrency (a limit under the knee refuses work
    /// the upstream could have done), or, with no knee to read, to the
    /// [`bdp`] estimate.
    pub recommended: usize,
    /// What set `recommended`.
    pub recommended_from: Source,
    /// Every percentile equals the limit the route already had: it was
    /// full throughout, so no number is acceptable and the upstream needs
    /// more capacity (the article's "no acceptable number").
    pub no_acceptable_number: bool,
    /// For each candidate limit, the share of baseline decisions (and of
    /// incident decisions, if an incident was given) it would have refused;
    /// from readings, the share of the in-use area it would have cut
    /// ([`Basis::Samples`]).
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

/// Share of the area under `sorted` (in-use readings) above `limit`.
fn area_above(sorted: &[usize], limit: usize) -> f64 {
    let total: usize = sorted.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let cut: usize = sorted.iter().map(|v| v.saturating_sub(limit)).sum();
    cut as f64 / total as f64
}

/// What set a recommendation: the baseline's 99.99th percentile, or,
/// above it, what the log shows the upstream can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The 99.99th percentile of the baseline.
    Percentile,
    /// The throughput knee ([`Tuning::knee`]).
    Knee,
    /// The rate estimate ([`Tuning::bdp`]), with no knee to read.
    Rate,
}

/// One resource's demands: in the baseline, in the incident, and the
/// highest limit seen in the baseline.
type Split = (Vec<usize>, Vec<usize>, Option<usize>);

/// What the in-use readings are, and so what a limit's "refused" share
/// means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// One reading per decision of the decision log (the article's
    /// method): a limit refuses the share of decisions whose demand is
    /// above it.
    Decisions,
    /// One reading per step of a Prometheus range query of the in-use
    /// gauge: a limit cuts the share of the in-use area above it (the
    /// article's "part of the chart cut off by the bulkhead"), which by
    /// Little's law is the share of requests refused if they all held
    /// their slot as long. A gauge sampled at each scrape misses what
    /// happened between scrapes: the decision log sees every request.
    Samples,
}

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
        .map(|(resource, split)| {
            let curve = curve(decisions, resource);
            let bdp = bdp(decisions, resource);
            summarise(
                resource,
                split,
                incident.is_some(),
                curve,
                bdp,
                Basis::Decisions,
            )
        })
        .collect()
}

/// One resource's in-use history from a time-series database: readings of
/// the in-use gauge, and the route's limit over the same time.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    /// The route.
    pub resource: String,
    /// (Unix seconds, in use) readings, any order; several replicas'
    /// series may be pooled.
    pub in_use: Vec<(f64, f64)>,
    /// (Unix seconds, limit) readings of the route's limit.
    pub limit: Vec<(f64, f64)>,
}

/// Tunes every resource of `sampled` the way [`tune`] tunes a decision
/// log, with the readings as the demands ([`Basis::Samples`]). A gauge
/// holds no service times, so there is no throughput curve and no knee:
/// the suggestion is the 99.99th percentile.
pub fn tune_samples(
    sampled: &[Sampled],
    exclude: &[Window],
    incident: Option<Window>,
) -> Vec<Tuning> {
    let kept = |t: f64| !exclude.iter().any(|w| w.contains(t));
    let in_incident = |t: f64| incident.is_some_and(|w| w.contains(t));
    let mut by: BTreeMap<&str, Split> = BTreeMap::new();
    for s in sampled {
        let e = by.entry(&s.resource).or_default();
        for &(t, v) in &s.in_use {
            if !v.is_finite() || v < 0.0 {
                continue;
            }
            // A sum of integer gauges is an integer; round off what an
            // averaging query left.
            let v = v.round() as usize;
            if in_incident(t) {
                e.1.push(v);
            } else if kept(t) {
                e.0.push(v);
            }
        }
        for &(t, l) in &s.limit {
            if l.is_finite() && l >= 1.0 && !in_incident(t) && kept(t) {
                e.2 = e.2.max(Some(l.round() as usize));
            }
        }
    }
    by.into_iter()
        .filter(|(_, (base, inc, _))| !base.is_empty() || !inc.is_empty())
        .map(|(resource, split)| {
            summarise(
                resource,
                split,
                incident.is_some(),
                Vec::new(),
                None,
                Basis::Samples,
            )
        })
        .collect()
}

/// Percentiles, candidates, the what-if table and the suggestion, from
/// one resource's demands.
fn summarise(
    resource: &str,
    split: Split,
    incident: bool,
    curve: Vec<Point>,
    bdp: Option<Bdp>,
    basis: Basis,
) -> Tuning {
    let (mut base, mut inc, tickets) = split;
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
    // Candidates: from a little under the 99th percentile to one above the
    // most seen, at most 16 rows.
    let lo = percentile(&base, 0.99).saturating_sub(2).max(1);
    let hi = (max + 1).max(lo);
    let step = (hi - lo).div_ceil(15).max(1);
    let mut limits: Vec<usize> = (lo..=hi).step_by(step).collect();
    let knee = knee(&curve);
    // What the upstream showed it can do: the knee where it stood past
    // its best long enough to read one, else the rate-and-latency estimate.
    let (capacity, from) = match (knee, bdp) {
        (Some(k), _) => (k, Source::Knee),
        (None, Some(b)) => (b.limit, Source::Rate),
        (None, None) => (0, Source::Percentile),
    };
    let recommended_from = if capacity > p9999 {
        from
    } else {
        Source::Percentile
    };
    for l in [p999, p9999, p99999, max, capacity] {
        if l >= 1 && !limits.contains(&l) {
            limits.push(l);
        }
    }
    limits.sort_unstable();
    let lost = |sorted: &[usize], limit: usize| match basis {
        Basis::Decisions => above(sorted, limit),
        Basis::Samples => area_above(sorted, limit),
    };
    let what_if = limits
        .into_iter()
        .map(|limit| WhatIf {
            limit,
            baseline_refused: lost(&base, limit),
            incident_refused: incident.then(|| lost(&inc, limit)),
        })
        .collect();
    Tuning {
        resource: resource.to_owned(),
        basis,
        baseline: base.len(),
        max,
        p999,
        p9999,
        p99999,
        tickets,
        recommended: p9999.max(capacity).max(1),
        recommended_from,
        knee,
        curve,
        bdp,
        no_acceptable_number,
        what_if,
        incident: incident.then_some(inc.len()),
    }
}

/// One point of a route's throughput curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// In use (the bucket's lowest count).
    pub in_use: usize,
    /// Answers per second at that concurrency.
    pub answered_per_s: f64,
    /// Requests that ended at that concurrency (answered or not).
    pub requests: usize,
}

/// `resource`'s throughput by concurrency, from every request of the log
/// that held a slot (the incident included: that is where the upstream
/// was pushed past its best). By Little's law, requests end at
/// `in use ÷ mean time held` a second; the answered share of them is the
/// goodput. Requests that held a slot and got no answer (abandoned, timed
/// out) count with the time they held: a curve of the answered alone
/// would show only the requests fast enough to be waited for, and never
/// fall. Counts are bucketed a tenth of their value wide (exact up to 10).
/// Little's law holds only where the concurrency stood still long enough
/// for its requests to turn over, so a bucket is kept only if it has 20
/// requests or more, they ended over at least five times their mean time
/// held, and their time held fills a tenth or more of `in use × that span`
/// (the concurrency stayed there, rather than being passed through on the
/// way up and again on the way down): an unlimited spike's climb through
/// hundreds in use within one service time says nothing about throughput.
pub fn curve(decisions: &[Decision], resource: &str) -> Vec<Point> {
    /// Time held (ms), requests, answered, first and last end (s).
    #[derive(Default)]
    struct Bucket {
        sum_ms: f64,
        n: usize,
        answered: usize,
        first: f64,
        last: f64,
    }
    let mut at: BTreeMap<usize, Bucket> = BTreeMap::new();
    for d in decisions {
        if d.resource != resource {
            continue;
        }
        let Some((c, ms, answered)) = d.held() else {
            continue;
        };
        let width = (c / 10).max(1);
        let b = at.entry(c - c % width).or_default();
        if b.n == 0 {
            (b.first, b.last) = (d.ts, d.ts);
        }
        b.sum_ms += ms.max(0.001);
        b.n += 1;
        b.answered += usize::from(answered);
        b.first = b.first.min(d.ts);
        b.last = b.last.max(d.ts);
    }
    at.into_iter()
        .filter(|(c, b)| {
            let span_ms = (b.last - b.first) * 1e3;
            b.n >= 20
                && span_ms >= 5.0 * b.sum_ms / b.n as f64
                && b.sum_ms >= 0.1 * *c as f64 * span_ms
        })
        .map(|(c, b)| Point {
            in_use: c,
            answered_per_s: c as f64 * b.answered as f64 * 1e3 / b.sum_ms,
            requests: b.n,
        })
        .collect()
}

/// The estimate behind [`Tuning::bdp`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bdp {
    /// The unloaded service time: the 5th percentile of the answers'
    /// durations, in ms.
    pub service_ms: f64,
    /// The most answers that ended within one service time of each other:
    /// the best delivery rate × the round-trip floor, which is the limit.
    pub limit: usize,
}

/// BBR's bandwidth-delay product (Cardwell et al., "BBR: Congestion-Based
/// Congestion Control", ACM Queue 2016) for an upstream: its best
/// delivery rate (BBR's max filter over rate samples each about one round
/// trip long) times its round-trip floor (here the 5th percentile of the
/// answers' durations, `S`). Both in one count: the most answers (status
/// under 500) that ended within any one `S`. It is the concurrency at
/// which the upstream does its most at its unloaded latency: more only
/// queues, fewer leaves it idle. Unlike the knee it needs no concurrency to
/// have stood still: the first tens of milliseconds of an unprotected
/// spike, before the queue slows the upstream down, show the best rate.
/// `None` under 100 answers.
pub fn bdp(decisions: &[Decision], resource: &str) -> Option<Bdp> {
    let answered: Vec<&Decision> = decisions
        .iter()
        .filter(|d| {
            d.resource == resource
                && d.event == "success"
                && d.status.is_none_or(|s| s < 500)
                && d.duration_ms.is_some()
        })
        .collect();
    if answered.len() < 100 {
        return None;
    }
    let mut ms: Vec<f64> = answered.iter().filter_map(|d| d.duration_ms).collect();
    ms.sort_unstable_by(f64::total_cmp);
    let service_ms = ms[ms.len() / 20].max(0.001);
    let mut ends: Vec<f64> = answered.iter().map(|d| d.ts).collect();
    ends.sort_unstable_by(f64::total_cmp);
    let (mut most, mut lo) = (0, 0);
    for hi in 0..ends.len() {
        while (ends[hi] - ends[lo]) * 1e3 >= service_ms {
            lo += 1;
        }
        most = most.max(hi - lo + 1);
    }
    Some(Bdp {
        service_ms,
        limit: most.max(1),
    })
}

/// The knee of a throughput curve (see [`Tuning::knee`]): the fewest in
/// use within 5 % of the most answered, provided a higher concurrency was
/// also seen within 5 % of it: the curve was seen flat past the knee, so
/// throughput had stopped rising there. A curve still rising at its last
/// point has no knee to see, nor has one seen only before and after a
/// collapse (5 in use, then hundreds answering nothing): its best could be
/// anywhere between.
fn knee(curve: &[Point]) -> Option<usize> {
    let peak = curve
        .iter()
        .copied()
        .max_by(|a, b| a.answered_per_s.total_cmp(&b.answered_per_s))?;
    if peak.answered_per_s == 0.0 {
        return None;
    }
    let near = |p: &&Point| p.answered_per_s >= 0.95 * peak.answered_per_s;
    let knee = curve.iter().find(near)?;
    let seen_flat = curve.iter().filter(near).any(|p| p.in_use > knee.in_use);
    seen_flat.then_some(knee.in_use)
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
            reason: None,
            status: None,
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
            // Standing at c in use, one ends every ms / c, for at least
            // five turnovers.
            for i in 0..(30 + 6 * c) {
                log.push(Decision {
                    duration_ms: Some(ms),
                    ..d(
                        c as f64 * 100.0 + i as f64 * ms / c as f64 / 1e3,
                        "success",
                        c,
                    )
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
        assert_eq!(tune(&log, &quiet, None)[0].recommended_from, Source::Knee);
        assert_eq!(t.recommended_from, Source::Percentile);
        // Without a fall there is nothing to call a knee.
        let rising: Vec<Decision> = (1..=8usize)
            .flat_map(|c| {
                (0..(30 + 6 * c)).map(move |i| Decision {
                    duration_ms: Some(10.0),
                    ..d(c as f64 * 100.0 + i as f64 * 0.01 / c as f64, "success", c)
                })
            })
            .collect();
        assert_eq!(tune(&rising, &[], None)[0].knee, None);
    }

    #[test]
    fn abandoned_requests_make_the_curve_fall_and_a_climb_is_left_out() {
        // 10 s at 5 in use, 20 ms each: 250 answered/s.
        let mut log: Vec<Decision> = (0..2500)
            .map(|i| Decision {
                duration_ms: Some(20.0),
                ..d(i as f64 * 0.004, "success", 5)
            })
            .collect();
        // An unlimited spike's climb: 30 answered at 870 in use, 700 ms
        // each, within 10 ms (a survivor's view: 870 / 0.7 s), and 30 more
        // abandoned at that count on the way down, 5 s later.
        log.extend((0..30).map(|i| Decision {
            duration_ms: Some(700.0),
            ..d(20.0 + i as f64 * 0.0003, "success", 870)
        }));
        log.extend((0..30).map(|i| Decision {
            duration_ms: Some(1000.0),
            ..d(25.0 + i as f64 * 0.0003, "abandoned", 869)
        }));
        // Then 6 s pinned at 1,000 in use, everything abandoned after 1 s.
        log.extend((0..6000).map(|i| Decision {
            duration_ms: Some(1000.0),
            ..d(30.0 + i as f64 * 0.001, "abandoned", 999)
        }));
        let c = curve(&log, "api");
        let at = |n: usize| c.iter().find(|p| p.in_use == n);
        assert!((at(5).unwrap().answered_per_s - 250.0).abs() < 1.0, "{c:?}");
        assert_eq!(at(870), None, "passed through, not stood at: {c:?}");
        assert_eq!(at(1000).unwrap().answered_per_s, 0.0, "{c:?}");
        assert_eq!(c.len(), 2, "{c:?}");
        // From 5 straight to a collapse: no flat part seen, so no knee (the
        // best could be anywhere between); the rate estimate reads it.
        assert_eq!(knee(&c), None);
        // The abandoned count themselves in the percentiles.
        assert_eq!(tune(&log, &[], None)[0].max, 1000);
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

    #[test]
    fn gauge_readings_tune_like_decisions_and_cut_the_area_above() {
        // Two replicas' readings pooled: 1,000 at 4 in use, 10 at 9, one
        // NaN (a gap) and one negative (never from a gauge) left out; an
        // incident at 12 in use, and the limit at 20 throughout.
        let mut a: Vec<(f64, f64)> = (0..500).map(|i| (i as f64, 4.0)).collect();
        a.extend((0..10).map(|i| (600.0 + i as f64, 9.0)));
        a.push((700.0, f64::NAN));
        let mut b: Vec<(f64, f64)> = (0..500).map(|i| (i as f64, 4.0)).collect();
        b.push((701.0, -1.0));
        b.extend((0..50).map(|i| (1000.0 + i as f64, 12.0)));
        let limit: Vec<(f64, f64)> = (0..1100).map(|i| (i as f64, 20.0)).collect();
        let sampled = [
            Sampled {
                resource: "api".into(),
                in_use: a,
                limit: limit.clone(),
            },
            Sampled {
                resource: "api".into(),
                in_use: b,
                limit,
            },
        ];
        let incident = Window {
            start: 1000.0,
            end: 1100.0,
        };
        let t = &tune_samples(&sampled, &[], Some(incident))[0];
        assert_eq!(t.basis, Basis::Samples);
        assert_eq!((t.baseline, t.incident), (1010, Some(50)));
        assert_eq!((t.max, t.p999, t.p9999), (9, 9, 9));
        assert_eq!((t.tickets, t.knee, t.recommended), (Some(20), None, 9));
        assert!(!t.no_acceptable_number);
        let at = |l: usize| *t.what_if.iter().find(|w| w.limit == l).unwrap();
        // A limit of 4 cuts 5 of each 9: 50 of the 4,090 in-use area.
        assert!((at(4).baseline_refused - 50.0 / 4090.0).abs() < 1e-12);
        // The recommendation cuts none of the baseline, and a quarter of
        // the incident's 12 (3 of 12).
        assert_eq!(at(9).baseline_refused, 0.0);
        assert!((at(9).incident_refused.unwrap() - 0.25).abs() < 1e-12);
        // Pinned at its limit: no acceptable number.
        let full = [Sampled {
            resource: "full".into(),
            in_use: (0..100).map(|i| (i as f64, 3.0)).collect(),
            limit: (0..100).map(|i| (i as f64, 3.0)).collect(),
        }];
        assert!(tune_samples(&full, &[], None)[0].no_acceptable_number);
        // Left out entirely: nothing to tune.
        let gone = [Window {
            start: 0.0,
            end: 1e9,
        }];
        assert!(tune_samples(&full, &gone, None).is_empty());
    }

    #[test]
    fn an_unprotected_spike_shows_its_best_rate_and_the_rate_sets_the_limit() {
        // 8 workers × 20 ms. Quiet: 2 s at 200 answers/s (4 in use). The
        // spike's first 60 ms: 385 answers/s (one each 2.6 ms) before the
        // queue slows the backend; then 2 s pinned at 1,000 in use,
        // everything abandoned.
        let ok = |ts: f64, count: usize| Decision {
            duration_ms: Some(20.0),
            status: Some(200),
            ..d(ts, "success", count)
        };
        let mut log: Vec<Decision> = (0..400).map(|i| ok(i as f64 * 0.005, 4)).collect();
        log.extend((0..24).map(|i| ok(10.0 + i as f64 * 0.0026, 500)));
        log.extend((0..2000).map(|i| Decision {
            duration_ms: Some(1000.0),
            ..d(11.0 + i as f64 * 0.001, "abandoned", 999)
        }));
        let b = bdp(&log, "api").expect("enough answers");
        assert_eq!((b.service_ms, b.limit), (20.0, 8), "{b:?}");
        // A 5xx is not an answer the rate counts.
        let errors: Vec<Decision> = (0..200)
            .map(|i| Decision {
                status: Some(500),
                ..ok(20.0 + i as f64 * 0.0001, 500)
            })
            .collect();
        let with_errors: Vec<Decision> = log.iter().cloned().chain(errors).collect();
        assert_eq!(bdp(&with_errors, "api").unwrap().limit, 8);
        // The spike is the incident: the baseline's 99.99th is 4, no knee
        // (straight from 4 to a collapse), so the estimate sets the limit.
        let incident = Window {
            start: 9.0,
            end: 20.0,
        };
        let t = &tune(&log, &[], Some(incident))[0];
        assert_eq!((t.p9999, t.knee, t.recommended), (4, None, 8), "{t:?}");
        assert_eq!(t.recommended_from, Source::Rate);
        assert!(t.what_if.iter().any(|w| w.limit == 8));
        // Too few answers: no estimate.
        assert_eq!(bdp(&log[..50], "api"), None);
    }
}
