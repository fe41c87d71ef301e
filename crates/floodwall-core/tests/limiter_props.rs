//! Property tests: for any interleaving of acquire, release, drop, queue and
//! clock moves, over any mix of classes and tenants, the limiter's bounds
//! hold exactly and every slot comes back.

use floodwall_core::limiter::{ClassSpec, LimiterConfig, QueueOrder, QueueSpec, TenantSpec};
use floodwall_core::{
    Acquire, Clock, FixedLimit, Limiter, ManualClock, Outcome, Permit, Reason, Request,
};
use proptest::prelude::*;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

const TENANTS: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Debug, Clone)]
enum Op {
    Acquire { class: usize, tenant: Option<usize> },
    Enqueue { class: usize, tenant: Option<usize> },
    Release { idx: usize, outcome: u8 },
    PollWaiters,
    DropWaiter { idx: usize },
    Advance { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let tenant = proptest::option::of(0..TENANTS.len());
    prop_oneof![
        4 => (0..3usize, tenant.clone()).prop_map(|(class, tenant)| Op::Acquire { class, tenant }),
        1 => (0..3usize, tenant).prop_map(|(class, tenant)| Op::Enqueue { class, tenant }),
        3 => (any::<usize>(), 0..5u8).prop_map(|(idx, outcome)| Op::Release { idx, outcome }),
        1 => Just(Op::PollWaiters),
        1 => any::<usize>().prop_map(|idx| Op::DropWaiter { idx }),
        1 => (0..1500u64).prop_map(|ms| Op::Advance { ms }),
    ]
}

struct Held {
    permit: Permit,
    tenant: Option<&'static str>,
}

fn poll(f: &mut Acquire) -> Poll<<Acquire as Future>::Output> {
    std::pin::Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
}

/// Sum over classes other than `c` of the slots they hold or, when active,
/// reserve: what a borrowing admission of `c` must leave alone.
fn others_effective(l: &Limiter, c: usize) -> usize {
    let s = l.snapshot();
    s.classes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != c)
        .map(|(_, o)| {
            if o.active {
                o.inflight.max(o.reserved)
            } else {
                o.inflight
            }
        })
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn bounds_hold_and_slots_return(
        limit in 1usize..24,
        shares in (0u32..5, 0u32..4, 0u32..3),
        tenant_share in prop_oneof![Just(1.0f64), 0.1f64..0.9],
        queue in 0usize..4,
        ops in proptest::collection::vec(op(), 1..160),
    ) {
        let clock = Arc::new(ManualClock::new());
        let cfg = LimiterConfig {
            classes: vec![
                ClassSpec::new("interactive", f64::from(shares.0) / 10.0),
                ClassSpec::new("batch", f64::from(shares.1) / 10.0),
                ClassSpec::new("background", f64::from(shares.2) / 10.0),
            ],
            tenant: TenantSpec { max_share: tenant_share, contention_window: Duration::from_secs(1) },
            queue: QueueSpec { capacity: queue, order: QueueOrder::Fifo },
            ..LimiterConfig::default()
        };
        let l = Limiter::new(cfg, FixedLimit::new(limit), clock.clone() as Arc<dyn Clock>).unwrap();
        let mut held: Vec<Held> = Vec::new();
        let mut waiters: Vec<(Acquire, Option<&'static str>)> = Vec::new();

        for op in ops {
            match op {
                Op::Acquire { class, tenant } => {
                    let tenant = tenant.map(|t| TENANTS[t]);
                    let c = l.class_id(["interactive", "batch", "background"][class]).unwrap();
                    let before = l.snapshot();
                    let in_c = before.classes[class].inflight;
                    let reserved = before.classes[class].reserved;
                    let contended = l.tenant_contended();
                    let t_held = tenant.map_or(0, |t| l.tenant_inflight(t));
                    let cap = l.tenant_cap();
                    let headroom = tenant.map_or(0, |t| l.tenant_headroom(t));
                    let queued = before.queue_depth;
                    let higher_wanting = before.classes[..class].iter().any(|h| h.wanting);
                    let room = if in_c < reserved {
                        before.inflight < limit
                    } else {
                        before.inflight < limit
                            && !higher_wanting
                            && in_c + 1 + others_effective(&l, class) <= limit
                    };
                    let tenant_blocked = matches!((tenant, cap), (Some(_), Some(cap))
                        if contended && t_held >= cap && before.inflight + 1 + headroom > limit);
                    match l.try_acquire(&Request { class: c, tenant }) {
                        Ok(permit) => {
                            prop_assert!(room && !tenant_blocked, "admitted without room");
                            let after = l.snapshot();
                            if after.classes[class].inflight > after.classes[class].reserved {
                                prop_assert!(
                                    after.classes[class].inflight + others_effective(&l, class) <= limit,
                                    "borrowing took an active class's reservation"
                                );
                            }
                            if let (Some(t), Some(cap), true) = (tenant, cap, contended) {
                                prop_assert!(
                                    l.tenant_inflight(t) <= cap || after.inflight + headroom <= limit,
                                    "tenant over its cap took a slot of the others' headroom"
                                );
                            }
                            held.push(Held { permit, tenant });
                        }
                        Err(rej) => {
                            prop_assert!(rej.retry_after >= Duration::from_secs(1));
                            match rej.reason {
                                Reason::TenantLimitExceeded => prop_assert!(tenant_blocked),
                                Reason::WipLimitExceeded => prop_assert!(
                                    !room || tenant_blocked,
                                    "refused with room: queued={queued}"
                                ),
                                other => prop_assert!(false, "try_acquire never queues, got {other}"),
                            }
                        }
                    }
                }
                Op::Enqueue { class, tenant } => {
                    let tenant = tenant.map(|t| TENANTS[t]);
                    let c = l.class_id(["interactive", "batch", "background"][class]).unwrap();
                    let mut fut = l.acquire(&Request { class: c, tenant });
                    match poll(&mut fut) {
                        Poll::Ready(Ok(permit)) => held.push(Held { permit, tenant }),
                        Poll::Ready(Err(rej)) => {
                            if rej.reason == Reason::QueueFull {
                                prop_assert_eq!(l.snapshot().queue_depth, queue);
                            }
                        }
                        Poll::Pending => waiters.push((fut, tenant)),
                    }
                    prop_assert!(l.snapshot().queue_depth <= queue);
                }
                Op::Release { idx, outcome } if !held.is_empty() => {
                    let mut h = held.swap_remove(idx % held.len());
                    if let Some(o) = Outcome::ALL.get(outcome as usize) {
                        h.permit.record(*o);
                    }
                    let _ = h.tenant;
                }
                Op::Release { .. } => {}
                Op::PollWaiters => {
                    let mut still = Vec::new();
                    for (mut w, tenant) in waiters.drain(..) {
                        match poll(&mut w) {
                            Poll::Ready(Ok(permit)) => held.push(Held { permit, tenant }),
                            Poll::Ready(Err(_)) => {}
                            Poll::Pending => still.push((w, tenant)),
                        }
                    }
                    waiters = still;
                }
                Op::DropWaiter { idx } if !waiters.is_empty() => {
                    let (w, _) = waiters.swap_remove(idx % waiters.len());
                    if idx % 2 == 0 { drop(w) } else { let _ = w.timed_out(); }
                }
                Op::DropWaiter { .. } => {}
                Op::Advance { ms } => clock.advance(Duration::from_millis(ms)),
            }
            let s = l.snapshot();
            prop_assert!(s.inflight <= limit, "in flight {} over limit {}", s.inflight, limit);
            prop_assert_eq!(s.inflight, s.classes.iter().map(|c| c.inflight).sum::<usize>());
            prop_assert_eq!(s.inflight, held.len() + granted_unpolled(&l, &held, &waiters));
            prop_assert!(s.tenants_active <= limit);
            prop_assert!(s.queue_depth <= waiters.len());
        }
        drop(waiters);
        drop(held);
        let s = l.snapshot();
        prop_assert_eq!(s.inflight, 0);
        prop_assert_eq!(s.queue_depth, 0);
        prop_assert_eq!(s.tenants_active, 0);
        prop_assert!(s.classes.iter().all(|c| c.inflight == 0));
    }
}

/// Slots granted to waiters that have not been polled since: in flight, but
/// not yet in `held`.
fn granted_unpolled(l: &Limiter, held: &[Held], waiters: &[(Acquire, Option<&str>)]) -> usize {
    let queued = l.snapshot().queue_depth;
    let total = l.inflight();
    let _ = held;
    // Every waiter is either still queued or granted.
    let granted = waiters.len() - queued;
    assert!(granted <= total);
    granted
}
