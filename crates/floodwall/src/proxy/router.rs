//! Classification: which route, which priority class, which tenant.

use super::canonical::host_name;
use super::respond::Refusal;
use super::route::Route;
use crate::config::Config;
use floodwall_core::ClassId;
use http::header::HOST;
use http::{HeaderName, Request};
use std::sync::Arc;

/// The result of classifying one request.
#[derive(Debug)]
pub struct Classified<'r> {
    /// The matched route.
    pub route: &'r Arc<Route>,
    /// The priority class.
    pub class: ClassId,
}

/// All routes, in match order, and the headers that classify requests.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Arc<Route>>,
    priority_header: HeaderName,
    tenant_header: HeaderName,
    max_tenant_len: usize,
}

impl Router {
    /// A router over `routes` (in match order) with the headers of
    /// `config.server`.
    pub fn new(config: &Config, routes: Vec<Arc<Route>>) -> anyhow::Result<Self> {
        Ok(Self {
            routes,
            priority_header: HeaderName::from_bytes(config.server.priority_header.as_bytes())?,
            tenant_header: HeaderName::from_bytes(config.server.tenant_header.as_bytes())?,
            max_tenant_len: config.server.max_tenant_id_len,
        })
    }

    /// The routes, in match order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// Picks the first route whose host (if set) and path prefix match,
    /// then the class: the priority header when it names a class, else the
    /// route's class, else the default class.
    ///
    /// `req` must be canonical ([`canonicalize`]): the host is read from
    /// `Host` alone (port dropped) and the path as it is, because those are
    /// exactly what `forward.rs` sends upstream.
    ///
    /// [`canonicalize`]: super::canonical::canonicalize
    pub fn classify<B>(&self, req: &Request<B>) -> Result<Classified<'_>, Refusal> {
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(host_name);
        let path = req.uri().path();
        let route = self
            .routes
            .iter()
            .find(|r| {
                path.starts_with(&r.prefix)
                    && r.host.as_deref().is_none_or(|want| host == Some(want))
            })
            .ok_or(Refusal::NoRoute)?;
        let class = req
            .headers()
            .get(&self.priority_header)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| route.limiter.class_id(v.trim()))
            .unwrap_or(route.default_class);
        Ok(Classified { route, class })
    }

    /// The tenant id: `None` when absent or empty, an error when it is too
    /// long or not visible ASCII. A hostile id is refused whole rather than
    /// cut, so it can never be made to collide with another tenant's.
    pub fn tenant<'a, B>(&self, req: &'a Request<B>) -> Result<Option<&'a str>, Refusal> {
        let Some(v) = req.headers().get(&self.tenant_header) else {
            return Ok(None);
        };
        let bytes = v.as_bytes();
        if bytes.is_empty() {
            return Ok(None);
        }
        if bytes.len() > self.max_tenant_len || !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err(Refusal::InvalidTenantId);
        }
        Ok(v.to_str().ok())
    }
}
