//! `floodwall tune`: a limit chosen from recorded history, the way the
//! Shopify engineering article "Tuning bulkheads and circuit breakers"
//! chooses a Semian bulkhead's tickets, from floodwall's decision log
//! (`[events]`, a JSON line per decision). Record it in shadow mode
//! (`mode = "shadow"`: nothing is refused, every would-be refusal is
//! logged) or under enforcement, then:
//!
//! ```sh
//! floodwall tune --events events.jsonl --exclude 1764770000..1764773600 --incident 2026-12-03T10:00:00Z..2026-12-03T10:20:00Z
//! ```
//!
//! Or from the in-use gauge a Prometheus server has kept (no decision log
//! needed, but only one reading a scrape):
//!
//! ```sh
//! floodwall tune --prometheus http://prometheus:9090 --since 7d --job floodwall
//! ```
//!
//! The arithmetic is in [`analysis`]; this file reads the log or asks
//! Prometheus, and prints.

pub mod analysis;

use crate::prometheus::Prometheus;
use analysis::{Basis, Decision, Sampled, Source, Tuning, Window};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The resolution of a range query by default: one point per scrape at
/// Prometheus' default `scrape_interval`.
const DEFAULT_STEP: Duration = Duration::from_secs(15);

/// Prometheus refuses a range query of more than 11,000 points a series.
const MAX_POINTS: f64 = 11_000.0;

/// `floodwall tune` flags.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["events", "prometheus"])))]
pub struct TuneArgs {
    /// The decision log (`[events] path`): a JSON line per decision.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Or a Prometheus server that scrapes floodwall, e.g.
    /// http://prometheus.monitoring:9090: the in-use gauge
    /// (`floodwall_wip_current`) over `--since`, one reading a `--step`.
    #[arg(long)]
    pub prometheus: Option<String>,
    /// With --prometheus: the period, ending now.
    #[arg(long, default_value = "1d", value_parser = humantime::parse_duration, requires = "prometheus")]
    pub since: Duration,
    /// With --prometheus: one reading every STEP. Set it to the scrape
    /// interval to read every scrape [default: 15s, or the period / 11,000
    /// if longer].
    #[arg(long, value_parser = humantime::parse_duration, requires = "prometheus")]
    pub step: Option<Duration>,
    /// With --prometheus: only the targets of this scrape job.
    #[arg(long, requires = "prometheus")]
    pub job: Option<String>,
    /// With --prometheus: the in-use expression, one series per route
    /// label [default: `sum by (route, instance) (floodwall_wip_current)`,
    /// each replica's in use: a replica's limit is its own].
    #[arg(long, requires = "prometheus")]
    pub query: Option<String>,
    /// A window left out of the baseline (an incident, a deploy):
    /// START..END, each Unix seconds or RFC 3339. May repeat.
    #[arg(long, value_parser = parse_window)]
    pub exclude: Vec<Window>,
    /// An incident to check the recommendation against: START..END. It is
    /// left out of the baseline too.
    #[arg(long, value_parser = parse_window)]
    pub incident: Option<Window>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// `START..END`, Unix seconds or RFC 3339 (`2026-12-03T10:00:00Z`).
pub fn parse_window(s: &str) -> Result<Window, String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("{s:?}: expected START..END"))?;
    let at = |t: &str| -> Result<f64, String> {
        let t = t.trim();
        if let Ok(secs) = t.parse::<f64>() {
            return Ok(secs);
        }
        humantime::parse_rfc3339_weak(t)
            .map_err(|e| format!("{t:?}: not Unix seconds or RFC 3339 ({e})"))?
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .map_err(|e| format!("{t:?}: {e}"))
    };
    let w = Window {
        start: at(a)?,
        end: at(b)?,
    };
    if w.end <= w.start {
        return Err(format!("{s:?}: the end is not after the start"));
    }
    Ok(w)
}

/// Reads the log: a line that is not a decision (a truncated last line,
/// text from another program on the same stdout) is skipped and counted.
pub fn read(path: &std::path::Path) -> anyhow::Result<(Vec<Decision>, usize)> {
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("--events: cannot read {}: {e}", path.display()))?;
    let (mut decisions, mut skipped) = (Vec::new(), 0);
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| anyhow::anyhow!("--events: {}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Decision>(&line) {
            Ok(d) => decisions.push(d),
            Err(_) => skipped += 1,
        }
    }
    Ok((decisions, skipped))
}

/// The range query `tune --prometheus` ran.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Range {
    /// The server.
    pub url: String,
    /// The in-use expression.
    pub query: String,
    /// The limit expression.
    pub limit_query: String,
    /// Unix seconds.
    pub start: f64,
    /// Unix seconds (now).
    pub end: f64,
    /// Seconds between readings.
    pub step_seconds: f64,
}

/// The in-use and limit expressions for `--job` (or the `--query` given).
fn queries(args: &TuneArgs) -> (String, String) {
    let sel = args
        .job
        .as_ref()
        .map(|j| {
            format!(
                "{{job=\"{}\"}}",
                j.replace('\\', "\\\\").replace('"', "\\\"")
            )
        })
        .unwrap_or_default();
    (
        args.query
            .clone()
            .unwrap_or_else(|| format!("sum by (route, instance) (floodwall_wip_current{sel})")),
        format!("max by (route) (floodwall_limit{sel})"),
    )
}

/// Asks Prometheus for every route's in-use readings and limit.
async fn sample(url: &str, args: &TuneArgs) -> anyhow::Result<(Range, Vec<Sampled>)> {
    let prom = Prometheus::new(url)?;
    let end = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    let since = args.since.as_secs_f64();
    if since <= 0.0 {
        anyhow::bail!("--since must be longer than 0s");
    }
    let step = args
        .step
        .unwrap_or_else(|| DEFAULT_STEP.max(Duration::from_secs_f64(since / MAX_POINTS)));
    if step.is_zero() {
        anyhow::bail!("--step must be longer than 0s");
    }
    if since / step.as_secs_f64() > MAX_POINTS {
        anyhow::bail!(
            "--since {} at --step {} is {:.0} readings a series; Prometheus answers at most 11,000: \
             use a longer --step or a shorter --since",
            humantime::format_duration(args.since),
            humantime::format_duration(step),
            since / step.as_secs_f64()
        );
    }
    let (query, limit_query) = queries(args);
    let range = Range {
        url: url.to_owned(),
        query,
        limit_query,
        start: end - since,
        end,
        step_seconds: step.as_secs_f64(),
    };
    let mut by: BTreeMap<String, Sampled> = BTreeMap::new();
    let route = |s: &crate::prometheus::Series| match s.label("route") {
        "" => "(no route label)".to_owned(),
        r => r.to_owned(),
    };
    for s in prom
        .query_range(&range.query, range.start, range.end, step)
        .await?
    {
        let r = route(&s);
        by.entry(r.clone())
            .or_insert_with(|| Sampled {
                resource: r,
                in_use: Vec::new(),
                limit: Vec::new(),
            })
            .in_use
            .extend(s.points);
    }
    for s in prom
        .query_range(&range.limit_query, range.start, range.end, step)
        .await?
    {
        if let Some(e) = by.get_mut(&route(&s)) {
            e.limit.extend(s.points);
        }
    }
    Ok((range, by.into_values().collect()))
}

/// Runs `floodwall tune`.
pub async fn run(args: TuneArgs) -> anyhow::Result<()> {
    // The tunings, lines skipped, where they came from, and what to say if
    // there are none.
    let (tunings, skipped, mut doc, none) = match (&args.events, &args.prometheus) {
        (Some(events), _) => {
            let (decisions, skipped) = read(events)?;
            (
                analysis::tune(&decisions, &args.exclude, args.incident),
                skipped,
                serde_json::json!({ "events": events }),
                format!(
                    "{}: no decision with an in-use count (is [events] on, and did requests reach a route?)",
                    events.display()
                ),
            )
        }
        (None, Some(url)) => {
            let (range, sampled) = sample(url, &args).await?;
            let none = format!(
                "Prometheus has no in-use readings for `{}` over the period (does it scrape floodwall's admin port{}?)",
                range.query,
                args.job
                    .as_ref()
                    .map(|j| format!(" as job {j:?}"))
                    .unwrap_or_default()
            );
            (
                analysis::tune_samples(&sampled, &args.exclude, args.incident),
                0,
                serde_json::json!({ "prometheus": range }),
                none,
            )
        }
        (None, None) => anyhow::bail!("give --events FILE or --prometheus URL"),
    };
    if args.json {
        doc["lines_skipped"] = skipped.into();
        doc["exclude"] = serde_json::to_value(&args.exclude)?;
        doc["incident"] = serde_json::to_value(args.incident)?;
        doc["resources"] = serde_json::to_value(&tunings)?;
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", render(&tunings, skipped));
    }
    if tunings.is_empty() {
        anyhow::bail!("{none}");
    }
    Ok(())
}

/// The tables.
pub fn render(tunings: &[Tuning], skipped: usize) -> String {
    let pct = |x: f64| format!("{:.3}%", 100.0 * x);
    let mut out = String::new();
    if skipped > 0 {
        let _ = writeln!(
            out,
            "({skipped} lines that are not decisions were skipped)\n"
        );
    }
    for t in tunings {
        // What a row counts, and what a limit's share is a share of.
        let (what, col, of) = match t.basis {
            Basis::Decisions => ("decisions", "refused", "refused"),
            Basis::Samples => ("readings", "in-use area cut", "of the in-use area cut"),
        };
        let _ = writeln!(
            out,
            "## {}: {} {what} in the baseline{}\n",
            t.resource,
            t.baseline,
            t.incident
                .map(|n| format!(", {n} in the incident"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "| in use | limit | {} at that limit |",
            match t.basis {
                Basis::Decisions => "traffic lost",
                Basis::Samples => "in-use area cut",
            }
        );
        let _ = writeln!(out, "|---|---:|---:|");
        let lost = |l: usize| {
            t.what_if
                .iter()
                .find(|w| w.limit == l)
                .map_or(String::from("-"), |w| pct(w.baseline_refused))
        };
        for (name, l) in [
            ("max", t.max),
            ("99.999th percentile", t.p99999),
            ("99.99th percentile", t.p9999),
            ("99.9th percentile", t.p999),
        ] {
            let _ = writeln!(out, "| {name} | {l} | {} |", lost(l));
        }
        let _ = writeln!(
            out,
            "\n| limit | {col} in the baseline | {col} in the incident |"
        );
        let _ = writeln!(out, "|---:|---:|---:|");
        for w in &t.what_if {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                w.limit,
                pct(w.baseline_refused),
                w.incident_refused.map_or("-".into(), pct)
            );
        }
        if t.no_acceptable_number {
            let _ = writeln!(
                out,
                "\nNo acceptable number: every percentile is the limit the route already had ({}), \
                 so it was full throughout. The upstream needs more capacity (or more replicas), \
                 not a different limit.\n",
                t.tickets.unwrap_or(t.max)
            );
        } else {
            let why = match (t.recommended_from, t.bdp) {
                (Source::Knee, _) => "the knee of the throughput curve, above the 99.99th \
                                      percentile: a lower limit would refuse work the upstream \
                                      could do"
                    .to_owned(),
                (Source::Rate, Some(b)) => format!(
                    "the upstream's best rate at its unloaded service time, above the 99.99th \
                     percentile: {} answers within one service time of {:.1} ms (BBR's \
                     bandwidth-delay product); a lower limit would refuse work the upstream could do",
                    b.limit, b.service_ms
                ),
                _ => "the 99.99th percentile".to_owned(),
            };
            let _ = writeln!(
                out,
                "\nRecommended: `limit = {{ algorithm = \"fixed\", value = {} }}` ({why}: {} {of} \
                 in the baseline{}).\n",
                t.recommended,
                lost(t.recommended),
                t.what_if
                    .iter()
                    .find(|w| w.limit == t.recommended)
                    .and_then(|w| w.incident_refused)
                    .map(|x| format!(", {} in the incident", pct(x)))
                    .unwrap_or_default()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_from_seconds_or_rfc3339_and_bad_ones_say_why() {
        assert_eq!(
            parse_window("10..20.5").unwrap(),
            Window {
                start: 10.0,
                end: 20.5
            }
        );
        let w = parse_window("2026-12-03T10:00:00Z..2026-12-03T10:01:00Z").unwrap();
        assert_eq!(w.end - w.start, 60.0);
        assert!(parse_window("20..10").unwrap_err().contains("not after"));
        assert!(parse_window("10").unwrap_err().contains("START..END"));
        assert!(parse_window("x..10").unwrap_err().contains("RFC 3339"));
    }
}
