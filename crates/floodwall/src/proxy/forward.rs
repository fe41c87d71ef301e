//! Forwarding: the upstream client and the header rewrites of a proxy.

use super::dns::SystemResolver;
use super::endpoints::{EndpointPick, Endpoints, RING_VERSION_HEADER};
use super::pool::{PoolSettings, Pooled, Pools, SendError};
use super::resilience::Guards;
use super::upload::Upload;
use crate::config::UpstreamConfig;
use crate::events::Events;
use crate::tls::{ArrivedOverTls, UpstreamConnector};
use floodwall_core::Clock;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

thread_local! {
    /// Which proxy worker this thread is (`server/workers.rs`); 0 on any
    /// other thread.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as proxy worker `index`, so that the requests
/// it forwards use that worker's own upstream connections.
pub fn enter_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// One upstream: its endpoints and a keep-alive connection pool per worker.
#[derive(Debug)]
pub struct Upstream {
    /// The upstream name.
    pub name: String,
    scheme: http::uri::Scheme,
    /// Its endpoints and the choice among them (`endpoints.rs`).
    pub endpoints: Endpoints,
    /// One pool of kept-alive connections per proxy worker (`pool.rs`).
    /// Per worker because a connection's task runs on the runtime that
    /// opened it: a worker using another's connection would wake that
    /// worker's thread for every request. The connector speaks TLS to an
    /// `https://` upstream (`tls/upstream.rs`).
    pools: Arc<Pools>,
    /// How long to wait for response headers.
    pub response_timeout: Duration,
    /// Its breaker and bulkhead, shared by every route that forwards here
    /// (`resilience.rs`).
    pub guards: Guards,
    /// Its address as the decision log names it: the endpoints'
    /// `host:port`s, or the DNS name.
    pub host: String,
}

impl Upstream {
    /// Connection pools for `cfg`, one for each of `workers` proxy workers, with its
    /// connect timeout, TLS settings and pool settings
    /// (`pool_max_idle_per_host` applies to each). Fails only for an
    /// `https://` upstream whose trust roots cannot be loaded (its
    /// `ca_file`, or the system's).
    ///
    /// Its breaker runs on `clock` and writes its state changes to
    /// `events`; a bulkhead `quota` is a fraction of `quota_of` (the summed
    /// limit ceilings of the routes that use it).
    pub fn new(
        cfg: &UpstreamConfig,
        workers: usize,
        clock: Arc<dyn Clock>,
        quota_of: usize,
        events: &Arc<Events>,
    ) -> anyhow::Result<Self> {
        let pools = Arc::new(Pools::new(
            UpstreamConnector::new(cfg)?,
            PoolSettings {
                workers,
                max_idle: cfg.pool_max_idle_per_host,
                idle_timeout: cfg.pool_idle_timeout,
                max_connecting: cfg.pool_max_connecting,
                connect_timeout: cfg.connect_timeout,
            },
        ));
        let scheme = cfg
            .first_url()
            .and_then(|u| u.scheme().cloned())
            .unwrap_or(http::uri::Scheme::HTTP);
        let host = match &cfg.dns {
            Some(name) => name.clone(),
            None => cfg
                .urls()
                .iter()
                .filter_map(|u| u.authority().map(|a| a.to_string()))
                .collect::<Vec<_>>()
                .join(","),
        };
        Ok(Self {
            name: cfg.name.clone(),
            scheme,
            endpoints: Endpoints::new(cfg, clock.clone(), Arc::new(SystemResolver))?,
            pools,
            response_timeout: cfg.response_timeout,
            guards: Guards::new(cfg, clock, quota_of, events, &host)
                .map_err(|e| anyhow::anyhow!("upstream {}: {e:#}", cfg.name))?,
            host,
        })
    }

    /// A connect error or a timeout at the endpoint of `pick`: its
    /// passive health hears it, and an ejection is logged.
    pub fn endpoint_failed(&self, pick: &EndpointPick) {
        if let Some(length) = pick.failure() {
            tracing::warn!(
                upstream = %self.name,
                endpoint = %pick.endpoint().name,
                ejected_ms = length.as_millis() as u64,
                "endpoint ejected after connect errors or timeouts; the others take its requests"
            );
        }
    }

    /// Sends `req` (from [`Upstream::prepare`]) to the endpoint of `to`
    /// on a connection of the calling worker's pool; returns the response
    /// head and the connection, which the response's body gives back when
    /// it ends.
    pub async fn send(
        &self,
        req: Request<Upload>,
        to: &EndpointPick,
    ) -> Result<(Response<Incoming>, Pooled), SendError> {
        let key = (self.scheme.clone(), to.endpoint().addr.clone());
        self.pools.send(WORKER.with(Cell::get), key, req).await
    }

    /// Rewrites a canonical client request (`canonical.rs`) into the
    /// upstream request: the request's path and query in origin form (the
    /// endpoint is chosen by the connection, [`Upstream::send`]),
    /// hop-by-hop headers removed (RFC 9110 §7.6.1),
    /// `X-Forwarded-For` / `X-Forwarded-Proto` added, and the Host kept so
    /// virtual hosting upstream still works (the endpoint's address when
    /// the request had none: an HTTP/2 request may carry its host in the
    /// URI alone). Path and Host are sent as they
    /// are: they are the values the request was routed on.
    /// `X-Forwarded-Proto` is the scheme the client used (`https` when the
    /// request arrived over TLS, see [`ArrivedOverTls`]), replacing any the
    /// client sent. With `balance = "hash"`, `X-Floodwall-Ring-Version`
    /// carries the version `to` was chosen on, replacing any the client
    /// sent.
    pub fn prepare<B>(&self, req: Request<B>, peer: SocketAddr, to: &EndpointPick) -> Request<B> {
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        parts.uri = Uri::from(path);
        if !parts.headers.contains_key(header::HOST) {
            if let Ok(host) = HeaderValue::from_str(to.endpoint().addr.as_str()) {
                parts.headers.insert(header::HOST, host);
            }
        }
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        append_forwarded_for(&mut parts.headers, peer);
        let proto = if parts.extensions.get::<ArrivedOverTls>().is_some() {
            "https"
        } else {
            "http"
        };
        parts.headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static(proto),
        );
        if self.endpoints.sends_ring_version() {
            parts
                .headers
                .insert(RING_VERSION_HEADER, HeaderValue::from(to.version()));
        }
        Request::from_parts(parts, body)
    }
}

/// Headers that describe one connection, not the message (RFC 9110
/// §7.6.1), plus `proxy-connection` and `keep-alive` that old clients send.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Removes hop-by-hop headers and every header the `Connection` header
/// names. `Transfer-Encoding` is left to hyper, which re-frames the body.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of these, and each `remove` of an absent
    // header is still a hash and a probe: look once, over the few headers
    // there are, and remove only what is there.
    let any = headers
        .keys()
        .any(|k| k == header::TRANSFER_ENCODING || HOP_BY_HOP.contains(k));
    if !any {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for h in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(h);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    use std::io::Write;
    let name = HeaderName::from_static("x-forwarded-for");
    // The common case, a client that sent none: the peer's address alone,
    // formatted on the stack (an IPv6 address prints in at most 39 bytes).
    if !headers.contains_key(&name) {
        let mut buf = [0u8; 48];
        let mut at = &mut buf[..];
        if write!(at, "{}", peer.ip()).is_ok() {
            let n = 48 - at.len();
            if let Ok(v) = HeaderValue::from_bytes(&buf[..n]) {
                headers.insert(name, v);
            }
        }
        return;
    }
    // A client may send the header on several lines; all of them are the
    // chain so far, in order (RFC 9110 §5.3).
    let mut chain: Vec<&str> = headers
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let ip = peer.ip().to_string();
    chain.push(&ip);
    let value = chain.join(", ");
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn a_message_without_hop_by_hop_headers_is_left_alone() {
        let mut h = HeaderMap::new();
        h.insert("x-kept", HeaderValue::from_static("yes"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "transfer-encoding alone is removed too");
    }

    #[test]
    fn forwarded_for_of_an_ipv6_peer() {
        let mut h = HeaderMap::new();
        // The longest an address prints: eight full groups.
        let peer: SocketAddr = "[fe80:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:1"
            .parse()
            .unwrap();
        append_forwarded_for(&mut h, peer);
        assert_eq!(
            h["x-forwarded-for"],
            "fe80:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "10.0.0.1:5".parse().unwrap());
        append_forwarded_for(&mut h, "127.0.0.1:6".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    }

    #[test]
    fn forwarded_for_on_several_lines_keeps_every_hop() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        append_forwarded_for(&mut h, "127.0.0.1:6".parse().unwrap());
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.1");
    }
}
