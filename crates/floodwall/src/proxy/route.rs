//! A route: where matching requests go, and everything it owns to decide
//! whether they may.

use super::forward::Upstream;
use super::refusals::RefusalCounters;
use super::series::RouteSeries;
use crate::config::{Config, QueueOrder as CfgOrder, RouteConfig};
use crate::distributed::GlobalLimit;
use floodwall_core::limiter::{ClassSpec, LimiterConfig, QueueOrder, QueueSpec, TenantSpec};
use floodwall_core::{ClassId, Clock, Limiter};
use std::sync::Arc;
use std::time::Duration;

/// A route and its per-route state. Everything a request on this route
/// touches is reached from here, never looked up by the route's name: the
/// limiter, the upstream, the route's part of a global limit, and its
/// refusal counters.
#[derive(Debug)]
pub struct Route {
    /// The route name (a metric label).
    pub name: String,
    pub(super) host: Option<String>,
    pub(super) prefix: String,
    pub(super) default_class: ClassId,
    /// The upstream requests are forwarded to.
    pub upstream: Arc<Upstream>,
    /// Who is admitted now.
    pub limiter: Arc<Limiter>,
    /// How long a request may wait in the queue; `None` without a queue.
    pub queue_timeout: Option<Duration>,
    /// Distributed mode (`[store]`): this route's part of the limit shared
    /// with the other replicas.
    pub global: Option<GlobalLimit>,
    /// Refusals the limiter does not count, by class and reason.
    pub refusals: RefusalCounters,
    /// Its request-duration histograms by class and what else `/metrics`
    /// needs of it, created here so the request path only clones a handle.
    pub series: RouteSeries,
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

impl Route {
    /// The limiter of `config.routes[index]`, from a validated config.
    pub fn limiter(
        config: &Config,
        index: usize,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Arc<Limiter>> {
        let r = &config.routes[index];
        // Decorrelate baseline probes across replicas and routes.
        let seed = u64::from(std::process::id()) << 16 ^ (index as u64) ^ clock.now().0;
        let limit = r
            .limit
            .build(&format!("routes[{index}].limit."), seed)
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(Limiter::new(limiter_config(config, r), limit, clock)?)
    }

    /// The route of `rc` with the parts built for it.
    pub fn new(
        config: &Config,
        rc: &RouteConfig,
        limiter: Arc<Limiter>,
        upstream: Arc<Upstream>,
        global: Option<GlobalLimit>,
    ) -> anyhow::Result<Self> {
        let class_name = rc.class.as_deref().unwrap_or(&config.server.default_class);
        let default_class = limiter
            .class_id(class_name)
            .ok_or_else(|| anyhow::anyhow!("routes: no class named {class_name:?}"))?;
        Ok(Self {
            name: rc.name.clone(),
            host: rc.host.as_ref().map(|h| h.to_ascii_lowercase()),
            prefix: rc.path_prefix.clone(),
            default_class,
            upstream,
            refusals: RefusalCounters::new(limiter.snapshot().classes.len()),
            series: RouteSeries::new(limiter.snapshot().classes.len(), rc.limit.floor()),
            limiter,
            queue_timeout: (rc.queue.capacity > 0).then_some(rc.queue.timeout),
            global,
        })
    }
}
