//! A route: where matching requests go, and everything it owns to decide
//! whether they may.

use super::forward::Upstream;
use super::refusals::{RefusalCounters, ShadowCounters};
use super::resilience::RouteRetry;
use super::series::RouteSeries;
use crate::config::RouteMode;
use crate::config::{Config, LimitConfig, QueueOrder as CfgOrder, RouteConfig};
use crate::distributed::GlobalLimit;
use floodwall_core::limiter::{ClassSpec, LimiterConfig, QueueOrder, QueueSpec, TenantSpec};
use floodwall_core::{ClassId, Clock, Limit, Limiter, Nanos, Sample};
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Refusals the limiter does not count, by class and reason; shared
    /// with the route a reload rebuilds from this one, so they keep counting.
    pub refusals: Arc<RefusalCounters>,
    /// Its request-duration histograms by class and what else `/metrics`
    /// needs of it, created with the route so the request path only clones
    /// a handle; shared with a reloaded route of the same classes and
    /// floor, so its histograms keep counting.
    pub series: Arc<RouteSeries>,
    /// `[routes.retry_budget]`: retries as a share of first attempts;
    /// kept across a reload with the same keys.
    pub retry: Option<Arc<RouteRetry>>,
    /// `mode = "shadow"` (or `--shadow`): decisions computed and counted,
    /// nothing refused.
    pub shadow: bool,
    /// Would-be refusals in shadow mode, by reason; shared with a
    /// reloaded route of the same name, so they keep counting.
    pub shadow_refusals: Arc<ShadowCounters>,
    /// Its classes' names by [`ClassId`] index, for the decision log.
    pub class_names: Arc<[String]>,
    /// A fixed limit's value, which a reload changes in place.
    fixed: Option<Arc<ReloadableFixed>>,
}

/// A fixed limit whose value a reload can change without a new limiter:
/// [`FixedLimit`](floodwall_core::FixedLimit) with the value in an atomic.
/// The limiter never samples it (it is not adaptive), so the value is read
/// only when [`Limiter::refresh_limit`] is called.
#[derive(Debug)]
struct ReloadableFixed(AtomicUsize);

impl Limit for ReloadableFixed {
    fn limit(&self) -> usize {
        self.0.load(Ordering::Acquire).max(1)
    }

    fn on_sample(&self, _now: Nanos, _sample: &Sample) -> usize {
        self.limit()
    }

    fn name(&self) -> &'static str {
        "fixed"
    }

    fn is_adaptive(&self) -> bool {
        false
    }
}

/// What a route carries over a reload, or starts fresh with.
struct Kept {
    refusals: Arc<RefusalCounters>,
    series: Arc<RouteSeries>,
    retry: Option<Arc<RouteRetry>>,
    shadow_refusals: Arc<ShadowCounters>,
}

/// A route's limiter and, for a fixed limit, the handle that changes its
/// value in place.
#[derive(Debug, Clone)]
pub struct RouteLimiter {
    /// The limiter itself.
    pub limiter: Arc<Limiter>,
    fixed: Option<Arc<ReloadableFixed>>,
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

/// Whether the limiter built for `old` can be kept for `new` (both
/// routes of their configs): the same classes, queue, tenant and timing
/// settings, and the same limit, or a fixed one whose value alone changed
/// ([`Route::set_fixed_limit`]). `Err` says what differs, for the log.
pub fn limiter_carries(
    old: (&Config, &RouteConfig),
    new: (&Config, &RouteConfig),
) -> Result<(), String> {
    if limiter_config(old.0, old.1) != limiter_config(new.0, new.1) {
        return Err("its classes, queue, tenant or class/retry timing changed".into());
    }
    match (&old.1.limit, &new.1.limit) {
        (a, b) if a == b => Ok(()),
        (LimitConfig::Fixed { .. }, LimitConfig::Fixed { .. }) => Ok(()),
        (a, b) if a.algorithm() != b.algorithm() => Err(format!(
            "its algorithm changed from {} to {}",
            a.algorithm(),
            b.algorithm()
        )),
        (a, _) => Err(format!("its {} settings changed", a.algorithm())),
    }
}

impl Route {
    /// The limiter of `config.routes[index]`, from a validated config.
    pub fn limiter(
        config: &Config,
        index: usize,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<RouteLimiter> {
        let r = &config.routes[index];
        let lc = limiter_config(config, r);
        if let LimitConfig::Fixed { value } = r.limit {
            let fixed = Arc::new(ReloadableFixed(AtomicUsize::new(value)));
            return Ok(RouteLimiter {
                limiter: Limiter::new(lc, fixed.clone(), clock)?,
                fixed: Some(fixed),
            });
        }
        // Decorrelate baseline probes across replicas and routes.
        let seed = u64::from(std::process::id()) << 16 ^ (index as u64) ^ clock.now().0;
        let limit = r
            .limit
            .build(&format!("routes[{index}].limit."), seed)
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(RouteLimiter {
            limiter: Limiter::new(lc, limit, clock)?,
            fixed: None,
        })
    }

    /// The route of `rc` with the parts built for it.
    pub fn new(
        config: &Config,
        rc: &RouteConfig,
        limiter: RouteLimiter,
        upstream: Arc<Upstream>,
        global: Option<GlobalLimit>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let classes = limiter.limiter.snapshot().classes.len();
        let retry = rc
            .retry_budget
            .as_ref()
            .map(|k| RouteRetry::new(k, clock).map(Arc::new))
            .transpose()?;
        Self::assemble(
            config,
            rc,
            limiter,
            upstream,
            global,
            Kept {
                refusals: Arc::new(RefusalCounters::new(classes)),
                series: Arc::new(RouteSeries::new(classes, rc.limit.floor())),
                retry,
                shadow_refusals: Arc::default(),
            },
        )
    }

    /// This route rebuilt for `rc` of a reloaded `config`, on `limiter`
    /// (this route's own, kept, or a new one) and `upstream`: it keeps its
    /// part of the global limit (the store lease) and, when the classes are
    /// the same, its refusal counters. Requests that hold this route finish
    /// on its parts; the rebuilt route takes every new one.
    pub fn rebuilt(
        &self,
        config: &Config,
        rc: &RouteConfig,
        limiter: RouteLimiter,
        upstream: Arc<Upstream>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let retry = match (&self.retry, &rc.retry_budget) {
            (Some(r), Some(k)) if r.keys == *k => Some(r.clone()),
            (_, k) => k
                .as_ref()
                .map(|k| RouteRetry::new(k, clock).map(Arc::new))
                .transpose()?,
        };
        let names = |l: &Limiter| -> Vec<String> {
            l.snapshot().classes.into_iter().map(|c| c.name).collect()
        };
        let same_classes = names(&limiter.limiter) == names(&self.limiter);
        let classes = limiter.limiter.snapshot().classes.len();
        let refusals = if same_classes {
            self.refusals.clone()
        } else {
            Arc::new(RefusalCounters::new(classes))
        };
        let series = if same_classes && self.series.floor() == rc.limit.floor() {
            self.series.clone()
        } else {
            Arc::new(RouteSeries::new(classes, rc.limit.floor()))
        };
        Self::assemble(
            config,
            rc,
            limiter,
            upstream,
            self.global.clone(),
            Kept {
                refusals,
                series,
                retry,
                shadow_refusals: self.shadow_refusals.clone(),
            },
        )
    }

    fn assemble(
        config: &Config,
        rc: &RouteConfig,
        limiter: RouteLimiter,
        upstream: Arc<Upstream>,
        global: Option<GlobalLimit>,
        kept: Kept,
    ) -> anyhow::Result<Self> {
        let Kept {
            refusals,
            series,
            retry,
            shadow_refusals,
        } = kept;
        let class_name = rc.class.as_deref().unwrap_or(&config.server.default_class);
        let default_class = limiter
            .limiter
            .class_id(class_name)
            .ok_or_else(|| anyhow::anyhow!("routes: no class named {class_name:?}"))?;
        let class_names = limiter
            .limiter
            .snapshot()
            .classes
            .into_iter()
            .map(|c| c.name)
            .collect();
        Ok(Self {
            class_names,
            name: rc.name.clone(),
            host: rc.host.as_ref().map(|h| h.to_ascii_lowercase()),
            prefix: rc.path_prefix.clone(),
            default_class,
            upstream,
            refusals,
            series,
            limiter: limiter.limiter,
            fixed: limiter.fixed,
            queue_timeout: (rc.queue.capacity > 0).then_some(rc.queue.timeout),
            global,
            retry,
            shadow: rc.mode == RouteMode::Shadow,
            shadow_refusals,
        })
    }

    /// This route's limiter, to keep across a reload.
    pub fn kept_limiter(&self) -> RouteLimiter {
        RouteLimiter {
            limiter: self.limiter.clone(),
            fixed: self.fixed.clone(),
        }
    }

    /// Sets a fixed limit's value in place, effective at once (a reload of
    /// `--limit` or `limit.value`); false if this route's limit is not
    /// fixed.
    pub fn set_fixed_limit(&self, value: usize) -> bool {
        let Some(fixed) = &self.fixed else {
            return false;
        };
        fixed.0.store(value, Ordering::Release);
        self.limiter.refresh_limit();
        true
    }
}
