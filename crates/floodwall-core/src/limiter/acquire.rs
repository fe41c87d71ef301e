//! The `Acquire` future: admission that may wait in the queue.
//!
//! It makes no decision of its own. On its first poll it asks the limiter's
//! one admission decision (the same as [`Limiter::try_acquire`]'s), which
//! admits, refuses, or queues it; after that it only watches its waiter.

use super::classes::ClassId;
use super::limiter::{Limiter, Request, Verdict};
use super::permit::Permit;
use super::queue::Waiter;
use super::rejection::Rejection;
use super::tenants::TenantKey;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

impl Limiter {
    /// Admits `req`, waiting in the queue if one is configured and the gate
    /// is full. The future resolves at once when there is no queue. Dropping
    /// it (client gone) removes the waiter; on a deadline, call
    /// [`Acquire::timed_out`] to get the `queue_timeout` refusal.
    // Here rather than in limiter.rs, beside the future it returns, so that
    // the limiter does not depend on its own future.
    pub fn acquire(self: &Arc<Self>, req: &Request<'_>) -> Acquire {
        Acquire {
            limiter: self.clone(),
            class: req.class,
            tenant: self.tenant_key(req.tenant),
            stage: Stage::Start,
        }
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
    /// Gives up waiting and returns the `queue_timeout` refusal. If a slot
    /// was granted at the last moment it is released.
    pub fn timed_out(mut self) -> Rejection {
        self.leave();
        self.limiter.queue_timed_out(self.class, self.tenant)
    }

    fn leave(&mut self) {
        if let Stage::Queued(w) = std::mem::replace(&mut self.stage, Stage::Done) {
            self.limiter.leave_queue(&w);
        }
    }

    fn start(&mut self, cx: &mut Context<'_>) -> Poll<Result<Permit, Rejection>> {
        let l = &self.limiter;
        match l.decide(self.class, self.tenant, None, l.now(), Some(cx.waker())) {
            Verdict::Admit(p) => Poll::Ready(Ok(p)),
            Verdict::Refuse(r) => Poll::Ready(Err(r)),
            Verdict::Queued(w) => {
                self.stage = Stage::Queued(w);
                self.poll_queued(cx)
            }
        }
    }

    fn poll_queued(&mut self, cx: &mut Context<'_>) -> Poll<Result<Permit, Rejection>> {
        let Stage::Queued(w) = &self.stage else {
            unreachable!("poll_queued outside the queue")
        };
        let p = std::task::ready!(w.poll(cx));
        self.stage = Stage::Done;
        Poll::Ready(Ok(p))
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
