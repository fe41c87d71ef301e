//! The optional bounded wait queue.
//!
//! Waiters are granted slots by whoever releases one, in FIFO order, or LIFO
//! once the queue is at least the adaptive-LIFO threshold deep. New arrivals
//! do not barge past waiters. A waiter whose future is dropped (client gone,
//! deadline hit) is removed at once; a slot granted to it in the meantime is
//! released by dropping the permit, so nothing leaks.
//!
//! The queue has a lock, but only the slow path takes it: admissions while
//! no one waits never touch it.

use super::classes::ClassId;
use super::limiter::Limiter;
use super::permit::Permit;
use super::rejection::{Reason, Rejection};
use super::tenants::TenantKey;
use crate::clock::Nanos;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

enum WaiterState {
    Waiting(Waker),
    Granted(Permit),
    Taken,
}

struct Waiter {
    class: ClassId,
    tenant: Option<TenantKey>,
    state: Mutex<WaiterState>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The waiters of one limiter.
pub(crate) struct WaitQueue {
    capacity: usize,
    lifo_threshold: usize,
    depth: AtomicUsize,
    waiters: Mutex<VecDeque<Arc<Waiter>>>,
}

impl WaitQueue {
    pub(crate) fn new(capacity: usize, lifo_threshold: usize) -> Self {
        Self {
            capacity,
            lifo_threshold,
            depth: AtomicUsize::new(0),
            waiters: Mutex::new(VecDeque::new()),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn depth(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }

    /// Hands free slots to waiters. Wakers run after the lock is dropped,
    /// and no permit is ever dropped under it (a drop re-enters here).
    pub(crate) fn grant(&self, limiter: &Arc<Limiter>, now: Nanos) {
        let mut wake = Vec::new();
        {
            let mut q = lock(&self.waiters);
            let lifo = q.len() >= self.lifo_threshold;
            let mut i = 0;
            while i < q.len() {
                if limiter.inflight() >= limiter.limit() {
                    break;
                }
                let idx = if lifo { q.len() - 1 - i } else { i };
                let w = &q[idx];
                match limiter.admit(w.class, w.tenant, now) {
                    Ok(permit) => {
                        let w = q.remove(idx).expect("index in range");
                        let mut st = lock(&w.state);
                        if let WaiterState::Waiting(waker) =
                            std::mem::replace(&mut *st, WaiterState::Granted(permit))
                        {
                            wake.push(waker);
                        }
                    }
                    Err(_) => i += 1,
                }
            }
            self.depth.store(q.len(), Ordering::Release);
        }
        wake.into_iter().for_each(Waker::wake);
    }
}

enum Stage {
    Start,
    Queued(Arc<Waiter>),
    Done,
}

/// A pending admission: resolves to a permit or a refusal.
///
/// Drop it to give up (the waiter leaves the queue); when a deadline passes,
/// call [`Acquire::timed_out`] instead, which also counts the refusal.
#[must_use = "an admission does nothing unless polled"]
pub struct Acquire {
    limiter: Arc<Limiter>,
    class: ClassId,
    tenant: Option<TenantKey>,
    stage: Stage,
}

impl Acquire {
    pub(crate) fn new(limiter: Arc<Limiter>, class: ClassId, tenant: Option<TenantKey>) -> Self {
        Self {
            limiter,
            class,
            tenant,
            stage: Stage::Start,
        }
    }

    /// Gives up waiting and returns the `queue_timeout` refusal. If a slot
    /// was granted at the last moment it is released.
    pub fn timed_out(mut self) -> Rejection {
        self.leave();
        self.stage = Stage::Done;
        self.limiter.queue_timed_out(self.class, self.tenant)
    }

    fn leave(&mut self) {
        if let Stage::Queued(w) = std::mem::replace(&mut self.stage, Stage::Done) {
            let queue = &self.limiter.queue;
            {
                let mut q = lock(&queue.waiters);
                q.retain(|x| !Arc::ptr_eq(x, &w));
                queue.depth.store(q.len(), Ordering::Release);
            }
            let granted = std::mem::replace(&mut *lock(&w.state), WaiterState::Taken);
            drop(granted);
        }
    }

    fn start(&mut self, cx: &mut Context<'_>) -> Poll<Result<Permit, Rejection>> {
        let l = self.limiter.clone();
        let now = l.now();
        let queue = &l.queue;
        if l.tenant_over_cap(self.tenant, now) {
            let r = Reason::TenantLimitExceeded;
            return Poll::Ready(Err(l.refuse(self.class, self.tenant, r, now)));
        }
        if queue.depth() == 0 || !l.queue_enabled() {
            match l.admit(self.class, self.tenant, now) {
                Ok(p) => return Poll::Ready(Ok(p)),
                Err(r @ Reason::TenantLimitExceeded) => {
                    return Poll::Ready(Err(l.refuse(self.class, self.tenant, r, now)))
                }
                Err(r) if !l.queue_enabled() => {
                    return Poll::Ready(Err(l.refuse(self.class, self.tenant, r, now)))
                }
                Err(_) => {}
            }
        }
        let w = Arc::new(Waiter {
            class: self.class,
            tenant: self.tenant,
            state: Mutex::new(WaiterState::Waiting(cx.waker().clone())),
        });
        {
            let mut q = lock(&queue.waiters);
            if q.len() >= queue.capacity {
                drop(q);
                return Poll::Ready(Err(l.refuse(
                    self.class,
                    self.tenant,
                    Reason::QueueFull,
                    now,
                )));
            }
            q.push_back(w.clone());
            queue.depth.store(q.len(), Ordering::Release);
        }
        l.note_waiting(self.tenant, now);
        l.note_class_wanting(self.class, now);
        self.stage = Stage::Queued(w);
        // Slots may have been freed between the failed admission and the
        // enqueue; nobody else would grant them.
        queue.grant(&l, now);
        self.poll_queued(cx)
    }

    fn poll_queued(&mut self, cx: &mut Context<'_>) -> Poll<Result<Permit, Rejection>> {
        let Stage::Queued(w) = &self.stage else {
            unreachable!("poll_queued outside the queue")
        };
        let mut st = lock(&w.state);
        match std::mem::replace(&mut *st, WaiterState::Taken) {
            WaiterState::Granted(p) => {
                drop(st);
                self.stage = Stage::Done;
                Poll::Ready(Ok(p))
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

impl Future for Acquire {
    type Output = Result<Permit, Rejection>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.stage {
            Stage::Start => this.start(cx),
            Stage::Queued(_) => this.poll_queued(cx),
            Stage::Done => panic!("Acquire polled after completion"),
        }
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        self.leave();
    }
}
