//! A fixed limit: the HAProxy `maxconn` / nginx `limit_conn` baseline.

use super::{Limit, Sample};
use crate::clock::Nanos;

/// A limit that never moves. Samples are ignored.
///
/// This is what `--limit N` pins, and the baseline every adaptive algorithm
/// is benchmarked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedLimit {
    limit: usize,
}

impl FixedLimit {
    /// A fixed limit of `limit`, raised to 1 if zero: a limit of zero would
    /// refuse everything forever, which no configuration means.
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
        }
    }
}

impl Limit for FixedLimit {
    fn limit(&self) -> usize {
        self.limit
    }

    fn on_sample(&self, _now: Nanos, _sample: &Sample) -> usize {
        self.limit
    }

    fn name(&self) -> &'static str {
        "fixed"
    }

    fn is_adaptive(&self) -> bool {
        false
    }
}
