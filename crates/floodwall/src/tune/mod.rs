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
//! The arithmetic is in [`analysis`]; this file reads the log and prints.

pub mod analysis;

use analysis::{Decision, Tuning, Window};
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::PathBuf;

/// `floodwall tune` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct TuneArgs {
    /// The decision log (`[events] path`): a JSON line per decision.
    #[arg(long)]
    pub events: PathBuf,
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

/// Runs `floodwall tune`.
pub fn run(args: TuneArgs) -> anyhow::Result<()> {
    let (decisions, skipped) = read(&args.events)?;
    let tunings = analysis::tune(&decisions, &args.exclude, args.incident);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "events": args.events,
                "lines_skipped": skipped,
                "exclude": args.exclude,
                "incident": args.incident,
                "resources": tunings,
            }))?
        );
    } else {
        print!("{}", render(&tunings, skipped));
    }
    if tunings.is_empty() {
        anyhow::bail!(
            "{}: no decision with an in-use count (is [events] on, and did requests reach a route?)",
            args.events.display()
        );
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
        let _ = writeln!(
            out,
            "## {}: {} decisions in the baseline{}\n",
            t.resource,
            t.baseline,
            t.incident
                .map(|n| format!(", {n} in the incident"))
                .unwrap_or_default()
        );
        let _ = writeln!(out, "| in use | limit | traffic lost at that limit |");
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
            "\n| limit | refused in the baseline | refused in the incident |"
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
            let _ = writeln!(
                out,
                "\nRecommended: `limit = {{ algorithm = \"fixed\", value = {} }}` (the 99.99th \
                 percentile: {} of the baseline refused{}).\n",
                t.recommended,
                lost(t.recommended),
                t.what_if
                    .iter()
                    .find(|w| w.limit == t.recommended)
                    .and_then(|w| w.incident_refused)
                    .map(|x| format!(", {} of the incident", pct(x)))
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
