//! What admission costs per request: an axum handler that does nothing,
//! bare, behind tower's `ConcurrencyLimit` + `LoadShed`, and behind
//! `AdmissionLayer` with a fixed and with the default adaptive limit. Each
//! iteration runs one request through the router in process (no socket)
//! and reads its body, so the permit is taken and released. The goal: the
//! layer costs no more than `ConcurrencyLimit` + `LoadShed`.
//!
//! `cargo bench -p floodwall-tower --bench overhead`

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use criterion::{criterion_group, criterion_main, Criterion};
use floodwall_tower::AdmissionLayer;
use http_body_util::BodyExt;
use tower::{ServiceBuilder, ServiceExt};

fn bare() -> Router {
    Router::new().route("/", get(|| async { "" }))
}

fn run(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let contenders = [
        ("bare", bare()),
        (
            "ConcurrencyLimit+LoadShed",
            bare().layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                        StatusCode::SERVICE_UNAVAILABLE
                    }))
                    .load_shed()
                    .concurrency_limit(1024),
            ),
        ),
        (
            "AdmissionLayer fixed",
            bare()
                .layer(AdmissionLayer::new(floodwall_tower::fixed_limiter(1024)).answer_refusals()),
        ),
        (
            "AdmissionLayer adaptive",
            bare().layer(
                AdmissionLayer::new(floodwall_tower::adaptive_limiter().unwrap()).answer_refusals(),
            ),
        ),
    ];
    let mut group = c.benchmark_group("axum handler");
    for (name, router) in contenders {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let router = router.clone();
                async move {
                    let req = http::Request::get("/").body(Body::empty()).unwrap();
                    let resp = router.oneshot(req).await.unwrap();
                    assert_eq!(resp.status(), 200);
                    resp.into_body().collect().await.unwrap()
                }
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // No plots: they need system fonts, and the figures are the point.
    config = Criterion::default().without_plots();
    targets = run
}
criterion_main!(benches);
