//! Reconfiguring a running limiter from outside the request path: a
//! config reload in the gateway.
//!
//! Kept apart from `limiter.rs` so the admission path stays one file. A
//! child of the limiter's module (declared at the end of `limiter.rs`),
//! because it reads the limiter's private parts.

use super::Limiter;
use crate::limit::Learned;
use std::sync::Arc;

impl Limiter {
    /// Takes the algorithm's figure again, now: for a limit whose figure
    /// is changed from outside the sample path (an operator reloading a
    /// fixed limit), which a fixed limit has no other way to report, since
    /// the limiter never samples it.
    ///
    /// Nothing else moves: permits in flight, queue waiters, tenant and
    /// class state all stay. A raised limit grants queued waiters at once;
    /// a lowered one never cuts admitted requests, the gate drains down to
    /// it as they finish (as with [`Limiter::set_constraint`]).
    pub fn refresh_limit(self: &Arc<Self>) {
        self.capacity.set_algorithm(self.algorithm.limit());
        if self.queue.depth() > 0 {
            self.grant(|| self.clone(), self.clock.now());
        }
    }

    /// What the algorithm has learned, for a warm start of another
    /// process (see [`Learned`]); `None` if it learns nothing or has not
    /// yet.
    pub fn learned(&self) -> Option<Learned> {
        self.algorithm.learned()
    }

    /// Starts the algorithm from what a previous process learned, before
    /// any request: true if it took it (the same algorithm, and no request
    /// seen yet), and the new limit applies at once.
    pub fn warm_start(self: &Arc<Self>, learned: &Learned) -> bool {
        let warmed = self.algorithm.warm(self.clock.now(), learned);
        if warmed {
            self.refresh_limit();
        }
        warmed
    }
}

#[cfg(test)]
mod tests {
    use crate::clock::{ManualClock, Nanos};
    use crate::limit::{Limit, Sample};
    use crate::limiter::{ClassId, Limiter, LimiterConfig, QueueSpec, Request};
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    /// A fixed limit an operator can change, as the gateway's reload does.
    struct Settable(AtomicUsize);

    impl Limit for Settable {
        fn limit(&self) -> usize {
            self.0.load(Ordering::Relaxed)
        }
        fn on_sample(&self, _: Nanos, _: &Sample) -> usize {
            self.limit()
        }
        fn name(&self) -> &'static str {
            "fixed"
        }
        fn is_adaptive(&self) -> bool {
            false
        }
    }

    #[test]
    fn a_changed_fixed_limit_applies_at_once_and_grants_waiters() {
        let limit = Arc::new(Settable(AtomicUsize::new(2)));
        let config = LimiterConfig {
            queue: QueueSpec {
                capacity: 4,
                ..QueueSpec::default()
            },
            ..LimiterConfig::default()
        };
        let l = Limiter::new(config, limit.clone(), Arc::new(ManualClock::new())).unwrap();
        let req = Request {
            class: ClassId(0),
            tenant: None,
        };
        let held: Vec<_> = (0..2).map(|_| l.try_acquire(&req).unwrap()).collect();
        let mut waiting = Box::pin(l.acquire(&req));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());

        limit.0.store(3, Ordering::Relaxed);
        assert_eq!(l.limit(), 2, "not until refreshed");
        l.refresh_limit();
        assert_eq!(l.limit(), 3);
        let Poll::Ready(Ok(granted)) = waiting.as_mut().poll(&mut cx) else {
            panic!("the raised limit grants the waiter");
        };
        assert_eq!(l.inflight(), 3);

        limit.0.store(1, Ordering::Relaxed);
        l.refresh_limit();
        assert_eq!((l.limit(), l.inflight()), (1, 3), "admitted are not cut");
        drop(held);
        drop(granted);
        assert_eq!(l.inflight(), 0);
        assert!(l.try_acquire(&req).is_ok());
    }
}
