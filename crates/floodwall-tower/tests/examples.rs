//! The hyper and tonic examples, run against real servers on free loopback
//! ports: the code of `examples/hyper-server` and `examples/tonic-health`
//! itself (included below), not a copy of it.

#[path = "../examples/hyper-server/main.rs"]
#[allow(dead_code)]
mod hyper_server;

#[path = "../examples/tonic-health/main.rs"]
#[allow(dead_code)]
mod tonic_health_example;

use bytes::Bytes;
use floodwall_core::respond::{REASON_HEADER, RETRY_AFTER_MS_HEADER};
use http::{header, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;
use tokio::net::TcpListener;

async fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hyper_example_admits_its_limit_and_refuses_the_rest_at_once() {
    let listener = loopback().await;
    let addr = listener.local_addr().unwrap();
    let limiter = floodwall_tower::fixed_limiter(2);
    tokio::spawn(hyper_server::serve(
        listener,
        limiter.clone(),
        Duration::from_millis(800),
    ));

    // 8 at once, each on its own HTTP/1.1 connection.
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let (client, uri) = (client.clone(), uri.clone());
            tokio::spawn(async move {
                let resp = client.get(uri).await.unwrap();
                let (parts, body) = resp.into_parts();
                (parts, body.collect().await.unwrap().to_bytes())
            })
        })
        .collect();
    let mut replies = Vec::new();
    for c in calls {
        replies.push(c.await.unwrap());
    }
    let ok: Vec<_> = replies.iter().filter(|(p, _)| p.status == 200).collect();
    let refused: Vec<_> = replies.iter().filter(|(p, _)| p.status != 200).collect();
    assert_eq!(ok.len(), 2, "the limit");
    assert_eq!(refused.len(), 6);
    assert!(ok.iter().all(|(_, b)| b.as_ref() == b"hello\n"));
    for (p, body) in refused {
        assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(p.headers[REASON_HEADER], "wip_limit_exceeded");
        assert!(p.headers.contains_key(header::RETRY_AFTER));
        assert_eq!(
            body.as_ref(),
            b"{\"error\":\"service_unavailable\",\"reason\":\"wip_limit_exceeded\"}\n"
        );
    }
    assert_eq!(limiter.inflight(), 0, "every slot back");

    // The same port speaks HTTP/2 (hyper_util's auto builder).
    let h2: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let resp = h2.get(uri).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tonic_example_refuses_with_a_grpc_status_and_streams_hold_their_slot() {
    let listener = loopback().await;
    let addr = listener.local_addr().unwrap();
    let limiter = floodwall_tower::fixed_limiter(2);
    tokio::spawn(tonic_health_example::serve(listener, limiter.clone()));

    let seen = tonic_health_example::demo(addr, &limiter).await.unwrap();
    assert_eq!(seen.refused, tonic::Code::Unavailable);
    assert_eq!(seen.reason, "wip_limit_exceeded");
    assert!(seen.pushback_ms > 0, "{seen:?}");
    assert_eq!(
        seen.after,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    // On the wire, while two streams hold the gate: a trailers-only gRPC
    // response (HTTP 200, grpc-status in the headers, the stream ended
    // with them), carrying the gateway's reason and waits.
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let watch = || tonic_health::pb::HealthCheckRequest {
        service: tonic_health_example::SERVICE.into(),
    };
    let mut a = client.watch(watch()).await.unwrap().into_inner();
    let mut b = client.watch(watch()).await.unwrap().into_inner();
    a.message().await.unwrap();
    b.message().await.unwrap();
    let raw: Client<_, http_body_util::Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    // An empty HealthCheckRequest, gRPC-framed: not compressed, length 0.
    let req = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header(header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(Bytes::from_static(&[
            0, 0, 0, 0, 0,
        ])))
        .unwrap();
    let resp = raw.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h[header::CONTENT_TYPE], "application/grpc");
    assert_eq!(h["grpc-status"], "14");
    assert_eq!(h["grpc-message"], "wip_limit_exceeded");
    assert_eq!(h[REASON_HEADER], "wip_limit_exceeded");
    assert_eq!(h["grpc-retry-pushback-ms"], h[RETRY_AFTER_MS_HEADER]);
    assert!(h.contains_key(header::RETRY_AFTER));
    assert!(
        http_body::Body::is_end_stream(resp.body()),
        "trailers-only: the stream ended with the headers"
    );
    let rest = resp.into_body().collect().await.unwrap();
    assert!(rest.trailers().is_none());
    assert!(rest.to_bytes().is_empty());
    drop((a, b));
}
