//! AdmissionLayer on a paused tokio clock: refusal at the limit, the permit
//! riding the body, cancellation, outcomes by status, readiness, the queue
//! and classification.

mod common;

use bytes::Bytes;
use common::*;
use floodwall_core::respond::REASON_HEADER;
use floodwall_core::Reason;
use floodwall_tower::{AdmissionError, AdmissionLayer, RejectReason};
use http::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tower::{Layer, Service, ServiceExt};

type Body = http_body_util::Full<Bytes>;

/// A handler that counts its calls, then waits for `release` before
/// answering with the status named in the request's `x-status` header
/// (200 if none).
#[derive(Clone)]
struct Handler {
    calls: Arc<AtomicUsize>,
    release: Arc<Notify>,
    wait: bool,
}

impl Handler {
    fn new(wait: bool) -> Self {
        Self {
            calls: Arc::new(AtomicUsize::new(0)),
            release: Arc::new(Notify::new()),
            wait,
        }
    }
}

impl Service<Request<()>> for Handler {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (release, wait) = (self.release.clone(), self.wait);
        let status = req
            .headers()
            .get("x-status")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(200u16);
        Box::pin(async move {
            if wait {
                release.notified().await;
            }
            let mut resp = Response::new(Body::from("ok"));
            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
            Ok(resp)
        })
    }
}

fn get() -> Request<()> {
    Request::get("/").body(()).unwrap()
}

fn with(name: &str, value: &str) -> Request<()> {
    Request::get("/").header(name, value).body(()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn rejects_at_once_at_the_limit_without_calling_the_handler() {
    let limiter = limiter(2);
    let handler = Handler::new(true);
    let svc = AdmissionLayer::new(limiter.clone()).layer(handler.clone());

    let a = tokio::spawn(svc.clone().oneshot(get()));
    let b = tokio::spawn(svc.clone().oneshot(get()));
    tokio::task::yield_now().await;
    assert_eq!(limiter.inflight(), 2);

    let refused = svc.clone().oneshot(get()).await.unwrap_err();
    let r = *refused.rejected().expect("a refusal");
    assert_eq!(r.reason, RejectReason::Limiter(Reason::WipLimitExceeded));
    assert!(r.retry_after.is_some());
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        handler.calls.load(Ordering::SeqCst),
        2,
        "the third never ran"
    );

    handler.release.notify_waiters();
    for h in [a, b] {
        let resp = h.await.unwrap().unwrap();
        read_all(resp.into_body()).await.unwrap();
    }
    assert_eq!(limiter.inflight(), 0);
    assert_eq!(outcomes(&limiter), [2, 0, 0, 0]);
}

#[tokio::test(start_paused = true)]
async fn the_permit_is_held_until_the_body_ends() {
    let limiter = limiter(1);
    let (tx, body) = gated();
    let body = Arc::new(std::sync::Mutex::new(Some(body)));
    let svc =
        AdmissionLayer::new(limiter.clone()).layer(tower::service_fn(move |_: Request<()>| {
            let body = body.lock().unwrap().take().expect("called once");
            async move { Ok::<_, Infallible>(Response::new(body)) }
        }));
    let resp = svc.oneshot(get()).await.unwrap();
    assert!(resp.body().holds_permit());
    assert_eq!(limiter.inflight(), 1, "headers are out, the body is not");

    tx.send(Ok(Bytes::from_static(b"part 1"))).unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(limiter.inflight(), 1, "a slow stream keeps its slot");

    let reader = tokio::spawn(read_all(resp.into_body()));
    tx.send(Ok(Bytes::from_static(b", part 2"))).unwrap();
    drop(tx);
    assert_eq!(reader.await.unwrap().unwrap(), b"part 1, part 2");
    assert_eq!(limiter.inflight(), 0);
    assert_eq!(outcomes(&limiter), [1, 0, 0, 0]);
}

#[tokio::test(start_paused = true)]
async fn a_body_failing_mid_stream_is_an_error_and_a_dropped_body_is_ignored() {
    let limiter = limiter(2);
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let senders: Vec<mpsc::UnboundedSender<_>> = (0..2)
        .map(|_| {
            let (tx, body) = gated();
            bodies.lock().unwrap().push(body);
            tx
        })
        .collect();
    let svc =
        AdmissionLayer::new(limiter.clone()).layer(tower::service_fn(move |_: Request<()>| {
            let body = bodies.lock().unwrap().pop().unwrap();
            async move { Ok::<_, Infallible>(Response::new(body)) }
        }));
    let failing = svc.clone().oneshot(get()).await.unwrap();
    let abandoned = svc.oneshot(get()).await.unwrap();
    assert_eq!(limiter.inflight(), 2);

    for tx in &senders {
        let _ = tx.send(Err(std::io::Error::other("mid-stream failure")));
    }
    // The second request's body (popped first) is read and fails...
    assert!(read_all(failing.into_body()).await.is_err());
    // ...the first one's is dropped unread: the client went away.
    drop(abandoned);
    assert_eq!(limiter.inflight(), 0);
    assert_eq!(outcomes(&limiter), [0, 1, 0, 1]);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_future_gives_its_slot_back() {
    let limiter = limiter(1);
    let handler = Handler::new(true);
    let mut svc = AdmissionLayer::new(limiter.clone()).layer(handler.clone());
    let mut fut = Box::pin(svc.ready().await.unwrap().call(get()));
    assert!(futures_util::poll!(&mut fut).is_pending());
    assert_eq!(limiter.inflight(), 1);
    drop(fut);
    assert_eq!(limiter.inflight(), 0, "dropping the future released it");
    // Nothing had completed, so there is no "normal" to compare with: the
    // hang-up says nothing (ignored), as in the gateway.
    assert_eq!(outcomes(&limiter), [0, 0, 0, 1]);
    let next = tokio::spawn(svc.clone().oneshot(get()));
    tokio::task::yield_now().await;
    assert_eq!(limiter.inflight(), 1, "the slot was free for the next one");
    handler.release.notify_waiters();
    read_all(next.await.unwrap().unwrap().into_body())
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_outcome_is_recorded_from_the_status() {
    let limiter = limiter(8);
    let svc = AdmissionLayer::new(limiter.clone()).layer(Handler::new(false));
    for (status, want) in [
        ("200", [1, 0, 0, 0]),
        ("404", [2, 0, 0, 0]),
        ("500", [2, 1, 0, 0]),
        ("502", [2, 2, 0, 0]),
        ("503", [2, 2, 1, 0]),
        ("429", [2, 2, 2, 0]),
    ] {
        let resp = svc.clone().oneshot(with("x-status", status)).await.unwrap();
        read_all(resp.into_body()).await.unwrap();
        assert_eq!(outcomes(&limiter), want, "after a {status}");
    }
    // A handler passing on an outbound breaker's refusal took no capacity:
    // ignored, so it cannot move an adaptive limit.
    let breaker_refusal =
        AdmissionLayer::new(limiter.clone()).layer(tower::service_fn(|_: Request<()>| async {
            let mut resp = Response::new(Body::from("{}"));
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            resp.headers_mut()
                .insert(REASON_HEADER, "circuit_open".parse().unwrap());
            Ok::<_, Infallible>(resp)
        }));
    let resp = breaker_refusal.oneshot(get()).await.unwrap();
    read_all(resp.into_body()).await.unwrap();
    assert_eq!(outcomes(&limiter), [2, 2, 2, 1]);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_reserves_nothing_so_a_full_limiter_never_parks_a_caller() {
    let limiter = limiter(1);
    let handler = Handler::new(true);
    let svc = AdmissionLayer::new(limiter.clone()).layer(handler.clone());

    // Ten callers polled ready and never called: nothing is held...
    let mut idle: Vec<_> = (0..10).map(|_| svc.clone()).collect();
    for s in &mut idle {
        s.ready().await.unwrap();
    }
    assert_eq!(limiter.inflight(), 0);
    // ...so a real request still gets the one slot.
    let held = tokio::spawn(svc.clone().oneshot(get()));
    tokio::task::yield_now().await;
    assert_eq!(limiter.inflight(), 1);

    // With the limiter full, readiness is still immediate: a caller is
    // never left waiting in poll_ready (tower's ConcurrencyLimit would
    // park it here); it is answered in call, at once.
    let mut probe = svc.clone();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(matches!(probe.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let refused = probe.call(get()).await;
    assert!(matches!(refused, Err(AdmissionError::Rejected(_))));

    handler.release.notify_waiters();
    read_all(held.await.unwrap().unwrap().into_body())
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn with_a_queue_a_request_waits_its_timeout_then_is_refused() {
    let limiter = queued_limiter(1, 4);
    let handler = Handler::new(true);
    let svc = AdmissionLayer::new(limiter.clone())
        .queue_timeout(Duration::from_secs(2))
        .layer(handler.clone());

    let first = tokio::spawn(svc.clone().oneshot(get()));
    tokio::task::yield_now().await;
    let waiting = tokio::spawn(svc.clone().oneshot(get()));
    tokio::task::yield_now().await;
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1, "the second waits");

    // The first finishes within the timeout: the waiter gets its slot.
    tokio::time::sleep(Duration::from_secs(1)).await;
    handler.release.notify_one();
    read_all(first.await.unwrap().unwrap().into_body())
        .await
        .unwrap();
    tokio::task::yield_now().await;
    assert_eq!(handler.calls.load(Ordering::SeqCst), 2);

    // A third waits the whole 2 s and is refused with queue_timeout.
    let started = tokio::time::Instant::now();
    let third = svc.clone().oneshot(get()).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(
        third.rejected().unwrap().reason,
        RejectReason::Limiter(Reason::QueueTimeout)
    );
    assert_eq!(handler.calls.load(Ordering::SeqCst), 2);

    handler.release.notify_one();
    read_all(waiting.await.unwrap().unwrap().into_body())
        .await
        .unwrap();
    assert_eq!(limiter.inflight(), 0);
}

#[tokio::test(start_paused = true)]
async fn classes_and_tenants_come_from_the_gateways_headers() {
    let limiter = limiter(4);
    let handler = Handler::new(true);
    let svc = AdmissionLayer::new(limiter.clone()).layer(handler.clone());

    // A hostile tenant id is refused whole, before admission.
    let long = "t".repeat(129);
    for bad in [long.as_str(), "a b"] {
        let e = svc
            .clone()
            .oneshot(with("x-tenant-id", bad))
            .await
            .unwrap_err();
        let r = *e.rejected().unwrap();
        assert_eq!(r.reason, RejectReason::InvalidTenantId);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.retry_after, None);
    }
    assert_eq!(handler.calls.load(Ordering::SeqCst), 0);

    // Batch may not borrow interactive's reserved half while interactive
    // is active: with limit 4 and 2 reserved, at most 2 batch requests.
    let i = tokio::spawn(svc.clone().oneshot(with("x-priority", "interactive")));
    tokio::task::yield_now().await;
    let b1 = tokio::spawn(svc.clone().oneshot(with("x-priority", "batch")));
    let b2 = tokio::spawn(svc.clone().oneshot(with("x-priority", "batch")));
    tokio::task::yield_now().await;
    let b3 = svc.clone().oneshot(with("x-priority", "batch")).await;
    assert!(
        matches!(b3, Err(AdmissionError::Rejected(_))),
        "batch capped"
    );
    let snap = limiter.snapshot();
    assert_eq!(snap.classes[0].inflight, 1);
    assert_eq!(snap.classes[1].inflight, 2);

    handler.release.notify_waiters();
    for h in [i, b1, b2] {
        read_all(h.await.unwrap().unwrap().into_body())
            .await
            .unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn routes_pick_their_own_limiter_and_layers_can_share_one() {
    let shared = limiter(1);
    let reports = limiter(1);
    let handler = Handler::new(true);
    let layer = AdmissionLayer::new(shared.clone())
        .classify(
            floodwall_tower::Classifier::new()
                .route_with(|h| h.uri.path().starts_with("/reports").then_some("reports")),
        )
        .route("reports", reports.clone());
    let api = layer.layer(handler.clone());
    // A second layer over the same Arc shares its limit.
    let other = AdmissionLayer::new(shared.clone()).layer(handler.clone());

    let held = tokio::spawn(api.clone().oneshot(get()));
    tokio::task::yield_now().await;
    assert!(
        other.clone().oneshot(get()).await.is_err(),
        "shared limit full"
    );
    let r = tokio::spawn(
        api.clone()
            .oneshot(Request::get("/reports/q").body(()).unwrap()),
    );
    tokio::task::yield_now().await;
    assert_eq!(reports.inflight(), 1, "its own limiter");
    handler.release.notify_waiters();
    for h in [held, r] {
        read_all(h.await.unwrap().unwrap().into_body())
            .await
            .unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn grpc_refusals_are_trailers_only_statuses_coded_by_the_http_status() {
    let limiter = limiter(4);
    let svc = AdmissionLayer::new(limiter.clone())
        .answer_refusals_grpc()
        .layer(Handler::new(false));
    let hostile = "x".repeat(200);
    let resp = svc
        .clone()
        .oneshot(with("x-tenant-id", &hostile))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "gRPC carries its own status");
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    assert_eq!(resp.headers()["grpc-status"], "3", "INVALID_ARGUMENT");
    assert_eq!(resp.headers()["grpc-message"], "invalid_tenant_id");
    assert_eq!(resp.headers()[REASON_HEADER], "invalid_tenant_id");
    assert!(
        !resp.headers().contains_key("grpc-retry-pushback-ms"),
        "retrying as sent cannot help"
    );
    assert!(http_body::Body::is_end_stream(resp.body()));
    assert!(read_all(resp.into_body()).await.unwrap().is_empty());
    assert_eq!(limiter.inflight(), 0);

    // The codes for the other statuses of the one map.
    use floodwall_tower::grpc_code_of;
    assert_eq!(
        grpc_code_of(StatusCode::TOO_MANY_REQUESTS),
        8,
        "RESOURCE_EXHAUSTED"
    );
    assert_eq!(
        grpc_code_of(StatusCode::SERVICE_UNAVAILABLE),
        14,
        "UNAVAILABLE"
    );
}
