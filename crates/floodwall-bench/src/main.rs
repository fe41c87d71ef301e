//! The `floodwall-bench` command: `demo`, `run SCENARIO`, `distributed`,
//! `tls`, `load`, `sim-lease`, `tune-check`, `tune-plot`.
//!
//! The gateway binary (`floodwall`) only serves and checks configs; this one
//! shows and measures it. See docs/bench.md.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use floodwall_bench::bench::{self, distributed, Contender, ContenderKind, ScenarioName};
use floodwall_bench::{demo, BackendConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// floodwall-bench: the floodwall demo, overload scenarios against floodwall
/// and its peers, and the distributed-mode benchmark.
#[derive(Debug, Parser)]
#[command(name = "floodwall-bench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show a 3x load spike against a database-like backend, with and
    /// without floodwall in front (about 50 s, needs nothing installed).
    Demo(DemoArgs),
    /// Run an overload scenario against direct, floodwall and any other
    /// gates, and write a table, JSON and plots (see docs/bench.md).
    Run(RunArgs),
    /// Measure distributed mode: one replica without Redis, then N replicas
    /// in lease mode and in strict mode, same run (needs redis-server and a
    /// built `floodwall` binary).
    Distributed(DistributedArgs),
    /// Measure what TLS termination adds to p50/p99: floodwall and nginx,
    /// each plain and with TLS, same backend, same fixed rate, same run
    /// (needs nginx and a built `floodwall` binary).
    Tls(TlsArgs),
    /// Load one URL open loop at a fixed rate and print its latency as one
    /// JSON line: the generator as a process of its own, for scripts that
    /// compare gates started outside (bench/overhead.sh).
    Load(LoadArgs),
    /// Simulate the lease protocol at replica counts no machine here holds
    /// (default 10, 100, 1,000 and 3,000) and print the table in
    /// BENCHMARKS.md: deterministic, a few seconds, needs nothing.
    SimLease(SimLeaseArgs),
    /// The closed-loop check of `floodwall tune`: record the demo's spike
    /// in shadow mode and under the adaptive limit, tune on each log, then
    /// sweep static limits; prints the table in BENCHMARKS.md and exits 1
    /// if either recommendation is under 0.95 of the best static limit's
    /// goodput (about 4 minutes, needs nothing).
    TuneCheck(TuneCheckArgs),
    /// The plot of `floodwall tune`: in use over time from a decision log,
    /// with a line at each candidate limit; writes STEM.svg and STEM.png.
    TunePlot(TunePlotArgs),
}

#[derive(Debug, clap::Args)]
struct TunePlotArgs {
    /// The decision log (`[events] path`).
    #[arg(long)]
    events: std::path::PathBuf,
    /// A window left out of the baseline, as `floodwall tune --exclude`.
    #[arg(long, value_parser = floodwall::tune::parse_window)]
    exclude: Vec<floodwall::tune::analysis::Window>,
    /// The incident, as `floodwall tune --incident`.
    #[arg(long, value_parser = floodwall::tune::parse_window)]
    incident: Option<floodwall::tune::analysis::Window>,
    /// Where to write the plot.
    #[arg(long, default_value = ".")]
    out: std::path::PathBuf,
    /// The files' name, without extension.
    #[arg(long, default_value = "in-use")]
    stem: String,
}

#[derive(Debug, clap::Args)]
struct TuneCheckArgs {
    /// Static limits to sweep, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [2usize, 4, 6, 8, 10, 12, 16, 24])]
    limits: Vec<usize>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Keep the decision log recorded in shadow mode at this path.
    #[arg(long)]
    keep_log: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
struct SimLeaseArgs {
    /// Replica counts, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [10usize, 100, 1000, 3000])]
    replicas: Vec<usize>,
    /// The generator's seed (the same seed prints the same table).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// The URL to load.
    url: http::Uri,
    /// Requests per second, scheduled open loop.
    #[arg(long, default_value_t = 5000.0)]
    rate: f64,
    /// Seconds loaded at the rate before measuring (not counted); 0
    /// measures from the first request: a cold start.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: std::time::Duration,
    /// Seconds measured after the warm-up.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,
    /// At most this many keep-alive connections (requests on the wire);
    /// unset, a new connection whenever all are busy.
    #[arg(long)]
    connections: Option<usize>,
}

#[derive(Debug, clap::Args)]
struct TlsArgs {
    /// The `floodwall` gateway binary [default: the `floodwall` next to
    /// this executable].
    #[arg(long)]
    floodwall: Option<PathBuf>,
    /// The nginx binary.
    #[arg(long, default_value = "nginx")]
    nginx: PathBuf,
    /// The fixed open-loop rate, req/s.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Warm-up at the rate before measuring (not counted).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: std::time::Duration,
    /// Measured time per contender and round.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,
    /// Rounds over the four contenders (the order rotates each round).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Keep-alive connections of the generator (at most this many requests
    /// on the wire at once).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Where to write tls.{md,json}.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Also write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The scenario.
    #[arg(value_enum)]
    scenario: ScenarioName,
    /// floodwall's fixed limit [default: 10, which suits the built-in
    /// backend's 8 workers (see BENCHMARKS.md for why a little above 8);
    /// 1000 for fast-upstream, a limit that never binds].
    #[arg(long)]
    limit: Option<usize>,
    /// Load your own service at this URL instead of the built-in backend
    /// (direct, and through an in-process floodwall in front of it).
    #[arg(long)]
    target: Option<http::Uri>,
    /// Your service's capacity in req/s; scenario rates are multiples of it.
    #[arg(long, requires = "target")]
    capacity: Option<f64>,
    /// Another gate to compare, already pointing at the backend:
    /// NAME=URL or NAME=URL@LIMIT. Repeatable.
    #[arg(long = "gate")]
    gates: Vec<String>,
    /// Bind the built-in backend at this address (for --gate peers).
    #[arg(long)]
    backend_addr: Option<SocketAddr>,
    /// Built-in backend workers.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Built-in backend service time.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    service_time: std::time::Duration,
    /// Where to write SCENARIO.{json,md,svg,png}.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Multiply every duration (e.g. 0.25 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Skip the direct (ungated) run.
    #[arg(long)]
    no_direct: bool,
    /// Skip the in-process fixed-limit floodwall run.
    #[arg(long)]
    no_floodwall: bool,
    /// Also run the fixed-limit floodwall with a retry budget
    /// (`[routes.retry_budget]` at its defaults), named
    /// `floodwall-fixed-N-retry-budget`.
    #[arg(long)]
    retry_budget: bool,
    /// Skip `floodwall-default`, the in-process floodwall told nothing
    /// (`floodwall serve --upstream URL`: the default adaptive limit).
    #[arg(long)]
    no_default: bool,
    /// More adaptive floodwall runs, one per algorithm given explicitly
    /// with `--algorithm NAME` (comma-separated), named `floodwall-NAME`.
    #[arg(long, value_delimiter = ',')]
    adaptive: Vec<String>,
    /// fast-upstream: interleaved rounds per target.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[derive(Debug, clap::Args)]
struct DistributedArgs {
    /// The `floodwall` gateway binary to start replicas from [default: the
    /// `floodwall` next to this executable, i.e. the same target dir].
    #[arg(long)]
    floodwall: Option<PathBuf>,
    /// Replicas in the distributed setups.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// The global limit, far above the load so nothing is refused.
    #[arg(long, default_value_t = 10_000)]
    limit: usize,
    /// Closed-loop connections, split over three generators.
    #[arg(long, default_value_t = 48)]
    concurrency: usize,
    /// Length of each closed-loop and open-loop measurement.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,
    /// Where to write distributed.{md,json}.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let report = demo::run_demo(demo::DemoOptions::default()).await?;
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut contenders = Vec::new();
    if !args.no_direct {
        contenders.push(Contender {
            name: "direct".into(),
            kind: ContenderKind::Direct,
        });
    }
    if !args.no_floodwall {
        let limit = args
            .limit
            .unwrap_or_else(|| args.scenario.default_fixed_limit());
        contenders.push(Contender {
            name: format!("floodwall-fixed-{limit}"),
            kind: ContenderKind::Floodwall {
                limit,
                retry_budget: false,
            },
        });
        if args.retry_budget {
            contenders.push(Contender {
                name: format!("floodwall-fixed-{limit}-retry-budget"),
                kind: ContenderKind::Floodwall {
                    limit,
                    retry_budget: true,
                },
            });
        }
    }
    if !args.no_default {
        contenders.push(Contender::floodwall_default());
        if args.scenario == ScenarioName::RestartSpike {
            contenders.push(Contender::floodwall_default_warm());
        }
    }
    for a in args.adaptive.iter().filter(|a| !a.is_empty()) {
        contenders.push(Contender {
            name: format!("floodwall-{a}"),
            kind: ContenderKind::Adaptive {
                algorithm: a.clone(),
            },
        });
    }
    for g in &args.gates {
        contenders.push(Contender::parse_external(g)?);
    }
    anyhow::ensure!(!contenders.is_empty(), "no targets left to run");
    let backend = BackendConfig {
        workers: args.workers,
        service_time: args.service_time,
        ..Default::default()
    };
    if args.scenario == ScenarioName::FastUpstream {
        // Whole seconds, so the per-second rows of the rounds line up.
        let round = (5.0 * args.scale).round().max(1.0);
        let report =
            bench::fast_upstream::run_fast_upstream(&bench::fast_upstream::FastUpstreamOptions {
                contenders,
                backend_addr: args.backend_addr,
                concurrency: bench::fast_upstream::CONNECTIONS,
                round: std::time::Duration::from_secs_f64(round),
                rounds: args.rounds,
            })
            .await?;
        println!("{}", bench::fast_upstream::markdown(&report));
        for p in bench::fast_upstream::write_all(&report, &args.out)? {
            println!("wrote {}", p.display());
        }
        return Ok(());
    }
    if args.scenario == ScenarioName::Overhead {
        let report = bench::overhead::run_overhead(&bench::overhead::OverheadOptions {
            contenders,
            backend_addr: args.backend_addr,
            concurrency: 32,
            closed_for: std::time::Duration::from_secs_f64(5.0 * args.scale),
            open_for: std::time::Duration::from_secs_f64(10.0 * args.scale),
        })
        .await?;
        let md = bench::overhead::markdown(&report);
        println!("{md}");
        std::fs::create_dir_all(&args.out)?;
        std::fs::write(args.out.join("overhead.md"), &md)?;
        std::fs::write(
            args.out.join("overhead.json"),
            serde_json::to_string_pretty(&report)?,
        )?;
        return Ok(());
    }
    let opts = bench::BenchOptions {
        scenario: args.scenario,
        contenders,
        external: args.target,
        capacity: args.capacity,
        backend,
        backend_addr: args.backend_addr,
        scale: args.scale,
        progress: true,
    };
    let report = bench::run_bench(&opts).await?;
    println!("{}", bench::report::markdown(&report));
    for p in bench::report::write_all(&report, &args.out)? {
        println!("wrote {}", p.display());
    }
    Ok(())
}

async fn distributed(args: DistributedArgs) -> anyhow::Result<()> {
    let binary = distributed::gateway_binary(args.floodwall)?;
    let report = distributed::run_distributed(&distributed::DistributedOptions {
        binary,
        replicas: args.replicas,
        limit: args.limit,
        concurrency: args.concurrency,
        closed_for: args.duration,
        open_for: args.duration,
    })
    .await?;
    let md = distributed::markdown(&report);
    println!("{md}");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("distributed.md"), &md)?;
    std::fs::write(
        args.out.join("distributed.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(())
}

async fn tls(args: TlsArgs) -> anyhow::Result<()> {
    let report = bench::tls::run_tls(&bench::tls::TlsOptions {
        binary: distributed::gateway_binary(args.floodwall)?,
        nginx: args.nginx,
        rate_rps: args.rate,
        warmup: args.warmup,
        measure: args.duration,
        rounds: args.rounds,
        connections: args.connections,
    })
    .await?;
    let md = bench::tls::markdown(&report);
    println!("{md}");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("tls.md"), &md)?;
    std::fs::write(
        args.out.join("tls.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(())
}

async fn load(args: LoadArgs) -> anyhow::Result<()> {
    use floodwall_bench::loadgen::{self, LoadConfig, Phase, Schedule};
    let mut cfg = LoadConfig::new(
        args.url,
        Schedule {
            phases: vec![Phase {
                duration: args.warmup + args.duration,
                rate_rps: args.rate,
            }],
        },
    );
    cfg.client_timeout = std::time::Duration::from_secs(2);
    cfg.max_connections = args.connections;
    let res = loadgen::run(cfg).await?;
    let warm = args.warmup.as_secs() as usize;
    let sum = res.summary(warm..);
    let sent = sum.totals.sent.max(1) as f64;
    let ms = |q| {
        res.success_latency(warm.., q)
            .map(|d| d.as_secs_f64() * 1000.0)
    };
    let first3 = res.summary(..3);
    let out = serde_json::json!({
        "rate": args.rate,
        "sent": sum.totals.sent,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "percent_failed": 100.0 * (sent - sum.totals.ok as f64) / sent,
        "first_3s_p99_ms": res.success_latency(..3, 0.99).map(|d| d.as_secs_f64() * 1000.0),
        "first_3s_percent_failed": 100.0
            * (first3.totals.sent as f64 - first3.totals.ok as f64)
            / (first3.totals.sent.max(1) as f64),
    });
    println!("{out}");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("floodwall-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Demo(args) => runtime.block_on(demo(args)),
        Command::Run(args) => runtime.block_on(run(args)),
        Command::Distributed(args) => runtime.block_on(distributed(args)),
        Command::Tls(args) => runtime.block_on(tls(args)),
        Command::Load(args) => runtime.block_on(load(args)),
        Command::TuneCheck(args) => runtime.block_on(async {
            let options = floodwall_bench::tune_check::options();
            let check = floodwall_bench::tune_check::run(&options, &args.limits, args.keep_log.as_deref()).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&check)?);
            } else {
                print!("{}", check.to_markdown());
            }
            anyhow::ensure!(
                check.worst_ratio() >= 0.95,
                "a recording's recommended limit fell below 0.95 of the best static limit's goodput ({:.2})",
                check.worst_ratio()
            );
            Ok(())
        }),
        Command::TunePlot(args) => (|| {
            let (decisions, _) = floodwall::tune::read(&args.events)?;
            let tunings = floodwall::tune::analysis::tune(&decisions, &args.exclude, args.incident);
            for path in floodwall_bench::tune_plot::write(&decisions, &tunings, &args.out, &args.stem)? {
                println!("{}", path.display());
            }
            Ok(())
        })(),
        Command::SimLease(args) => {
            print!("{}", floodwall_bench::sim::table(&args.replicas, args.seed));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floodwall-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
