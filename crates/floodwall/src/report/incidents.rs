//! Incident windows from a rejection-rate series: the spans where the rate
//! was above a threshold, merged when the gap between two is short, each
//! with its start, length and peak. Pure, so it is tested on numbers.
//!
//! The Phoenix WIP-gate article's tax script counted the *samples* of an
//! instant query above its threshold as incidents, so one long incident
//! scraped often read as many and two incidents between queries as none.
//! Here a range query gives the rate at every step of the period, and an
//! incident is a run of steps above the threshold.

use serde::Serialize;

/// One incident: from `start` (unix seconds, the first step above the
/// threshold) for `seconds`, peaking at `peak` rejections a second.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    /// The first step above the threshold, unix seconds.
    pub start: f64,
    /// How long it lasted: from its first step above the threshold to the
    /// end of its last (one step past it).
    pub seconds: f64,
    /// The highest rate within it.
    pub peak: f64,
}

/// The windows of `points` ((unix seconds, rate), oldest first, one per
/// `step` seconds; a missing step ends a run) where the rate was above
/// `threshold`, two windows less than `merge_gap` seconds apart merged.
pub fn windows(points: &[(f64, f64)], threshold: f64, step: f64, merge_gap: f64) -> Vec<Window> {
    let mut out: Vec<Window> = Vec::new();
    // The run being built: (start, last step above, peak).
    let mut run: Option<(f64, f64, f64)> = None;
    let mut prev_t = f64::NEG_INFINITY;
    let close = |run: &mut Option<(f64, f64, f64)>, out: &mut Vec<Window>| {
        if let Some((start, last, peak)) = run.take() {
            let end = last + step;
            match out.last_mut() {
                Some(w) if start - (w.start + w.seconds) < merge_gap => {
                    w.seconds = end - w.start;
                    w.peak = w.peak.max(peak);
                }
                _ => out.push(Window {
                    start,
                    seconds: end - start,
                    peak,
                }),
            }
        }
    };
    for &(t, v) in points {
        // A hole in the series (no data) ends a run.
        if t - prev_t > step * 1.5 {
            close(&mut run, &mut out);
        }
        prev_t = t;
        if v > threshold {
            run = Some(match run {
                Some((start, _, peak)) => (start, t, peak.max(v)),
                None => (t, t, v),
            });
        } else {
            close(&mut run, &mut out);
        }
    }
    close(&mut run, &mut out);
    out
}

/// The seconds of `points` (one per `step`) whose value is 1, the time a
/// `… <= bool …` condition held.
pub fn seconds_true(points: &[(f64, f64)], step: f64) -> f64 {
    points.iter().filter(|(_, v)| *v >= 1.0).count() as f64 * step
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[f64]) -> Vec<(f64, f64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (1000.0 + i as f64, *v))
            .collect()
    }

    #[test]
    fn runs_above_the_threshold_are_windows() {
        let p = series(&[0.0, 5.0, 20.0, 12.0, 0.0, 0.0, 0.0, 30.0, 0.0]);
        let w = windows(&p, 1.0, 1.0, 2.0);
        assert_eq!(
            w,
            [
                Window {
                    start: 1001.0,
                    seconds: 3.0,
                    peak: 20.0
                },
                Window {
                    start: 1007.0,
                    seconds: 1.0,
                    peak: 30.0
                },
            ]
        );
    }

    #[test]
    fn a_short_gap_merges_two_runs() {
        let p = series(&[5.0, 5.0, 0.0, 9.0, 0.0]);
        let w = windows(&p, 1.0, 1.0, 2.0);
        assert_eq!(
            w,
            [Window {
                start: 1000.0,
                seconds: 4.0,
                peak: 9.0
            }]
        );
        // A gap at least merge_gap long keeps them apart.
        assert_eq!(windows(&p, 1.0, 1.0, 1.0).len(), 2);
    }

    #[test]
    fn at_the_threshold_is_not_above_it_and_nothing_is_no_window() {
        assert!(windows(&series(&[1.0, 1.0]), 1.0, 1.0, 0.0).is_empty());
        assert!(windows(&[], 1.0, 1.0, 0.0).is_empty());
    }

    #[test]
    fn a_hole_in_the_data_ends_a_run() {
        let p = [(0.0, 5.0), (1.0, 5.0), (10.0, 5.0)];
        assert_eq!(windows(&p, 1.0, 1.0, 0.0).len(), 2);
    }

    #[test]
    fn time_true_counts_steps() {
        assert_eq!(seconds_true(&series(&[1.0, 0.0, 1.0, 1.0]), 60.0), 180.0);
    }
}
