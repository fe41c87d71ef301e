//! The upstream connection pool (`proxy/pool.rs`) against a hand-written
//! HTTP/1.1 upstream that numbers its connections: keep-alive reuse,
//! `pool_max_idle_per_host = 0`, an upstream that closes every connection
//! after one response without saying so (a stale idle connection must not
//! become a 502), idle expiry, and reuse after a body larger than the
//! response buffer.

mod common;

use common::{config_from_toml, start, Client};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the upstream does after each response.
#[derive(Clone, Copy, PartialEq)]
enum After {
    /// Keeps the connection open for the next request.
    KeepAlive,
    /// Closes it, although the response said nothing of it.
    Close,
}

/// A raw HTTP/1.1 upstream: each response body is the number of the
/// connection it was sent on (then `body_bytes - len` bytes of padding).
struct Raw {
    uri: http::Uri,
    accepted: Arc<AtomicUsize>,
    /// Connections the other side (floodwall) closed.
    closed_by_peer: Arc<AtomicUsize>,
}

impl Raw {
    async fn start(after: After, body_bytes: usize) -> Raw {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: http::Uri = format!("http://{}", l.local_addr().unwrap())
            .parse()
            .unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed_by_peer = Arc::new(AtomicUsize::new(0));
        let (a, c) = (accepted.clone(), closed_by_peer.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let id = a.fetch_add(1, Ordering::SeqCst) + 1;
                let c = c.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // One request head (the tests send no bodies).
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => {
                                    c.fetch_add(1, Ordering::SeqCst);
                                    return;
                                }
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        buf.drain(..end);
                        let mut body = id.to_string().into_bytes();
                        body.resize(body_bytes.max(body.len()), b' ');
                        let head =
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                        if s.write_all(head.as_bytes()).await.is_err()
                            || s.write_all(&body).await.is_err()
                        {
                            return;
                        }
                        if after == After::Close {
                            return;
                        }
                    }
                });
            }
        });
        Raw {
            uri,
            accepted,
            closed_by_peer,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// One proxy worker, so that every request uses the same pool (each
/// worker has its own), whichever client connection it comes on.
fn config(raw: &Raw, upstream_extra: &str) -> floodwall::config::Config {
    let text = format!(
        "[server]\nworkers = 1\n\n[[upstreams]]\nname = \"app\"\nurl = \"{{upstream}}\"\n{upstream_extra}\n\n\
         [[routes]]\nname = \"all\"\nupstream = \"app\"\n\
         limit = {{ algorithm = \"fixed\", value = 16 }}\n"
    );
    config_from_toml(&text, &raw.uri)
}

/// `n` requests one after another; the connection number of each.
async fn sequential(proxy: std::net::SocketAddr, n: usize) -> Vec<usize> {
    let client = Client::http1();
    let mut ids = Vec::new();
    for _ in 0..n {
        let reply = client.get(proxy, "/", &[]).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let text = std::str::from_utf8(&reply.body).unwrap().trim();
        ids.push(text.parse().unwrap());
    }
    ids
}

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let raw = Raw::start(After::KeepAlive, 0).await;
    let fw = start(config(&raw, "")).await;
    let ids = sequential(fw.proxy_addr, 20).await;
    assert_eq!(raw.accepted(), 1, "connections opened: {ids:?}");
    assert!(ids.iter().all(|&i| i == 1), "{ids:?}");
}

#[tokio::test]
async fn no_idle_connections_kept_means_one_connection_per_request() {
    let raw = Raw::start(After::KeepAlive, 0).await;
    let fw = start(config(&raw, "pool_max_idle_per_host = 0")).await;
    let ids = sequential(fw.proxy_addr, 5).await;
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    // Each was closed by floodwall once its response was read.
    common::wait_until(
        Duration::from_secs(5),
        "every connection closed",
        || async { raw.closed_by_peer.load(Ordering::SeqCst) == 5 },
    )
    .await;
}

#[tokio::test]
async fn an_upstream_that_closes_after_each_response_gets_no_502() {
    // Nothing in the response says the connection closes: floodwall pools
    // it, finds it closed at the next request, and opens another. A
    // connection that closed between the check and the write is retried
    // once on a new one, since nothing of the request was written.
    let raw = Raw::start(After::Close, 0).await;
    let fw = start(config(&raw, "")).await;
    let ids = sequential(fw.proxy_addr, 30).await;
    assert_eq!(ids, (1..=30).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_pool_idle_timeout() {
    let raw = Raw::start(After::KeepAlive, 0).await;
    let fw = start(config(&raw, "pool_idle_timeout = \"300ms\"")).await;
    assert_eq!(sequential(fw.proxy_addr, 1).await, vec![1]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The next request finds the idle connection expired: it is closed
    // and a new one opened.
    assert_eq!(sequential(fw.proxy_addr, 1).await, vec![2]);
    common::wait_until(
        Duration::from_secs(5),
        "the expired connection closed",
        || async { raw.closed_by_peer.load(Ordering::SeqCst) >= 1 },
    )
    .await;
    // Within the timeout the connection is reused.
    assert_eq!(sequential(fw.proxy_addr, 3).await, vec![2, 2, 2]);
}

#[tokio::test]
async fn a_connection_is_reused_after_a_streamed_body() {
    // 1 MiB has not all arrived with the headers, so the body is read by
    // the read-ahead task, and the connection comes back only when its
    // last byte has been read.
    let raw = Raw::start(After::KeepAlive, 1 << 20).await;
    let fw = start(config(&raw, "")).await;
    let ids = sequential(fw.proxy_addr, 5).await;
    assert_eq!(ids, vec![1; 5]);
    assert_eq!(raw.accepted(), 1);
}
