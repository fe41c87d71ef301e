//! Classification: which route, which priority class, which tenant.

use super::forward::Upstream;
use crate::config::{Config, QueueOrder as CfgOrder, RouteConfig};
use crate::respond::Refusal;
use floodwall_core::limiter::{ClassSpec, LimiterConfig, QueueOrder, QueueSpec, TenantSpec};
use floodwall_core::{ClassId, Clock, Limiter};
use http::header::HOST;
use http::{HeaderName, Request};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A route: where matching requests go and the gate they pass.
#[derive(Debug)]
pub struct Route {
    /// The route name (a metric label).
    pub name: String,
    host: Option<String>,
    prefix: String,
    default_class: ClassId,
    /// The upstream requests are forwarded to.
    pub upstream: Arc<Upstream>,
    /// The route's gate.
    pub limiter: Arc<Limiter>,
    /// How long a request may wait in the queue; `None` without a queue.
    pub queue_timeout: Option<Duration>,
}

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

fn limiter_config(config: &Config, route: &RouteConfig) -> LimiterConfig {
    let capacity = route.queue.capacity;
    LimiterConfig {
        classes: config
            .classes
            .iter()
            .map(|c| ClassSpec::new(c.name.clone(), c.reserved))
            .collect(),
        class_idle_window: config.server.class_idle_window,
        tenant: TenantSpec {
            max_share: route.tenant.max_share,
            contention_window: route.tenant.contention_window,
        },
        queue: QueueSpec {
            capacity,
            order: match route.queue.order {
                CfgOrder::Fifo => QueueOrder::Fifo,
                CfgOrder::AdaptiveLifo => QueueOrder::AdaptiveLifo {
                    threshold: (capacity / 2).max(2),
                },
            },
        },
        retry_after_max: config.server.retry_after_max,
    }
}

impl Router {
    /// Builds routes, upstream clients and limiters from a validated config.
    pub fn new(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let upstreams: HashMap<&str, Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|u| (u.name.as_str(), Arc::new(Upstream::new(u))))
            .collect();
        let mut routes = Vec::new();
        for (i, r) in config.routes.iter().enumerate() {
            // Decorrelate baseline probes across replicas and routes.
            let seed = u64::from(std::process::id()) << 16 ^ (i as u64) ^ clock.now().0;
            let limit = r
                .limit
                .build(&format!("routes[{i}].limit."), seed)
                .map_err(|e| anyhow::anyhow!(e))?;
            let limiter = Limiter::new(limiter_config(config, r), limit, clock.clone())?;
            let class_name = r.class.as_deref().unwrap_or(&config.server.default_class);
            let default_class = limiter
                .class_id(class_name)
                .ok_or_else(|| anyhow::anyhow!("routes: no class named {class_name:?}"))?;
            routes.push(Arc::new(Route {
                name: r.name.clone(),
                host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                prefix: r.path_prefix.clone(),
                default_class,
                upstream: upstreams[r.upstream.as_str()].clone(),
                limiter,
                queue_timeout: (r.queue.capacity > 0).then_some(r.queue.timeout),
            }));
        }
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
    pub fn classify<B>(&self, req: &Request<B>) -> Result<Classified<'_>, Refusal> {
        let host = req
            .uri()
            .host()
            .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()))
            .map(|h| h.rsplit_once(':').map_or(h, |(name, _port)| name));
        let path = req.uri().path();
        let route = self
            .routes
            .iter()
            .find(|r| {
                path.starts_with(&r.prefix)
                    && r.host
                        .as_deref()
                        .is_none_or(|want| host.is_some_and(|h| h.eq_ignore_ascii_case(want)))
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
