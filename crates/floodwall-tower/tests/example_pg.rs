//! The axum-postgres example's service (`examples/axum-postgres/service.rs`
//! itself, included below) against a real PostgreSQL in a temp dir, on a
//! real socket: a request runs its query through the guard; a burst makes
//! requests wait for a pooled connection, `PoolProbe` caps the adaptive
//! limit, and requests past the cap are refused at once with the
//! gateway's 503 instead of joining the pool's queue.

#[path = "../../floodwall/tests/pg/mod.rs"]
mod pg;

#[path = "../examples/axum-postgres/service.rs"]
#[allow(dead_code)]
mod service;

use bytes::Bytes;
use floodwall_core::respond::REASON_HEADER;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus_client::registry::Registry;
use std::time::{Duration, Instant};

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_service_caps_its_limit_by_the_pool_queue_and_refuses_past_it() {
    let cluster = pg::PgCluster::start(20);
    let pool = service::pool(&cluster.dsn(), 2);
    let mut registry = Registry::default();
    let built = service::build(
        pool.clone(),
        "SELECT pg_sleep(0.5)",
        service::Protection::Floodwall,
        &mut registry,
    );
    let limiter = built.limiter.clone().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, built.router).await.unwrap() });

    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
    let get = |client: Client<_, Empty<Bytes>>, uri: http::Uri| async move {
        let resp = client.get(uri).await.unwrap();
        let (parts, body) = resp.into_parts();
        (parts, body.collect().await.unwrap().to_bytes())
    };

    let (parts, body) = get(client.clone(), uri.clone()).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body.as_ref(), b"ok");
    assert_eq!(limiter.snapshot().constraint, None, "no waiter, no cap");

    // 12 at once on 2 connections of 0.5 s queries: 10 wait for the pool
    // (about 3 s of queue), and the probe caps the limit at 2 x (1 + 1).
    let first: Vec<_> = (0..12)
        .map(|_| tokio::spawn(get(client.clone(), uri.clone())))
        .collect();
    until("the pool probe's cap", || {
        limiter.snapshot().constraint == Some(4)
    })
    .await;
    assert!(limiter.inflight() > 4, "the burst is still in flight");
    assert_eq!(limiter.limit(), 4);

    // Past the cap: refused at once, never queued for a connection (a
    // queued one would be served after the whole first burst).
    let second: Vec<_> = (0..6)
        .map(|_| tokio::spawn(get(client.clone(), uri.clone())))
        .collect();
    for c in second {
        let (parts, body) = c.await.unwrap();
        assert_eq!(parts.status, 503);
        assert_eq!(parts.headers[REASON_HEADER], "wip_limit_exceeded");
        assert_eq!(
            body.as_ref(),
            b"{\"error\":\"service_unavailable\",\"reason\":\"wip_limit_exceeded\"}\n"
        );
    }
    assert!(
        first.iter().any(|h| !h.is_finished()),
        "refused while the first burst still waits for the pool"
    );
    for c in first {
        assert_eq!(c.await.unwrap().0.status, 200, "admitted ones all served");
    }

    // The queue gone, the cap is lifted and every slot is back.
    until("the cap lifted", || limiter.snapshot().constraint.is_none()).await;
    assert_eq!(limiter.inflight(), 0);
    assert_eq!(pool.status().waiting, 0);

    // The guard's metrics are in the registry the service was given.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for want in [
        "floodwall_bulkhead_tickets{resource=\"postgres\"} 2",
        "floodwall_outbound_events_total{resource=\"postgres\",event=\"success\"} 13",
        "floodwall_breaker_state{resource=\"postgres\"} 0",
    ] {
        assert!(text.contains(want), "{want} not in\n{text}");
    }
}
