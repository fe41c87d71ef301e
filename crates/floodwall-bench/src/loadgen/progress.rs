//! The progress bar a run draws while it plays.

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar in floodwall's style ("label [=====>   ] 7/20s"). indicatif
/// draws on stderr and stays hidden when stderr is not a terminal.
pub fn progress_bar(label: impl Into<String>) -> ProgressBar {
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len}s")
        .expect("static template is valid")
        .progress_chars("=> ");
    ProgressBar::new(0)
        .with_style(style)
        .with_prefix(label.into())
}
