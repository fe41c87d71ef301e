//! Response bodies: the one type every proxy response has, and the
//! upstream body that carries the request's permit.
//!
//! The upstream's work is done when its response body has been read, not
//! when its headers arrive, so the slot is held until the body ends (or is
//! dropped, when the client goes away mid-stream).

use crate::distributed::Slot;
use floodwall_core::{Outcome, Permit};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use prometheus_client::metrics::histogram::Histogram;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// The body type of every response the proxy returns: the upstream's body
/// streamed through, or a small body floodwall wrote itself.
pub type Body = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;

/// The error type of [`Body`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    /// The upstream body, streamed through, with the permit riding along.
    ///
    /// At end of stream the outcome decided from the status is recorded and
    /// the permit released. A body dropped before its end releases the
    /// permit with no outcome, which counts as `ignored`.
    pub struct PermitBody {
        #[pin]
        inner: Incoming,
        permit: Option<Permit>,
        outcome: Outcome,
        started: Instant,
        duration: Histogram,
        // Strict distributed mode: the global slot, released with the
        // permit.
        slot: Option<Slot>,
    }

    impl PinnedDrop for PermitBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(mut permit) = this.permit.take() {
                // hyper stops polling once `is_end_stream` says so (always
                // for an empty body), so a complete body may end here.
                if this.inner.is_end_stream() {
                    permit.record(*this.outcome);
                }
                this.duration.observe(this.started.elapsed().as_secs_f64());
            }
        }
    }
}

impl PermitBody {
    /// Wraps `inner`; `outcome` is recorded if the body completes.
    pub fn new(
        inner: Incoming,
        permit: Permit,
        outcome: Outcome,
        started: Instant,
        duration: Histogram,
        slot: Option<Slot>,
    ) -> Self {
        Self {
            inner,
            permit: Some(permit),
            outcome,
            started,
            duration,
            slot,
        }
    }
}

impl HttpBody for PermitBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let res = this.inner.as_mut().poll_frame(cx);
        let finished = match &res {
            Poll::Ready(None) => Some(*this.outcome),
            Poll::Ready(Some(Err(_))) => Some(Outcome::Error),
            // With a known length the last frame ends the stream and hyper
            // will not poll again.
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => Some(*this.outcome),
            _ => None,
        };
        if let Some((outcome, mut permit)) = finished.and_then(|o| Some((o, this.permit.take()?))) {
            permit.record(outcome);
            this.duration.observe(this.started.elapsed().as_secs_f64());
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
