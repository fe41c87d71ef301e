//! The bulkhead: a concurrency cap on one resource a service calls.
//!
//! A bulkhead keeps one slow dependency from taking every worker: each use
//! of the resource holds a ticket, and when none is left the call is
//! refused at once ([`BulkheadFull`], reason `bulkhead_full`) instead of
//! waiting. This follows Semian's bulkheads as the Shopify engineering
//! article "Tuning bulkheads and circuit breakers" describes them: a
//! resource has `tickets`, or a `quota` (a fraction of the workers that
//! share the resource, so the cap scales as workers are added). There is
//! no queue, on purpose: "bulkheads and connection pools with no queueing
//! are effectively the same thing", and a queue in front of a slow
//! dependency is exactly what a bulkhead exists to avoid.
//!
//! Share one `Arc<Bulkhead>` between every caller of the same resource:
//! that is the point, two routes calling one slow upstream must not get a
//! cap each.
//!
//! The count is one atomic: taking a ticket is a compare-and-swap that
//! never passes the cap, giving it back a decrement in [`BulkheadPermit`]'s
//! `Drop`, so a cancelled, timed-out or panicking call gives its ticket
//! back by being dropped.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How many tickets a bulkhead has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Capacity {
    /// A fixed number of concurrent uses (Semian's `tickets`).
    Tickets(usize),
    /// A fraction of what the resource can take, `ceil(quota * of)`, at
    /// least 1 (Semian's `quota`, where `of` is the worker count). `of` can
    /// be changed while running ([`Bulkhead::set_quota_of`]), e.g. as
    /// replicas come and go.
    Quota {
        /// The fraction, in `(0, 1]`.
        quota: f64,
        /// What the fraction is of.
        of: usize,
    },
}

/// Why a [`Capacity`] was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkheadConfigError(pub String);

impl fmt::Display for BulkheadConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BulkheadConfigError {}

/// The refusal of a bulkhead with no ticket left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkheadFull {
    tickets: usize,
}

impl BulkheadFull {
    /// The reason's wire name.
    pub const REASON: &'static str = "bulkhead_full";

    /// The bulkhead's ticket count when it refused.
    pub fn tickets(&self) -> usize {
        self.tickets
    }
}

impl fmt::Display for BulkheadFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bulkhead_full (all {} tickets in use)", self.tickets)
    }
}

impl std::error::Error for BulkheadFull {}

/// A concurrency cap on one resource (see the module doc).
#[derive(Debug)]
pub struct Bulkhead {
    name: String,
    tickets: AtomicUsize,
    quota: Option<f64>,
    in_use: AtomicUsize,
}

fn quota_tickets(quota: f64, of: usize) -> usize {
    ((quota * of as f64).ceil() as usize).max(1)
}

impl Bulkhead {
    /// A bulkhead named `name` (the resource, as events and metrics label
    /// it) with `capacity`.
    pub fn new(
        name: impl Into<String>,
        capacity: Capacity,
    ) -> Result<Arc<Self>, BulkheadConfigError> {
        let (tickets, quota) = match capacity {
            Capacity::Tickets(0) => {
                return Err(BulkheadConfigError(
                    "tickets: must be at least 1 (a bulkhead of 0 refuses everything)".into(),
                ))
            }
            Capacity::Tickets(n) => (n, None),
            Capacity::Quota { quota, of } => {
                if !(quota > 0.0 && quota <= 1.0) {
                    return Err(BulkheadConfigError(format!(
                        "quota: must be in (0, 1] (got {quota})"
                    )));
                }
                (quota_tickets(quota, of), Some(quota))
            }
        };
        Ok(Arc::new(Self {
            name: name.into(),
            tickets: AtomicUsize::new(tickets),
            quota,
            in_use: AtomicUsize::new(0),
        }))
    }

    /// The resource's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ticket count now.
    pub fn tickets(&self) -> usize {
        self.tickets.load(Ordering::Relaxed)
    }

    /// Tickets in use now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Acquire)
    }

    /// For a quota bulkhead, recomputes the tickets as `ceil(quota * of)`;
    /// a tickets bulkhead ignores it. Uses already admitted are never cut:
    /// the count drains down to a lower cap as they finish.
    pub fn set_quota_of(&self, of: usize) {
        if let Some(q) = self.quota {
            self.tickets.store(quota_tickets(q, of), Ordering::Relaxed);
        }
    }

    /// Takes a ticket, or refuses at once when none is left.
    pub fn try_acquire(self: &Arc<Self>) -> Result<BulkheadPermit, BulkheadFull> {
        let cap = self.tickets();
        let mut cur = self.in_use.load(Ordering::Relaxed);
        loop {
            if cur >= cap {
                return Err(BulkheadFull { tickets: cap });
            }
            match self.in_use.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Ok(BulkheadPermit {
                        bulkhead: self.clone(),
                    })
                }
                Err(seen) => cur = seen,
            }
        }
    }
}

/// One ticket of a [`Bulkhead`]; dropping it gives the ticket back.
#[must_use = "dropping a bulkhead permit gives its ticket back at once"]
#[derive(Debug)]
pub struct BulkheadPermit {
    bulkhead: Arc<Bulkhead>,
}

impl BulkheadPermit {
    /// The bulkhead this ticket is of.
    pub fn bulkhead(&self) -> &Arc<Bulkhead> {
        &self.bulkhead
    }
}

impl Drop for BulkheadPermit {
    fn drop(&mut self) {
        self.bulkhead.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_its_tickets_and_takes_them_back_on_drop() {
        let b = Bulkhead::new("db", Capacity::Tickets(2)).unwrap();
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        let full = b.try_acquire().unwrap_err();
        assert_eq!(full.tickets(), 2);
        assert_eq!(full.to_string(), "bulkhead_full (all 2 tickets in use)");
        assert_eq!(b.in_use(), 2);
        drop(p1);
        assert_eq!(b.in_use(), 1);
        let _p3 = b.try_acquire().unwrap();
        drop(p2);
        assert_eq!(b.in_use(), 1);
    }

    #[test]
    fn a_quota_scales_with_what_it_is_of() {
        let b = Bulkhead::new(
            "db",
            Capacity::Quota {
                quota: 0.25,
                of: 10,
            },
        )
        .unwrap();
        assert_eq!(b.tickets(), 3, "ceil(2.5)");
        b.set_quota_of(1);
        assert_eq!(b.tickets(), 1, "never below one");
        b.set_quota_of(40);
        assert_eq!(b.tickets(), 10);
    }

    #[test]
    fn bad_capacities_are_refused_with_the_key() {
        let e = Bulkhead::new("db", Capacity::Tickets(0)).unwrap_err();
        assert!(e.0.starts_with("tickets:"), "{e}");
        let e = Bulkhead::new("db", Capacity::Quota { quota: 1.5, of: 4 }).unwrap_err();
        assert!(e.0.starts_with("quota:"), "{e}");
        let e = Bulkhead::new(
            "db",
            Capacity::Quota {
                quota: f64::NAN,
                of: 4,
            },
        )
        .unwrap_err();
        assert!(e.0.starts_with("quota:"), "{e}");
    }

    #[test]
    fn concurrent_takers_never_pass_the_cap() {
        let b = Bulkhead::new("db", Capacity::Tickets(3)).unwrap();
        let peak = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..4 {
                let (b, peak) = (b.clone(), peak.clone());
                s.spawn(move || {
                    for _ in 0..10_000 {
                        if let Ok(p) = b.try_acquire() {
                            peak.fetch_max(b.in_use(), Ordering::Relaxed);
                            drop(p);
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::Relaxed) <= 3);
        assert_eq!(b.in_use(), 0);
    }
}
