//! One request's journey through floodwall.

use super::body::{read_ahead, Body, Finish, ResponseLimits};
use super::canonical::canonicalize;
use super::refusals::RefusalCounters;
use super::respond::{respond, Refusal};
use super::route::Route;
use super::router::Router;
use super::upload::{Fault, Upload, UploadLimits};
use crate::events::{Event, Events, Kind};
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
    /// The decision log (`[events]`), off by default.
    pub events: Arc<Events>,
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
    /// `responses`, writing its decisions to `events`.
    pub fn new(
        router: Router,
        uploads: UploadLimits,
        responses: ResponseLimits,
        events: Arc<Events>,
    ) -> Self {
        Self {
            router,
            unrouted: Arc::new(RefusalCounters::new(1)),
            uploads,
            responses,
            events,
        }
    }

    /// Handles one request: classify, admit, forward, record. Every early
    /// return goes through [`Proxy::refuse`], so every floodwall-made
    /// response is counted and shaped in one place.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let mut left = Abandoned {
            proxy: self,
            started,
            at: None,
        };
        let resp = self.serve(req, peer, started, &mut left).await;
        left.at = None;
        resp
    }

    /// [`Proxy::handle`]'s request path; `left` is armed once the route is
    /// known.
    async fn serve(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        started: Instant,
        left: &mut Abandoned<'_>,
    ) -> Response<Body> {
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
            return self.refuse(started, None, m.into());
        }
        let (route, class) = match self.router.classify(&req) {
            Ok(c) => (c.route.clone(), c.class),
            Err(r) => return self.refuse(started, None, r),
        };
        // If the client hangs up from here until the response head, hyper
        // drops this future and the decision log says so (`abandoned`),
        // with the time it held: `floodwall tune` reads the upstream's
        // throughput from every request's time in use, not only from the
        // ones fast enough to be waited for.
        if self.events.is_on() {
            left.at = Some((route.clone(), class));
        }
        if wants_upgrade(req.headers()) {
            return self.refuse(started, Some((&route, class)), Refusal::UpgradeUnsupported);
        }

        // 1b. The client proves it can send: the body's head (or all of a
        //     small body) is read before a slot is taken, so a client
        //     trickling its upload is cut with 408 without ever holding
        //     one (`upload.rs`), and a broken body is a 400 here. Then the
        //     tenant, refused if the id is hostile.
        let mut req = req.map(|body| Upload::new(body, self.uploads));
        if let Err(fault) = req.body_mut().prefetch().await {
            return self.refuse(started, Some((&route, class)), fault.into());
        }
        let watch = req.body().watch();
        let tenant = match self.router.tenant(&req) {
            Ok(t) => t,
            Err(r) => return self.refuse(started, Some((&route, class)), r),
        };

        // 2. Admit, through five checks in this order. Cheapest and most
        //    certain first, so a refusal early costs the later checks
        //    nothing, and nothing refused here ever reaches the adaptive
        //    limit: it is sampled only by requests the gate admitted.
        //
        //    In shadow mode (`mode = "shadow"`, `--shadow`) each check
        //    runs as it would enforce, and the first would-be refusal is
        //    counted, logged and marked (`X-Floodwall-Shadow`) instead of
        //    answered. From then on the request takes nothing at the later
        //    checks (no trial, ticket, permit or global slot), because
        //    enforced it would never have reached them: every count the
        //    gate, bulkhead and breaker keep stays what it will be when
        //    enforcement is switched on, and nothing held can leak.
        let mut shadowed: Option<Refusal> = None;
        let at = Some((&*route, class));
        macro_rules! check {
            ($decision:expr) => {
                match $decision {
                    Ok(held) => Some(held),
                    Err(refusal) => {
                        if !route.shadow {
                            return self.refuse(started, at, refusal);
                        }
                        self.shadow_refusal(started, (&route, class), &refusal, &mut shadowed);
                        None
                    }
                }
            };
        }

        // 2a. Retry budget. A retry (by its attempt header) over the
        //     route's budget is refused before anything else: it is the
        //     request least likely to still be wanted (its client already
        //     gave up on it once), and refusing it needs no state of the
        //     upstream. A first attempt deposits its share of the budget;
        //     first attempts are never refused here (Finagle's choice, see
        //     `floodwall_core::retry_budget`).
        //     And while first attempts are being refused for lack of
        //     capacity (2c-2e below tell the budget), retries yield: the
        //     slots go to requests whose clients still wait for them.
        let mut fresh = None;
        if let Some(retry) = &route.retry {
            if retry.is_retry(req.headers()) {
                check!(retry
                    .budget
                    .try_retry()
                    .map_err(Refusal::RetryBudgetExhausted));
            } else {
                retry.budget.deposit();
                fresh = Some(&retry.budget);
            }
        }
        // A first attempt refused for lack of capacity (not a tenant over
        // its share, whose refusals say nothing about the others' room),
        // told to the budget.
        let full = |refusal: Refusal| {
            if let (Some(budget), true) = (fresh, refusal.is_capacity()) {
                budget.first_attempt_refused();
            }
            refusal
        };

        // 2b. The upstream's breaker. Open, it refuses at once without
        //     touching the upstream or the route's limit, which would
        //     otherwise learn from refusals that say nothing about load.
        //     Half-open it lets a bounded number of trials through. The
        //     call reports the upstream's verdict after step 3; dropped
        //     unreported (a later check refused, the client left), it
        //     counts as neither.
        let upstream = &route.upstream;
        let call = match (&upstream.guards.breaker, &shadowed) {
            (Some(b), None) => check!(b.breaker.try_call().map_err(Refusal::CircuitOpen)),
            _ => None,
        };

        // 2c. The upstream's bulkhead, shared by every route to this
        //     upstream: one slow dependency cannot take every route's
        //     slots. After the breaker, so an open breaker's refusals take
        //     no ticket; before the gate, so a full bulkhead never holds a
        //     slot of the route's limit. No queue: a ticket or a refusal.
        let ticket = match (&upstream.guards.bulkhead, &shadowed) {
            (Some(b), None) => check!(b.try_acquire().map_err(|f| full(Refusal::BulkheadFull(f)))),
            _ => None,
        };

        // 2d. The WIP gate: at once, or after queueing up to the route's
        //     timeout. If the client goes away meanwhile, hyper drops this
        //     future and the waiter leaves the queue.
        let mut permit: Option<Permit> = None;
        if shadowed.is_none() {
            let mut acquire = route.limiter.acquire(&Admission { class, tenant });
            let admitted = match route.queue_timeout {
                None => acquire.await,
                Some(t) => match tokio::time::timeout(t, &mut acquire).await {
                    Ok(result) => result,
                    Err(_) => Err(acquire.timed_out()),
                },
            };
            permit = check!(admitted.map_err(|r| full(Refusal::Rejected(r))));
        }

        // 2e. Distributed strict mode: the global limit in Redis, asked
        //     only once the local limiter admitted, so a full limiter costs
        //     no round trip. In lease mode the share already capped 2d.
        //     A refusal here drops the local permit unrecorded (ignored).
        let mut slot = None;
        if let (Some(global), Some(_)) = (&route.global, &permit) {
            slot = check!(global.admit().await.map_err(|e| full(Refusal::from(e)))).flatten();
        }
        // Shadow mode: a request refused at a later check lets go of what
        // an earlier one gave it, as an enforced refusal would (a trial
        // slot unreported, a ticket, a permit unrecorded).
        let (call, ticket) = match shadowed {
            None => (call, ticket),
            Some(_) => {
                permit = None;
                (None, None)
            }
        };

        // 2f. Choose the endpoint, only now that the gate admitted: under a
        //     spike the refusal stays at the gate, before any endpoint is
        //     picked, and the choice itself never waits (`endpoints.rs`,
        //     over `floodwall_core::balance`). The pick holds the
        //     endpoint's in-flight count (and a hash key) until the
        //     upstream finishes.
        let Some(pick) = upstream.endpoints.choose(&req) else {
            return mark(
                self.refuse(started, at, Refusal::UpstreamUnavailable),
                &shadowed,
            );
        };

        // 3. Forward. The response timeout runs once the client's body has
        //    been sent: it bounds the upstream, not the upload, which the
        //    rate rule bounds; a half-open trial gets the breaker's
        //    shorter `half_open_resource_timeout`. A client that hangs up
        //    before the upstream answers (hyper drops this future) abandons
        //    the permit: the limiter counts it a drop only if the client
        //    had waited longer than requests normally take (a client
        //    timeout in an overload), and ignores it otherwise (see
        //    `Permit::abandon`).
        if let Some(p) = permit.as_mut() {
            p.abandon();
        }
        let outbound = upstream.prepare(req, peer, &pick);
        let timeout = call
            .as_ref()
            .and_then(|c| c.timeout())
            .map_or(upstream.response_timeout, |t| {
                t.min(upstream.response_timeout)
            });
        let deadline = async {
            watch.sent().await;
            tokio::time::sleep(timeout).await;
        };
        let record = |permit: &mut Option<Permit>, outcome| {
            if let Some(p) = permit.as_mut() {
                p.record(outcome);
            }
        };
        let response = tokio::select! {
            biased;
            r = upstream.send(outbound, &pick) => match r {
                Ok(resp) => resp,
                // The upload failed, not the upstream: the client's fault,
                // recorded as nothing, by the limit or the breaker.
                Err(_) if watch.fault().is_some() => {
                    record(&mut permit, Outcome::Ignored);
                    drop(call);
                    let fault = watch.fault().unwrap_or(Fault::Malformed);
                    return self.refuse(started, at, fault.into());
                }
                // A connect error, a reset: always a breaker failure.
                Err(e) => {
                    tracing::debug!(route = %route.name, error = %e, "upstream unavailable");
                    record(&mut permit, Outcome::Error);
                    if let Some(c) = call {
                        c.failure();
                    }
                    upstream.endpoint_failed(&pick);
                    return mark(self.refuse(started, at, Refusal::UpstreamUnavailable), &shadowed);
                }
            },
            () = deadline => {
                // A timeout: always a breaker failure.
                record(&mut permit, Outcome::Dropped);
                if let Some(c) = call {
                    c.failure();
                }
                upstream.endpoint_failed(&pick);
                return mark(self.refuse(started, at, Refusal::UpstreamTimeout), &shadowed);
            }
        };

        // 4. Record: the breaker hears the status (5xx a failure if
        //    `open_on_server_errors`, 503/429 left out if
        //    `ignore_overload`), the upstream body is read ahead of the
        //    client, and the permit (with the bulkhead ticket and any
        //    global slot) released with the outcome the status implies
        //    when the upstream finishes (`body.rs`). A client leaving or
        //    stalling from here on says nothing about the upstream.
        let (response, conn) = response;
        let (mut parts, body) = response.into_parts();
        pick.success();
        if let (Some(c), Some(b)) = (call, &upstream.guards.breaker) {
            c.finish(b.failures.judge_status(parts.status.as_u16()));
        }
        super::forward::strip_hop_by_hop(&mut parts.headers);
        let outcome = outcome_of(parts.status);
        self.log(started, at, Kind::Success, None, parts.status.as_u16());
        record(&mut permit, Outcome::Ignored);
        let finish = Finish::new(
            permit,
            outcome,
            started,
            route.series.duration(class).clone(),
            slot,
            ticket,
        )
        .holding(pick)
        .on(conn);
        mark(
            Response::from_parts(
                parts,
                read_ahead(body, finish, &self.responses, upstream.response_timeout),
            ),
            &shadowed,
        )
    }

    /// Shadow mode: counts, logs and remembers the first would-be refusal
    /// of a request (the one enforcement would have answered).
    fn shadow_refusal(
        &self,
        started: Instant,
        at: (&Route, ClassId),
        refusal: &Refusal,
        first: &mut Option<Refusal>,
    ) {
        if first.is_some() {
            return;
        }
        let route = at.0;
        route.shadow_refusals.count(refusal);
        self.log(
            started,
            Some(at),
            Kind::ShadowRefused,
            Some(refusal.reason()),
            refusal.status().as_u16(),
        );
        tracing::debug!(route = %route.name, reason = refusal.reason(), "shadow mode: would refuse, forwarded");
        *first = Some(*refusal);
    }

    /// Counts and builds a floodwall-made response. Limiter rejections are
    /// counted by the limiter itself; the rest on the route, by class, or on
    /// the proxy when no route matched.
    fn refuse(
        &self,
        started: Instant,
        at: Option<(&Route, ClassId)>,
        refusal: Refusal,
    ) -> Response<Body> {
        match at {
            Some((route, class)) => route.refusals.count(class.index(), &refusal),
            None => self.unrouted.count(0, &refusal),
        }
        let resp = respond(&refusal);
        self.log(
            started,
            at,
            refusal.event(),
            Some(refusal.reason()),
            resp.status().as_u16(),
        );
        resp
    }

    /// Writes one decision to the decision log (`[events]`; nothing
    /// without it): the route's limit and in flight at this moment.
    fn log(
        &self,
        started: Instant,
        at: Option<(&Route, ClassId)>,
        kind: Kind,
        reason: Option<&'static str>,
        status: u16,
    ) {
        self.events.emit(true, |workers| {
            let (resource, host) = match at {
                Some((r, _)) => (r.name.as_str(), r.upstream.host.as_str()),
                None => ("unrouted", ""),
            };
            Event {
                tickets: at.map(|(r, _)| r.limiter.limit()),
                count: at.map(|(r, _)| r.limiter.inflight()),
                route: at.map(|(r, _)| r.name.clone()),
                class: at.and_then(|(r, c)| r.class_names.get(c.index()).cloned()),
                reason,
                status: Some(status),
                duration_ms: Some(started.elapsed().as_secs_f64() * 1e3),
                ..Event::new(kind, resource, host, workers)
            }
        });
    }
}

/// The `abandoned` decision, written if the request's future is dropped
/// while `at` is armed (the client left before the response head).
struct Abandoned<'a> {
    proxy: &'a Proxy,
    started: Instant,
    at: Option<(Arc<Route>, ClassId)>,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if let Some((route, class)) = self.at.take() {
            // 499, as nginx logs a request whose client closed first:
            // nothing was sent.
            self.proxy.log(
                self.started,
                Some((&route, class)),
                Kind::Abandoned,
                None,
                499,
            );
        }
    }
}

/// Marks a response to a request shadow mode let past a refusal with
/// `X-Floodwall-Shadow: <reason>`.
fn mark(mut resp: Response<Body>, shadowed: &Option<Refusal>) -> Response<Body> {
    if let Some(r) = shadowed {
        resp.headers_mut()
            .insert(SHADOW_HEADER, http::HeaderValue::from_static(r.reason()));
    }
    resp
}

/// The header on a response shadow mode forwarded past a would-be
/// refusal, naming its reason.
pub const SHADOW_HEADER: &str = "x-floodwall-shadow";

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
