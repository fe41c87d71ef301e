//! A real axum server behind AdmissionLayer, on a real socket: limit 4, 20
//! concurrent slow requests. The handler never runs more than 4 at once,
//! and the 16 refused get the response a real floodwall gateway gives for
//! the same refusal, byte for byte (the jittered wait aside).

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use floodwall::config::Config;
use floodwall_core::respond::{REASON_HEADER, RETRY_AFTER_MS_HEADER};
use floodwall_tower::AdmissionLayer;
use http::{header, HeaderMap, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long each admitted request takes.
const SLOW: Duration = Duration::from_millis(1000);

/// Counts concurrent executions of the handler.
#[derive(Default)]
struct Peak {
    now: AtomicUsize,
    peak: AtomicUsize,
    total: AtomicUsize,
}

fn slow_app(peak: Arc<Peak>) -> Router {
    Router::new().route(
        "/",
        get(move || {
            let peak = peak.clone();
            async move {
                let n = peak.now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.peak.fetch_max(n, Ordering::SeqCst);
                peak.total.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(SLOW).await;
                peak.now.fetch_sub(1, Ordering::SeqCst);
                "done"
            }
        }),
    )
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// `n` GETs at once, each on its own connection.
async fn burst(addr: SocketAddr, n: usize) -> Vec<Reply> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
    let calls = (0..n).map(|_| {
        let (client, uri) = (client.clone(), uri.clone());
        tokio::spawn(async move {
            let resp = client.get(uri).await.unwrap();
            let (parts, body) = resp.into_parts();
            Reply {
                status: parts.status,
                headers: parts.headers,
                body: body.collect().await.unwrap().to_bytes(),
            }
        })
    });
    let mut out = Vec::new();
    for c in calls.collect::<Vec<_>>() {
        out.push(c.await.unwrap());
    }
    out
}

fn seconds(h: &HeaderMap) -> u64 {
    h[header::RETRY_AFTER].to_str().unwrap().parse().unwrap()
}

fn millis(h: &HeaderMap) -> u64 {
    h[RETRY_AFTER_MS_HEADER].to_str().unwrap().parse().unwrap()
}

/// The headers that must be equal byte for byte: all but the date and the
/// two jittered waits.
fn fixed_headers(h: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = h
        .iter()
        .filter(|(k, _)| {
            *k != header::DATE && *k != header::RETRY_AFTER && k.as_str() != RETRY_AFTER_MS_HEADER
        })
        .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    v.sort();
    v
}

fn names(h: &HeaderMap) -> Vec<String> {
    let mut v: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_4_of_20_slow_requests_answers_as_the_gateway_does() {
    // The library: axum with the layer, limit 4.
    let peak = Arc::new(Peak::default());
    let limiter = floodwall_tower::fixed_limiter(4);
    let app = slow_app(peak.clone()).layer(AdmissionLayer::new(limiter.clone()).answer_refusals());
    let lib = serve(app).await;

    // The gateway: `floodwall serve --limit 4` in process, in front of the
    // same slow handler without the layer.
    let upstream = serve(slow_app(Arc::new(Peak::default()))).await;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let config = Config::for_upstream(
        loopback,
        format!("http://{upstream}").parse().unwrap(),
        Some(4),
        loopback,
    );
    let gateway = floodwall::app::start(config).await.unwrap();

    let (ours, theirs) = tokio::join!(burst(lib, 20), burst(gateway.proxy_addr, 20));

    assert!(
        peak.peak.load(Ordering::SeqCst) <= 4,
        "handler peak {}",
        peak.peak.load(Ordering::SeqCst)
    );
    assert_eq!(peak.total.load(Ordering::SeqCst), 4, "refused never ran");
    for replies in [&ours, &theirs] {
        assert_eq!(replies.iter().filter(|r| r.status == 200).count(), 4);
        assert_eq!(replies.iter().filter(|r| r.status == 503).count(), 16);
    }

    let reference = theirs.iter().find(|r| r.status == 503).unwrap();
    assert_eq!(reference.headers[REASON_HEADER], "wip_limit_exceeded");
    for r in ours.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, reference.status);
        assert_eq!(r.body, reference.body, "the JSON body, byte for byte");
        assert_eq!(names(&r.headers), names(&reference.headers), "same headers");
        assert_eq!(fixed_headers(&r.headers), fixed_headers(&reference.headers));
        // The waits are jittered over [0.5, 1.5] of the limiter's estimate,
        // whole seconds at least 1, and agree with each other.
        let (s, ms) = (seconds(&r.headers), millis(&r.headers));
        assert!(
            s >= 1 && s == (ms as f64 / 1000.0).ceil().max(1.0) as u64,
            "{s} s vs {ms} ms"
        );
    }
    assert_eq!(
        reference.body.as_ref(),
        b"{\"error\":\"service_unavailable\",\"reason\":\"wip_limit_exceeded\"}\n"
    );

    // Every slot is back once the bodies have been read.
    assert_eq!(limiter.inflight(), 0);
    gateway.shutdown().await;
}
