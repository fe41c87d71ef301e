//! A BreakerLayer around a real hyper client, to a real upstream that
//! starts answering 500: the breaker opens after `error_threshold`
//! failures, refuses without touching the upstream, lets one trial through
//! after `error_timeout`, and closes after `success_threshold`. The events
//! and metrics land in the registry the test passes in.

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use floodwall_core::breaker::{BreakerConfig, State, Trip};
use floodwall_core::Breaker;
use floodwall_tower::events::EventKind;
use floodwall_tower::{BreakerLayer, Events, Refused};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower::{Service, ServiceBuilder, ServiceExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opens_on_a_failing_upstream_and_recovers() {
    let failing = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let (f, h) = (failing.clone(), hits.clone());
    let upstream = Router::new().route(
        "/",
        get(move || {
            let (f, h) = (f.clone(), h.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                if f.load(Ordering::SeqCst) {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, upstream).await.unwrap() });

    let config = BreakerConfig {
        trip: Trip::Count {
            error_threshold: 3,
            error_threshold_timeout: Duration::from_secs(10),
        },
        error_timeout: Duration::from_millis(300),
        success_threshold: 2,
        half_open_resource_timeout: Some(Duration::from_millis(500)),
        ..BreakerConfig::default()
    };
    let breaker = Breaker::new(
        "upstream",
        config,
        Arc::new(floodwall_core::MonotonicClock::new()),
    )
    .unwrap();
    let mut registry = Registry::default();
    let events = Events::new(&mut registry, 256);
    let mut seen = events.subscribe();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let svc = ServiceBuilder::new()
        .layer(BreakerLayer::new(breaker.clone()).events(events.clone()))
        .service(client);
    let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
    let call = || {
        let req = http::Request::get(uri.clone()).body(Empty::new()).unwrap();
        let mut svc = svc.clone();
        async move { svc.ready().await.unwrap().call(req).await }
    };

    for _ in 0..5 {
        assert_eq!(call().await.unwrap().status(), 200);
    }
    failing.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(call().await.unwrap().status(), 500, "failures pass through");
    }
    assert_eq!(breaker.state(), State::Open, "opened at the 3rd failure");
    let before = hits.load(Ordering::SeqCst);
    for _ in 0..20 {
        let e = call().await.unwrap_err();
        let refused = e.downcast_ref::<Refused>().expect("a refusal");
        assert!(matches!(refused, Refused::CircuitOpen(_)));
        assert!(refused.answer().retry_after.unwrap() <= Duration::from_millis(300));
        assert_eq!(refused.answer().status, 503);
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before,
        "open: the upstream saw nothing"
    );

    // Recovered upstream; after error_timeout one trial at a time.
    failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(breaker.state(), State::HalfOpen);
    assert_eq!(call().await.unwrap().status(), 200);
    assert_eq!(breaker.state(), State::HalfOpen, "1 of 2 successes");
    assert_eq!(call().await.unwrap().status(), 200);
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before + 2,
        "exactly the two trials"
    );

    // The event stream: Semian's fields, and every state change in order.
    let mut changes = Vec::new();
    let mut kinds = std::collections::HashMap::new();
    while let Some(e) = seen.try_recv() {
        assert_eq!(&*e.resource, "upstream");
        if e.event == EventKind::StateChange {
            changes.push((e.from.unwrap(), e.to.unwrap()));
        } else {
            *kinds.entry(e.event).or_insert(0) += 1;
            assert_eq!(e.adapter, "http");
        }
    }
    assert_eq!(
        changes,
        [
            ("closed", "open"),
            ("open", "half_open"),
            ("half_open", "closed")
        ]
    );
    assert_eq!(kinds[&EventKind::Success], 7);
    assert_eq!(kinds[&EventKind::Error], 3);
    assert_eq!(kinds[&EventKind::CircuitOpen], 20);
    let line = events_line(&events).await;
    assert!(line.contains("\"event\":\"success\""), "{line}");

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for want in [
        "floodwall_breaker_state{resource=\"upstream\"} 0",
        "floodwall_breaker_transitions_total{resource=\"upstream\",from=\"closed\",to=\"open\"} 1",
        "floodwall_outbound_events_total{resource=\"upstream\",event=\"circuit_open\"} 20",
    ] {
        assert!(text.contains(want), "{want} not in\n{text}");
    }
}

/// One event as its JSON line.
async fn events_line(events: &Arc<Events>) -> String {
    let mut sub = events.subscribe();
    let b =
        floodwall_core::Bulkhead::new("x", floodwall_core::bulkhead::Capacity::Tickets(1)).unwrap();
    let g = floodwall_tower::Guard::new("x", "test")
        .bulkhead(b)
        .events(events.clone());
    g.run(async { Ok::<_, std::io::Error>(()) }).await.unwrap();
    let e = sub.recv().await.unwrap();
    let line = e.to_json();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    for key in [
        "resource",
        "adapter",
        "tickets",
        "count",
        "workers",
        "event",
        "duration_ms",
    ] {
        assert!(v.get(key).is_some(), "{key} missing in {line}");
    }
    line
}
