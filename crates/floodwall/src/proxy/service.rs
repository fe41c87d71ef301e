//! One request's journey through floodwall.

use super::body::{Body, PermitBody};
use super::canonical::canonicalize;
use super::refusals::RefusalCounters;
use super::respond::{respond, Refusal};
use super::route::Route;
use super::router::Router;
use floodwall_core::{ClassId, Outcome, Permit, Request as Admission};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The proxy's shared state: the routes (each owning its limiter, upstream,
/// global limit and counters), and what has no route to live on.
#[derive(Debug)]
pub struct Proxy {
    /// The routes.
    pub router: Router,
    /// Refusals of requests that matched no route (one row).
    pub unrouted: Arc<RefusalCounters>,
    /// Time from arrival to the end of the response body, for admitted
    /// requests, over every route.
    pub request_duration: Histogram,
}

/// What an upstream status says about load: 503 and 429 are the upstream
/// shedding (the strongest overload signal), other 5xx are errors.
fn outcome_of(status: StatusCode) -> Outcome {
    match status.as_u16() {
        503 | 429 => Outcome::Dropped,
        500..=599 => Outcome::Error,
        _ => Outcome::Success,
    }
}

impl Proxy {
    /// A proxy over `router`'s routes. Duration buckets run from 0.5 ms to
    /// about 33 s.
    pub fn new(router: Router) -> Self {
        Self {
            router,
            unrouted: Arc::new(RefusalCounters::new(1)),
            request_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 17)),
        }
    }

    /// Handles one request: classify, admit, forward, record. Every early
    /// return goes through [`Proxy::refuse`], so every floodwall-made
    /// response is counted and shaped in one place.
    pub async fn handle(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();

        // 1. Classify. First make the request canonical (one host, the
        //    URI's authority else Host; one normalised path) and write it
        //    back, so the route is chosen on exactly what the upstream will
        //    be sent: no spelling of a path or host can reach another
        //    route's limit. A malformed request is refused here, before any
        //    slot or the adaptive limit sees it. Then route by host and
        //    path, class by header or route, and the tenant, refused here
        //    if the id is hostile.
        if let Err(m) = canonicalize(&mut req) {
            return self.refuse(None, m.into());
        }
        let (route, class) = match self.router.classify(&req) {
            Ok(c) => (c.route.clone(), c.class),
            Err(r) => return self.refuse(None, r),
        };
        let tenant = match self.router.tenant(&req) {
            Ok(t) => t,
            Err(r) => return self.refuse(Some((&route, class)), r),
        };

        // 2. Admit: at once, or after queueing up to the route's timeout. If
        //    the client goes away meanwhile, hyper drops this future and the
        //    waiter leaves the queue.
        let mut acquire = route.limiter.acquire(&Admission { class, tenant });
        let admitted = match route.queue_timeout {
            None => acquire.await,
            Some(t) => match tokio::time::timeout(t, &mut acquire).await {
                Ok(result) => result,
                Err(_) => Err(acquire.timed_out()),
            },
        };
        let mut permit: Permit = match admitted {
            Ok(p) => p,
            Err(rejection) => {
                return self.refuse(Some((&route, class)), Refusal::Rejected(rejection))
            }
        };

        // 2b. Distributed strict mode: the global limit in Redis, asked
        //     only once the local limiter admitted, so a full limiter costs
        //     no round trip. In lease mode the share already capped step 2.
        //     A refusal here drops the local permit unrecorded (ignored).
        let slot = match &route.global {
            None => None,
            Some(global) => match global.admit().await {
                Ok(slot) => slot,
                Err(r) => return self.refuse(Some((&route, class)), r.into()),
            },
        };

        // 3. Forward, bounded by the upstream's response timeout. Dropping
        //    the permit on these early returns frees the slot. A client
        //    that hangs up before the upstream answers (hyper drops this
        //    future) is a drop: it is what a client timeout looks like from
        //    here, and in a collapse it may be the only signal left, since
        //    nothing else completes (Netflix concurrency-limits #176).
        permit.record(Outcome::Dropped);
        let upstream = &route.upstream;
        let outbound = upstream.prepare(req, peer);
        let response = match tokio::time::timeout(
            upstream.response_timeout,
            upstream.client.request(outbound),
        )
        .await
        {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                tracing::debug!(route = %route.name, error = %e, "upstream unavailable");
                permit.record(Outcome::Error);
                return self.refuse(Some((&route, class)), Refusal::UpstreamUnavailable);
            }
            Err(_) => {
                permit.record(Outcome::Dropped);
                return self.refuse(Some((&route, class)), Refusal::UpstreamTimeout);
            }
        };

        // 4. Record: the permit rides with the streamed body and is released,
        //    with the outcome the status implies, when the body ends.
        let (mut parts, body) = response.into_parts();
        super::forward::strip_hop_by_hop(&mut parts.headers);
        let outcome = outcome_of(parts.status);
        // The upstream answered: a client leaving mid-body from here on
        // says nothing about the upstream.
        permit.record(Outcome::Ignored);
        let body = PermitBody::new(
            body,
            permit,
            outcome,
            started,
            self.request_duration.clone(),
            slot,
        );
        Response::from_parts(parts, body.map_err(Into::into).boxed_unsync())
    }

    /// Counts and builds a floodwall-made response. Limiter rejections are
    /// counted by the limiter itself; the rest on the route, by class, or on
    /// the proxy when no route matched.
    fn refuse(&self, at: Option<(&Route, ClassId)>, refusal: Refusal) -> Response<Body> {
        match at {
            Some((route, class)) => route.refusals.count(class.index(), &refusal),
            None => self.unrouted.count(0, &refusal),
        }
        respond(&refusal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_status_maps_to_an_outcome() {
        assert_eq!(outcome_of(StatusCode::OK), Outcome::Success);
        assert_eq!(outcome_of(StatusCode::NOT_FOUND), Outcome::Success);
        assert_eq!(
            outcome_of(StatusCode::INTERNAL_SERVER_ERROR),
            Outcome::Error
        );
        assert_eq!(
            outcome_of(StatusCode::SERVICE_UNAVAILABLE),
            Outcome::Dropped
        );
        assert_eq!(outcome_of(StatusCode::TOO_MANY_REQUESTS), Outcome::Dropped);
    }
}
