//! Classification: which route, which priority class, which tenant.
//!
//! The routes and the headers that classify live in one [`RouteTable`],
//! which a config reload replaces whole ([`Router::swap`]): a request loads
//! the table once to pick its route, so it sees the old routes or the new
//! ones, never a mix. The swap is an `arc_swap::ArcSwap`, whose load is a
//! few lock-free instructions with no write to memory other threads read,
//! so the request path pays nothing measurable for being reloadable; a
//! `RwLock` would put every request on one contended cache line.

use super::canonical::host_name;
use super::respond::Refusal;
use super::route::Route;
use crate::config::Config;
use arc_swap::ArcSwap;
use floodwall_core::ClassId;
use http::header::HOST;
use http::{HeaderName, Request};
use std::sync::Arc;

/// The result of classifying one request.
#[derive(Debug)]
pub struct Classified {
    /// The matched route, held by the request until it finishes: a route
    /// a reload removes or rebuilds drains its requests on its old parts.
    pub route: Arc<Route>,
    /// The priority class.
    pub class: ClassId,
}

/// All routes, in match order, and the headers that classify requests:
/// what a reload replaces in one step.
#[derive(Debug)]
pub struct RouteTable {
    routes: Arc<Vec<Arc<Route>>>,
    priority_header: HeaderName,
    tenant_header: HeaderName,
    max_tenant_len: usize,
}

impl RouteTable {
    /// A table of `routes` (in match order) with the headers of
    /// `config.server`.
    pub fn new(config: &Config, routes: Vec<Arc<Route>>) -> anyhow::Result<Self> {
        Ok(Self {
            routes: Arc::new(routes),
            priority_header: HeaderName::from_bytes(config.server.priority_header.as_bytes())?,
            tenant_header: HeaderName::from_bytes(config.server.tenant_header.as_bytes())?,
            max_tenant_len: config.server.max_tenant_id_len,
        })
    }
}

/// The current [`RouteTable`], replaceable while requests run.
#[derive(Debug)]
pub struct Router {
    table: ArcSwap<RouteTable>,
}

impl Router {
    /// A router over `routes` (in match order) with the headers of
    /// `config.server`.
    pub fn new(config: &Config, routes: Vec<Arc<Route>>) -> anyhow::Result<Self> {
        Ok(Self {
            table: ArcSwap::from_pointee(RouteTable::new(config, routes)?),
        })
    }

    /// The routes now, in match order.
    pub fn routes(&self) -> Arc<Vec<Arc<Route>>> {
        self.table.load().routes.clone()
    }

    /// Replaces the whole table at once (a config reload). Requests already
    /// classified keep the routes they hold; every later one sees `table`.
    /// Returns the table it replaced.
    pub fn swap(&self, table: RouteTable) -> Arc<RouteTable> {
        self.table.swap(Arc::new(table))
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
    pub fn classify<B>(&self, req: &Request<B>) -> Result<Classified, Refusal> {
        let table = self.table.load();
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(host_name);
        let path = req.uri().path();
        let route = table
            .routes
            .iter()
            .find(|r| {
                path.starts_with(&r.prefix)
                    && r.host.as_deref().is_none_or(|want| host == Some(want))
            })
            .ok_or(Refusal::NoRoute)?;
        let class = req
            .headers()
            .get(&table.priority_header)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| route.limiter.class_id(v.trim()))
            .unwrap_or(route.default_class);
        Ok(Classified {
            route: route.clone(),
            class,
        })
    }

    /// The tenant id: `None` when absent or empty, an error when it is too
    /// long or not visible ASCII. A hostile id is refused whole rather than
    /// cut, so it can never be made to collide with another tenant's.
    ///
    /// It loads the table again: a reload between the two loads can change
    /// only which header names the tenant for this one request, never its
    /// route.
    pub fn tenant<'a, B>(&self, req: &'a Request<B>) -> Result<Option<&'a str>, Refusal> {
        let table = self.table.load();
        let Some(v) = req.headers().get(&table.tenant_header) else {
            return Ok(None);
        };
        let bytes = v.as_bytes();
        if bytes.is_empty() {
            return Ok(None);
        }
        if bytes.len() > table.max_tenant_len || !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err(Refusal::InvalidTenantId);
        }
        Ok(v.to_str().ok())
    }
}
