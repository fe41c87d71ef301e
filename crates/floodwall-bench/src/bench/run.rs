//! Runs a scenario against every contender, one after the other, each on a
//! fresh backend so no run inherits another's queue.

use super::contender::{self, Contender};
use super::scenario::{ClientKind, Event, Scenario, ScenarioName};
use crate::backend::{self, BackendConfig, BackendStats};
use crate::loadgen::{self, LoadConfig, LoadResult};
use http::Uri;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Everything `floodwall-bench run` was asked to do.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The scenario.
    pub scenario: ScenarioName,
    /// The contenders, in run order.
    pub contenders: Vec<Contender>,
    /// Load a service of the user's instead of the built-in backend.
    pub external: Option<Uri>,
    /// The capacity of `external` in req/s (rates are multiples of it).
    pub capacity: Option<f64>,
    /// The built-in backend's shape.
    pub backend: BackendConfig,
    /// Bind the built-in backend here (so gates started outside can point
    /// at it); port 0 otherwise.
    pub backend_addr: Option<SocketAddr>,
    /// Multiplies every duration (1.0 = the scenario as documented).
    pub scale: f64,
    /// Show progress bars.
    pub progress: bool,
}

/// One contender under one kind of client.
#[derive(Debug, Serialize)]
pub struct ContenderRun {
    /// The contender (`target` in the JSON, as before the rename).
    #[serde(rename = "target")]
    pub contender: Contender,
    /// The clients' retry behaviour.
    pub client: ClientKind,
    /// What the load generator measured.
    pub load: LoadResult,
    /// The gate's limit sampled in the middle of each second.
    pub limit: Vec<Option<usize>>,
    /// The gate's limit every [`LIMIT_TRACE_STEP`] from the first arrival
    /// (sample `i` at `i × 100 ms`), for a close look at a cold start.
    pub limit_trace: Vec<Option<usize>>,
    /// The gate's limit just before the first arrival: an in-process
    /// floodwall's initial limit, since nothing warmed it up.
    pub limit_at_start: Option<usize>,
    /// How long before the first arrival the in-process floodwall was
    /// started, in milliseconds (`None` for direct and outside gates, which
    /// are static): each run starts a fresh gate right before its load, so
    /// this is start-up time only, never a warm-up.
    pub gate_started_before_ms: Option<f64>,
    /// The backend's counters at the end (built-in backend only).
    pub backend: Option<BackendStats>,
}

/// A whole bench run.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// The scenario as run.
    pub scenario: Scenario,
    /// The load generator's target when `--target` was used.
    pub external: Option<String>,
    /// The built-in backend's capacity as measured at the start of this
    /// run: `workers` connections sending back to back, unloaded. Timer
    /// granularity and the loopback round trip make it a little below the
    /// nominal `workers / service_time`; goodput is reported against it.
    pub measured_capacity: Option<f64>,
    /// The p99 latency of that unloaded measurement, in milliseconds: the
    /// yardstick for "p99 under overload ≤ 2 × unloaded".
    pub unloaded_p99_ms: Option<f64>,
    /// One entry per contender and client kind.
    pub runs: Vec<ContenderRun>,
}

/// How often [`ContenderRun::limit_trace`] samples the gate's limit.
pub const LIMIT_TRACE_STEP: Duration = Duration::from_millis(100);

fn apply(control: &backend::BackendControl, event: Event) {
    let res = match event {
        Event::ServiceTime(d) => control.set_service_time(d),
        Event::Workers(n) => control.set_workers(n),
    };
    if let Err(e) = res {
        tracing::warn!(error = %e, ?event, "could not apply a backend event");
    }
}

async fn run_one(
    opts: &BenchOptions,
    scenario: &Scenario,
    contender: &Contender,
    client: &ClientKind,
) -> anyhow::Result<ContenderRun> {
    let backend = match (&opts.external, opts.backend_addr) {
        (Some(_), _) => None,
        (None, Some(addr)) => Some(backend::start_on(addr, scenario.backend).await?),
        (None, None) => Some(backend::start(scenario.backend).await?),
    };
    let upstream: Uri = match (&opts.external, &backend) {
        (Some(u), _) => u.clone(),
        (None, Some(b)) => format!("http://{}", b.addr).parse()?,
        (None, None) => unreachable!("a backend or an external target"),
    };
    // A fresh gate for every run, started right before the load: nothing
    // is sent through it before the first scheduled arrival, so the run
    // sees its cold start (the cold-start scenario is about exactly that).
    let started = contender::start(contender, &upstream, scenario.capacity).await?;
    let gate_started = Instant::now();
    let limiter = started.limiter();
    let static_limit = started.limit();
    let limit_at_start = started.limit();

    let t0 = Instant::now();
    let gate_started_before_ms = started
        .gateway
        .is_some()
        .then(|| (t0 - gate_started).as_secs_f64() * 1e3);
    let events = backend.as_ref().map(|b| {
        let control = b.control();
        let events = scenario.events.clone();
        tokio::spawn(async move {
            for (at, event) in events {
                tokio::time::sleep_until(t0 + at).await;
                apply(&control, event);
            }
        })
    });
    let seconds = scenario.schedule.seconds();
    let per_second = (Duration::from_secs(1).as_millis() / LIMIT_TRACE_STEP.as_millis()) as usize;
    let steps = seconds * per_second;
    let samples = Arc::new(Mutex::new(Vec::with_capacity(steps)));
    let sampler = {
        let samples = samples.clone();
        tokio::spawn(async move {
            for i in 0..steps {
                tokio::time::sleep_until(t0 + LIMIT_TRACE_STEP * i as u32).await;
                let v = limiter.as_ref().map(|l| l.limit()).or(static_limit);
                samples.lock().expect("sampler lock").push(v);
            }
        })
    };

    let mut load = LoadConfig::new(started.url.clone(), scenario.schedule.clone());
    load.slo = scenario.slo;
    load.client_timeout = scenario.client_timeout;
    load.mix = scenario.mix.clone();
    load.retry = client.retry;
    if opts.progress {
        let label = if client.label.is_empty() {
            contender.name.clone()
        } else {
            format!("{} ({})", contender.name, client.label)
        };
        load.progress = Some(loadgen::progress_bar(label));
    }
    let result = loadgen::run(load).await;

    if let Some(e) = events {
        e.abort();
    }
    sampler.abort();
    let _ = sampler.await;
    started.stop().await;
    let stats = match backend {
        Some(b) => {
            let s = b.stats();
            b.shutdown().await;
            Some(s)
        }
        None => None,
    };
    let mut limit_trace = std::mem::take(&mut *samples.lock().expect("sampler lock"));
    limit_trace.resize(steps, None);
    // The middle of each second, as the plot has always shown it.
    let limit = (0..seconds)
        .map(|i| limit_trace[i * per_second + per_second / 2])
        .collect();
    Ok(ContenderRun {
        contender: contender.clone(),
        client: client.clone(),
        load: result?,
        limit,
        limit_trace,
        limit_at_start,
        gate_started_before_ms,
        backend: stats,
    })
}

/// Runs `opts.scenario` against every contender and client kind.
pub async fn run_bench(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(
        !opts.scenario.own_runner(),
        "the {} scenario has its own runner",
        opts.scenario.as_str()
    );
    let scenario = Scenario::build(opts.scenario, opts.backend, opts.capacity).scaled(opts.scale);
    if opts.external.is_some() && !scenario.events.is_empty() {
        tracing::warn!(
            "--target: floodwall cannot change your service mid-run; the scenario's backend events are skipped"
        );
    }
    let (measured_capacity, unloaded_p99_ms) = match &opts.external {
        Some(_) => (None, None),
        None => {
            let (rps, p99) = calibrate(opts, &scenario).await?;
            (Some(rps), p99)
        }
    };
    let mut runs = Vec::new();
    for client in &scenario.clients {
        for contender in &opts.contenders {
            runs.push(run_one(opts, &scenario, contender, client).await?);
        }
    }
    Ok(BenchReport {
        scenario,
        external: opts.external.as_ref().map(|u| u.to_string()),
        measured_capacity,
        unloaded_p99_ms,
        runs,
    })
}

/// Measures what the backend really sustains, unloaded: exactly `workers`
/// clients sending back to back for 2 s (scaled), so no request ever queues.
/// Returns req/s and the p99 latency in milliseconds.
async fn calibrate(opts: &BenchOptions, scenario: &Scenario) -> anyhow::Result<(f64, Option<f64>)> {
    let backend = match opts.backend_addr {
        Some(addr) => backend::start_on(addr, scenario.backend).await?,
        None => backend::start(scenario.backend).await?,
    };
    let url: Uri = format!("http://{}", backend.addr).parse()?;
    let secs = (2.0 * opts.scale).clamp(0.5, 2.0);
    let r = loadgen::run_closed_loop(url, scenario.backend.workers, Duration::from_secs_f64(secs))
        .await;
    backend.shutdown().await;
    let r = r?;
    Ok((r.rps, r.p99_ms))
}
