//! Random interleavings of requests, cancellations, dropped bodies and
//! handler panics through AdmissionLayer, on a paused clock: no slot is
//! ever leaked, the limit is never exceeded, and every admitted request is
//! accounted for by exactly one outcome.

mod common;

use bytes::Bytes;
use common::*;
use floodwall_tower::AdmissionLayer;
use futures_util::FutureExt;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use proptest::prelude::*;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower::{Layer, ServiceExt};

/// What the handler does.
#[derive(Debug, Clone, Copy)]
enum Act {
    Status(u16),
    Panic,
    /// Answers at once, then streams two frames `ms` apart.
    Stream,
}

/// What the client does.
#[derive(Debug, Clone, Copy)]
enum Client {
    ReadAll,
    /// Drops the request future after this many ms (before or after the
    /// answer, depending on the handler's delay).
    CancelAfter(u64),
    /// Takes the response and drops its body unread.
    DropBody,
}

#[derive(Debug, Clone)]
struct Req {
    start_ms: u64,
    handler_ms: u64,
    act: Act,
    client: Client,
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        prop_oneof![Just(200u16), Just(500), Just(503)].prop_map(Act::Status),
        Just(Act::Panic),
        Just(Act::Stream),
    ]
}

fn client() -> impl Strategy<Value = Client> {
    prop_oneof![
        Just(Client::ReadAll),
        (0u64..60).prop_map(Client::CancelAfter),
        Just(Client::DropBody),
    ]
}

fn req() -> impl Strategy<Value = Req> {
    (0u64..50, 0u64..50, act(), client()).prop_map(|(start_ms, handler_ms, act, client)| Req {
        start_ms,
        handler_ms,
        act,
        client,
    })
}

type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

async fn handle(
    req: Request<()>,
    running: Arc<AtomicUsize>,
) -> Result<Response<BoxBody>, Infallible> {
    let spec = *req.extensions().get::<(u64, u8, u16)>().unwrap();
    let (ms, kind, status) = spec;
    running.fetch_add(1, Ordering::SeqCst);
    struct Leave(Arc<AtomicUsize>);
    impl Drop for Leave {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _leave = Leave(running);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    match kind {
        1 => panic!("handler panic (expected by the test)"),
        2 => {
            let frames = futures_util::stream::unfold(0u8, move |n| async move {
                if n == 2 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(ms + 1)).await;
                Some((Ok(Frame::data(Bytes::from_static(b"chunk"))), n + 1))
            });
            Ok(Response::new(StreamBody::new(frames).boxed_unsync()))
        }
        _ => {
            let mut resp = Response::new(
                http_body_util::Full::new(Bytes::from_static(b"ok"))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
            Ok(resp)
        }
    }
}

fn run_case(limit: usize, catch_panics: bool, reqs: Vec<Req>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let limiter = limiter(limit);
        let running = Arc::new(AtomicUsize::new(0));
        let r = running.clone();
        let handler = tower::service_fn(move |req| handle(req, r.clone()));
        let admission = AdmissionLayer::new(limiter.clone());
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for q in reqs {
            let (kind, status) = match q.act {
                Act::Status(s) => (0u8, s),
                Act::Panic => (1, 0),
                Act::Stream => (2, 200),
            };
            let mut request = Request::get("/").body(()).unwrap();
            request
                .extensions_mut()
                .insert((q.handler_ms, kind, status));
            let (limiter, peak) = (limiter.clone(), peak.clone());
            let call = if catch_panics {
                let svc = admission
                    .layer(tower_http::catch_panic::CatchPanicLayer::new().layer(handler.clone()));
                async move {
                    svc.oneshot(request)
                        .await
                        .map(|r| r.map(|b| b.map_err(|e| e.to_string()).boxed_unsync()))
                }
                .boxed()
            } else {
                let svc = admission.layer(handler.clone());
                async move {
                    svc.oneshot(request)
                        .await
                        .map(|r| r.map(|b| b.map_err(|e| e.to_string()).boxed_unsync()))
                }
                .boxed()
            };
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(q.start_ms)).await;
                let watch = async {
                    loop {
                        peak.fetch_max(limiter.inflight(), Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                };
                let work = async move {
                    match q.client {
                        Client::CancelAfter(ms) => {
                            let _ = tokio::time::timeout(Duration::from_millis(ms), async {
                                if let Ok(resp) = call.await {
                                    let _ = resp.into_body().collect().await;
                                }
                            })
                            .await;
                        }
                        Client::ReadAll => {
                            if let Ok(resp) = call.await {
                                let _ = resp.into_body().collect().await;
                            }
                        }
                        Client::DropBody => {
                            let _ = call.await;
                        }
                    }
                };
                tokio::select! {
                    () = work => {}
                    () = watch => unreachable!(),
                }
            }));
        }
        for t in tasks {
            // Without CatchPanic a handler panic unwinds through the
            // admission future and ends the task: the permit must still
            // come back.
            if let Err(e) = t.await {
                prop_assert!(e.is_panic() && !catch_panics, "{e}");
            }
        }
        // Stream frames still scheduled belong to bodies already dropped.
        tokio::time::sleep(Duration::from_secs(1)).await;
        prop_assert_eq!(limiter.inflight(), 0, "a slot leaked");
        prop_assert_eq!(running.load(Ordering::SeqCst), 0);
        prop_assert!(peak.load(Ordering::SeqCst) <= limit);
        let snap = limiter.snapshot();
        let admitted: u64 = snap.classes.iter().map(|c| c.admitted).sum();
        let finished: u64 = outcomes(&limiter).iter().sum();
        prop_assert_eq!(admitted, finished, "each admitted request has one outcome");
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn no_slot_leaks_under_cancellations_and_panics(
        limit in 1usize..=4,
        catch_panics in any::<bool>(),
        reqs in prop::collection::vec(req(), 1..24),
    ) {
        // Silence the expected handler panics' messages.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let result = run_case(limit, catch_panics, reqs);
        std::panic::set_hook(hook);
        result?;
    }
}
