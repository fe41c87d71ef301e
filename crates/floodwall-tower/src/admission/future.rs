//! The response futures of the admission services.

use super::body::PermitBody;
use super::outcome_of;
use super::rejected::{AdmissionError, Dialect, Rejected};
use floodwall_core::{Acquire, Outcome, Permit};
use http::Response;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tower_service::Service;

pin_project! {
    /// The future of [`AdmissionService`](super::AdmissionService): refused
    /// at once, waiting in the limiter's queue, or the inner call holding
    /// its permit.
    pub struct ResponseFuture<S, R>
    where
        S: Service<R>,
    {
        #[pin]
        state: State<S, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, R>
    where
        S: Service<R>,
    {
        Refused {
            rejected: Option<Rejected>,
        },
        Queued {
            acquire: Option<Acquire>,
            #[pin]
            deadline: tokio::time::Sleep,
            service: Option<S>,
            request: Option<R>,
        },
        Called {
            #[pin]
            future: S::Future,
            permit: Option<Permit>,
        },
    }
}

impl<S: Service<R>, R> std::fmt::Debug for ResponseFuture<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Refused { .. } => "refused",
            State::Queued { .. } => "queued",
            State::Called { .. } => "called",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S: Service<R>, R> ResponseFuture<S, R> {
    pub(crate) fn refused(rejected: Rejected) -> Self {
        Self {
            state: State::Refused {
                rejected: Some(rejected),
            },
        }
    }

    pub(crate) fn called(future: S::Future, permit: Permit) -> Self {
        Self {
            state: State::Called {
                future,
                permit: Some(permit),
            },
        }
    }

    pub(crate) fn queued(acquire: Acquire, timeout: Duration, service: S, request: R) -> Self {
        Self {
            state: State::Queued {
                acquire: Some(acquire),
                deadline: tokio::time::sleep(timeout),
                service: Some(service),
                request: Some(request),
            },
        }
    }
}

impl<S, R, RB> Future for ResponseFuture<S, R>
where
    S: Service<R, Response = Response<RB>>,
    RB: http_body::Body,
{
    type Output = Result<Response<PermitBody<RB>>, AdmissionError<S::Error>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project().state.project() {
                StateProj::Refused { rejected } => {
                    let r = rejected.take().expect("polled after completion");
                    return Poll::Ready(Err(AdmissionError::Rejected(r)));
                }
                StateProj::Queued {
                    acquire,
                    deadline,
                    service,
                    request,
                } => {
                    let waiting = acquire.as_mut().expect("polled after completion");
                    let admitted = match Pin::new(waiting).poll(cx) {
                        Poll::Ready(r) => r,
                        Poll::Pending => match deadline.poll(cx) {
                            Poll::Ready(()) => {
                                let a = acquire.take().expect("still waiting");
                                Err(a.timed_out())
                            }
                            Poll::Pending => return Poll::Pending,
                        },
                    };
                    match admitted {
                        Err(r) => {
                            acquire.take();
                            return Poll::Ready(Err(AdmissionError::Rejected(Rejected::limiter(
                                r,
                            ))));
                        }
                        Ok(mut permit) => {
                            acquire.take();
                            permit.abandon();
                            let mut svc = service.take().expect("called once");
                            let req = request.take().expect("called once");
                            let future = svc.call(req);
                            self.as_mut().project().state.set(State::Called {
                                future,
                                permit: Some(permit),
                            });
                        }
                    }
                }
                StateProj::Called { future, permit } => {
                    let result = ready!(future.poll(cx));
                    let mut permit = permit.take().expect("polled after completion");
                    return Poll::Ready(match result {
                        Ok(resp) => {
                            let outcome = outcome_of(&resp);
                            Ok(resp.map(|body| PermitBody::admitted(body, permit, outcome)))
                        }
                        Err(e) => {
                            permit.record(Outcome::Error);
                            Err(AdmissionError::Inner(e))
                        }
                    });
                }
            }
        }
    }
}

pin_project! {
    /// The future of [`Answering`](super::Answering): a refusal becomes the
    /// gateway's response for it.
    #[derive(Debug)]
    pub struct AnsweringFuture<F> {
        #[pin]
        inner: F,
        dialect: Dialect,
    }
}

impl<F> AnsweringFuture<F> {
    pub(crate) fn new(inner: F, dialect: Dialect) -> Self {
        Self { inner, dialect }
    }
}

impl<F, RB, E> Future for AnsweringFuture<F>
where
    F: Future<Output = Result<Response<PermitBody<RB>>, AdmissionError<E>>>,
{
    type Output = Result<Response<PermitBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.inner.poll(cx)) {
            Ok(resp) => Ok(resp),
            Err(AdmissionError::Rejected(r)) => Ok(match this.dialect {
                Dialect::Http => r.response(PermitBody::refusal),
                Dialect::Grpc => r.grpc_response(PermitBody::refusal),
            }),
            Err(AdmissionError::Inner(e)) => Err(e),
        })
    }
}
