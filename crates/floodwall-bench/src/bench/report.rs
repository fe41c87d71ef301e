//! The bench's table, JSON and plots.

use super::plot::{self, Figure, Series};
use super::run::{BenchReport, ContenderRun};
use super::scenario::ScenarioName;
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
    /// Scenario-specific figures, (column, value).
    pub extra: Vec<(String, String)>,
}

fn ms(d: Option<std::time::Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

fn served(run: &ContenderRun, group: &str, w: &Range<usize>) -> Option<f64> {
    let g = run.load.group(group)?;
    let s = g.summary(w.clone());
    let sent = s.totals.sent as f64;
    (sent > 0.0).then(|| 100.0 * s.totals.ok_within_slo as f64 / sent)
}

fn pct(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.0}%"))
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
            match sc.name {
                ScenarioName::Priority => {
                    extra.push((
                        "interactive served".into(),
                        pct(served(run, "interactive", &w)),
                    ));
                    extra.push(("batch served".into(), pct(served(run, "batch", &w))));
                }
                ScenarioName::TenantFlood => {
                    extra.push(("others served".into(), pct(served(run, "others", &w))));
                    extra.push(("hot served".into(), pct(served(run, "hot", &w))));
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
        "\ngoodput = 2xx within the {} ms SLO per second over seconds {}-{}, against the backend's capacity then, {:.0} req/s{measured}; latencies are of successes, from the scheduled arrival; timed out = no answer within the {} ms client timeout.",
        sc.slo.as_millis(),
        sc.window.start,
        sc.window.end,
        window_capacity,
        sc.client_timeout.as_millis()
    );
    out
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
