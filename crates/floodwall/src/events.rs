//! The decision log (`[events]`): one JSON line per decision, with the
//! fields of Semian's `subscribe` events as the Shopify engineering article
//! "Tuning bulkheads and circuit breakers" records them (`resource`,
//! `adapter`, `host`, `tickets`, `count`, `workers`, `event`) plus
//! floodwall's `route`, `class`, `reason`, `status` and `duration_ms`. That
//! article picks a bulkhead's tickets from such a record (the high
//! percentiles of `count`); the gateway's log is the same record for its
//! routes. Library mode has its own stream (`floodwall-tower`'s
//! `events.rs`), a broadcast channel the service subscribes to.
//!
//! A request never waits for it: [`Events::emit`] hands the event to a
//! bounded channel (`try_send`) and a writer thread of its own formats and
//! writes it, flushing whenever the channel runs dry. A full channel drops
//! the event and counts it (`floodwall_events_dropped_total`); a write
//! error is logged once and counted the same way. Sampling happens before
//! the event is even built.

use crate::config::{EventsConfig, EventsSink};
use serde::Serialize;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What an event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Admitted and forwarded; `status` is the upstream's answer.
    Success,
    /// Refused for lack of capacity (the gate, a bulkhead, the global
    /// limit, a retry budget, a tenant's share).
    Busy,
    /// Refused by an open breaker.
    CircuitOpen,
    /// Refused for another reason: the client's fault (malformed, slow
    /// upload, hostile id) or no upstream to send it to.
    Refused,
    /// Shadow mode let a would-be refusal through.
    ShadowRefused,
    /// A breaker changed state (`from`, `to`).
    StateChange,
    /// The client hung up before the response head: while its request
    /// queued, or while the upstream worked on it. Semian has no such
    /// event (a Ruby worker cannot be left), but a gateway's clients leave
    /// all the time under overload, and `floodwall tune` needs their time
    /// in use: a log of successes alone shows only the requests that were
    /// fast enough to be waited for.
    Abandoned,
}

/// One decision, as written.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub ts: f64,
    /// What happened.
    pub event: Kind,
    /// The limited resource: the route for a gate decision, the upstream
    /// for a breaker's.
    pub resource: String,
    /// Always `"http"` (Semian names the adapter).
    pub adapter: &'static str,
    /// The upstream's address (`host:port`, or its DNS name).
    pub host: String,
    /// The resource's limit at the decision (the route's current limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tickets: Option<usize>,
    /// In use at the decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// Proxy worker threads of this process.
    pub workers: usize,
    /// The route, if the request matched one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The request's priority class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// The refusal's reason (`docs/metrics.md`), or the would-be one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The status sent (the upstream's for `success`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// From the request's arrival to the decision (to the upstream's
    /// response head for `success`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// A state change's old state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<&'static str>,
    /// A state change's new state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<&'static str>,
}

impl Event {
    /// An event of `kind` on `resource` at `host`, now; the rest unset.
    pub fn new(kind: Kind, resource: &str, host: &str, workers: usize) -> Self {
        Self {
            ts: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64(),
            event: kind,
            resource: resource.to_owned(),
            adapter: "http",
            host: host.to_owned(),
            tickets: None,
            count: None,
            workers,
            route: None,
            class: None,
            reason: None,
            status: None,
            duration_ms: None,
            from: None,
            to: None,
        }
    }
}

/// The handle requests emit through; off (and free) without `[events]`.
#[derive(Debug)]
pub struct Events {
    tx: Option<SyncSender<Event>>,
    sample: f64,
    workers: usize,
    /// Dropped: the channel was full, or the write failed.
    dropped: Arc<AtomicU64>,
    /// Written.
    written: Arc<AtomicU64>,
}

impl Events {
    /// No log: every emit is a no-op.
    pub fn off() -> Self {
        Self {
            tx: None,
            sample: 1.0,
            workers: 0,
            dropped: Arc::default(),
            written: Arc::default(),
        }
    }

    /// Opens `config`'s sink and starts its writer thread. Fails if the
    /// file cannot be opened for appending, so a wrong path stops the start
    /// (or the reload) with its name.
    pub fn start(config: &EventsConfig, workers: usize) -> anyhow::Result<Self> {
        let Some(sink) = config.sink() else {
            return Ok(Self::off());
        };
        let out: Box<dyn Write + Send> = match &sink {
            EventsSink::Stdout => Box::new(std::io::stdout()),
            EventsSink::Stderr => Box::new(std::io::stderr()),
            EventsSink::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "events.path: cannot open {} to append: {e}",
                            path.display()
                        )
                    })?,
            ),
        };
        let (tx, rx) = sync_channel::<Event>(config.buffer);
        let dropped: Arc<AtomicU64> = Arc::default();
        let written: Arc<AtomicU64> = Arc::default();
        let (d, w) = (dropped.clone(), written.clone());
        std::thread::Builder::new()
            .name("floodwall-events".into())
            .spawn(move || write_all(rx, out, &d, &w))?;
        Ok(Self {
            tx: Some(tx),
            sample: config.sample,
            workers,
            dropped,
            written,
        })
    }

    /// Whether a log is open (a request arms its `abandoned` watch only
    /// then).
    pub fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    /// Writes the event `build` makes, if this one is sampled in; never
    /// waits. `sampled = false` writes it whatever the sample (rare events).
    pub fn emit(&self, sampled: bool, build: impl FnOnce(usize) -> Event) {
        let Some(tx) = &self.tx else {
            return;
        };
        if sampled && self.sample < 1.0 && fastrand::f64() >= self.sample {
            return;
        }
        match tx.try_send(build(self.workers)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Events dropped so far (`floodwall_events_dropped_total`).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events written so far (`floodwall_events_written_total`).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

/// The writer thread: a line per event, flushed whenever none is waiting.
fn write_all(
    rx: std::sync::mpsc::Receiver<Event>,
    out: Box<dyn Write + Send>,
    dropped: &AtomicU64,
    written: &AtomicU64,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let warned = AtomicBool::new(false);
    let mut line = Vec::with_capacity(512);
    let mut write = |out: &mut std::io::BufWriter<Box<dyn Write + Send>>, e: Event| {
        line.clear();
        let ok = serde_json::to_writer(&mut line, &e).is_ok() && {
            line.push(b'\n');
            out.write_all(&line).is_ok()
        };
        if ok {
            written.fetch_add(1, Ordering::Relaxed);
        } else {
            dropped.fetch_add(1, Ordering::Relaxed);
            if !warned.swap(true, Ordering::Relaxed) {
                tracing::warn!("events: a line could not be written; further failures are only counted (floodwall_events_dropped_total)");
            }
        }
    };
    while let Ok(e) = rx.recv() {
        write(&mut out, e);
        loop {
            match rx.try_recv() {
                Ok(e) => write(&mut out, e),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        if out.flush().is_err() && !warned.swap(true, Ordering::Relaxed) {
            tracing::warn!("events: flushing failed; further failures are only counted");
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(path: &std::path::Path, buffer: usize) -> EventsConfig {
        EventsConfig {
            path: Some(path.display().to_string()),
            sample: 1.0,
            buffer,
        }
    }

    fn wait_for(events: &Events, n: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while events.written() + events.dropped() < n && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn each_event_is_one_json_line_with_semians_fields() {
        let dir = std::env::temp_dir().join(format!("fw-events-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.jsonl");
        let _ = std::fs::remove_file(&path);
        let events = Events::start(&config(&path, 64), 2).unwrap();
        events.emit(true, |w| Event {
            tickets: Some(8),
            count: Some(3),
            route: Some("api".into()),
            reason: Some("limit_exceeded"),
            ..Event::new(Kind::Busy, "api", "127.0.0.1:9", w)
        });
        wait_for(&events, 1);
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["event"], "busy");
        assert_eq!(v["adapter"], "http");
        assert_eq!(
            (v["tickets"].as_u64(), v["count"].as_u64()),
            (Some(8), Some(3))
        );
        assert_eq!(v["workers"], 2);
        assert_eq!(v["reason"], "limit_exceeded");
        assert!(v.get("status").is_none(), "unset fields are left out: {v}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_sample_writes_its_fraction_and_rare_events_always() {
        let dir = std::env::temp_dir().join(format!("fw-events-s-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.jsonl");
        let _ = std::fs::remove_file(&path);
        let c = EventsConfig {
            sample: 0.1,
            ..config(&path, 100_000)
        };
        let events = Events::start(&c, 1).unwrap();
        for _ in 0..20_000 {
            events.emit(true, |w| Event::new(Kind::Success, "api", "h", w));
        }
        for _ in 0..10 {
            events.emit(false, |w| Event::new(Kind::StateChange, "app", "h", w));
        }
        let sent = events.written() + events.dropped();
        assert!(sent < 20_000, "the sample let everything through");
        drop(events);
        // The writer has flushed and ended once the handle is gone.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut text = String::new();
        while std::time::Instant::now() < deadline {
            text = std::fs::read_to_string(&path).unwrap();
            if text.matches("state_change").count() == 10 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let success = text.matches("\"success\"").count();
        assert_eq!(text.matches("state_change").count(), 10);
        assert!(
            (1_600..2_400).contains(&success),
            "{success} of 20,000 at 0.1"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_channel_drops_and_counts_and_never_waits() {
        // A 1-slot channel and a burst: the writer cannot keep up, and
        // emit must drop rather than wait.
        let dir = std::env::temp_dir().join(format!("fw-events-f-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.jsonl");
        let events = Events::start(&config(&path, 1), 1).unwrap();
        for _ in 0..10_000 {
            events.emit(true, |w| Event::new(Kind::Success, "api", "h", w));
        }
        assert!(events.dropped() > 0, "nothing was dropped");
        wait_for(&events, 10_000);
        assert_eq!(events.written() + events.dropped(), 10_000);
        drop(events);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unopenable_path_is_an_error_naming_the_key() {
        let e = Events::start(&config(std::path::Path::new("/proc/no/such/dir/x"), 8), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("events.path"), "{e}");
    }
}
