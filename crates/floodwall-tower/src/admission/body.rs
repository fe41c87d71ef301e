//! The response body that carries the permit to its end.
//!
//! An admitted request holds its slot until its response body has ended,
//! not until its headers are out: a streaming response is work in progress
//! until its last frame, and a limit that frees the slot at the headers
//! admits more streams than the service can feed (tower's
//! `ConcurrencyLimit` does that). This is the in-process twin of the
//! gateway's `PermitBody` (`proxy/body.rs`), and it records outcomes the
//! same way:
//!
//! - the body ends: the outcome its status implied (see
//!   [`outcome_of`](super::outcome_of));
//! - the body fails mid-stream: [`Outcome::Error`];
//! - the body is dropped before its end (the client left or stopped
//!   reading): nothing is recorded, so the permit reports
//!   [`Outcome::Ignored`]. A client leaving says nothing about the
//!   service's capacity.

use bytes::Bytes;
use floodwall_core::{Outcome, Permit};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project! {
    /// The body of every response an admission service returns: the inner
    /// service's body holding the request's permit until it ends, or the
    /// JSON body of a refusal.
    pub struct PermitBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Admitted {
            #[pin]
            body: B,
            finish: Option<(Permit, Outcome)>,
        },
        Refusal {
            bytes: Option<Bytes>,
        },
    }
}

impl<B> std::fmt::Debug for PermitBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Admitted { finish, .. } => f
                .debug_struct("PermitBody")
                .field("holds_permit", &finish.is_some())
                .finish_non_exhaustive(),
            Kind::Refusal { .. } => f.write_str("PermitBody(refusal)"),
        }
    }
}

impl<B: Body> PermitBody<B> {
    /// `body`, releasing `permit` with `outcome` when it ends. An empty
    /// body has ended already: the permit is released here.
    pub(crate) fn admitted(body: B, mut permit: Permit, outcome: Outcome) -> Self {
        let finish = if body.is_end_stream() {
            permit.record(outcome);
            None
        } else {
            // Dropped before the end: ignored.
            permit.record(Outcome::Ignored);
            Some((permit, outcome))
        };
        Self {
            kind: Kind::Admitted { body, finish },
        }
    }
}

impl<B> PermitBody<B> {
    /// A refusal's body: the JSON bytes, or for a gRPC refusal none (an
    /// empty body has ended already, so the status goes out as one HEADERS
    /// frame, gRPC's trailers-only response).
    pub(crate) fn refusal(bytes: Bytes) -> Self {
        let bytes = (!bytes.is_empty()).then_some(bytes);
        Self {
            kind: Kind::Refusal { bytes },
        }
    }

    /// Whether this body still holds its request's slot.
    pub fn holds_permit(&self) -> bool {
        matches!(
            &self.kind,
            Kind::Admitted {
                finish: Some(_),
                ..
            }
        )
    }
}

fn release(finish: &mut Option<(Permit, Outcome)>, ok: bool) {
    if let Some((mut permit, outcome)) = finish.take() {
        permit.record(if ok { outcome } else { Outcome::Error });
    }
}

impl<B> Body for PermitBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Admitted { mut body, finish } => {
                let polled = std::task::ready!(body.as_mut().poll_frame(cx));
                match &polled {
                    None => release(finish, true),
                    Some(Err(_)) => release(finish, false),
                    // Release before handing on the last frame, so the slot
                    // is free before the client can see the end.
                    Some(Ok(_)) if body.is_end_stream() => release(finish, true),
                    Some(Ok(_)) => {}
                }
                Poll::Ready(polled)
            }
            KindProj::Refusal { bytes } => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Admitted { body, .. } => body.is_end_stream(),
            Kind::Refusal { bytes } => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Admitted { body, .. } => body.size_hint(),
            Kind::Refusal { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
