//! `floodwall report`: the unplanned-work tax of a period, from Prometheus.
//!
//! The Phoenix WIP-gate article's tax calculator multiplied an instant
//! `rate()` by the days of lookback (one moment's rate standing for a
//! month) and counted the samples above a threshold as incidents. This
//! report asks Prometheus the right questions instead:
//!
//! - **totals** are `increase(counter[period])` at the period's end, per
//!   route: requests by outcome, rejections by reason;
//! - **incidents** come from a range query of the rate of gate refusals
//!   (no slot, tenant over share, queue, global limit, store), one point a
//!   `step`: a run of points above `--threshold` is an incident, two
//!   closer than `--merge-gap` are one ([`incidents`]);
//! - **time at the floor** and **time limited by each probe** are range
//!   queries of the conditions the `FloodwallLimitAtFloor` and
//!   `FloodwallBottleneckSaturated` alerts test, counted in steps;
//! - **cost** is incidents × `--hours-per-incident` × `--hourly-rate`, with
//!   the arithmetic printed, so a reader can disagree with the inputs and
//!   not with the sum.
//!
//! Retried requests: floodwall cannot tell a retry from a first attempt,
//! so they are reported only from a client-side counter named with
//! `--retries-metric` (the article's `http_client_retries_total`).

pub mod incidents;

use crate::prometheus::Prometheus;
use incidents::Window;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The refusals that mean "no capacity": the load shed.
const GATE_REASONS: &str =
    "wip_limit_exceeded|tenant_limit_exceeded|queue_full|queue_timeout|global_limit_exceeded|store_unavailable";

/// `floodwall report` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The Prometheus server that scrapes floodwall, e.g.
    /// http://prometheus.monitoring:9090.
    #[arg(long)]
    pub prometheus: String,
    /// The period, ending now: 30d, 12h, 2m.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    pub since: Duration,
    /// Only the targets of this scrape job.
    #[arg(long)]
    pub job: Option<String>,
    /// A route's gate refusals per second above which it is in an incident.
    #[arg(long, default_value_t = 1.0)]
    pub threshold: f64,
    /// The resolution of the incident search [default: the period / 10,000,
    /// at least 15s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub step: Option<Duration>,
    /// The window of the rate the incidents are found in [default: 4 steps,
    /// at least 1m].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub rate_window: Option<Duration>,
    /// Two incidents less than this apart are one [default: 5 steps, at
    /// least 5m].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub merge_gap: Option<Duration>,
    /// Engineer hours one incident costs.
    #[arg(long, default_value_t = 2.0)]
    pub hours_per_incident: f64,
    /// The cost of an engineer hour.
    #[arg(long, default_value_t = 150.0)]
    pub hourly_rate: f64,
    /// A client-side counter of retried requests (e.g.
    /// http_client_retries_total); floodwall cannot count retries itself.
    #[arg(long)]
    pub retries_metric: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The settings the queries ran with.
#[derive(Debug, Clone, Serialize)]
pub struct Period {
    /// Unix seconds.
    pub start: f64,
    /// Unix seconds (now).
    pub end: f64,
    /// The range query resolution, seconds.
    pub step_seconds: f64,
    /// The rate window of the incident search, seconds.
    pub rate_window_seconds: f64,
    /// Refusals per second above which a route is in an incident.
    pub threshold: f64,
    /// Incidents closer than this are merged, seconds.
    pub merge_gap_seconds: f64,
}

/// One route's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteReport {
    /// The route.
    pub route: String,
    /// Admitted requests that finished, by outcome.
    pub requests: BTreeMap<String, f64>,
    /// Refusals by reason.
    pub rejections: BTreeMap<String, f64>,
    /// The incidents.
    pub incidents: Vec<Window>,
    /// Seconds the adaptive limit sat at its floor.
    pub seconds_at_floor: f64,
    /// Seconds each probe held the limit below the algorithm's.
    pub seconds_limited_by: BTreeMap<String, f64>,
}

/// The cost estimate and its inputs.
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    /// Incidents over every route.
    pub incidents: usize,
    /// `--hours-per-incident`.
    pub hours_per_incident: f64,
    /// `--hourly-rate`.
    pub hourly_rate: f64,
    /// incidents × hours per incident.
    pub hours: f64,
    /// hours × hourly rate.
    pub total: f64,
    /// The sum written out.
    pub arithmetic: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was asked.
    pub period: Period,
    /// Per route, by name.
    pub routes: Vec<RouteReport>,
    /// Retried requests from `--retries-metric`; `None` when not measured.
    pub retried: Option<f64>,
    /// The cost.
    pub cost: Cost,
    /// What to do about it.
    pub recommendation: String,
}

fn selector(job: &Option<String>, extra: &str) -> String {
    let mut parts = Vec::new();
    if let Some(j) = job {
        parts.push(format!(
            "job=\"{}\"",
            j.replace('\\', "\\\\").replace('"', "\\\"")
        ));
    }
    if !extra.is_empty() {
        parts.push(extra.to_owned());
    }
    format!("{{{}}}", parts.join(", "))
}

/// A PromQL duration in whole seconds (at least 1s).
fn promql(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

fn entry<'a>(routes: &'a mut BTreeMap<String, RouteReport>, name: &str) -> &'a mut RouteReport {
    routes
        .entry(name.to_owned())
        .or_insert_with(|| RouteReport {
            route: name.to_owned(),
            ..Default::default()
        })
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl ReportArgs {
    fn check(&self) -> anyhow::Result<()> {
        if self.since < Duration::from_secs(1) {
            anyhow::bail!("--since must be at least 1s");
        }
        for (name, v) in [
            ("--threshold", self.threshold),
            ("--hours-per-incident", self.hours_per_incident),
            ("--hourly-rate", self.hourly_rate),
        ] {
            if !v.is_finite() || v < 0.0 {
                anyhow::bail!("{name} must be a number at least 0, not {v}");
            }
        }
        if let Some(s) = self.step {
            if s < Duration::from_secs(1) {
                anyhow::bail!("--step must be at least 1s");
            }
            if self.since.as_secs_f64() / s.as_secs_f64() > 11_000.0 {
                anyhow::bail!(
                    "--step {}: more than 11,000 points over --since {} (Prometheus' limit); use a longer step",
                    humantime::format_duration(s),
                    humantime::format_duration(self.since)
                );
            }
        }
        if let Some(m) = &self.retries_metric {
            let ok = !m.is_empty()
                && m.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !m.starts_with(|c: char| c.is_ascii_digit());
            if !ok {
                anyhow::bail!("--retries-metric {m:?}: not a metric name");
            }
        }
        Ok(())
    }

    fn period(&self, end: f64) -> Period {
        let since = self.since.as_secs_f64();
        let step = self
            .step
            .map_or_else(|| (since / 10_000.0).ceil().max(15.0), |s| s.as_secs_f64());
        let rate_window = self
            .rate_window
            .map_or((4.0 * step).max(60.0), |d| d.as_secs_f64());
        let merge_gap = self
            .merge_gap
            .map_or((5.0 * step).max(300.0), |d| d.as_secs_f64());
        Period {
            start: end - since,
            end,
            step_seconds: step,
            rate_window_seconds: rate_window,
            threshold: self.threshold,
            merge_gap_seconds: merge_gap,
        }
    }
}

/// Builds the report from the Prometheus at `args.prometheus`, for the
/// period ending now.
pub async fn build(args: &ReportArgs) -> anyhow::Result<Report> {
    args.check()?;
    let prom = Prometheus::new(&args.prometheus)?;
    let p = args.period(now());
    let range = promql(args.since);
    let step = Duration::from_secs_f64(p.step_seconds);
    let window = promql(Duration::from_secs_f64(p.rate_window_seconds));
    let sel = |extra: &str| selector(&args.job, extra);
    let mut routes: BTreeMap<String, RouteReport> = BTreeMap::new();

    // Totals: increase() over the whole period, at its end.
    let q = format!(
        "sum by (route, outcome) (increase(floodwall_requests_total{}[{range}]))",
        sel("")
    );
    for s in prom.query(&q, p.end).await? {
        let v = s.points[0].1;
        *entry(&mut routes, s.label("route"))
            .requests
            .entry(s.label("outcome").to_owned())
            .or_default() += v;
    }
    let q = format!(
        "sum by (route, reason) (increase(floodwall_rejections_total{}[{range}]))",
        sel("")
    );
    for s in prom.query(&q, p.end).await? {
        let v = s.points[0].1;
        if v > 0.0 {
            *entry(&mut routes, s.label("route"))
                .rejections
                .entry(s.label("reason").to_owned())
                .or_default() += v;
        }
    }

    // Incidents: the refusal rate at every step of the period.
    let q = format!(
        "sum by (route) (rate(floodwall_rejections_total{}[{window}]))",
        sel(&format!("reason=~\"{GATE_REASONS}\""))
    );
    for s in prom.query_range(&q, p.start, p.end, step).await? {
        entry(&mut routes, s.label("route")).incidents =
            incidents::windows(&s.points, p.threshold, p.step_seconds, p.merge_gap_seconds);
    }

    // Time at the floor, and limited by each probe.
    let q = format!(
        "max by (route) (max by (job, instance, route) (floodwall_limit_algorithm{}) \
         <= bool on (job, instance, route) floodwall_limit_min{})",
        sel("algorithm!=\"fixed\""),
        sel("")
    );
    for s in prom.query_range(&q, p.start, p.end, step).await? {
        entry(&mut routes, s.label("route")).seconds_at_floor =
            incidents::seconds_true(&s.points, p.step_seconds);
    }
    let q = format!(
        "max by (route, probe) (floodwall_probe_constraint{} \
         < bool on (job, instance, route) group_left () \
         max by (job, instance, route) (floodwall_limit_algorithm{}))",
        sel(""),
        sel("")
    );
    for s in prom.query_range(&q, p.start, p.end, step).await? {
        let t = incidents::seconds_true(&s.points, p.step_seconds);
        if t > 0.0 {
            entry(&mut routes, s.label("route"))
                .seconds_limited_by
                .insert(s.label("probe").to_owned(), t);
        }
    }

    let retried = match &args.retries_metric {
        None => None,
        Some(m) => Some(
            prom.query(&format!("sum(increase({m}{}[{range}]))", sel("")), p.end)
                .await?
                .first()
                .map_or(0.0, |s| s.points[0].1),
        ),
    };

    // The unrouted row (refusals before routing) has no incidents to speak
    // of but its rejections are real; keep it, named.
    let routes: Vec<RouteReport> = routes.into_values().collect();
    let n: usize = routes.iter().map(|r| r.incidents.len()).sum();
    let hours = n as f64 * args.hours_per_incident;
    let total = hours * args.hourly_rate;
    let cost = Cost {
        incidents: n,
        hours_per_incident: args.hours_per_incident,
        hourly_rate: args.hourly_rate,
        hours,
        total,
        arithmetic: format!(
            "{n} incident{} × {} h × {:.2}/h = {:.2}",
            if n == 1 { "" } else { "s" },
            args.hours_per_incident,
            args.hourly_rate,
            total
        ),
    };
    let recommendation = recommend(&routes, args.since);
    Ok(Report {
        period: p,
        routes,
        retried,
        cost,
        recommendation,
    })
}

/// A duration in words: `14h 5m`, `3m 20s`, `12s`.
fn human(seconds: f64) -> String {
    let s = seconds.round() as u64;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// What the figures call for, most pressing first: a sick upstream (at the
/// floor), a bottleneck that was the constraint, load shed without either,
/// or nothing.
pub fn recommend(routes: &[RouteReport], period: Duration) -> String {
    let period = humantime::format_duration(Duration::from_secs(period.as_secs()));
    let mut out = Vec::new();
    for r in routes.iter().filter(|r| !r.route.is_empty()) {
        if r.seconds_at_floor >= 60.0 {
            out.push(format!(
                "route {}: the limit sat at its floor {} in {period}: the upstream was failing or slow at any concurrency; fix the upstream (more capacity will not help)",
                r.route,
                human(r.seconds_at_floor)
            ));
        }
        if let Some((probe, t)) = r
            .seconds_limited_by
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1))
        {
            if *t >= 60.0 {
                out.push(format!(
                    "route {}: the {probe} bottleneck was the constraint {} in {period}; raise its capacity",
                    r.route,
                    human(*t)
                ));
            }
        }
        if !r.incidents.is_empty() && r.seconds_at_floor < 60.0 && r.seconds_limited_by.is_empty() {
            let t: f64 = r.incidents.iter().map(|w| w.seconds).sum();
            out.push(format!(
                "route {}: {} incident{} ({} in all) shed load with no probe or floor to blame: demand exceeded the upstream's capacity; add capacity, or replicas if the limit is per replica",
                r.route,
                r.incidents.len(),
                if r.incidents.len() == 1 { "" } else { "s" },
                human(t)
            ));
        }
    }
    if out.is_empty() {
        "no incidents: the limits held without shedding load".to_owned()
    } else {
        out.join("\n")
    }
}

fn rfc3339(unix: f64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs_f64(unix.max(0.0)))
        .to_string()
}

/// The report as a table.
pub fn render(r: &Report) -> String {
    let p = &r.period;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "floodwall report: {} to {} (step {}s, incidents: gate refusals above {}/s over {}s, merged within {}s)",
        rfc3339(p.start),
        rfc3339(p.end),
        p.step_seconds,
        p.threshold,
        p.rate_window_seconds,
        p.merge_gap_seconds
    );
    for route in &r.routes {
        let name = if route.route.is_empty() {
            "(no route)"
        } else {
            route.route.as_str()
        };
        let requests: f64 = route.requests.values().sum();
        let rejected: f64 = route.rejections.values().sum();
        let _ = writeln!(o, "\nroute {name}");
        let _ = writeln!(o, "  requests admitted  {requests:>12.0}");
        for (k, v) in &route.requests {
            let _ = writeln!(o, "    {k:<26}{v:>10.0}");
        }
        let _ = writeln!(o, "  rejections         {rejected:>12.0}");
        for (k, v) in &route.rejections {
            let _ = writeln!(o, "    {k:<26}{v:>10.0}");
        }
        let _ = writeln!(o, "  incidents          {:>12}", route.incidents.len());
        for w in &route.incidents {
            let _ = writeln!(
                o,
                "    {}  {:>8}  peak {:.1}/s",
                rfc3339(w.start),
                human(w.seconds),
                w.peak
            );
        }
        let _ = writeln!(
            o,
            "  at the floor       {:>12}",
            human(route.seconds_at_floor)
        );
        for (probe, t) in &route.seconds_limited_by {
            let _ = writeln!(o, "  limited by {probe:<14}{:>8}", human(*t));
        }
    }
    let _ = writeln!(
        o,
        "\nretried requests: {}",
        match r.retried {
            Some(v) => format!("{v:.0}"),
            None => "not measured (floodwall cannot tell a retry from a first attempt; --retries-metric names a client-side counter)".into(),
        }
    );
    let _ = writeln!(o, "cost: {}", r.cost.arithmetic);
    let _ = writeln!(
        o,
        "recommendation:\n  {}",
        r.recommendation.replace('\n', "\n  ")
    );
    o
}

/// Runs `floodwall report`: builds the report and prints it.
pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let report = build(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recommendation_names_the_constraint() {
        let mut r = RouteReport {
            route: "api".into(),
            ..Default::default()
        };
        let month = Duration::from_secs(30 * 86_400);
        assert!(recommend(&[r.clone()], month).starts_with("no incidents"));
        r.seconds_limited_by
            .insert("postgres".into(), 14.0 * 3600.0);
        assert!(
            recommend(&[r.clone()], month).contains(
                "the postgres bottleneck was the constraint 14h 0m in 30days; raise its capacity"
            ),
            "{}",
            recommend(&[r.clone()], month)
        );
        r.seconds_at_floor = 7200.0;
        assert!(recommend(&[r], month).contains("fix the upstream"));
    }

    #[test]
    fn bad_flags_are_refused_by_name() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: ReportArgs,
        }
        let parse = |extra: &[&str]| {
            let mut v = vec!["report", "--prometheus", "http://p:9090"];
            v.extend(extra);
            Cli::try_parse_from(v).map(|c| c.args)
        };
        assert!(parse(&["--since", "30x"]).is_err());
        let a = parse(&["--since", "30d", "--step", "10s"]).unwrap();
        assert!(a.check().unwrap_err().to_string().contains("11,000 points"));
        let a = parse(&["--threshold=-1"]).unwrap();
        assert!(a.check().unwrap_err().to_string().contains("--threshold"));
        let a = parse(&["--retries-metric", "x{y}"]).unwrap();
        assert!(a
            .check()
            .unwrap_err()
            .to_string()
            .contains("--retries-metric"));
        let a = parse(&[]).unwrap();
        let p = a.period(1e9);
        assert_eq!((p.step_seconds, p.rate_window_seconds), (260.0, 1040.0));
        assert_eq!(p.start, 1e9 - 30.0 * 86_400.0);
    }

    #[test]
    fn the_cost_arithmetic_is_written_out() {
        assert_eq!(human(3.0 * 3600.0 + 300.0), "3h 5m");
        assert_eq!(human(59.4), "59s");
        assert_eq!(human(90_000.0), "1d 1h");
    }
}
