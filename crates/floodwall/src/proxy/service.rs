//! One request's journey through floodwall.

use super::body::{read_ahead, Body, Finish, ResponseLimits};
use super::canonical::canonicalize;
use super::refusals::RefusalCounters;
use super::respond::{respond, Refusal};
use super::route::Route;
use super::router::Router;
use super::upload::{Fault, Upload, UploadLimits};
use floodwall_core::{ClassId, Outcome, Permit, Request as Admission};
use http::{header, HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
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
    uploads: UploadLimits,
    responses: ResponseLimits,
}

/// Whether `headers` ask to switch to a protocol floodwall does not proxy.
/// `h2c` is left out: a server may ignore an upgrade (RFC 9110 §7.8), and
/// floodwall answers such a request over HTTP/1.1, as curl's `--http2`
/// expects.
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .any(|p| !p.trim().eq_ignore_ascii_case("h2c"))
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
    /// A proxy over `router`'s routes, holding clients to `uploads` and
    /// `responses`.
    pub fn new(router: Router, uploads: UploadLimits, responses: ResponseLimits) -> Self {
        Self {
            router,
            unrouted: Arc::new(RefusalCounters::new(1)),
            uploads,
            responses,
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
        //    path, and class by header or route. A protocol switch
        //    (WebSocket) is refused rather than forwarded as a plain request
        //    that loses it.
        if let Err(m) = canonicalize(&mut req) {
            return self.refuse(None, m.into());
        }
        let (route, class) = match self.router.classify(&req) {
            Ok(c) => (c.route.clone(), c.class),
            Err(r) => return self.refuse(None, r),
        };
        if wants_upgrade(req.headers()) {
            return self.refuse(Some((&route, class)), Refusal::UpgradeUnsupported);
        }

        // 1b. The client proves it can send: the body's head (or all of a
        //     small body) is read before a slot is taken, so a client
        //     trickling its upload is cut with 408 without ever holding
        //     one (`upload.rs`), and a broken body is a 400 here. Then the
        //     tenant, refused if the id is hostile.
        let mut req = req.map(|body| Upload::new(body, self.uploads));
        if let Err(fault) = req.body_mut().prefetch().await {
            return self.refuse(Some((&route, class)), fault.into());
        }
        let watch = req.body().watch();
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

        // 3. Forward. The response timeout runs once the client's body has
        //    been sent: it bounds the upstream, not the upload, which the
        //    rate rule bounds. A client that hangs up before the upstream
        //    answers (hyper drops this future) abandons the permit: the
        //    limiter counts it a drop only if the client had waited longer
        //    than requests normally take (a client timeout in an overload),
        //    and ignores it otherwise (see `Permit::abandon`).
        permit.abandon();
        let upstream = &route.upstream;
        let outbound = upstream.prepare(req, peer);
        let deadline = async {
            watch.sent().await;
            tokio::time::sleep(upstream.response_timeout).await;
        };
        let response = tokio::select! {
            biased;
            r = upstream.client().request(outbound) => match r {
                Ok(resp) => resp,
                // The upload failed, not the upstream: the client's fault,
                // recorded as nothing.
                Err(_) if watch.fault().is_some() => {
                    permit.record(Outcome::Ignored);
                    let fault = watch.fault().unwrap_or(Fault::Malformed);
                    return self.refuse(Some((&route, class)), fault.into());
                }
                Err(e) => {
                    tracing::debug!(route = %route.name, error = %e, "upstream unavailable");
                    permit.record(Outcome::Error);
                    return self.refuse(Some((&route, class)), Refusal::UpstreamUnavailable);
                }
            },
            () = deadline => {
                permit.record(Outcome::Dropped);
                return self.refuse(Some((&route, class)), Refusal::UpstreamTimeout);
            }
        };

        // 4. Record: the upstream body is read ahead of the client, and the
        //    permit released with the outcome the status implies when the
        //    upstream finishes (`body.rs`). A client leaving or stalling
        //    from here on says nothing about the upstream.
        let (mut parts, body) = response.into_parts();
        super::forward::strip_hop_by_hop(&mut parts.headers);
        let outcome = outcome_of(parts.status);
        permit.record(Outcome::Ignored);
        let finish = Finish::new(
            permit,
            outcome,
            started,
            route.series.duration(class).clone(),
            slot,
        );
        Response::from_parts(
            parts,
            read_ahead(body, finish, &self.responses, upstream.response_timeout),
        )
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
    fn only_a_real_protocol_switch_is_refused() {
        let mut h = HeaderMap::new();
        assert!(!wants_upgrade(&h));
        h.insert(header::UPGRADE, "h2c".parse().unwrap());
        assert!(!wants_upgrade(&h));
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(wants_upgrade(&h));
        h.insert(header::UPGRADE, "h2c, foo/2".parse().unwrap());
        assert!(wants_upgrade(&h));
    }

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
