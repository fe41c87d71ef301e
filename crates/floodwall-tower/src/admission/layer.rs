//! The admission layer: how an admission service is configured.

use super::classify::{Classifier, Classify};
use super::rejected::Dialect;
use super::service::{AdmissionService, Answering, Route, Shared};
use crate::metrics::GateMetrics;
use floodwall_core::Limiter;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use tower_layer::Layer;

/// Admission control for any `Service<http::Request<B>>`, through a
/// [`floodwall_core::Limiter`].
///
/// Each request is classified ([`Classify`]; by default the gateway's
/// `X-Priority` and `X-Tenant-Id` headers), then admitted through its
/// route's limiter or **refused at once**: the inner service is not
/// called, and the caller gets [`AdmissionError::Rejected`] with a
/// [`Rejected`] (or, after [`AdmissionLayer::answer_refusals`], the
/// gateway's own 503/429 response). An admitted request's permit rides its
/// response body and is released when the body ends, with the outcome its
/// status implies ([`outcome_of`]).
///
/// The limiter is an `Arc`: give the same one to several layers (or
/// routes) and they share one limit; anything else that holds it (a probe
/// calling [`Limiter::set_constraint`], a status page reading
/// [`Limiter::snapshot`]) sees the same state.
///
/// [`AdmissionError::Rejected`]: super::AdmissionError::Rejected
/// [`Rejected`]: super::Rejected
/// [`outcome_of`]: super::outcome_of
#[derive(Debug)]
pub struct AdmissionLayer<C = Classifier> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for AdmissionLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl AdmissionLayer<Classifier> {
    /// Admission through `limiter`, classified by the gateway's headers,
    /// refusing at once when it is full.
    pub fn new(limiter: Arc<Limiter>) -> Self {
        Self {
            shared: Arc::new(Shared {
                default: Route::new(limiter, None),
                keyed: Vec::new(),
                classify: Classifier::new(),
                queue_timeout: None,
            }),
        }
    }
}

impl<C> AdmissionLayer<C> {
    fn edit(self, f: impl FnOnce(&mut Shared<C>)) -> Self {
        let mut shared = Arc::try_unwrap(self.shared)
            .unwrap_or_else(|_| panic!("configure an AdmissionLayer before cloning it"));
        f(&mut shared);
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Classifies with `classify` instead.
    ///
    /// # Panics
    /// If this layer was cloned already (configure, then clone).
    pub fn classify<C2: Classify>(self, classify: C2) -> AdmissionLayer<C2> {
        let shared = Arc::try_unwrap(self.shared)
            .unwrap_or_else(|_| panic!("configure an AdmissionLayer before cloning it"));
        AdmissionLayer {
            shared: Arc::new(Shared {
                default: shared.default,
                keyed: shared.keyed,
                classify,
                queue_timeout: shared.queue_timeout,
            }),
        }
    }

    /// Requests whose [`Classify::route`] key is `key` are admitted through
    /// `limiter` instead of the default one.
    ///
    /// # Panics
    /// If this layer was cloned already.
    pub fn route(self, key: impl Into<String>, limiter: Arc<Limiter>) -> Self {
        let key = key.into();
        self.edit(|s| {
            s.keyed.retain(|(k, _)| *k != key);
            s.keyed.push((key, Route::new(limiter, None)));
        })
    }

    /// The class of requests that name none (or an unknown one), on every
    /// route whose limiter has a class of that name; default: each
    /// limiter's first class.
    ///
    /// # Panics
    /// If this layer was cloned already.
    pub fn default_class(self, name: &str) -> Self {
        self.edit(|s| {
            s.default = Route::new(s.default.limiter.clone(), Some(name));
            for (_, r) in &mut s.keyed {
                *r = Route::new(r.limiter.clone(), Some(name));
            }
        })
    }

    /// Lets a request wait in its limiter's queue (configured on the
    /// limiter, [`floodwall_core::QueueSpec`]) for up to `timeout`, then
    /// refuses it with `queue_timeout`. Without this, the layer never
    /// waits, even if the limiter has a queue: a wait with no deadline is
    /// exactly the unbounded queue admission control exists to avoid.
    ///
    /// # Panics
    /// If this layer was cloned already.
    pub fn queue_timeout(self, timeout: Duration) -> Self {
        self.edit(|s| s.queue_timeout = Some(timeout))
    }

    /// Answers refusals with the gateway's own response (status, headers,
    /// JSON body, from the map the gateway uses) instead of failing with
    /// [`AdmissionError::Rejected`](super::AdmissionError::Rejected); the
    /// service's error is then the inner service's, as `axum::Router::layer`
    /// wants.
    pub fn answer_refusals(self) -> AnsweringLayer<C> {
        AnsweringLayer {
            inner: self,
            dialect: Dialect::Http,
        }
    }

    /// Answers refusals as gRPC statuses instead, for a tonic (or any gRPC)
    /// server: `UNAVAILABLE` for a full gate, `RESOURCE_EXHAUSTED` for a
    /// tenant over its share (see [`Rejected::grpc_response`]). A gRPC
    /// client reads `grpc-status`, not a JSON body; and tonic turns a
    /// service *error* it does not know into a reset stream, so the typed
    /// [`AdmissionError`](super::AdmissionError) is no use there.
    ///
    /// ```
    /// # use floodwall_tower::AdmissionLayer;
    /// let layer = AdmissionLayer::new(floodwall_tower::fixed_limiter(64)).answer_refusals_grpc();
    /// // tonic::transport::Server::builder().layer(layer).add_service(..)
    /// # let _ = layer;
    /// ```
    ///
    /// [`Rejected::grpc_response`]: super::Rejected::grpc_response
    pub fn answer_refusals_grpc(self) -> AnsweringLayer<C> {
        AnsweringLayer {
            inner: self,
            dialect: Dialect::Grpc,
        }
    }

    /// The default route's limiter.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.shared.default.limiter
    }

    /// Exports this layer's gates into `registry`, the caller's (nothing is
    /// global): the limit, in flight, reservations, queue, outcomes and
    /// refusals of each route, under the gateway's metric names, labelled
    /// `route` (`"default"` for the default limiter, else the key given to
    /// [`AdmissionLayer::route`]). See [`crate::metrics`] for the list.
    ///
    /// The figures are read from the limiters when the registry is
    /// encoded, so the request path pays nothing for them. Register one
    /// layer per registry; for a second layer, use a sub-registry with a
    /// prefix (`registry.sub_registry_with_prefix("admin")`), since two
    /// families of one name in one exposition are invalid.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let mut routes = vec![("default".to_owned(), self.shared.default.clone())];
        routes.extend(self.shared.keyed.iter().cloned());
        registry.register_collector(Box::new(GateMetrics::new(routes)));
    }
}

impl<S, C> Layer<S> for AdmissionLayer<C> {
    type Service = AdmissionService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService::new(inner, self.shared.clone())
    }
}

/// An [`AdmissionLayer`] that answers refusals with responses; see
/// [`AdmissionLayer::answer_refusals`].
#[derive(Debug)]
pub struct AnsweringLayer<C = Classifier> {
    inner: AdmissionLayer<C>,
    dialect: Dialect,
}

impl<C> Clone for AnsweringLayer<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            dialect: self.dialect,
        }
    }
}

impl<C> AnsweringLayer<C> {
    /// The default route's limiter.
    pub fn limiter(&self) -> &Arc<Limiter> {
        self.inner.limiter()
    }

    /// As [`AdmissionLayer::register_metrics`].
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.inner.register_metrics(registry);
    }
}

impl<S, C> Layer<S> for AnsweringLayer<C> {
    type Service = Answering<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Answering::new(self.inner.layer(inner), self.dialect)
    }
}
