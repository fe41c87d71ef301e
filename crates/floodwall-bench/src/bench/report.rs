//! The bench's table, JSON and plots.

use super::plot::{self, Figure, Series};
use super::run::{BenchReport, ContenderRun};
use super::scenario::{ScenarioName, COLD_START_SECONDS};
use crate::loadgen::SecondRow;
use serde::Serialize;
use std::fmt::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The headline figures of one run, as the table shows them.
#[derive(Debug, Clone, Serialize)]
pub struct Headline {
    /// Target name, with the client kind if any.
    pub name: String,
    /// Goodput in the window, req/s.
    pub goodput_rps: f64,
    /// Goodput in the window as % of the backend's capacity then.
    pub goodput_percent: f64,
    /// p50 of successes in the window, ms.
    pub p50_ms: Option<f64>,
    /// p99 of successes in the window, ms.
    pub p99_ms: Option<f64>,
    /// % of arrivals in the window refused (503/429).
    pub percent_rejected: f64,
    /// % of arrivals in the window that timed out.
    pub percent_timed_out: f64,
    /// Share of the arrivals in the window served within the SLO, 0..=1
    /// (`None` if nothing arrived).
    pub served_in_window: Option<f64>,
    /// Share of all the run's arrivals served within the SLO, 0..=1.
    pub served_whole_run: Option<f64>,
    /// cold-start: the share of each second's arrivals served within the
    /// SLO, 0..=1, for the first [`COLD_START_SECONDS`] seconds (by
    /// scheduled arrival); empty for the other scenarios.
    pub served_by_second: Vec<Option<f64>>,
    /// Per traffic group (priority classes, tenant groups) over the window;
    /// empty for uniform traffic.
    pub groups: Vec<GroupHeadline>,
    /// Scenario-specific figures, (column, value).
    pub extra: Vec<(String, String)>,
}

/// One traffic group's goodput over the window.
#[derive(Debug, Clone, Serialize)]
pub struct GroupHeadline {
    /// The group's name in the mix (`interactive`, `batch`, `hot`,
    /// `others`).
    pub name: String,
    /// Its arrivals per second (first attempts).
    pub offered_rps: f64,
    /// Its 2xx within the SLO per second.
    pub goodput_rps: f64,
    /// `goodput / offered`, 0..=1 (`None` if it sent nothing).
    pub served_fraction: Option<f64>,
    /// Its goodput as a fraction of the backend's capacity C during the
    /// window (the groups add up to the total's "of capacity").
    pub of_capacity: f64,
    /// Its offered load as a fraction of C.
    pub offered_of_capacity: f64,
}

/// What a table calls a group: the twenty quiet tenants are "small
/// tenants", the rest go by their mix name.
fn group_label(name: &str) -> &str {
    match name {
        "others" => "small tenants",
        n => n,
    }
}

fn ms(d: Option<std::time::Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

/// Served within the SLO as a share of what arrived, 0..=1.
fn fraction(row: &SecondRow) -> Option<f64> {
    (row.sent > 0).then(|| row.ok_within_slo as f64 / row.sent as f64)
}

fn groups(run: &ContenderRun, w: &Range<usize>, window_capacity: f64) -> Vec<GroupHeadline> {
    run.load
        .groups
        .iter()
        .filter(|_| run.load.groups.len() > 1)
        .map(|g| {
            let s = g.summary(w.clone());
            let secs = s.seconds.max(1) as f64;
            let offered_rps = s.totals.sent as f64 / secs;
            GroupHeadline {
                name: g.name.clone(),
                offered_rps,
                goodput_rps: s.goodput_rps,
                served_fraction: fraction(&s.totals),
                of_capacity: s.goodput_rps / window_capacity,
                offered_of_capacity: offered_rps / window_capacity,
            }
        })
        .collect()
}

fn pct(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.0}%"))
}

/// A 0..=1 fraction with two decimals, the form the goal rows use.
fn frac(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.2}"))
}

/// How long after the overload the service is back: the seconds from the
/// start of `after` until the first second from which every second to the
/// end of `after` serves at least 90 % of its arrivals within the SLO
/// ("never" if none does). The retry-storm question: how long a retry wave
/// keeps hurting the requests that arrive after the spike.
fn recovery(seconds: &[SecondRow], after: Range<usize>) -> String {
    let good = |r: &SecondRow| r.sent == 0 || r.ok_within_slo as f64 >= 0.9 * r.sent as f64;
    let rows: Vec<&SecondRow> = seconds
        .iter()
        .filter(|r| after.contains(&(r.second as usize)))
        .collect();
    (0..rows.len())
        .find(|&i| rows[i..].iter().all(|r| good(r)))
        .map_or("never".into(), |i| format!("{i} s"))
}

/// The headline of every run.
pub fn headlines(report: &BenchReport) -> Vec<Headline> {
    let sc = &report.scenario;
    let (capacity, window_capacity) = capacities(report);
    let w = sc.window.clone();
    report
        .runs
        .iter()
        .map(|run| {
            let s = run.load.summary(w.clone());
            let mut extra = Vec::new();
            match sc.name {
                ScenarioName::Spike | ScenarioName::Priority | ScenarioName::RetryStorm => {
                    if let Some(after) = &sc.after {
                        let a = run.load.summary(after.clone());
                        let sent = a.totals.sent as f64;
                        let good =
                            (sent > 0.0).then(|| 100.0 * a.totals.ok_within_slo as f64 / sent);
                        extra.push(("good after".into(), pct(good)));
                        if sc.name == ScenarioName::RetryStorm {
                            extra.push((
                                "recovered after".into(),
                                recovery(&run.load.seconds, after.clone()),
                            ));
                        }
                    }
                }
                ScenarioName::CapacityDrop | ScenarioName::WorkersDrop => {
                    // The two thirds of the time before the drop that follow
                    // the cold start.
                    let at = sc.events.first().map_or(0, |(at, _)| at.as_secs() as usize);
                    let before = run.load.goodput_rps(at / 3..at.max(1));
                    extra.push((
                        "before the drop".into(),
                        format!("{:.0}%", 100.0 * before / capacity),
                    ));
                }
                _ => {}
            }
            let groups = groups(run, &w, window_capacity);
            // Each class or tenant group: what share of its own requests
            // was served within the SLO, and how much of the backend it got.
            for g in &groups {
                let label = group_label(&g.name);
                extra.push((
                    format!("{label} served"),
                    pct(g.served_fraction.map(|f| 100.0 * f)),
                ));
                extra.push((
                    format!("{label} goodput"),
                    format!("{:.2} C", g.of_capacity),
                ));
            }
            let served_by_second: Vec<Option<f64>> = match sc.name {
                n if n.from_start() => run
                    .load
                    .rows(..COLD_START_SECONDS)
                    .iter()
                    .map(fraction)
                    .collect(),
                _ => Vec::new(),
            };
            let served_in_window = fraction(&s.totals);
            let served_whole_run = fraction(&run.load.summary(..).totals);
            match sc.name {
                n if n.from_start() => {
                    extra.push((
                        format!("served s {}-{}", w.start, w.end),
                        frac(served_in_window),
                    ));
                    let worst = served_by_second
                        .iter()
                        .enumerate()
                        .filter_map(|(t, f)| f.map(|f| (t, f)))
                        .min_by(|a, b| a.1.total_cmp(&b.1));
                    extra.push((
                        "worst second".into(),
                        worst.map_or("n/a".into(), |(t, f)| format!("{f:.2} (s {t})")),
                    ));
                    extra.push(("served whole run".into(), frac(served_whole_run)));
                    extra.push((
                        "limit at start".into(),
                        run.limit_at_start.map_or("n/a".into(), |l| l.to_string()),
                    ));
                }
                ScenarioName::RetryStorm => {
                    let peak = run
                        .load
                        .rows(..)
                        .iter()
                        .map(|r| r.on_wire)
                        .max()
                        .unwrap_or(0);
                    extra.push((
                        "peak wire load".into(),
                        format!("{:.1}x", peak as f64 / capacity),
                    ));
                }
                _ => {}
            }
            let name = if run.client.label.is_empty() {
                run.contender.name.clone()
            } else {
                format!("{}, {}", run.contender.name, run.client.label)
            };
            Headline {
                name,
                goodput_rps: s.goodput_rps,
                goodput_percent: 100.0 * s.goodput_rps / window_capacity,
                p50_ms: ms(run.load.success_latency(w.clone(), 0.5)),
                p99_ms: ms(run.load.success_latency(w.clone(), 0.99)),
                percent_rejected: s.percent_rejected,
                percent_timed_out: s.percent_timed_out,
                served_in_window,
                served_whole_run,
                served_by_second,
                groups,
                extra,
            }
        })
        .collect()
}

/// The capacity at the start and during the window: measured in this run
/// when the built-in backend was used, the scenario's nominal figures
/// otherwise.
pub fn capacities(report: &BenchReport) -> (f64, f64) {
    let sc = &report.scenario;
    match report.measured_capacity {
        Some(m) => (m, m * sc.window_capacity / sc.capacity),
        None => (sc.capacity, sc.window_capacity),
    }
}

fn fmt_ms(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| {
        if v < 10.0 {
            format!("{v:.1} ms")
        } else {
            format!("{v:.0} ms")
        }
    })
}

/// The markdown table, with a line saying what the window is.
pub fn markdown(report: &BenchReport) -> String {
    let sc = &report.scenario;
    let hs = headlines(report);
    let mut out = String::new();
    let _ = writeln!(out, "### {}: {}\n", sc.name.as_str(), sc.summary);
    let extra_cols: Vec<String> = hs
        .first()
        .map(|h| h.extra.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    let _ = write!(
        out,
        "| target | goodput (s {}-{}) | of capacity | p50 | p99 | rejected | timed out |",
        sc.window.start, sc.window.end
    );
    for c in &extra_cols {
        let _ = write!(out, " {c} |");
    }
    out.push('\n');
    out.push_str("|---|---:|---:|---:|---:|---:|---:|");
    for _ in &extra_cols {
        out.push_str("---:|");
    }
    out.push('\n');
    for h in &hs {
        let _ = write!(
            out,
            "| {} | {:.0} req/s | {:.0}% | {} | {} | {:.1}% | {:.1}% |",
            h.name,
            h.goodput_rps,
            h.goodput_percent,
            fmt_ms(h.p50_ms),
            fmt_ms(h.p99_ms),
            h.percent_rejected,
            h.percent_timed_out
        );
        for (_, v) in &h.extra {
            let _ = write!(out, " {v} |");
        }
        out.push('\n');
    }
    let (_, window_capacity) = capacities(report);
    let measured = match report.measured_capacity {
        Some(m) => format!(
            " (measured unloaded at the start of this run: {m:.0} req/s against {:.0} nominal{})",
            sc.capacity,
            report
                .unloaded_p99_ms
                .map_or(String::new(), |p| format!(", p99 {p:.1} ms"))
        ),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "\ngoodput = 2xx within the {} ms SLO per second over seconds {}-{}, against the backend's capacity then, C = {:.0} req/s{measured}; latencies are of successes, from the scheduled arrival; timed out = no answer within the {} ms client timeout.",
        sc.slo.as_millis(),
        sc.window.start,
        sc.window.end,
        window_capacity,
        sc.client_timeout.as_millis()
    );
    if let Some(h) = hs.iter().find(|h| !h.groups.is_empty()) {
        let offered: Vec<String> = h
            .groups
            .iter()
            .map(|g| format!("{} {:.2} C", group_label(&g.name), g.offered_of_capacity))
            .collect();
        let _ = writeln!(
            out,
            "\nOffered in the window: {}. \"served\" = a group's 2xx within the SLO as a share of its own arrivals; \"goodput\" = the same per second as a fraction of C; \"of capacity\" is the total.",
            offered.join(", ")
        );
    }
    if sc.name.from_start() {
        cold_start_table(&mut out, report, &hs);
    }
    out
}

/// The cold-start scenario's second table: each of the first seconds'
/// served share, per target, and how each floodwall was started.
fn cold_start_table(out: &mut String, report: &BenchReport, hs: &[Headline]) {
    let seconds = hs
        .iter()
        .map(|h| h.served_by_second.len())
        .max()
        .unwrap_or(0);
    let _ = write!(
        out,
        "\nServed within the SLO as a share of each second's arrivals, from the gate's first second:\n\n| target |"
    );
    for t in 0..seconds {
        let _ = write!(out, " s {t} |");
    }
    out.push_str("\n|---|");
    for _ in 0..seconds {
        out.push_str("---:|");
    }
    out.push('\n');
    for h in hs {
        let _ = write!(out, "| {} |", h.name);
        for f in &h.served_by_second {
            let _ = write!(out, " {} |", frac(*f));
        }
        out.push('\n');
    }
    let ages: Vec<f64> = report
        .runs
        .iter()
        .filter_map(|r| r.gate_started_before_ms)
        .collect();
    if let (Some(lo), Some(hi)) = (
        ages.iter().copied().reduce(f64::min),
        ages.iter().copied().reduce(f64::max),
    ) {
        let _ = writeln!(
            out,
            "\nEach floodwall was started {:.0}-{:.0} µs before the first arrival, with nothing sent through it before; outside gates (HAProxy, nginx) are static and were started once.",
            lo * 1e3,
            hi * 1e3
        );
    }
}

/// The capacity each second, following the scenario's events.
fn capacity_series(report: &BenchReport) -> Vec<f64> {
    let sc = &report.scenario;
    let (capacity, window_capacity) = capacities(report);
    let seconds = sc.schedule.seconds();
    let mut cap = vec![capacity; seconds];
    if let Some((at, _)) = sc.events.first() {
        let from = at.as_secs() as usize;
        for c in cap.iter_mut().skip(from) {
            *c = window_capacity;
        }
    }
    cap
}

/// The figure: goodput, p99 and limit per second, one line per run.
pub fn figure(report: &BenchReport) -> Figure {
    let sc = &report.scenario;
    let series = report
        .runs
        .iter()
        .map(|run| {
            let seconds = run.load.seconds.len();
            Series {
                name: if run.client.label.is_empty() {
                    run.contender.name.clone()
                } else {
                    format!("{}, {}", run.contender.name, run.client.label)
                },
                goodput: run
                    .load
                    .seconds
                    .iter()
                    .map(|r| r.ok_within_slo as f64)
                    .collect(),
                p99_ms: (0..seconds)
                    .map(|t| ms(run.load.success_latency(t..t + 1, 0.99)))
                    .collect(),
                limit: run.limit.iter().map(|l| l.map(|v| v as f64)).collect(),
            }
        })
        .collect();
    Figure {
        title: format!("{}: {}", sc.name.as_str(), sc.summary),
        goodput_caption: plot::GOODPUT_CAPTION.into(),
        latency_caption: plot::LATENCY_CAPTION.into(),
        limit_caption: plot::LIMIT_CAPTION.into(),
        capacity: capacity_series(report),
        series,
    }
}

/// Writes `SCENARIO.json`, `SCENARIO.md`, `SCENARIO.svg` and `SCENARIO.png`
/// into `dir`.
pub fn write_all(report: &BenchReport, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let stem = report.scenario.name.as_str();
    let json = dir.join(format!("{stem}.json"));
    #[derive(Serialize)]
    struct Doc<'a> {
        report: &'a BenchReport,
        headlines: Vec<Headline>,
    }
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&Doc {
            report,
            headlines: headlines(report),
        })?,
    )?;
    let md = dir.join(format!("{stem}.md"));
    std::fs::write(&md, markdown(report))?;
    let mut paths = vec![json, md];
    paths.extend(plot::write(&figure(report), dir, stem)?);
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(second: u64, sent: u64, ok_within_slo: u64) -> SecondRow {
        SecondRow {
            second,
            sent,
            ok_within_slo,
            ..SecondRow::default()
        }
    }

    #[test]
    fn recovery_is_the_first_second_from_which_every_second_is_good() {
        let rows: Vec<SecondRow> = [
            (10, 100, 20),
            (11, 100, 95),
            (12, 100, 50),
            (13, 100, 91),
            (14, 100, 100),
        ]
        .into_iter()
        .map(|(s, n, ok)| row(s, n, ok))
        .collect();
        // 11 is good but 12 is not: back from 13, 3 s after 10.
        assert_eq!(recovery(&rows, 10..15), "3 s");
        assert_eq!(recovery(&rows, 13..15), "0 s");
        let bad = [row(10, 100, 10), row(11, 100, 80)];
        assert_eq!(recovery(&bad, 10..12), "never");
    }
}
