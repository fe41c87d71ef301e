//! Behaviour of the limiter on a manual clock: limits, classes, tenants,
//! queue, and that no path leaks a slot.

use floodwall_core::limiter::{ClassSpec, LimiterConfig, QueueOrder, QueueSpec, TenantSpec};
use floodwall_core::{
    Clock, FixedLimit, Limiter, ManualClock, Outcome, Permit, Reason, Rejection, Request,
};
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

fn limiter(limit: usize, cfg: LimiterConfig) -> (Arc<Limiter>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    clock.advance(Duration::from_secs(10));
    let l = Limiter::new(cfg, FixedLimit::new(limit), clock.clone() as Arc<dyn Clock>).unwrap();
    (l, clock)
}

/// The default classes, but with batch guaranteed a tenth (by default it
/// has no reservation).
fn batch_reserves_a_tenth() -> LimiterConfig {
    LimiterConfig {
        classes: vec![
            ClassSpec::new("interactive", 0.5),
            ClassSpec::new("batch", 0.1),
        ],
        ..LimiterConfig::default()
    }
}

fn req(l: &Limiter, class: &str) -> Request<'static> {
    Request {
        class: l.class_id(class).unwrap(),
        tenant: None,
    }
}

fn take(l: &Arc<Limiter>, r: Request<'_>, n: usize) -> Vec<Permit> {
    (0..n)
        .map(|_| l.try_acquire(&r).expect("admitted"))
        .collect()
}

fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    std::pin::Pin::new(f).poll(&mut cx)
}

#[test]
fn fixed_limit_refuses_past_the_limit_and_releases_on_drop() {
    let (l, _) = limiter(4, LimiterConfig::default());
    let r = req(&l, "interactive");
    let permits = take(&l, r, 4);
    assert_eq!(l.inflight(), 4);
    let rej = l.try_acquire(&r).unwrap_err();
    assert_eq!(rej.reason, Reason::WipLimitExceeded);
    assert!(rej.retry_after >= Duration::from_secs(1));
    drop(permits);
    assert_eq!(l.inflight(), 0);
    assert!(l.try_acquire(&r).is_ok());
}

#[test]
fn a_share_caps_the_limit_may_be_zero_and_never_cuts_admitted_work() {
    let (l, _) = limiter(8, LimiterConfig::default());
    let r = req(&l, "interactive");
    let held = take(&l, r, 5);
    l.set_share(Some(3));
    assert_eq!(l.limit(), 3);
    assert_eq!(l.snapshot().share, Some(3));
    // Five stay admitted; nothing new until the gate drains below three.
    assert_eq!(l.inflight(), 5);
    assert!(l.try_acquire(&r).is_err());
    drop(held);
    let three = take(&l, r, 3);
    assert!(l.try_acquire(&r).is_err());
    drop(three);
    l.set_share(Some(0));
    assert_eq!(l.limit(), 0);
    assert_eq!(
        l.try_acquire(&r).unwrap_err().reason,
        Reason::WipLimitExceeded
    );
    // A share above the algorithm's limit does not raise it.
    l.set_share(Some(100));
    assert_eq!(l.limit(), 8);
    l.set_share(None);
    assert_eq!(l.share(), None);
    assert_eq!(l.limit(), 8);
}

#[test]
fn outcomes_are_counted_and_unrecorded_drops_are_ignored() {
    let (l, _) = limiter(4, LimiterConfig::default());
    let r = req(&l, "interactive");
    let mut p = l.try_acquire(&r).unwrap();
    p.record(Outcome::Error);
    p.record(Outcome::Success);
    drop(p);
    drop(l.try_acquire(&r).unwrap());
    let s = l.snapshot();
    assert_eq!(s.classes[0].admitted, 2);
    assert_eq!(s.classes[0].outcomes, [1, 0, 0, 1]);
}

#[test]
fn an_abandoned_request_is_a_drop_only_after_twice_the_usual_wait() {
    let (l, clock) = limiter(4, LimiterConfig::default());
    let r = req(&l, "interactive");
    // Before anything completed there is no usual wait: ignored.
    let mut p = l.try_acquire(&r).unwrap();
    p.abandon();
    clock.advance(Duration::from_secs(5));
    drop(p);
    assert_eq!(l.snapshot().classes[0].outcomes, [0, 0, 0, 1]);
    // Requests usually take 20 ms.
    for _ in 0..32 {
        let mut p = l.try_acquire(&r).unwrap();
        clock.advance(Duration::from_millis(20));
        p.record(Outcome::Success);
    }
    // Leaving after 5 ms says nothing about the upstream...
    let mut early = l.try_acquire(&r).unwrap();
    early.abandon();
    clock.advance(Duration::from_millis(5));
    drop(early);
    assert_eq!(l.snapshot().classes[0].outcomes, [32, 0, 0, 2]);
    // ... leaving after 100 ms, five usual waits, is a client timeout.
    let mut late = l.try_acquire(&r).unwrap();
    late.abandon();
    clock.advance(Duration::from_millis(100));
    drop(late);
    assert_eq!(l.snapshot().classes[0].outcomes, [32, 0, 1, 2]);
    // An outcome recorded after abandon wins.
    let mut answered = l.try_acquire(&r).unwrap();
    answered.abandon();
    clock.advance(Duration::from_millis(100));
    answered.record(Outcome::Success);
    drop(answered);
    assert_eq!(l.snapshot().classes[0].outcomes, [33, 0, 1, 2]);
    assert_eq!(l.inflight(), 0);
}

#[test]
fn a_panic_releases_the_slot() {
    let (l, _) = limiter(1, LimiterConfig::default());
    let r = req(&l, "interactive");
    let l2 = l.clone();
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _p = l2.try_acquire(&r).unwrap();
        panic!("handler blew up");
    }));
    assert!(res.is_err());
    assert_eq!(l.inflight(), 0);
    assert_eq!(l.snapshot().classes[0].outcomes[3], 1, "counted as ignored");
}

#[test]
fn batch_cannot_take_an_active_interactive_reservation() {
    // limit 10: interactive reserves 5, batch 1.
    let (l, _) = limiter(10, batch_reserves_a_tenth());
    let (i, b) = (req(&l, "interactive"), req(&l, "batch"));
    let first = l.try_acquire(&i).unwrap(); // interactive is active
    drop(first);
    let batch = take(&l, b, 5);
    assert_eq!(
        l.try_acquire(&b).unwrap_err().reason,
        Reason::WipLimitExceeded,
        "batch stops at limit minus the interactive reservation"
    );
    let inter = take(&l, i, 5);
    assert_eq!(l.inflight(), 10);
    drop((batch, inter));
}

#[test]
fn an_idle_class_lends_its_slots_and_gets_them_back() {
    let (l, clock) = limiter(10, LimiterConfig::default());
    let (i, b) = (req(&l, "interactive"), req(&l, "batch"));
    // Interactive has never arrived: batch may use everything.
    let mut batch = take(&l, b, 10);
    // Interactive arrives and is refused: the gate is full...
    assert_eq!(
        l.try_acquire(&i).unwrap_err().reason,
        Reason::WipLimitExceeded
    );
    // ...but from now on, freed slots go to it, not to batch.
    batch.pop();
    assert_eq!(
        l.try_acquire(&b).unwrap_err().reason,
        Reason::WipLimitExceeded
    );
    let p = l
        .try_acquire(&i)
        .expect("interactive reclaims a freed slot");
    // After the idle window with no interactive arrivals, batch borrows again.
    drop(p);
    clock.advance(Duration::from_secs(2));
    assert!(l.try_acquire(&b).is_ok());
}

fn tenant_cfg(share: f64) -> LimiterConfig {
    LimiterConfig {
        tenant: TenantSpec {
            max_share: share,
            contention_window: Duration::from_secs(1),
        },
        ..LimiterConfig::default()
    }
}

#[test]
fn tenant_cap_applies_only_while_others_are_refused() {
    let (l, clock) = limiter(10, tenant_cfg(0.3));
    let class = l.class_id("interactive").unwrap();
    let hot = Request {
        class,
        tenant: Some("hot"),
    };
    let other = Request {
        class,
        tenant: Some("other"),
    };
    // Alone, the hot tenant may use the whole gate.
    let mut held = take(&l, hot, 10);
    assert!(!l.tenant_contended());
    // Another tenant is refused: now caps apply.
    assert_eq!(
        l.try_acquire(&other).unwrap_err().reason,
        Reason::WipLimitExceeded
    );
    assert!(l.tenant_contended());
    held.pop();
    let rej = l.try_acquire(&hot).unwrap_err();
    assert_eq!(rej.reason, Reason::TenantLimitExceeded);
    let _o = l
        .try_acquire(&other)
        .expect("the freed slot goes to the other tenant");
    // Over its cap of 3, the hot tenant may still take free slots while
    // one share (3) stays free for the others...
    held.truncate(5); // hot 5 + other 1 = 6 in flight, 4 free
    let extra = l
        .try_acquire(&hot)
        .expect("7 in flight leaves a share free");
    // ...but not one of the last share.
    assert_eq!(
        l.try_acquire(&hot).unwrap_err().reason,
        Reason::TenantLimitExceeded
    );
    drop(extra);
    held.truncate(2);
    let anonymous = Request {
        class,
        tenant: None,
    };
    let _more = take(&l, anonymous, 5); // hot 2 + other 1 + 5 = 8 in flight
    assert!(l.try_acquire(&hot).is_ok(), "under its cap, always");
    // The hot tenant's own 429s do not keep contention alive.
    clock.advance(Duration::from_millis(1100));
    assert!(!l.tenant_contended());
}

#[test]
fn a_million_random_tenant_ids_keep_memory_bounded() {
    let (l, _) = limiter(64, tenant_cfg(0.5));
    let class = l.class_id("batch").unwrap();
    let mut held = Vec::new();
    for n in 0..1_000_000u64 {
        let id = format!("t{:016x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let r = Request {
            class,
            tenant: Some(&id),
        };
        if let Ok(p) = l.try_acquire(&r) {
            held.push(p);
        }
        if held.len() >= 48 {
            held.drain(..24);
        }
        assert!(l.snapshot().tenants_active <= 64);
    }
    drop(held);
    assert_eq!(l.snapshot().tenants_active, 0);
    assert_eq!(l.inflight(), 0);
}

fn queue_cfg(capacity: usize, order: QueueOrder) -> LimiterConfig {
    LimiterConfig {
        classes: vec![ClassSpec::new("interactive", 0.0)],
        queue: QueueSpec { capacity, order },
        ..LimiterConfig::default()
    }
}

#[test]
fn queue_is_fifo_bounded_and_forgets_departed_waiters() {
    let (l, _) = limiter(1, queue_cfg(2, QueueOrder::Fifo));
    let r = req(&l, "interactive");
    let first = l.try_acquire(&r).unwrap();
    let mut a = l.acquire(&r);
    let mut b = l.acquire(&r);
    assert!(poll_once(&mut a).is_pending());
    assert!(poll_once(&mut b).is_pending());
    assert_eq!(l.snapshot().queue_depth, 2);
    let mut c = l.acquire(&r);
    match poll_once(&mut c) {
        Poll::Ready(Err(Rejection { reason, .. })) => assert_eq!(reason, Reason::QueueFull),
        other => panic!("expected queue_full, got {other:?}"),
    }
    drop(first);
    let pa = match poll_once(&mut a) {
        Poll::Ready(Ok(p)) => p,
        other => panic!("FIFO: the first waiter gets the slot, got {other:?}"),
    };
    assert!(poll_once(&mut b).is_pending());
    drop(pa);
    // b was granted the slot while nobody polled it; dropping b releases it.
    drop(b);
    assert_eq!(l.inflight(), 0);
    assert_eq!(l.snapshot().queue_depth, 0);
}

#[test]
fn adaptive_lifo_serves_the_newest_once_a_queue_has_formed() {
    let (l, _) = limiter(1, queue_cfg(8, QueueOrder::AdaptiveLifo { threshold: 2 }));
    let r = req(&l, "interactive");
    let first = l.try_acquire(&r).unwrap();
    let mut old = l.acquire(&r);
    let mut new = l.acquire(&r);
    assert!(poll_once(&mut old).is_pending());
    assert!(poll_once(&mut new).is_pending());
    drop(first);
    assert!(poll_once(&mut old).is_pending());
    assert!(matches!(poll_once(&mut new), Poll::Ready(Ok(_))));
}

#[test]
fn timed_out_waiters_are_counted_and_leave_nothing() {
    let (l, _) = limiter(1, queue_cfg(4, QueueOrder::Fifo));
    let r = req(&l, "interactive");
    let first = l.try_acquire(&r).unwrap();
    let mut w = l.acquire(&r);
    assert!(poll_once(&mut w).is_pending());
    let rej = w.timed_out();
    assert_eq!(rej.reason, Reason::QueueTimeout);
    assert_eq!(l.snapshot().queue_depth, 0);
    assert_eq!(l.snapshot().classes[0].rejections, [0, 0, 0, 1]);
    drop(first);
    assert_eq!(l.inflight(), 0);
}

#[test]
fn retry_after_grows_with_the_refusal_rate() {
    let (l, _) = limiter(2, LimiterConfig::default());
    let r = req(&l, "interactive");
    let _held = take(&l, r, 2);
    let first = l.try_acquire(&r).unwrap_err().retry_after;
    for _ in 0..200 {
        let _ = l.try_acquire(&r);
    }
    let later = l.try_acquire(&r).unwrap_err().retry_after;
    assert!(later > first, "{later:?} should exceed {first:?}");
    assert!(later <= Duration::from_secs(30));
}

#[test]
fn an_outside_constraint_caps_the_limit_and_lifts() {
    let (l, _) = limiter(8, LimiterConfig::default());
    let r = req(&l, "interactive");
    let held = take(&l, r, 4);
    l.set_constraint(Some(2));
    assert_eq!(l.limit(), 2);
    assert_eq!(l.algorithm_limit(), 8);
    assert_eq!(l.inflight(), 4, "admitted requests are never cut");
    assert_eq!(
        l.try_acquire(&r).unwrap_err().reason,
        Reason::WipLimitExceeded
    );
    drop(held);
    let two = take(&l, r, 2);
    assert!(l.try_acquire(&r).is_err());
    l.set_constraint(None);
    assert_eq!(l.limit(), 8);
    assert!(l.try_acquire(&r).is_ok());
    drop(two);
}

#[test]
fn under_a_probe_constraint_batch_is_shed_before_interactive() {
    // limit 10: interactive reserves 5, batch 1.
    let (l, _) = limiter(10, batch_reserves_a_tenth());
    let (i, b) = (req(&l, "interactive"), req(&l, "batch"));
    // A constraint at the algorithm's own limit changes no number, only
    // who may borrow.
    l.set_constraint(Some(10));
    let batch = take(&l, b, 1);
    assert_eq!(
        l.try_acquire(&b).unwrap_err().reason,
        Reason::WipLimitExceeded,
        "batch keeps only its own reserved slot while constrained"
    );
    let inter = take(&l, i, 9);
    assert_eq!(l.inflight(), 10, "interactive may use everything else");
    drop((batch, inter));
}

#[test]
fn shared_slots_go_to_a_refused_higher_class_first() {
    // limit 10: interactive reserves 5, batch 1, 4 shared.
    let (l, clock) = limiter(10, batch_reserves_a_tenth());
    let (i, b) = (req(&l, "interactive"), req(&l, "batch"));
    let _inter = take(&l, i, 6);
    let mut batch = take(&l, b, 4);
    // Interactive wants a slot and the gate is full.
    assert_eq!(
        l.try_acquire(&i).unwrap_err().reason,
        Reason::WipLimitExceeded
    );
    assert!(l.snapshot().classes[0].wanting);
    batch.pop();
    assert_eq!(
        l.try_acquire(&b).unwrap_err().reason,
        Reason::WipLimitExceeded,
        "batch may not borrow the freed shared slot while interactive wants it"
    );
    let _p = l.try_acquire(&i).expect("interactive gets it");
    // Batch still has its own reserved slot to use...
    drop(batch);
    let _own = l.try_acquire(&b).expect("batch keeps its reservation");
    // ...and borrows again once interactive has stopped wanting.
    clock.advance(Duration::from_millis(1100));
    let _i2 = l.try_acquire(&i).unwrap(); // interactive stays active, not wanting
    assert!(l.try_acquire(&b).is_ok());
}

#[test]
fn behind_waiters_a_tenant_at_its_cap_is_refused_not_queued() {
    // limit 4, cap 2 per tenant under contention, a queue of 4.
    let cfg = LimiterConfig {
        tenant: TenantSpec {
            max_share: 0.5,
            contention_window: Duration::from_secs(1),
        },
        ..queue_cfg(4, QueueOrder::Fifo)
    };
    let (l, _) = limiter(4, cfg);
    let class = l.class_id("interactive").unwrap();
    let tenant = |t| Request { class, tenant: t };
    let mut hot = take(&l, tenant(Some("hot")), 4);
    // Another tenant finds the gate full and queues: that is contention.
    let mut other = l.acquire(&tenant(Some("other")));
    assert!(poll_once(&mut other).is_pending());
    assert!(l.tenant_contended());
    // The hot tenant, far over its cap, is refused at once...
    let mut again = l.acquire(&tenant(Some("hot")));
    match poll_once(&mut again) {
        Poll::Ready(Err(r)) => assert_eq!(r.reason, Reason::TenantLimitExceeded),
        other => panic!("expected tenant_limit_exceeded, got {other:?}"),
    }
    // ...while a request without a tenant queues behind the waiter.
    let mut anonymous = l.acquire(&tenant(None));
    assert!(poll_once(&mut anonymous).is_pending());
    assert_eq!(l.snapshot().queue_depth, 2);
    hot.pop();
    let _granted = match poll_once(&mut other) {
        Poll::Ready(Ok(p)) => p,
        other => panic!("FIFO: the first waiter gets the slot, got {other:?}"),
    };
    assert!(poll_once(&mut anonymous).is_pending());
    assert_eq!(l.snapshot().classes[0].rejections, [0, 1, 0, 0]);
}

#[test]
fn without_a_queue_acquire_answers_at_once_as_try_acquire_does() {
    let (l, _) = limiter(1, LimiterConfig::default());
    let r = req(&l, "interactive");
    let mut first = l.acquire(&r);
    let held = match poll_once(&mut first) {
        Poll::Ready(Ok(p)) => p,
        other => panic!("admitted at once, got {other:?}"),
    };
    let mut second = l.acquire(&r);
    let by_acquire = match poll_once(&mut second) {
        Poll::Ready(Err(r)) => r,
        other => panic!("refused at once, got {other:?}"),
    };
    let by_try = l.try_acquire(&r).unwrap_err();
    assert_eq!(by_acquire.reason, Reason::WipLimitExceeded);
    assert_eq!(by_try.reason, by_acquire.reason);
    assert_eq!(l.snapshot().classes[0].rejections, [2, 0, 0, 0]);
    drop(held);
    assert_eq!(l.inflight(), 0);
}

/// With no tenant setting (the automatic share): nothing is counted while
/// nobody is refused; once a tenant within its share is refused, one over
/// its share leaves the others their headroom (here one slot, since they
/// hold none yet) and a light tenant takes it; and a tenant alone again
/// gets the whole limit, its own refusals not counting as contention.
#[test]
fn at_the_defaults_a_heavy_tenant_leaves_room_and_a_lone_one_gets_everything() {
    let (l, clock) = limiter(50, LimiterConfig::default());
    let class = l.class_id("interactive").unwrap();
    let t = |id| Request {
        class,
        tenant: Some(id),
    };
    // Requests usually take 10 ms.
    for _ in 0..32 {
        let mut p = l.try_acquire(&t("hot")).unwrap();
        clock.advance(Duration::from_millis(10));
        p.record(Outcome::Success);
    }
    // Uncontended: the table is never touched.
    let hot = take(&l, t("hot"), 50);
    assert_eq!(l.tenants_tracked(), 0);
    assert!(!l.tenant_contended());
    // Another tenant finds the gate full. The slots held were not counted,
    // so that is not judged until two request durations have passed...
    assert_eq!(
        l.try_acquire(&t("small")).unwrap_err().reason,
        Reason::WipLimitExceeded
    );
    assert!(!l.tenant_contended());
    // ...by when the uncounted requests have finished.
    clock.advance(Duration::from_millis(25));
    drop(hot);
    let mut hot = take(&l, t("hot"), 50);
    assert_eq!(l.tenant_inflight("hot"), 50, "counted since the refusal");
    assert_eq!(
        l.try_acquire(&t("small")).unwrap_err().reason,
        Reason::WipLimitExceeded
    );
    assert!(
        l.tenant_contended(),
        "a tenant within its share was refused"
    );
    // The hot tenant, over its share, leaves the headroom free...
    hot.truncate(45);
    let mut more = Vec::new();
    let refused = loop {
        match l.try_acquire(&t("hot")) {
            Ok(p) => more.push(p),
            Err(r) => break r,
        }
    };
    assert_eq!(refused.reason, Reason::TenantLimitExceeded);
    assert_eq!(l.inflight(), 49);
    assert_eq!(l.tenant_headroom("hot"), 1);
    // ...which the light tenant takes.
    let small = l.try_acquire(&t("small")).expect("the headroom is for it");
    assert_eq!(l.tenants_tracked(), 2);
    // The small tenant leaves; a window later the hot tenant is alone and
    // may fill the gate, and finding it full is no contention.
    drop(small);
    clock.advance(Duration::from_millis(1100));
    assert!(!l.tenant_contended());
    let last = l.try_acquire(&t("hot")).expect("alone, the whole limit");
    assert_eq!(l.inflight(), 50);
    for _ in 0..3 {
        assert_eq!(
            l.try_acquire(&t("hot")).unwrap_err().reason,
            Reason::WipLimitExceeded
        );
        clock.advance(Duration::from_millis(15));
    }
    assert!(!l.tenant_contended());
    drop((hot, more, last));
    assert_eq!(l.tenants_tracked(), 0);
    assert_eq!(l.inflight(), 0);
}

/// A tenant given a quota holds at most its cap, whatever the fairness
/// rule says (alone on the gate, where the rule never binds), through
/// `try_acquire` and through the queue; other tenants are untouched, a
/// released slot is the tenant's again, and lifting the cap lifts it.
#[test]
fn a_tenant_quota_caps_that_tenant_only_and_never_leaks() {
    let (l, _) = limiter(10, queue_cfg(8, QueueOrder::Fifo));
    let class = l.class_id("interactive").unwrap();
    let acme = Request {
        class,
        tenant: Some("acme"),
    };
    let beta = Request {
        class,
        tenant: Some("beta"),
    };
    l.set_tenant_quota("acme", Some(3));
    let held = take(&l, acme, 3);
    let rej = l.try_acquire(&acme).unwrap_err();
    assert_eq!(rej.reason, Reason::TenantLimitExceeded);
    // Through the waiting path too: refused at once, not queued behind
    // the others.
    let mut waiting = l.acquire(&acme);
    match poll_once(&mut waiting) {
        Poll::Ready(Err(r)) => assert_eq!(r.reason, Reason::TenantLimitExceeded),
        other => panic!("acme should be refused at its quota: {other:?}"),
    }
    let others = take(&l, beta, 7);
    assert_eq!(l.inflight(), 10);
    drop(others);
    let u = l.observe_tenant_quota("acme").unwrap();
    assert_eq!((u.cap, u.held, u.refused), (3, 3, 2));
    drop(held);
    assert_eq!(l.observe_tenant_quota("acme").unwrap().held, 0, "no leak");
    let again = take(&l, acme, 3);
    l.set_tenant_quota("acme", None);
    let more = take(&l, acme, 2);
    assert_eq!(l.inflight(), 5);
    drop((again, more));
    assert_eq!(l.inflight(), 0);
    assert!(
        l.observe_tenant_quota("beta").is_none(),
        "no entry for others"
    );
}
