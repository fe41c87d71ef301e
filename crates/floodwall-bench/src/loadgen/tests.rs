//! The generators against real sockets: the trivial and constrained
//! backends, and small servers that answer as a test needs.

use super::*;
use crate::backend;
use crate::gateway::RETRY_AFTER_MS_HEADER;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{sync::Arc, time::Duration};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_the_schedule_open_loop_against_a_trivial_backend() {
    let _timed = crate::TIMED.lock().await;
    let backend = backend::start_trivial().await.unwrap();
    let target: Uri = format!("http://{}/", backend.addr).parse().unwrap();
    let tenant = HeaderName::from_static("x-tenant");
    let mut config = LoadConfig::new(target, parse_schedule("2s@1000").unwrap());
    config.headers = Some(Arc::new(move |i| {
        vec![(tenant.clone(), HeaderValue::from(i % 3))]
    }));
    let result = run(config).await.unwrap();

    let total = result.summary(..).totals;
    assert!((1960..=2040).contains(&total.sent), "{total:?}");
    assert_eq!(total.ok, total.sent, "{total:?}");
    assert_eq!(total.ok_within_slo, total.sent, "{total:?}");
    assert_eq!(backend.stats().completed, total.sent);
    assert_eq!(result.seconds.len(), 2);
    for row in &result.seconds {
        assert!((980..=1020).contains(&row.sent), "{row:?}");
    }
    let p50 = result.p50().unwrap();
    assert!(
        p50 > Duration::ZERO && p50 < Duration::from_millis(50),
        "{p50:?}"
    );
    assert!(result.p99().unwrap() >= p50);
    assert!(result.elapsed_ms < 3_000.0, "{}", result.elapsed_ms);
    let json = serde_json::to_value(&result).unwrap();
    assert_eq!(json["overall"]["totals"]["sent"], total.sent);

    // No retries: everything on the wire is a first attempt.
    assert_eq!(total.retries, 0, "{total:?}");
    assert_eq!(total.on_wire, total.sent, "{total:?}");
    // No mix: one implicit group that is the whole run.
    assert_eq!(result.groups.len(), 1);
    let all = result.group("all").unwrap();
    assert_eq!(all.seconds, result.seconds);
    assert_eq!(all.overall, result.overall);
    assert_eq!(all.p99(), result.p99());
    assert!(
        result.dispatch_ms <= 2_000.0 + 50.0,
        "{}",
        result.dispatch_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_timeouts_and_connection_errors_and_stops_after_one_timeout() {
    let _timed = crate::TIMED.lock().await;
    // Workers 1 × 200 ms: 5 req/s capacity against 20 req/s.
    let slow = backend::start(backend::BackendConfig {
        workers: 1,
        service_time: Duration::from_millis(200),
        contention: 0.0,
        overload_error_at: None,
    })
    .await
    .unwrap();
    let mut config = LoadConfig::new(
        format!("http://{}/", slow.addr).parse().unwrap(),
        parse_schedule("1s@20").unwrap(),
    );
    config.client_timeout = Duration::from_millis(300);
    let result = run(config).await.unwrap();
    let s = result.summary(..);
    assert_eq!(s.totals.sent, 20);
    assert!(s.totals.ok >= 1 && s.totals.ok <= 3, "{s:?}");
    assert!(s.totals.timeouts >= 17, "{s:?}");
    assert!(s.percent_timed_out >= 85.0, "{s:?}");
    assert!(result.elapsed_ms < 1_000.0 + 300.0 + 100.0, "{result:?}");
    // The one success waited its 200 ms of service, measured from arrival.
    let p50 = s.success_ms.p50.unwrap();
    assert!((195.0..300.0).contains(&p50), "{s:?}");

    // A closed port: every request is an upstream (connection) error.
    let closed = backend::start_trivial().await.unwrap();
    let addr = closed.addr;
    closed.shutdown().await;
    let result = run(LoadConfig::new(
        format!("http://{addr}/").parse().unwrap(),
        parse_schedule("200ms@50").unwrap(),
    ))
    .await
    .unwrap();
    assert_eq!(result.summary(..).totals.upstream_errors, 10, "{result:?}");
}

/// `max_connections` caps what is on the wire: with one connection against
/// a 30 ms backend, 50 req/s (1.5 in flight on average) never has two
/// requests at the backend, every request is still answered, and the wait
/// for the connection counts in latency (it runs from the scheduled
/// arrival: ~50 arrivals served at ~33/s fall behind by hundreds of ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_caps_requests_on_the_wire_and_counts_the_wait() {
    let _timed = crate::TIMED.lock().await;
    let backend = backend::start(backend::BackendConfig {
        workers: 4,
        service_time: Duration::from_millis(30),
        contention: 0.0,
        overload_error_at: None,
    })
    .await
    .unwrap();
    let mut config = LoadConfig::new(
        format!("http://{}/", backend.addr).parse().unwrap(),
        parse_schedule("1s@50").unwrap(),
    );
    config.client_timeout = Duration::from_secs(5);
    config.max_connections = Some(1);
    let result = run(config).await.unwrap();
    let total = result.summary(..).totals;
    assert_eq!((total.sent, total.ok), (50, 50), "{total:?}");
    let stats = backend.stats();
    assert_eq!(stats.peak_in_service, 1, "{stats:?}");
    assert_eq!(stats.peak_queued, 0, "{stats:?}");
    let p99 = result.p99().unwrap();
    assert!(p99 > Duration::from_millis(200), "{p99:?}");

    let mut zero = LoadConfig::new(
        format!("http://{}/", backend.addr).parse().unwrap(),
        parse_schedule("1s@1").unwrap(),
    );
    zero.max_connections = Some(0);
    assert!(run(zero).await.is_err());
}

/// A server answering every request with `respond(request headers)`,
/// for tests that must see what was sent or send retry hints.
async fn serve_with(
    respond: impl Fn(&HeaderMap) -> http::Response<http_body_util::Full<Bytes>> + Send + Sync + 'static,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use hyper_util::server::conn::auto;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let respond = Arc::new(respond);
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let respond = respond.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<_>| {
                    let response = respond(req.headers());
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, server)
}

fn answer(
    status: StatusCode,
    headers: &[(&'static str, &'static str)],
) -> impl Fn(&HeaderMap) -> http::Response<http_body_util::Full<Bytes>> {
    let headers = headers.to_vec();
    move |_| {
        let mut response =
            http::Response::new(http_body_util::Full::new(Bytes::from_static(b"no\n")));
        *response.status_mut() = status;
        for (name, value) in &headers {
            response
                .headers_mut()
                .insert(*name, HeaderValue::from_static(value));
        }
        response
    }
}

fn uri(addr: std::net::SocketAddr) -> Uri {
    format!("http://{addr}/").parse().unwrap()
}

/// 30% interactive / 70% batch over five tenants, then one hot tenant
/// with 80% and twenty sharing the rest: the server sees each group's
/// headers in proportion, and the results split the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mix_sends_each_group_its_headers_in_proportion() {
    let _timed = crate::TIMED.lock().await;
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        String,
        u64,
    >::new()));
    let (addr, server) = serve_with({
        let seen = seen.clone();
        move |headers| {
            let mut seen = seen.lock().unwrap();
            for name in ["x-class", "x-tenant", "x-extra"] {
                for value in headers.get_all(name) {
                    *seen
                        .entry(format!("{name}={}", value.to_str().unwrap()))
                        .or_default() += 1;
                }
            }
            http::Response::new(http_body_util::Full::new(Bytes::from_static(b"ok\n")))
        }
    })
    .await;
    let class = HeaderName::from_static("x-class");
    let tenant = HeaderName::from_static("x-tenant");
    let five: Vec<HeaderValue> = (0..5)
        .map(|t| HeaderValue::from_str(&format!("t{t}")).unwrap())
        .collect();

    let mut config = LoadConfig::new(uri(addr), parse_schedule("2s@1000").unwrap());
    config.mix = vec![
        Group::new("interactive", 0.3)
            .header(class.clone(), HeaderValue::from_static("interactive")),
        Group::new("batch", 0.7)
            .header(class.clone(), HeaderValue::from_static("batch"))
            .tenants(tenant.clone(), five),
    ];
    // The per-arrival hook still works, on top of the groups.
    config.headers = Some(Arc::new(|_| {
        vec![(
            HeaderName::from_static("x-extra"),
            HeaderValue::from_static("1"),
        )]
    }));
    let result = run(config).await.unwrap();
    let total = result.overall.totals.sent;
    assert!((1960..=2040).contains(&total), "{total}");
    let interactive = result.group("interactive").unwrap().overall.totals;
    let batch = result.group("batch").unwrap().overall.totals;
    let share = interactive.sent as f64 / total as f64;
    assert!((0.27..=0.33).contains(&share), "{interactive:?} of {total}");
    assert_eq!(interactive.sent + batch.sent, total);
    assert_eq!(interactive.ok + batch.ok, result.overall.totals.ok);
    assert!(result.group("nobody").is_none());
    // Per-second rows split too.
    for (second, row) in result.seconds.iter().enumerate() {
        let groups: u64 = result.groups.iter().map(|g| g.seconds[second].sent).sum();
        assert_eq!(groups, row.sent, "second {second}");
    }
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen["x-class=interactive"], interactive.sent, "{seen:?}");
        assert_eq!(seen["x-class=batch"], batch.sent, "{seen:?}");
        assert_eq!(seen["x-extra=1"], total, "{seen:?}");
        for t in 0..5 {
            let n = seen[&format!("x-tenant=t{t}")] as f64;
            assert!((n - batch.sent as f64 / 5.0).abs() <= 1.0, "{seen:?}");
        }
    }
    let group_p50 = result.group("interactive").unwrap().p50().unwrap();
    assert!(group_p50 < Duration::from_millis(50), "{group_p50:?}");
    let json = serde_json::to_value(&result).unwrap();
    assert_eq!(json["groups"][0]["name"], "interactive");
    assert_eq!(json["groups"][1]["overall"]["totals"]["sent"], batch.sent);

    seen.lock().unwrap().clear();
    let mut config = LoadConfig::new(uri(addr), parse_schedule("2s@1000").unwrap());
    config.mix = std::iter::once(
        Group::new("hot", 0.8).header(tenant.clone(), HeaderValue::from_static("hot")),
    )
    .chain((0..20).map(|t| {
        Group::new(format!("quiet-{t}"), 0.01).header(tenant.clone(), HeaderValue::from(t))
    }))
    .collect();
    let result = run(config).await.unwrap();
    let total = result.overall.totals.sent as f64;
    let hot = result.group("hot").unwrap().overall.totals.sent as f64;
    assert!((0.77..=0.83).contains(&(hot / total)), "{hot} of {total}");
    for t in 0..20 {
        let quiet = result
            .group(&format!("quiet-{t}"))
            .unwrap()
            .overall
            .totals
            .sent as f64;
        assert!((quiet / total - 0.01).abs() <= 0.03, "{quiet} of {total}");
        assert_eq!(seen.lock().unwrap()[&format!("x-tenant={t}")] as f64, quiet);
    }
    server.abort();
}

/// A database in error mode: one request holds the only worker for 3 s,
/// every other one is refused at once with 503.
fn refusing() -> backend::BackendConfig {
    backend::BackendConfig {
        workers: 1,
        service_time: Duration::from_secs(3),
        contention: 0.0,
        overload_error_at: Some(0),
    }
}

fn retrying(target: Uri, retry: RetryPolicy) -> LoadConfig {
    // 100 users in second 0, a quiet second 1 to see the retries land.
    let mut config = LoadConfig::new(target, parse_schedule("1s@100,1s@0").unwrap());
    config.client_timeout = Duration::from_millis(1500);
    config.retry = retry;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_retries_multiply_wire_load() {
    let _timed = crate::TIMED.lock().await;
    let db = backend::start(refusing()).await.unwrap();
    let target = format!("http://{}/", db.addr).parse().unwrap();
    let result = run(retrying(target, RetryPolicy::Immediate { max_attempts: 4 }))
        .await
        .unwrap();
    let t = result.overall.totals;
    // The first user got the worker and timed out; 99 were refused four
    // times each, all within moments of arriving.
    assert_eq!((t.sent, t.timeouts, t.rejected), (100, 1, 99), "{t:?}");
    assert_eq!(t.retries, 99 * 3, "{t:?}");
    assert_eq!(t.on_wire, 100 + 99 * 3, "{t:?}");
    assert!(result.seconds[0].on_wire >= 350, "{:?}", result.seconds);
    assert_eq!(db.stats().refused, 99 * 4);
    // The final rejection is measured from the original arrival.
    let p99 = result.overall.rejection_ms.p99.unwrap();
    assert!(p99 < 200.0, "{:?}", result.overall);
    assert!(result.elapsed_ms < 2_500.0, "{}", result.elapsed_ms);
    assert!((result.overall.on_wire_rps - 397.0 / 2.0).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honouring_retry_after_spreads_the_retries() {
    let _timed = crate::TIMED.lock().await;
    let db = backend::start(refusing()).await.unwrap();
    let target = format!("http://{}/", db.addr).parse().unwrap();
    let policy = RetryPolicy::HonourRetryAfter {
        max_attempts: 4,
        cap: Duration::from_secs(10),
    };
    let result = run(retrying(target, policy)).await.unwrap();
    let t = result.overall.totals;
    // No hint from the database: each waits the default 1 s, retries
    // once, and would pass its 1.5 s deadline waiting for a second try.
    assert_eq!((t.sent, t.timeouts, t.rejected), (100, 1, 99), "{t:?}");
    assert_eq!(t.retries, 99, "{t:?}");
    let (first, second) = (result.seconds[0], result.seconds[1]);
    assert_eq!((first.on_wire, first.retries), (100, 0), "{first:?}");
    assert_eq!((second.on_wire, second.retries), (99, 99), "{second:?}");
    assert_eq!(db.stats().refused, 99 * 2);
    let p50 = result.overall.rejection_ms.p50.unwrap();
    assert!((1_000.0..1_300.0).contains(&p50), "{:?}", result.overall);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honours_floodwall_hints_and_the_cap() {
    let _timed = crate::TIMED.lock().await;
    let one_user = || parse_schedule("100ms@10").unwrap();
    let honour = |cap| RetryPolicy::HonourRetryAfter {
        max_attempts: 3,
        cap,
    };

    // floodwall's millisecond hint beats Retry-After: two waits of 150 ms.
    let (addr, server) = serve_with(answer(
        StatusCode::SERVICE_UNAVAILABLE,
        &[(RETRY_AFTER_MS_HEADER, "150"), ("retry-after", "1")],
    ))
    .await;
    let mut config = LoadConfig::new(uri(addr), one_user());
    config.client_timeout = Duration::from_secs(3);
    config.retry = honour(Duration::from_secs(10));
    let result = run(config).await.unwrap();
    assert_eq!(result.overall.totals.retries, 2);
    let took = result.overall.rejection_ms.p50.unwrap();
    assert!((295.0..600.0).contains(&took), "{took}");
    server.abort();

    // Retry-After: 1 capped at 200 ms, 429 counts as a refusal too.
    let (addr, server) = serve_with(answer(
        StatusCode::TOO_MANY_REQUESTS,
        &[("retry-after", "1")],
    ))
    .await;
    let mut config = LoadConfig::new(uri(addr), one_user());
    config.client_timeout = Duration::from_secs(3);
    config.retry = honour(Duration::from_millis(200));
    let result = run(config).await.unwrap();
    assert_eq!(result.overall.totals.retries, 2);
    let took = result.overall.rejection_ms.p50.unwrap();
    assert!((395.0..700.0).contains(&took), "{took}");
    server.abort();
}

/// Even a client that would retry for ever stops at its deadline, and
/// the run ends by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_at_the_deadline() {
    let _timed = crate::TIMED.lock().await;
    let (addr, server) = serve_with(answer(StatusCode::SERVICE_UNAVAILABLE, &[])).await;
    let mut config = LoadConfig::new(uri(addr), parse_schedule("200ms@20").unwrap());
    config.client_timeout = Duration::from_millis(200);
    config.retry = RetryPolicy::Immediate {
        max_attempts: u32::MAX,
    };
    let result = run(config).await.unwrap();
    let t = result.overall.totals;
    assert_eq!(t.sent, 4);
    assert_eq!(t.rejected + t.timeouts, 4, "{t:?}");
    assert!(t.retries > 20, "{t:?}");
    assert_eq!(t.on_wire, t.sent + t.retries);
    assert!(
        result.elapsed_ms < 200.0 + 200.0 + 300.0,
        "{}",
        result.elapsed_ms
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_reports_a_sane_rps_against_a_trivial_backend() {
    let _timed = crate::TIMED.lock().await;
    let trivial = backend::start_trivial().await.unwrap();
    let result = run_closed_loop(uri(trivial.addr), 4, Duration::from_secs(1))
        .await
        .unwrap();
    eprintln!("{result:?}");
    assert_eq!(result.errors, 0, "{result:?}");
    assert_eq!(result.ok, result.requests, "{result:?}");
    assert!(result.requests > 500, "{result:?}");
    assert!(
        (1_000.0..1_500.0).contains(&result.elapsed_ms),
        "{result:?}"
    );
    let expected = result.ok as f64 / (result.elapsed_ms / 1e3);
    assert!((result.rps - expected).abs() < 1.0, "{result:?}");
    let (p50, p99, p999, max) = (
        result.p50_ms.unwrap(),
        result.p99_ms.unwrap(),
        result.p999_ms.unwrap(),
        result.max_ms.unwrap(),
    );
    assert!(
        p50 > 0.0 && p50 < 20.0 && p50 <= p99 && p99 <= p999 && p999 <= max,
        "{result:?}"
    );
    assert_eq!(trivial.stats().completed, result.requests);
    assert_eq!(result.refused, 0, "{result:?}");
    assert_eq!(result.seconds.len(), 1, "one row per second");
    assert_eq!(
        result.seconds.iter().map(|s| s.ok).sum::<u64>(),
        result.ok,
        "{result:?}"
    );

    let addr = trivial.addr;
    trivial.shutdown().await;
    let err = run_closed_loop(uri(addr), 2, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("connecting"), "{err:#}");
}

/// The generator must not be the bottleneck of any benchmark it runs:
/// `cargo test --release -p floodwall-bench --lib headroom -- --nocapture`.
/// A debug build is several times slower, so it only checks a floor, low
/// enough to hold with the other core busy (1,892 on schedule of 2,500 was
/// seen so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headroom_against_a_trivial_backend() {
    let _timed = crate::TIMED.lock().await;
    let (rate, floor) = if cfg!(debug_assertions) {
        (2_500.0, 1_500.0)
    } else {
        (6_000.0, 5_000.0)
    };
    let headroom = measure_headroom(rate, Duration::from_secs(2))
        .await
        .unwrap();
    eprintln!("{headroom:?}");
    assert!(headroom.on_schedule_rps >= floor, "{headroom:?}");
    assert!(headroom.ok_rps >= floor, "{headroom:?}");
}

/// Where the generator stops keeping up on this machine, for
/// BENCHMARKS.md: `cargo test --release -p floodwall-bench --lib headroom_sweep
/// -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "takes about 15 s; prints a table"]
async fn headroom_sweep() {
    let _timed = crate::TIMED.lock().await;
    println!("| rate | sent/s | on schedule/s | ok/s | late | max lateness | p99 |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for rate in [5_000.0, 10_000.0, 20_000.0, 30_000.0, 40_000.0, 60_000.0] {
        let h = measure_headroom(rate, Duration::from_secs(2))
            .await
            .unwrap();
        println!(
            "| {rate} | {:.0} | {:.0} | {:.0} | {:.1}% | {:.1} ms | {:.1} ms |",
            h.sent_rps,
            h.on_schedule_rps,
            h.ok_rps,
            100.0 * h.late_fraction,
            h.max_lateness_ms,
            h.p99_ms.unwrap_or(f64::NAN),
        );
    }
}
