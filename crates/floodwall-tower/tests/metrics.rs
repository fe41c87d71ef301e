//! Every metric the crate exports, inbound and outbound, lands in the
//! registry the caller passes in, with the values the traffic implies, and
//! the whole exposition passes `promtool check metrics` (in the classic
//! text format the gateway serves promtool).

mod common;

use bytes::Bytes;
use floodwall_core::breaker::{BreakerConfig, Trip};
use floodwall_core::bulkhead::Capacity;
use floodwall_core::{Breaker, Bulkhead, MonotonicClock};
use floodwall_tower::{AdmissionError, AdmissionLayer, Classifier, Events, Guard};
use http_body_util::Full;
use prometheus_client::registry::Registry;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tower::{Layer, ServiceExt};

fn request(path: &str, tenant: Option<&str>) -> http::Request<()> {
    let mut b = http::Request::get(path);
    if let Some(t) = tenant {
        b = b.header("x-tenant-id", t);
    }
    b.body(()).unwrap()
}

#[tokio::test]
async fn the_callers_registry_gets_every_metric_and_passes_promtool() {
    let api = common::limiter(8);
    let admin = common::limiter(1);
    let layer = AdmissionLayer::new(api.clone())
        .classify(Classifier::new().route_with(|h| h.uri.path().split('/').nth(1)))
        .route("admin", admin.clone());
    let mut registry = Registry::default();
    layer.register_metrics(&mut registry);
    let svc = layer.layer(tower::service_fn(|req: http::Request<()>| async move {
        let status = if req.uri().path().ends_with("/fail") {
            500
        } else {
            200
        };
        let mut resp = http::Response::new(Full::new(Bytes::from_static(b"ok")));
        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
        Ok::<_, Infallible>(resp)
    }));

    // api: two successes and an error, read to the end.
    for path in ["/api/a", "/api/b", "/api/fail"] {
        let resp = svc.clone().oneshot(request(path, None)).await.unwrap();
        common::read_all(resp.into_body()).await.unwrap();
    }
    // admin: one holds the only slot (its body unread), the next is refused.
    let held = svc.clone().oneshot(request("/admin", None)).await.unwrap();
    let refused = svc.clone().oneshot(request("/admin", None)).await;
    assert!(matches!(refused, Err(AdmissionError::Rejected(_))));
    // A hostile tenant id, refused before the limiter.
    let bad = "x".repeat(200);
    let refused = svc.clone().oneshot(request("/api/c", Some(&bad))).await;
    assert!(matches!(refused, Err(AdmissionError::Rejected(_))));
    api.set_constraint(Some(5));

    // Outbound: a breaker and a bulkhead in the same registry.
    let events = Events::new(&mut registry, 64);
    let breaker = Breaker::new(
        "payments",
        BreakerConfig {
            trip: Trip::Count {
                error_threshold: 1,
                error_threshold_timeout: Duration::from_secs(60),
            },
            error_timeout: Duration::from_secs(60),
            ..BreakerConfig::default()
        },
        Arc::new(MonotonicClock::new()),
    )
    .unwrap();
    let bulkhead = Bulkhead::new("payments", Capacity::Tickets(3)).unwrap();
    let guard = Guard::new("payments", "test")
        .breaker(breaker)
        .bulkhead(bulkhead)
        .events(events.clone());
    guard
        .run(async { Ok::<_, std::io::Error>(()) })
        .await
        .unwrap();
    let failed = guard.run(async { Err::<(), _>(std::io::Error::other("down")) });
    assert!(failed.await.is_err());
    let open = guard.run(async { Ok::<_, std::io::Error>(()) }).await;
    assert!(open.is_err(), "the breaker opened on the first failure");

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for want in [
        "floodwall_limit{route=\"default\"} 5",
        "floodwall_limit{route=\"admin\"} 1",
        "floodwall_limit_algorithm{route=\"default\",algorithm=\"fixed\"} 8",
        "floodwall_limit_constraint{route=\"default\"} 5",
        "floodwall_wip_current{route=\"admin\",class=\"interactive\"} 1",
        "floodwall_wip_current{route=\"default\",class=\"interactive\"} 0",
        "floodwall_queue_depth{route=\"default\"} 0",
        "floodwall_tenants_active{route=\"default\"} 0",
        "floodwall_requests_total{route=\"default\",class=\"interactive\",outcome=\"success\"} 2",
        "floodwall_requests_total{route=\"default\",class=\"interactive\",outcome=\"error\"} 1",
        "floodwall_rejections_total{route=\"admin\",class=\"interactive\",reason=\"wip_limit_exceeded\"} 1",
        "floodwall_rejections_total{route=\"default\",class=\"interactive\",reason=\"invalid_tenant_id\"} 1",
        "floodwall_breaker_state{resource=\"payments\"} 1",
        "floodwall_breaker_transitions_total{resource=\"payments\",from=\"closed\",to=\"open\"} 1",
        "floodwall_bulkhead_tickets{resource=\"payments\"} 3",
        "floodwall_bulkhead_inflight{resource=\"payments\"} 0",
        "floodwall_outbound_events_total{resource=\"payments\",event=\"success\"} 1",
        "floodwall_outbound_events_total{resource=\"payments\",event=\"error\"} 1",
        "floodwall_outbound_events_total{resource=\"payments\",event=\"circuit_open\"} 1",
        "floodwall_outbound_duration_seconds_count{resource=\"payments\"} 2",
        "floodwall_events_dropped_total 0",
    ] {
        assert!(text.contains(want), "{want} not in\n{text}");
    }
    // No constraint on admin: the series is absent, not 0.
    assert!(!text.contains("floodwall_limit_constraint{route=\"admin\"}"));
    // wip_reserved has a series per route and class.
    assert!(text.contains("floodwall_wip_reserved{route=\"admin\",class=\"batch\"}"));

    // What prometheus_client writes is OpenMetrics (Prometheus scrapes it
    // as is); promtool lints the classic text format, so it gets the
    // gateway's own exact rewrite, as `floodwall serve`'s /metrics does.
    common::promtool_check(&floodwall::admin::metrics::to_prometheus_text(&text));

    drop(held);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("floodwall_wip_current{route=\"admin\",class=\"interactive\"} 0"),
        "read at encode time: the dropped body's slot is back\n{text}"
    );
}
