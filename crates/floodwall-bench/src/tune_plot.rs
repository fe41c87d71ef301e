//! The plot `floodwall tune` reads from: in use over time, per route, with
//! a line at each candidate limit (the most seen, the 99.999th, 99.99th
//! and 99.9th percentiles, the knee, the recommendation). It is the chart
//! the Shopify engineering article "Tuning bulkheads and circuit breakers"
//! draws by hand from Semian's events, to see which number cuts the
//! incident and leaves the ordinary day alone.
//!
//! It lives in the bench crate, not in the gateway: `floodwall tune`
//! prints and writes JSON, and the gateway binary carries no plotting
//! library. `floodwall-bench tune-plot --events FILE` draws it from the
//! same log with the same arithmetic (`floodwall::tune`).

use crate::bench::plot::COLORS;
use floodwall::tune::analysis::{Decision, Tuning};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// The candidate lines drawn for `t`: a name and a limit, each once.
pub fn candidates(t: &Tuning) -> Vec<(String, usize)> {
    let mut lines: Vec<(String, usize)> = Vec::new();
    let mut add = |name: &str, l: usize| {
        if let Some(line) = lines.iter_mut().find(|(_, x)| *x == l) {
            line.0.push_str(", ");
            line.0.push_str(name);
        } else {
            lines.push((name.to_owned(), l));
        }
    };
    add("max", t.max);
    add("99.999th", t.p99999);
    add("99.99th", t.p9999);
    add("99.9th", t.p999);
    if let Some(k) = t.knee {
        add("knee", k);
    }
    add("recommended", t.recommended);
    lines
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    decisions: &[Decision],
    tunings: &[Tuning],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: &dyn std::fmt::Debug| anyhow::anyhow!("plot: {e:?}");
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let t0 = decisions.iter().map(|d| d.ts).fold(f64::INFINITY, f64::min);
    let t0 = if t0.is_finite() { t0 } else { 0.0 };
    let panels = root.split_evenly((tunings.len().max(1), 1));
    for (t, panel) in tunings.iter().zip(panels.iter()) {
        let points: Vec<(f64, f64)> = decisions
            .iter()
            .filter(|d| d.resource == t.resource)
            .filter_map(|d| Some((d.ts - t0, d.demand()? as f64)))
            .collect();
        let end = points.iter().map(|p| p.0).fold(1.0, f64::max);
        let top = points
            .iter()
            .map(|p| p.1)
            .chain([t.max as f64, t.recommended as f64])
            .fold(1.0, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{}: in use at each decision", t.resource),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..end, 0f64..top)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("seconds from the first decision")
            .y_desc("in use")
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(
                points
                    .iter()
                    .map(|p| Circle::new(*p, 1, BLACK.mix(0.35).filled())),
            )
            .map_err(|e| err(&e))?
            .label("a decision")
            .legend(|(x, y)| Circle::new((x + 10, y), 3, BLACK.filled()));
        for (i, (name, limit)) in candidates(t).into_iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let y = limit as f64;
            chart
                .draw_series(LineSeries::new([(0.0, y), (end, y)], color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(format!("{name}: {limit}"))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Writes `stem.svg` and `stem.png` into `dir`: one panel per route of
/// `tunings`, from `decisions`. Returns both paths.
pub fn write(
    decisions: &[Decision],
    tunings: &[Tuning],
    dir: &Path,
    stem: &str,
) -> anyhow::Result<Vec<PathBuf>> {
    anyhow::ensure!(!tunings.is_empty(), "nothing to plot: no route in the log");
    crate::bench::plot::register_font();
    std::fs::create_dir_all(dir)?;
    let size = (1100, 420 * tunings.len().min(6) as u32);
    let svg = dir.join(format!("{stem}.svg"));
    draw(
        SVGBackend::new(&svg, size).into_drawing_area(),
        decisions,
        tunings,
    )?;
    let png = dir.join(format!("{stem}.png"));
    draw(
        BitMapBackend::new(&png, size).into_drawing_area(),
        decisions,
        tunings,
    )?;
    Ok(vec![svg, png])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_draws_the_log_and_a_line_per_candidate() {
        // 3,000 decisions at 1..=6 in use, two at 9: max 9, the 99.9th 6.
        let line = |ts: f64, count: usize| {
            format!(
                r#"{{"ts":{ts},"event":"success","resource":"api","tickets":20,"count":{count},"duration_ms":5.0}}"#
            )
        };
        let mut log: Vec<Decision> = (0..3000)
            .map(|i| serde_json::from_str(&line(i as f64 * 0.01, 1 + i % 6)).unwrap())
            .collect();
        log.extend((0..2).map(|i| serde_json::from_str(&line(40.0 + i as f64, 9)).unwrap()));
        let tunings = floodwall::tune::analysis::tune(&log, &[], None);
        let names: Vec<_> = candidates(&tunings[0]);
        assert!(
            names.contains(&("max, 99.999th, 99.99th, recommended".into(), 9)),
            "{names:?}"
        );
        assert!(
            names.iter().any(|(n, l)| n.contains("99.9th") && *l == 6),
            "{names:?}"
        );
        let dir = std::env::temp_dir().join(format!("floodwall-tune-plot-{}", std::process::id()));
        let paths = write(&log, &tunings, &dir, "in-use").unwrap();
        let svg = std::fs::read_to_string(&paths[0]).unwrap();
        assert!(
            svg.contains("api: in use") && svg.contains("recommended: 9"),
            "legend"
        );
        assert!(
            svg.matches("<circle").count() >= 3000,
            "every decision drawn"
        );
        let png = std::fs::read(&paths[1]).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert!(png.len() > 10_000, "a real picture, {} bytes", png.len());
        let _ = std::fs::remove_dir_all(dir);
    }
}
