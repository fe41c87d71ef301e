//! Plots of a bench run: goodput, p99 and the gate's limit over time, one
//! line per target, so a person can see the collapse and the protection.
//!
//! Written as SVG (text stays text) and PNG (for a quick look). The PNG
//! backend rasterises labels with an embedded DejaVu Sans, so nothing needs
//! to be installed on the machine.

use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

/// One target's per-second series.
#[derive(Debug, Clone)]
pub struct Series {
    /// The target's name, shown in the legend.
    pub name: String,
    /// Successes within the SLO per second.
    pub goodput: Vec<f64>,
    /// p99 latency of successes per second, in milliseconds (`None` where
    /// nothing succeeded).
    pub p99_ms: Vec<Option<f64>>,
    /// The gate's limit, sampled each second (`None` where there is no gate
    /// or it is not known).
    pub limit: Vec<Option<f64>>,
}

/// The overload scenarios' top panel.
pub const GOODPUT_CAPTION: &str = "goodput: 2xx within SLO per second";
/// The overload scenarios' middle panel.
pub const LATENCY_CAPTION: &str = "p99 latency of successes (ms, log scale)";

/// The overload scenarios' bottom panel.
pub const LIMIT_CAPTION: &str = "gate limit (slots)";

/// What to draw.
#[derive(Debug, Clone)]
pub struct Figure {
    /// The title, e.g. "spike: 0.5x, 3x, 0.5x of 400 req/s".
    pub title: String,
    /// The top panel's caption: what `goodput` counts.
    pub goodput_caption: String,
    /// The middle panel's caption: whose latency `p99_ms` is.
    pub latency_caption: String,
    /// The bottom panel's caption: whose limits are drawn.
    pub limit_caption: String,
    /// The backend's capacity per second over time, drawn as a dashed
    /// reference line on the goodput panel (none when empty: a backend
    /// that answers at once has no capacity to speak of).
    pub capacity: Vec<f64>,
    /// One entry per target.
    pub series: Vec<Series>,
}

/// Registers the embedded font once (the PNG backend needs one).
pub(crate) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let font = dejavu::sans::regular();
        if plotters::style::register_font("sans-serif", FontStyle::Normal, font).is_err() {
            tracing::warn!("could not register the embedded font; PNG labels may be missing");
        }
    });
}

/// The line colours, in order (the tune plot draws with them too).
pub(crate) const COLORS: [RGBColor; 8] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    fig: &Figure,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let root = root
        .titled(&fig.title, ("sans-serif", 22))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let panels = root.split_evenly((3, 1));
    let seconds = fig
        .series
        .iter()
        .map(|s| s.goodput.len())
        .chain([fig.capacity.len()])
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let err = |e: &dyn std::fmt::Debug| anyhow::anyhow!("plot: {e:?}");

    // Goodput.
    let top = fig
        .series
        .iter()
        .flat_map(|s| s.goodput.iter().copied())
        .chain(fig.capacity.iter().copied())
        .fold(1.0f64, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&panels[0])
        .caption(&fig.goodput_caption, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..seconds, 0f64..top)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("second")
        .y_desc("req/s")
        .draw()
        .map_err(|e| err(&e))?;
    if !fig.capacity.is_empty() {
        chart
            .draw_series(DashedLineSeries::new(
                fig.capacity
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (i as f64 + 0.5, *c)),
                6,
                4,
                BLACK.stroke_width(1),
            ))
            .map_err(|e| err(&e))?
            .label("backend capacity")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK));
    }
    for (i, s) in fig.series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                s.goodput
                    .iter()
                    .enumerate()
                    .map(|(t, v)| (t as f64 + 0.5, *v)),
                c.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(&s.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(|e| err(&e))?;

    // p99 latency, log scale: collapse is orders of magnitude.
    let max_p99 = fig
        .series
        .iter()
        .flat_map(|s| s.p99_ms.iter().flatten().copied())
        .fold(10.0f64, f64::max)
        * 1.5;
    let mut chart = ChartBuilder::on(&panels[1])
        .caption(&fig.latency_caption, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..seconds, (1f64..max_p99).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("second")
        .y_desc("ms")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, s) in fig.series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = s
            .p99_ms
            .iter()
            .enumerate()
            .filter_map(|(t, v)| v.map(|v| (t as f64 + 0.5, v.max(1.0))))
            .collect();
        chart
            .draw_series(LineSeries::new(points, c.stroke_width(2)))
            .map_err(|e| err(&e))?;
    }

    // The gate's limit.
    let max_limit = fig
        .series
        .iter()
        .flat_map(|s| s.limit.iter().flatten().copied())
        .fold(4.0f64, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(&panels[2])
        .caption(&fig.limit_caption, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..seconds, 0f64..max_limit)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("second")
        .y_desc("limit")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, s) in fig.series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = s
            .limit
            .iter()
            .enumerate()
            .filter_map(|(t, v)| v.map(|v| (t as f64 + 0.5, v)))
            .collect();
        if !points.is_empty() {
            chart
                .draw_series(LineSeries::new(points, c.stroke_width(2)))
                .map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Writes `stem.svg` and `stem.png` into `dir` and returns both paths.
pub fn write(fig: &Figure, dir: &Path, stem: &str) -> anyhow::Result<Vec<PathBuf>> {
    register_font();
    std::fs::create_dir_all(dir)?;
    let size = (1100, 1000);
    let svg = dir.join(format!("{stem}.svg"));
    draw(SVGBackend::new(&svg, size).into_drawing_area(), fig)?;
    let png = dir.join(format!("{stem}.png"));
    draw(BitMapBackend::new(&png, size).into_drawing_area(), fig)?;
    Ok(vec![svg, png])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_and_a_png_with_every_target() {
        let dir = std::env::temp_dir().join(format!("floodwall-plot-{}", std::process::id()));
        let fig = Figure {
            title: "test".into(),
            goodput_caption: GOODPUT_CAPTION.into(),
            latency_caption: LATENCY_CAPTION.into(),
            limit_caption: LIMIT_CAPTION.into(),
            capacity: vec![400.0; 10],
            series: vec![
                Series {
                    name: "direct".into(),
                    goodput: (0..10).map(|i| 400.0 - 40.0 * i as f64).collect(),
                    p99_ms: (0..10).map(|i| Some(20.0 * (i + 1) as f64)).collect(),
                    limit: vec![None; 10],
                },
                Series {
                    name: "floodwall".into(),
                    goodput: vec![390.0; 10],
                    p99_ms: vec![Some(25.0); 10],
                    limit: vec![Some(10.0); 10],
                },
            ],
        };
        let paths = write(&fig, &dir, "t").unwrap();
        let svg = std::fs::read_to_string(&paths[0]).unwrap();
        assert!(
            svg.contains("direct") && svg.contains("floodwall"),
            "legend names every target"
        );
        let png = std::fs::read(&paths[1]).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert!(png.len() > 10_000, "a real picture, {} bytes", png.len());
        let _ = std::fs::remove_dir_all(dir);
    }
}
