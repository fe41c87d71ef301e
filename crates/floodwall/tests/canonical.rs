//! One canonical request, end to end: however a client spells the path or
//! the host, floodwall routes on one value and forwards that same value, so
//! no spelling reaches another route's upstream or gets around its limit.
//!
//! Real floodwall, two real upstreams (A behind the limited route, B behind
//! the catch-all), raw HTTP/1.1 sockets for what hyper's client would not
//! send, and hyper's HTTP/2 client for `:authority` against `Host`.

mod common;

use bytes::Bytes;
use common::*;
use http::Method;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous bound for things that must happen soon on a loaded machine.
const EVENTUALLY: Duration = Duration::from_secs(5);

/// `/reports` (limit 1) goes to A, everything else to B.
const BY_PATH: &str = r#"
[[upstreams]]
name = "a"
url = "{a}"

[[upstreams]]
name = "b"
url = "{upstream}"

[[routes]]
name = "reports"
path_prefix = "/reports"
upstream = "a"
limit = { algorithm = "fixed", value = 1 }

[[routes]]
name = "rest"
upstream = "b"
limit = { algorithm = "fixed", value = 100 }
"#;

/// Host `api.test` (limit 1) goes to A, every other host to B.
const BY_HOST: &str = r#"
[[upstreams]]
name = "a"
url = "{a}"

[[upstreams]]
name = "b"
url = "{upstream}"

[[routes]]
name = "api"
host = "api.test"
upstream = "a"
limit = { algorithm = "fixed", value = 1 }

[[routes]]
name = "rest"
upstream = "b"
limit = { algorithm = "fixed", value = 100 }
"#;

struct Setup {
    a: Upstream,
    b: Upstream,
    fw: floodwall::app::Running,
}

async fn setup(toml: &str) -> Setup {
    let a = Upstream::start(Duration::ZERO).await;
    let b = Upstream::start(Duration::ZERO).await;
    let text = toml.replace("{a}", &a.uri().to_string());
    let fw = start(config_from_toml(&text, &b.uri())).await;
    Setup { a, b, fw }
}

/// Spellings of a path under `/reports` and what A must receive for each.
const TRICKY: [(&str, &str); 8] = [
    ("//reports", "/reports"),
    ("/./reports", "/reports"),
    ("/%72eports", "/reports"),
    ("/x/../reports", "/reports"),
    ("/%2e%2E/reports", "/reports"),
    ("/x//../reports/", "/reports/"),
    ("/../../reports", "/reports"),
    (
        "/%72eports/./a//b/../c%2fd?q=%2F&x=.././",
        "/reports/a/c%2Fd?q=%2F&x=.././",
    ),
];

fn seen_path(reply: &Reply) -> &str {
    reply
        .headers
        .get(SEEN_PATH_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {SEEN_PATH_HEADER}: {reply:?}"))
}

/// Each spelling of `/reports` reaches A, which sees the normalised path
/// (query untouched); B sees nothing but what is really not `/reports`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tricky_paths_reach_the_route_they_normalise_to() {
    let s = setup(BY_PATH).await;
    let client = Client::http1();
    for (raw, want) in TRICKY {
        let reply = client.get(s.fw.proxy_addr, raw, &[]).await;
        assert_eq!(reply.status, 200, "{raw}: {reply:?}");
        assert_eq!(seen_path(&reply), want, "{raw}");
    }
    assert_eq!(s.a.total(), TRICKY.len());
    assert_eq!(s.b.total(), 0, "the catch-all saw a /reports request");

    // What does not normalise to /reports still goes to B, normalised.
    for (raw, want) in [
        ("/x/./y", "/x/y"),
        ("/reports/../x", "/x"),
        ("/%2Freports", "/%2Freports"),
    ] {
        let reply = client.get(s.fw.proxy_addr, raw, &[]).await;
        assert_eq!(reply.status, 200, "{raw}: {reply:?}");
        assert_eq!(seen_path(&reply), want, "{raw}");
    }
    assert_eq!(s.b.total(), 3);
    assert_eq!(s.a.total(), TRICKY.len());
}

/// With A's one slot held, every spelling of `/reports` is refused by the
/// `/reports` gate (503 `wip_limit_exceeded`, counted on that route), none
/// is served by B: the limit cannot be bypassed by spelling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tricky_paths_cannot_bypass_the_limit() {
    let s = setup(BY_PATH).await;
    let proxy = s.fw.proxy_addr;
    let client = Client::http1();
    let held = {
        let client = client.clone();
        tokio::spawn(async move { client.get(proxy, "/reports?hold=slot", &[]).await })
    };
    wait_until(EVENTUALLY, "A holds the slow request", || async {
        s.a.current() == 1
    })
    .await;

    for (raw, _) in TRICKY {
        client
            .get(proxy, raw, &[])
            .await
            .assert_refused(503, "wip_limit_exceeded");
    }
    assert_eq!(
        s.b.total(),
        0,
        "a spelling of /reports reached the catch-all"
    );
    let scrape = metrics(s.fw.admin_addr).await;
    assert_eq!(
        sum(
            &scrape,
            "floodwall_rejections_total",
            &[("route", "reports"), ("reason", "wip_limit_exceeded")]
        ),
        TRICKY.len() as f64
    );

    s.a.open("slot");
    let reply = held.await.unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(s.a.total(), 1);
}

/// A path with a broken percent-encoding, or that is not a path, is a 400
/// `invalid_path` decided before admission: even with the route's one slot
/// taken it is 400, not 503, and no upstream sees it. Counted unrouted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnormalisable_paths_are_refused_before_admission() {
    let s = setup(BY_PATH).await;
    let proxy = s.fw.proxy_addr;
    let client = Client::http1();
    let held = {
        let client = client.clone();
        tokio::spawn(async move { client.get(proxy, "/reports?hold=slot", &[]).await })
    };
    wait_until(EVENTUALLY, "A holds the slow request", || async {
        s.a.current() == 1
    })
    .await;

    for raw in ["/reports/%zz", "/reports%", "/reports/%2"] {
        client
            .get(proxy, raw, &[])
            .await
            .assert_refused(400, "invalid_path");
    }
    let reply = raw_request(
        proxy,
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    reply.assert_refused(400, "invalid_path");

    let scrape = metrics(s.fw.admin_addr).await;
    assert_eq!(
        sum(
            &scrape,
            "floodwall_rejections_total",
            &[("route", ""), ("reason", "invalid_path")]
        ),
        4.0
    );
    s.a.open("slot");
    assert_eq!(held.await.unwrap().status, 200);
    assert_eq!((s.a.total(), s.b.total()), (1, 0));
}

// ---------------------------------------------------------------------------
// Host
// ---------------------------------------------------------------------------

/// Writes `bytes` to a fresh connection to `addr` and reads the response to
/// the end of the connection (the request should say `Connection: close`).
async fn raw_request(addr: SocketAddr, bytes: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(REQUEST_DEADLINE, s.read_to_end(&mut buf))
        .await
        .expect("response within the deadline")
        .unwrap();
    parse_response(&buf)
}

/// An HTTP/1.1 response: status line, headers, and a body by
/// Content-Length, chunked, or to the end.
fn parse_response(buf: &[u8]) -> Reply {
    let text_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {:?}", String::from_utf8_lossy(buf)));
    let head = std::str::from_utf8(&buf[..text_end]).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut headers = http::HeaderMap::new();
    for l in lines {
        let (k, v) = l.split_once(':').unwrap();
        headers.append(
            http::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
            http::HeaderValue::from_str(v.trim()).unwrap(),
        );
    }
    let rest = &buf[text_end + 4..];
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v == "chunked")
    {
        let mut body = Vec::new();
        let mut r = rest;
        loop {
            let eol = r.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&r[..eol]).unwrap().trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&r[eol + 2..eol + 2 + size]);
            r = &r[eol + 2 + size + 2..];
        }
        body
    } else if let Some(n) = headers.get("content-length") {
        rest[..n.to_str().unwrap().parse::<usize>().unwrap()].to_vec()
    } else {
        rest.to_vec()
    };
    Reply {
        status: http::StatusCode::from_u16(status).unwrap(),
        headers,
        body: Bytes::from(body),
    }
}

/// The values of header `name` the upstream received, from its `/echo`.
fn echoed(reply: &Reply, name: &str) -> Vec<String> {
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()[name]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// HTTP/1.1 absolute-form: the URI's authority wins over Host, in both
/// directions, for routing and for the Host the upstream receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_authority_wins_over_host() {
    let s = setup(BY_HOST).await;
    let proxy = s.fw.proxy_addr;

    let reply = raw_request(
        proxy,
        b"GET http://api.test/echo HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(echoed(&reply, "host"), ["api.test"]);
    assert_eq!(seen_path(&reply), "/echo");
    assert_eq!((s.a.total(), s.b.total()), (1, 0));

    let reply = raw_request(
        proxy,
        b"GET http://other.test/echo HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(echoed(&reply, "host"), ["other.test"]);
    assert_eq!((s.a.total(), s.b.total()), (1, 1));

    // Case, a trailing dot and a port are one host; the port is kept.
    let reply = raw_request(
        proxy,
        b"GET /echo HTTP/1.1\r\nHost: API.Test.:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(echoed(&reply, "host"), ["api.test:8080"]);
    assert_eq!((s.a.total(), s.b.total()), (2, 1));

    // The authority's path is normalised too.
    let reply = raw_request(
        proxy,
        b"GET http://API.test//x/../echo?q=1 HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(echoed(&reply, "host"), ["api.test"]);
    assert_eq!(seen_path(&reply), "/echo?q=1");
    assert_eq!((s.a.total(), s.b.total()), (3, 1));
}

/// A missing Host (HTTP/1.1), two Host lines, or an invalid host are 400s
/// with their reason, counted unrouted, and reach no upstream. HTTP/1.0 may
/// omit Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_duplicate_and_invalid_hosts_are_400() {
    let s = setup(BY_HOST).await;
    let proxy = s.fw.proxy_addr;
    let cases: [(&[u8], &str); 7] = [
        (b"GET /echo HTTP/1.1\r\nConnection: close\r\n\r\n", "missing_host"),
        (
            b"GET http://api.test/echo HTTP/1.1\r\nConnection: close\r\n\r\n",
            "missing_host",
        ),
        (
            b"GET /echo HTTP/1.1\r\nHost: api.test\r\nHost: other.test\r\nConnection: close\r\n\r\n",
            "duplicate_host",
        ),
        (
            b"GET /echo HTTP/1.1\r\nHost: api.test\r\nHost: api.test\r\nConnection: close\r\n\r\n",
            "duplicate_host",
        ),
        (
            b"GET /echo HTTP/1.1\r\nHost: api.test@other.test\r\nConnection: close\r\n\r\n",
            "invalid_host",
        ),
        (
            b"GET /echo HTTP/1.1\r\nHost: api..test\r\nConnection: close\r\n\r\n",
            "invalid_host",
        ),
        (
            b"GET /echo HTTP/1.1\r\nHost: api.test:99999\r\nConnection: close\r\n\r\n",
            "invalid_host",
        ),
    ];
    for (bytes, reason) in cases {
        let reply = raw_request(proxy, bytes).await;
        reply.assert_refused(400, reason);
    }
    assert_eq!((s.a.total(), s.b.total()), (0, 0));
    let scrape = metrics(s.fw.admin_addr).await;
    for (reason, n) in [
        ("missing_host", 2.0),
        ("duplicate_host", 2.0),
        ("invalid_host", 3.0),
    ] {
        assert_eq!(
            sum(
                &scrape,
                "floodwall_rejections_total",
                &[("route", ""), ("reason", reason)]
            ),
            n,
            "{reason}"
        );
    }

    let reply = raw_request(proxy, b"GET /echo HTTP/1.0\r\n\r\n").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!((s.a.total(), s.b.total()), (0, 1));
}

/// Sends one HTTP/2 request with `:authority` from `uri` and the given
/// `host` header lines over a fresh h2c connection.
async fn h2_request(addr: SocketAddr, uri: &str, hosts: &[&str]) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let mut b = http::Request::builder().method(Method::GET).uri(uri);
    for h in hosts {
        b = b.header(http::header::HOST, *h);
    }
    let req = b.body(Empty::<Bytes>::new()).unwrap();
    let fut = async {
        let resp = send.send_request(req).await.expect("h2 response");
        let (parts, body) = resp.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    };
    tokio::time::timeout(REQUEST_DEADLINE, fut)
        .await
        .expect("h2 response within the deadline")
}

/// HTTP/2: `:authority` wins over a `Host` header that says otherwise, for
/// routing and for the Host the upstream receives; two Host lines are 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_authority_wins_over_host() {
    let s = setup(BY_HOST).await;
    let proxy = s.fw.proxy_addr;

    let reply = h2_request(proxy, "http://api.test/echo", &["other.test"]).await;
    assert_eq!(echoed(&reply, "host"), ["api.test"]);
    assert_eq!((s.a.total(), s.b.total()), (1, 0));

    let reply = h2_request(proxy, "http://other.test/echo", &["api.test"]).await;
    assert_eq!(echoed(&reply, "host"), ["other.test"]);
    assert_eq!((s.a.total(), s.b.total()), (1, 1));

    let reply = h2_request(proxy, "http://api.test/./%65cho", &[]).await;
    assert_eq!(echoed(&reply, "host"), ["api.test"]);
    assert_eq!(seen_path(&reply), "/echo");
    assert_eq!((s.a.total(), s.b.total()), (2, 1));

    h2_request(proxy, "http://api.test/echo", &["api.test", "other.test"])
        .await
        .assert_refused(400, "duplicate_host");
    assert_eq!((s.a.total(), s.b.total()), (2, 1));
}
