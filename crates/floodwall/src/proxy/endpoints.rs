//! An upstream's endpoints: the gateway's side of
//! `floodwall_core::balance`. It builds the balancer from the config,
//! reads a request's key for `balance = "hash"`, and names the ring
//! version header; the choice itself is the core's (pure, tested there).
//!
//! Connections: every endpoint shares the upstream's pooled hyper-util
//! client (one per worker, `forward.rs`). That client keys its pool by
//! scheme and authority, so each endpoint already has a pool of its own
//! inside it, with the upstream's `pool_max_idle_per_host` each; a removed
//! endpoint's idle connections expire after `pool_idle_timeout`.

use super::dns::{self, DnsStatus, Resolve};
use crate::config::{Balance, HashOn, UpstreamConfig};
use floodwall_core::balance::{BalanceConfig, Balancer, Change, EjectionConfig, Pick, Policy};
use floodwall_core::Clock;
use http::header::{HeaderName, COOKIE};
use http::uri::Authority;
use http::Request;
use std::sync::Arc;

/// The header that tells the upstream which ring version routed the
/// request (`balance = "hash"` only): it changes exactly when the
/// membership does, so an upstream can tell a key that moved to it.
pub const RING_VERSION_HEADER: HeaderName = HeaderName::from_static("x-floodwall-ring-version");

/// A chosen endpoint, held until the upstream finishes (see
/// [`floodwall_core::balance::Pick`]).
pub type EndpointPick = Pick<Authority>;

/// An upstream's balancer and what picks a request's key.
#[derive(Debug)]
pub struct Endpoints {
    /// The members and the choice among them.
    pub balancer: Arc<Balancer<Authority>>,
    hash_on: Option<HashOn>,
    /// A `dns` upstream's resolutions (`dns.rs`), which set its members.
    pub dns: Option<Arc<DnsStatus>>,
}

/// Each endpoint as (name, authority): the name is the authority as
/// written, lower-cased (a metric label and the ring's name for it).
fn members(cfg: &UpstreamConfig) -> Vec<(String, Authority)> {
    cfg.urls()
        .into_iter()
        .filter_map(|u| u.authority().cloned())
        .map(|a| (a.as_str().to_ascii_lowercase(), a))
        .collect()
}

impl Endpoints {
    /// The endpoints of `cfg` (validated), on `clock`. A `dns` upstream
    /// starts with no members and resolves its name on `resolver` at once
    /// and every `dns_refresh` (see [`Endpoints::ready`]); that needs a
    /// tokio runtime, which is the one error.
    pub fn new(
        cfg: &UpstreamConfig,
        clock: Arc<dyn Clock>,
        resolver: Arc<dyn Resolve>,
    ) -> anyhow::Result<Self> {
        let config = BalanceConfig {
            policy: match cfg.balance {
                Balance::LeastInflight => Policy::LeastInflight,
                Balance::RoundRobin => Policy::RoundRobin,
                Balance::Hash => Policy::Hash,
            },
            ejection: EjectionConfig {
                consecutive_failures: cfg.consecutive_failures,
                base: cfg.base_ejection_time,
                max: cfg.max_ejection_time,
                max_percent: cfg.max_ejection_percent,
            },
            drain_timeout: cfg.drain_timeout,
        };
        let seed = u64::from(std::process::id()) << 32 ^ fastrand::u64(..);
        let balancer = Balancer::new(config, members(cfg), clock, seed);
        let dns = match cfg.dns_target() {
            None => None,
            Some((host, port)) => {
                tokio::runtime::Handle::try_current().map_err(|_| {
                    anyhow::anyhow!("upstream {}: dns needs a tokio runtime", cfg.name)
                })?;
                Some(dns::spawn(
                    cfg.name.clone(),
                    host,
                    port,
                    cfg.dns_refresh,
                    &balancer,
                    resolver,
                ))
            }
        };
        Ok(Self {
            balancer,
            hash_on: cfg.hash_key(),
            dns,
        })
    }

    /// Returns once the endpoints can be chosen from: at once, except for
    /// a `dns` upstream, whose first resolution is waited for (it fails or
    /// answers within the resolver's 5 s timeout), so that the first
    /// requests after start-up are not refused for want of members.
    pub async fn ready(&self) {
        if let Some(d) = &self.dns {
            d.first_attempt().await;
        }
    }

    /// On a reload that replaced a `dns` upstream resolving the same name:
    /// starts from the old upstream's members instead of none, so requests
    /// between the swap and the first answer are not refused. Does nothing
    /// if an answer already arrived or the names differ.
    pub fn adopt_members(&self, old: &Endpoints) {
        let (Some(new), Some(was)) = (&self.dns, &old.dns) else {
            return;
        };
        if new.name != was.name || !self.balancer.snapshot().endpoints.is_empty() {
            return;
        }
        let members = old
            .balancer
            .snapshot()
            .endpoints
            .into_iter()
            .filter(|e| !e.leaving)
            .filter_map(|e| {
                Authority::try_from(e.name.as_str())
                    .ok()
                    .map(|a| (e.name, a))
            })
            .collect();
        self.balancer.set_members(members);
    }

    /// Whether requests carry [`RING_VERSION_HEADER`].
    pub fn sends_ring_version(&self) -> bool {
        self.hash_on.is_some()
    }

    /// Chooses the endpoint for `req` (never waits); `None` with no
    /// members.
    pub fn choose<B>(&self, req: &Request<B>) -> Option<EndpointPick> {
        match &self.hash_on {
            None => self.balancer.choose(None),
            Some(on) => self.balancer.choose(key_of(on, req)),
        }
    }

    /// The membership of `cfg` (a reload), logged if it changed.
    pub fn set_members(&self, upstream: &str, cfg: &UpstreamConfig) -> Option<Change> {
        let change = self.balancer.set_members(members(cfg))?;
        tracing::info!(
            upstream = %upstream,
            version = change.version,
            added = %change.added.join(","),
            removed = %change.removed.join(","),
            "upstream membership changed; removed endpoints finish their requests"
        );
        Some(change)
    }
}

/// The key `on` names in `req`, if the request has one.
fn key_of<'r, B>(on: &HashOn, req: &'r Request<B>) -> Option<&'r [u8]> {
    match on {
        HashOn::Path => Some(req.uri().path().as_bytes()),
        HashOn::Header(name) => req.headers().get(name).map(|v| v.as_bytes()),
        HashOn::Cookie(name) => req
            .headers()
            .get_all(COOKIE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
            .find_map(|pair| {
                let pair = pair.trim_ascii();
                let (k, v) = pair.split_at(pair.iter().position(|b| *b == b'=')?);
                (k == name.as_bytes()).then_some(&v[1..])
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri("/orders/7?x=1");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn keys_come_from_a_header_the_path_or_a_cookie() {
        let h = HashOn::parse("header:X-Tenant-Id").unwrap();
        assert_eq!(
            key_of(&h, &req(&[("x-tenant-id", "acme")])),
            Some(&b"acme"[..])
        );
        assert_eq!(key_of(&h, &req(&[])), None);
        assert_eq!(key_of(&HashOn::Path, &req(&[])), Some(&b"/orders/7"[..]));
        let c = HashOn::parse("cookie:sid").unwrap();
        let r = req(&[("cookie", "a=1; sid=xyz; b=2")]);
        assert_eq!(key_of(&c, &r), Some(&b"xyz"[..]));
        assert_eq!(key_of(&c, &req(&[("cookie", "sidx=1")])), None);
    }
}
