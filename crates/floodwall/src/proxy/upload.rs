//! The client's request body, read so that a slow or broken upload is the
//! client's problem: it never holds an admission slot for long, and it is
//! never blamed on the upstream.
//!
//! Two phases:
//!
//! 1. **Before admission** ([`Upload::prefetch`]), the first
//!    `server.request_buffer` bytes (or the whole body, if smaller) are read
//!    into memory. A client must prove it can send before it takes a slot:
//!    twenty uploads at one byte a second are cut here with 408 and never
//!    reach the limiter. nginx buffers whole bodies by default
//!    (`proxy_request_buffering`, spilling to disk); Envoy streams unless
//!    its buffer filter is on. floodwall buffers a bounded head, so memory
//!    stays bounded per connection and large uploads still stream.
//! 2. **After admission**, the rest streams to the upstream, still under
//!    the rate rule, which restarts at admission so that a fast head earns
//!    no credit for a slow tail.
//!
//! The rate rule is Apache `mod_reqtimeout`'s (`body=20,MinRate=500`): the
//! body must be complete within `server.body_timeout`, extended by one
//! second for every `server.body_min_rate` bytes received. A steady slow
//! trickle is cut as surely as a silent client; a large upload at any
//! reasonable speed is never cut.
//!
//! A body that fails to parse (invalid chunked framing) or is cut short is
//! [`Fault::Malformed`]; one that is too slow is [`Fault::TooSlow`]. The
//! request path reads the fault from an [`UploadWatch`] and answers 400 or
//! 408 without recording anything against the upstream.

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// The client-side body limits, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    /// How long a body may take, before the rate allowance
    /// (`server.body_timeout`).
    pub timeout: Duration,
    /// Bytes per second that earn one more second (`server.body_min_rate`).
    pub min_rate: u64,
    /// How much of a body is read before admission
    /// (`server.request_buffer`).
    pub buffer: usize,
}

/// Why an upload failed. Both are the client's doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The body arrived slower than the rate rule allows.
    TooSlow,
    /// The body's framing is invalid, or the client stopped sending before
    /// its end.
    Malformed,
}

/// What the body and the request path share.
#[derive(Debug, Default)]
struct Shared {
    /// 0: none; 1: [`Fault::TooSlow`]; 2: [`Fault::Malformed`].
    fault: AtomicU8,
    /// The whole body has been read from the client.
    sent: AtomicBool,
    sent_notify: Notify,
}

impl Shared {
    fn fail(&self, fault: Fault) {
        let code = match fault {
            Fault::TooSlow => 1,
            Fault::Malformed => 2,
        };
        let _ = self
            .fault
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
    }

    fn mark_sent(&self) {
        if !self.sent.swap(true, Ordering::AcqRel) {
            self.sent_notify.notify_one();
        }
    }
}

/// The request path's view of an [`Upload`] it handed to the upstream
/// client: whether the body has been sent, and why it failed.
#[derive(Debug, Clone)]
pub struct UploadWatch(Option<Arc<Shared>>);

impl UploadWatch {
    /// Waits until the client has sent the whole body (at once for a
    /// request without one). The upstream's response timeout runs from
    /// here: it bounds the upstream, not the client's upload.
    pub async fn sent(&self) {
        if let Some(s) = &self.0 {
            while !s.sent.load(Ordering::Acquire) {
                s.sent_notify.notified().await;
            }
        }
    }

    /// The client's fault, if the upload failed.
    pub fn fault(&self) -> Option<Fault> {
        match self.0.as_ref()?.fault.load(Ordering::Acquire) {
            1 => Some(Fault::TooSlow),
            2 => Some(Fault::Malformed),
            _ => None,
        }
    }
}

/// The client's request body under the rate rule, with its first bytes
/// possibly read ahead (see the module doc).
#[derive(Debug)]
pub struct Upload {
    inner: Incoming,
    /// Frames read by [`Upload::prefetch`], not yet handed on.
    head: VecDeque<Frame<Bytes>>,
    /// `None` for a request without a body: nothing to time or watch.
    state: Option<Box<Timing>>,
}

#[derive(Debug)]
struct Timing {
    limits: UploadLimits,
    shared: Arc<Shared>,
    /// When the current phase began, and the bytes received in it.
    since: Instant,
    received: u64,
    deadline: Pin<Box<Sleep>>,
    ended: bool,
}

impl Timing {
    fn deadline(&self) -> Instant {
        let allowance = Duration::from_secs(self.received / self.limits.min_rate.max(1));
        self.since + self.limits.timeout + allowance
    }

    /// Starts a phase at `now`: the rate rule counts from zero again.
    fn restart(&mut self, now: Instant) {
        self.since = now;
        self.received = 0;
        let d = self.deadline();
        self.deadline.as_mut().reset(d);
    }
}

impl Upload {
    /// Wraps a client body. A body that is already known to be empty costs
    /// nothing further.
    pub fn new(inner: Incoming, limits: UploadLimits) -> Self {
        let state = (!inner.is_end_stream()).then(|| {
            let now = Instant::now();
            Box::new(Timing {
                limits,
                shared: Arc::new(Shared::default()),
                since: now,
                received: 0,
                deadline: Box::pin(tokio::time::sleep_until(now + limits.timeout)),
                ended: false,
            })
        });
        Self {
            inner,
            head: VecDeque::new(),
            state,
        }
    }

    /// The handle the request path keeps.
    pub fn watch(&self) -> UploadWatch {
        UploadWatch(self.state.as_ref().map(|t| t.shared.clone()))
    }

    /// Phase 1: reads until the body ends or `request_buffer` bytes are
    /// held, under the rate rule. Then the rule restarts for phase 2.
    pub async fn prefetch(&mut self) -> Result<(), Fault> {
        let Some(limit) = self.state.as_ref().map(|t| t.limits.buffer) else {
            return Ok(());
        };
        let mut held = 0usize;
        while held < limit {
            match poll_fn(|cx| self.poll_client(cx)).await {
                Some(Ok(frame)) => {
                    held += frame.data_ref().map_or(0, Bytes::len);
                    self.head.push_back(frame);
                }
                Some(Err(fault)) => return Err(fault),
                None => break,
            }
        }
        if let Some(t) = &mut self.state {
            if !t.ended {
                t.restart(Instant::now());
            }
        }
        Ok(())
    }

    /// One frame from the client under the rate rule; `None` at the end.
    fn poll_client(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Fault>>> {
        let Some(t) = self.state.as_deref_mut() else {
            return Poll::Ready(None);
        };
        if t.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    t.received += data.len() as u64;
                    let d = t.deadline();
                    if d != t.deadline.deadline() {
                        t.deadline.as_mut().reset(d);
                    }
                }
                if self.inner.is_end_stream() {
                    t.ended = true;
                    t.shared.mark_sent();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                t.ended = true;
                t.shared.mark_sent();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::debug!(error = %e, "client request body failed");
                t.ended = true;
                t.shared.fail(Fault::Malformed);
                Poll::Ready(Some(Err(Fault::Malformed)))
            }
            Poll::Pending => match t.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    t.ended = true;
                    t.shared.fail(Fault::TooSlow);
                    Poll::Ready(Some(Err(Fault::TooSlow)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fault::TooSlow => "the client sent its request body too slowly",
            Fault::Malformed => "the client's request body is malformed or cut short",
        })
    }
}

impl std::error::Error for Fault {}

impl HttpBody for Upload {
    type Data = Bytes;
    // Spelled out rather than `body::BoxError`, so that this file, which
    // the upstream pool sends, does not depend on the response side.
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(frame) = this.head.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        this.poll_client(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.state.as_ref().is_none_or(|t| t.ended)
    }

    fn size_hint(&self) -> SizeHint {
        let held: u64 = self
            .head
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        match &self.state {
            None => SizeHint::with_exact(0),
            Some(t) if t.ended => SizeHint::with_exact(held),
            Some(_) => {
                let inner = self.inner.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + held);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + held);
                }
                hint
            }
        }
    }
}
