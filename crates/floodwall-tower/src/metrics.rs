//! The metrics this crate exports, every one into a registry the caller
//! passes in (`prometheus_client`'s `Registry`); nothing is global, so two
//! services, or two tests, in one process never share a series.
//!
//! **Inbound**, from [`AdmissionLayer::register_metrics`]: each route's
//! gate, read from its limiter when the registry is encoded (the request
//! path pays nothing), under the gateway's names and meanings
//! (docs/metrics.md, "Library mode"):
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `floodwall_limit` | gauge | `route` | the effective limit: the algorithm's, capped by any constraint |
//! | `floodwall_limit_algorithm` | gauge | `route`, `algorithm` | the algorithm's own limit, before constraints |
//! | `floodwall_limit_constraint` | gauge | `route` | the cap a probe puts on the limit ([`crate::probe::watch`], [`Limiter::set_constraint`](floodwall_core::Limiter::set_constraint)); absent while there is none |
//! | `floodwall_wip_current` | gauge | `route`, `class` | requests holding a slot: admitted, their response body not yet ended |
//! | `floodwall_wip_reserved` | gauge | `route`, `class` | slots reserved for the class at the current limit |
//! | `floodwall_queue_depth` | gauge | `route` | requests waiting in the limiter's queue |
//! | `floodwall_tenants_active` | gauge | `route` | tenants holding at least one counted slot |
//! | `floodwall_requests_total` | counter | `route`, `class`, `outcome` | admitted requests that finished, by outcome (`success`, `error`, `dropped`, `ignored`) |
//! | `floodwall_rejections_total` | counter | `route`, `class`, `reason` | refusals, by reason (`wip_limit_exceeded`, `tenant_limit_exceeded`, `queue_full`, `queue_timeout`, `invalid_tenant_id`) |
//!
//! **Outbound**, from [`Events::new`](crate::Events::new): breakers,
//! bulkheads and guarded calls (the table in [`crate::events`]).
//!
//! [`AdmissionLayer::register_metrics`]: crate::AdmissionLayer::register_metrics

use crate::admission::service::Route;
use floodwall_core::limiter::{ClassSnapshot, Reason, Snapshot};
use floodwall_core::Outcome;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::fmt;
use std::sync::atomic::Ordering;

/// The collector [`AdmissionLayer::register_metrics`] registers: the
/// layer's routes, read at each encode.
///
/// [`AdmissionLayer::register_metrics`]: crate::AdmissionLayer::register_metrics
#[derive(Debug)]
pub(crate) struct GateMetrics {
    routes: Vec<(String, Route)>,
}

impl GateMetrics {
    pub(crate) fn new(routes: Vec<(String, Route)>) -> Self {
        Self { routes }
    }
}

/// One family: its samples, each a label set and a value.
fn family<L, M>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result
where
    L: prometheus_client::encoding::EncodeLabelSet,
    M: EncodeMetric,
{
    let mut metric = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(v: usize) -> ConstGauge {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

impl Collector for GateMetrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let snaps: Vec<_> = self
            .routes
            .iter()
            .map(|(name, r)| (name.as_str(), r, r.limiter.snapshot()))
            .collect();
        type RouteFigure = fn(&Snapshot) -> Option<usize>;
        let route_gauges: [(&str, &str, RouteFigure); 4] = [
            (
                "floodwall_limit",
                "The effective limit: the algorithm's, capped by any constraint",
                |s| Some(s.limit),
            ),
            (
                "floodwall_limit_constraint",
                "The cap a probe puts on the limit; absent while there is none",
                |s| s.constraint,
            ),
            (
                "floodwall_queue_depth",
                "Requests waiting in the limiter's queue",
                |s| Some(s.queue_depth),
            ),
            (
                "floodwall_tenants_active",
                "Tenants holding at least one counted slot",
                |s| Some(s.tenants_active),
            ),
        ];
        for (name, help, figure) in route_gauges {
            let samples = snaps
                .iter()
                .filter_map(|(route, _, s)| Some((vec![("route", *route)], gauge(figure(s)?))));
            family::<Labels, _>(&mut enc, name, help, MetricType::Gauge, samples)?;
        }
        family::<Labels, _>(
            &mut enc,
            "floodwall_limit_algorithm",
            "The limit the algorithm wants, before constraints",
            MetricType::Gauge,
            snaps.iter().map(|(route, _, s)| {
                (
                    vec![("route", *route), ("algorithm", s.algorithm)],
                    gauge(s.algorithm_limit),
                )
            }),
        )?;
        type ClassFigure = fn(&ClassSnapshot) -> usize;
        let class_gauges: [(&str, &str, ClassFigure); 2] = [
            (
                "floodwall_wip_current",
                "Requests holding a slot: admitted, their response body not yet ended",
                |c| c.inflight,
            ),
            (
                "floodwall_wip_reserved",
                "Slots reserved for the class at the current limit",
                |c| c.reserved,
            ),
        ];
        for (name, help, figure) in class_gauges {
            let samples = snaps.iter().flat_map(|(route, _, s)| {
                s.classes.iter().map(move |c| {
                    (
                        vec![("route", *route), ("class", c.name.as_str())],
                        gauge(figure(c)),
                    )
                })
            });
            family::<Labels, _>(&mut enc, name, help, MetricType::Gauge, samples)?;
        }
        family::<Labels, _>(
            &mut enc,
            "floodwall_requests",
            "Admitted requests that finished, by outcome",
            MetricType::Counter,
            snaps.iter().flat_map(|(route, _, s)| {
                s.classes.iter().flat_map(move |c| {
                    Outcome::ALL.iter().zip(c.outcomes).map(move |(o, n)| {
                        (
                            vec![
                                ("route", *route),
                                ("class", c.name.as_str()),
                                ("outcome", o.as_str()),
                            ],
                            ConstCounter::new(n),
                        )
                    })
                })
            }),
        )?;
        family::<Labels, _>(
            &mut enc,
            "floodwall_rejections",
            "Requests refused by the admission layer, by reason",
            MetricType::Counter,
            snaps.iter().flat_map(|(route, r, s)| {
                s.classes.iter().enumerate().flat_map(move |(i, c)| {
                    let invalid = r
                        .invalid_tenant
                        .get(i)
                        .map_or(0, |n| n.load(Ordering::Relaxed));
                    Reason::ALL
                        .iter()
                        .map(|reason| reason.as_str())
                        .zip(c.rejections)
                        .chain([(crate::RejectReason::InvalidTenantId.as_str(), invalid)])
                        .map(move |(reason, n)| {
                            (
                                vec![
                                    ("route", *route),
                                    ("class", c.name.as_str()),
                                    ("reason", reason),
                                ],
                                ConstCounter::new(n),
                            )
                        })
                })
            }),
        )?;
        Ok(())
    }
}
