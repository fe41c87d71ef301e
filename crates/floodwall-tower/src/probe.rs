//! Probes as constraints: cap a limiter from outside the request stream.
//!
//! In the gateway, bottleneck probes (PostgreSQL connections, lock waits,
//! memory) call [`Limiter::set_constraint`] on their interval: the
//! effective limit becomes `min(algorithm, constraint)`. In-process the
//! service can read its bottleneck directly, e.g. how many requests wait
//! for a pooled database connection. [`watch`] runs such a reading on an
//! interval and applies it.

use floodwall_core::Limiter;
use std::sync::Arc;
use std::time::Duration;

/// A reading that caps a limiter: `Some(n)` caps it at `n`, `None` lifts
/// the cap.
pub trait Constraint: Send + Sync + 'static {
    /// The cap now, given the limiter's current effective limit and
    /// in-flight count.
    fn constraint(&self, limiter: &Limiter) -> Option<usize>;
}

impl<F> Constraint for F
where
    F: Fn(&Limiter) -> Option<usize> + Send + Sync + 'static,
{
    fn constraint(&self, limiter: &Limiter) -> Option<usize> {
        self(limiter)
    }
}

/// Applies `probe` to `limiter` every `every`, in a task of its own, until
/// the returned handle is aborted or dropped with
/// [`tokio::task::JoinHandle::abort`]. The cap is lifted when the task
/// stops.
pub fn watch(
    limiter: Arc<Limiter>,
    every: Duration,
    probe: impl Constraint,
) -> tokio::task::JoinHandle<()> {
    struct Lift(Arc<Limiter>);
    impl Drop for Lift {
        fn drop(&mut self) {
            self.0.set_constraint(None);
        }
    }
    tokio::spawn(async move {
        let lift = Lift(limiter);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            lift.0.set_constraint(probe.constraint(&lift.0));
        }
    })
}
