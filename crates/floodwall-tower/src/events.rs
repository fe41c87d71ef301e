//! The outbound event stream and metrics, Semian's `subscribe`.
//!
//! Every use of a guarded resource is one [`Event`] with the fields of the
//! Shopify engineering article "Tuning bulkheads and circuit breakers":
//! `resource`, `adapter`, `tickets` (the configured cap), `count` (in use
//! when it happened), `workers`, `event` (`success`, `error`, `busy`,
//! `circuit_open`, `state_change`), plus the duration and, for a state
//! change, `from` and `to`. Recording them is how that article chooses a
//! bulkhead's tickets from history (the 99.9th percentile of `count`).
//!
//! The stream is a bounded broadcast channel: emitting never blocks and
//! never allocates beyond the event itself; a subscriber that falls more
//! than `capacity` events behind loses the oldest and is told how many
//! ([`Subscription::recv`] counts them in `floodwall_events_dropped_total`),
//! so the call path is never slowed by a slow reader.
//!
//! The metrics go into the registry the caller passes to [`Events::new`];
//! nothing is global, so two services (or two tests) in one process never
//! share a series:
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `floodwall_breaker_state` | `resource` | 0 closed, 1 open, 2 half-open |
//! | `floodwall_breaker_transitions_total` | `resource`, `from`, `to` | state changes |
//! | `floodwall_bulkhead_inflight` | `resource` | tickets in use |
//! | `floodwall_bulkhead_tickets` | `resource` | the cap |
//! | `floodwall_outbound_events_total` | `resource`, `event` | events by kind |
//! | `floodwall_outbound_duration_seconds` | `resource` | duration of calls that ran |
//! | `floodwall_events_dropped_total` | | events a slow subscriber lost |

use floodwall_core::breaker::{State, Transition};
use floodwall_core::{Breaker, Bulkhead};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The call ran and the resource did its job.
    Success,
    /// The call ran and failed (as the failure rule judges it).
    Error,
    /// The bulkhead had no ticket: refused at once.
    Busy,
    /// The breaker was open: refused at once.
    CircuitOpen,
    /// The breaker changed state.
    StateChange,
}

impl EventKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Success => "success",
            EventKind::Error => "error",
            EventKind::Busy => "busy",
            EventKind::CircuitOpen => "circuit_open",
            EventKind::StateChange => "state_change",
        }
    }
}

/// One event (see the module doc for the fields).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// The resource's name.
    #[serde(serialize_with = "text")]
    pub resource: Arc<str>,
    /// What kind of client: `"http"` for the tower layers, the guard's
    /// own for a [`Guard`](crate::Guard) (e.g. `"postgres"`).
    pub adapter: &'static str,
    /// The bulkhead's cap, if the resource has one.
    pub tickets: Option<usize>,
    /// Tickets in use when it happened, if the resource has a bulkhead.
    pub count: Option<usize>,
    /// Processes sharing the resource's cap: 1 in-process.
    pub workers: usize,
    /// What happened.
    pub event: EventKind,
    /// The call's duration, for calls that ran.
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Option<Duration>,
    /// A state change's old state.
    pub from: Option<&'static str>,
    /// A state change's new state.
    pub to: Option<&'static str>,
}

fn text<S: serde::Serializer>(t: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t)
}

fn millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_secs_f64() * 1000.0)),
        None => s.serialize_none(),
    }
}

impl Event {
    /// The event as one JSON line (no trailing newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an event always serialises")
    }
}

type Labels = Vec<(&'static str, String)>;

/// The event stream and the metrics of every resource it is given (see
/// the module doc). Share one `Arc<Events>` between the guards and layers
/// of a service.
#[derive(Debug)]
pub struct Events {
    tx: broadcast::Sender<Event>,
    breaker_state: Family<Labels, Gauge>,
    transitions: Family<Labels, Counter>,
    inflight: Family<Labels, Gauge>,
    tickets: Family<Labels, Gauge>,
    events: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
    dropped: Counter,
}

fn state_value(s: State) -> i64 {
    match s {
        State::Closed => 0,
        State::Open => 1,
        State::HalfOpen => 2,
    }
}

impl Events {
    /// An event stream keeping up to `capacity` events for each slow
    /// subscriber, its metrics registered in `registry`.
    pub fn new(registry: &mut Registry, capacity: usize) -> Arc<Self> {
        let (tx, _) = broadcast::channel(capacity.max(1));
        let e = Self {
            tx,
            breaker_state: Family::default(),
            transitions: Family::default(),
            inflight: Family::default(),
            tickets: Family::default(),
            events: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 17))
            }),
            dropped: Counter::default(),
        };
        registry.register(
            "floodwall_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open",
            e.breaker_state.clone(),
        );
        registry.register(
            "floodwall_breaker_transitions",
            "Circuit breaker state changes",
            e.transitions.clone(),
        );
        registry.register(
            "floodwall_bulkhead_inflight",
            "Bulkhead tickets in use",
            e.inflight.clone(),
        );
        registry.register(
            "floodwall_bulkhead_tickets",
            "Bulkhead ticket cap",
            e.tickets.clone(),
        );
        registry.register(
            "floodwall_outbound_events",
            "Outbound calls by event: success, error, busy, circuit_open",
            e.events.clone(),
        );
        registry.register(
            "floodwall_outbound_duration_seconds",
            "Duration of outbound calls that ran",
            e.duration.clone(),
        );
        registry.register(
            "floodwall_events_dropped",
            "Events a slow subscriber lost",
            e.dropped.clone(),
        );
        Arc::new(e)
    }

    /// A new subscriber, seeing events from now on.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
            events: self.clone(),
        }
    }

    /// Emits `state_change` events and keeps the state metric for
    /// `breaker`. Returns false if the breaker already had an observer.
    pub fn watch_breaker(self: &Arc<Self>, breaker: &Breaker) -> bool {
        let me = self.clone();
        let resource: Arc<str> = breaker.name().into();
        let labels = vec![("resource", resource.to_string())];
        self.breaker_state
            .get_or_create(&labels)
            .set(state_value(breaker.state()));
        breaker.on_transition(move |t: &Transition| {
            me.breaker_state
                .get_or_create(&labels)
                .set(state_value(t.to));
            me.transitions
                .get_or_create(&vec![
                    ("resource", resource.to_string()),
                    ("from", t.from.as_str().to_owned()),
                    ("to", t.to.as_str().to_owned()),
                ])
                .inc();
            me.emit(Event {
                resource: resource.clone(),
                adapter: "breaker",
                tickets: None,
                count: None,
                workers: 1,
                event: EventKind::StateChange,
                duration: None,
                from: Some(t.from.as_str()),
                to: Some(t.to.as_str()),
            });
        })
    }

    /// Sets the ticket metrics of `bulkhead` to what it holds now (a guard
    /// calls this as each call takes a ticket, and again as it ends).
    pub fn watch_bulkhead(&self, bulkhead: &Bulkhead) {
        let labels = vec![("resource", bulkhead.name().to_owned())];
        self.tickets
            .get_or_create(&labels)
            .set(bulkhead.tickets() as i64);
        self.inflight
            .get_or_create(&labels)
            .set(bulkhead.in_use() as i64);
    }

    /// Records one use of a resource.
    pub(crate) fn used(
        &self,
        resource: &Arc<str>,
        adapter: &'static str,
        bulkhead: Option<&Bulkhead>,
        event: EventKind,
        duration: Option<Duration>,
    ) {
        let labels = vec![("resource", resource.to_string())];
        if let Some(b) = bulkhead {
            self.inflight.get_or_create(&labels).set(b.in_use() as i64);
        }
        if let Some(d) = duration {
            self.duration
                .get_or_create(&labels)
                .observe(d.as_secs_f64());
        }
        self.events
            .get_or_create(&vec![
                ("resource", resource.to_string()),
                ("event", event.as_str().to_owned()),
            ])
            .inc();
        if self.tx.receiver_count() > 0 {
            self.emit(Event {
                resource: resource.clone(),
                adapter,
                tickets: bulkhead.map(Bulkhead::tickets),
                count: bulkhead.map(Bulkhead::in_use),
                workers: 1,
                event,
                duration,
                from: None,
                to: None,
            });
        }
    }

    fn emit(&self, event: Event) {
        // No subscriber is not an error: nobody is listening.
        let _ = self.tx.send(event);
    }
}

/// One subscriber of an [`Events`] stream.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Event>,
    events: Arc<Events>,
}

impl Subscription {
    /// The next event; `None` once the stream is gone. Events this
    /// subscriber was too slow for are skipped and counted in
    /// `floodwall_events_dropped_total`.
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.events.dropped.inc_by(n);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next event if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        loop {
            match self.rx.try_recv() {
                Ok(e) => return Some(e),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    self.events.dropped.inc_by(n);
                }
                Err(_) => return None,
            }
        }
    }
}
