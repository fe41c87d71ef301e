//! The optional bounded wait queue.
//!
//! Waiters are granted slots by whoever releases one, in FIFO order, or LIFO
//! once the queue is at least the adaptive-LIFO threshold deep. New arrivals
//! do not barge past waiters. A waiter whose future is dropped (client gone,
//! deadline hit) is removed at once; a slot granted to it in the meantime is
//! released by dropping the permit, so nothing leaks.
//!
//! The queue holds waiters and nothing else: whether a waiter may be
//! admitted is the limiter's decision, passed in as a closure to
//! [`WaitQueue::grant`].
//!
//! The queue has a lock, but only the slow path takes it: admissions while
//! no one waits never touch it.

use super::classes::ClassId;
use super::config::{QueueOrder, QueueSpec};
use super::permit::Permit;
use super::tenants::TenantKey;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

enum WaiterState {
    Waiting(Waker),
    Granted(Permit),
    Taken,
}

/// One queued request.
pub(super) struct Waiter {
    /// The class it asks a slot for.
    pub(super) class: ClassId,
    /// Its tenant, if it carries one.
    pub(super) tenant: Option<TenantKey>,
    state: Mutex<WaiterState>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Waiter {
    /// The permit, once one was granted; otherwise remembers `cx`'s waker.
    /// Called by the waiter's own future only, and never again once it
    /// returned `Ready`.
    pub(super) fn poll(&self, cx: &mut Context<'_>) -> Poll<Permit> {
        let mut st = lock(&self.state);
        match std::mem::replace(&mut *st, WaiterState::Taken) {
            WaiterState::Granted(p) => {
                drop(st);
                Poll::Ready(p)
            }
            WaiterState::Waiting(old) => {
                let waker = if old.will_wake(cx.waker()) {
                    old
                } else {
                    cx.waker().clone()
                };
                *st = WaiterState::Waiting(waker);
                Poll::Pending
            }
            WaiterState::Taken => unreachable!("a queued waiter is never taken"),
        }
    }
}

/// The waiters of one limiter.
pub(super) struct WaitQueue {
    capacity: usize,
    lifo_threshold: usize,
    depth: AtomicUsize,
    waiters: Mutex<VecDeque<Arc<Waiter>>>,
}

impl WaitQueue {
    /// The queue `spec` describes; capacity 0 is no queue.
    pub(super) fn new(spec: &QueueSpec) -> Self {
        let lifo_threshold = match spec.order {
            QueueOrder::Fifo => usize::MAX,
            QueueOrder::AdaptiveLifo { threshold } => threshold.max(1),
        };
        Self {
            capacity: spec.capacity,
            lifo_threshold,
            depth: AtomicUsize::new(0),
            waiters: Mutex::new(VecDeque::new()),
        }
    }

    /// Whether a queue is configured.
    #[inline]
    pub(super) fn is_enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Requests waiting now.
    #[inline]
    pub(super) fn depth(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }

    /// Queues a request that will be woken through `waker`; `None` when the
    /// queue is full.
    pub(super) fn push(
        &self,
        class: ClassId,
        tenant: Option<TenantKey>,
        waker: &Waker,
    ) -> Option<Arc<Waiter>> {
        let w = Arc::new(Waiter {
            class,
            tenant,
            state: Mutex::new(WaiterState::Waiting(waker.clone())),
        });
        let mut q = lock(&self.waiters);
        if q.len() >= self.capacity {
            return None;
        }
        q.push_back(w.clone());
        self.depth.store(q.len(), Ordering::Release);
        Some(w)
    }

    /// Removes `w`, which gives up. A permit granted to it in the meantime
    /// is dropped (its slot released) only after both locks are let go,
    /// since the release re-enters the queue.
    pub(super) fn leave(&self, w: &Arc<Waiter>) {
        {
            let mut q = lock(&self.waiters);
            q.retain(|x| !Arc::ptr_eq(x, w));
            self.depth.store(q.len(), Ordering::Release);
        }
        let granted = std::mem::replace(&mut *lock(&w.state), WaiterState::Taken);
        drop(granted);
    }

    /// Hands free slots to waiters, in queue order, while `has_room` says
    /// the gate is not full; `try_admit` makes the admission decision for
    /// one waiter (a permit, or `None` to pass it over for now). Wakers run
    /// after the lock is dropped, and no permit is ever dropped under it (a
    /// drop re-enters here).
    pub(super) fn grant(
        &self,
        mut has_room: impl FnMut() -> bool,
        mut try_admit: impl FnMut(&Waiter) -> Option<Permit>,
    ) {
        let mut wake = Vec::new();
        {
            let mut q = lock(&self.waiters);
            let lifo = q.len() >= self.lifo_threshold;
            let mut i = 0;
            while i < q.len() {
                if !has_room() {
                    break;
                }
                let idx = if lifo { q.len() - 1 - i } else { i };
                match try_admit(&q[idx]) {
                    Some(permit) => {
                        let w = q.remove(idx).expect("index in range");
                        let mut st = lock(&w.state);
                        if let WaiterState::Waiting(waker) =
                            std::mem::replace(&mut *st, WaiterState::Granted(permit))
                        {
                            wake.push(waker);
                        }
                    }
                    None => i += 1,
                }
            }
            self.depth.store(q.len(), Ordering::Release);
        }
        wake.into_iter().for_each(Waker::wake);
    }
}
