//! The admission service: classify, admit, call, record.

use super::body::PermitBody;
use super::classify::{Classify, Head};
use super::future::{AnsweringFuture, ResponseFuture};
use super::rejected::{AdmissionError, Dialect, Rejected};
use floodwall_core::{ClassId, Limiter, Request as Admission};
use http::{Request, Response};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_service::Service;

/// One limiter and the class a request gets when nothing names one.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) default_class: ClassId,
    /// Requests refused for a hostile tenant id, by class index: refused
    /// before the limiter sees them, so counted here for the metrics.
    pub(crate) invalid_tenant: Arc<[AtomicU64]>,
}

impl Route {
    /// `limiter` with `default_class` if it names a class, else the
    /// limiter's first (highest-priority) class.
    pub(crate) fn new(limiter: Arc<Limiter>, default_class: Option<&str>) -> Self {
        let default_class = default_class
            .and_then(|n| limiter.class_id(n))
            .or_else(|| {
                let first = limiter.snapshot().classes.into_iter().next()?;
                limiter.class_id(&first.name)
            })
            .expect("a limiter has at least one class");
        let classes = limiter.snapshot().classes.len();
        Self {
            limiter,
            default_class,
            invalid_tenant: (0..classes).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// What every clone of one admission service shares.
#[derive(Debug)]
pub(crate) struct Shared<C> {
    pub(crate) default: Route,
    pub(crate) keyed: Vec<(String, Route)>,
    pub(crate) classify: C,
    pub(crate) queue_timeout: Option<Duration>,
}

impl<C> Shared<C> {
    fn route(&self, key: Option<&str>) -> &Route {
        key.and_then(|k| self.keyed.iter().find(|(name, _)| name == k))
            .map_or(&self.default, |(_, r)| r)
    }
}

/// Admission control in front of `S`: see [`AdmissionLayer`](super::AdmissionLayer).
#[derive(Debug)]
pub struct AdmissionService<S, C> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<S: Clone, C> Clone for AdmissionService<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, C> AdmissionService<S, C> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<C>>) -> Self {
        Self { inner, shared }
    }

    /// The default route's limiter.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.shared.default.limiter
    }
}

impl<S, C, B, RB> Service<Request<B>> for AdmissionService<S, C>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    C: Classify,
    RB: http_body::Body,
{
    type Response = Response<PermitBody<RB>>;
    type Error = AdmissionError<S::Error>;
    type Future = ResponseFuture<S, Request<B>>;

    /// The inner service's readiness, and nothing more: **no slot is
    /// reserved here.** A slot taken in `poll_ready` is held by a caller
    /// that may never call (a connection polled ready and then idle, a
    /// router that polls every route), and readiness is how tower's
    /// `ConcurrencyLimit` makes callers *wait* instead of refusing them.
    /// Admission is decided in `call`, on the request itself (its class
    /// and tenant are not known before), and refused at once there.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(AdmissionError::Inner)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let shared = &*self.shared;
        let head = Head::of(&req);
        let route = shared.route(shared.classify.route(&head));
        let class = shared
            .classify
            .class(&head, &route.limiter)
            .unwrap_or(route.default_class);
        let tenant = match shared.classify.tenant(&head) {
            Ok(t) => t,
            Err(_) => {
                if let Some(n) = route.invalid_tenant.get(class.index()) {
                    n.fetch_add(1, Ordering::Relaxed);
                }
                return ResponseFuture::refused(Rejected::invalid_tenant_id());
            }
        };
        let admission = Admission { class, tenant };
        match shared.queue_timeout {
            // At once: decide now and call the inner service now, as tower
            // expects of a service that was polled ready.
            None => match route.limiter.try_acquire(&admission) {
                Ok(mut permit) => {
                    // If the caller drops the future before an answer, the
                    // limiter judges at release whether that was a client
                    // timeout (dropped) or says nothing (ignored), as the
                    // gateway does.
                    permit.abandon();
                    ResponseFuture::called(self.inner.call(req), permit)
                }
                Err(r) => ResponseFuture::refused(Rejected::limiter(r)),
            },
            // Waiting: the ready service goes with the request and a clone
            // stays for the next one (tower's `Buffer` pattern), since the
            // call happens only once a slot is granted.
            Some(timeout) => {
                let acquire = route.limiter.acquire(&admission);
                let fresh = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, fresh);
                ResponseFuture::queued(acquire, timeout, ready, req)
            }
        }
    }
}

/// An [`AdmissionService`] whose refusals are responses, not errors: the
/// gateway's own response for each, from the shared map. Its error is the
/// inner service's, so it goes straight into `axum::Router::layer`.
#[derive(Debug)]
pub struct Answering<S, C> {
    inner: AdmissionService<S, C>,
    dialect: Dialect,
}

impl<S: Clone, C> Clone for Answering<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            dialect: self.dialect,
        }
    }
}

impl<S, C> Answering<S, C> {
    pub(crate) fn new(inner: AdmissionService<S, C>, dialect: Dialect) -> Self {
        Self { inner, dialect }
    }

    /// The default route's limiter.
    pub fn limiter(&self) -> &Arc<Limiter> {
        self.inner.limiter()
    }
}

impl<S, C, B, RB> Service<Request<B>> for Answering<S, C>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    C: Classify,
    RB: http_body::Body,
{
    type Response = Response<PermitBody<RB>>;
    type Error = S::Error;
    type Future = AnsweringFuture<ResponseFuture<S, Request<B>>>;

    /// As [`AdmissionService::poll_ready`]: no slot is reserved.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(|e| match e {
            AdmissionError::Inner(e) => e,
            AdmissionError::Rejected(_) => unreachable!("poll_ready never refuses"),
        })
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        AnsweringFuture::new(self.inner.call(req), self.dialect)
    }
}
