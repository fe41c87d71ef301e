//! The `floodwall` command: `serve`, `check`, `demo`.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use floodwall::config::{Config, LogFormat, Overrides};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// floodwall: admit only as much work as the bottleneck can finish, refuse
/// the rest at once with a reason and a Retry-After.
#[derive(Debug, Parser)]
#[command(name = "floodwall", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gate as a reverse proxy. Flags override the config file.
    Serve(ServeArgs),
    /// Validate a config file; exits non-zero naming the bad key.
    Check {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Show a 3x load spike against a database-like backend, with and
    /// without floodwall in front (about 50 s, needs nothing installed).
    Demo(DemoArgs),
    /// Run an overload scenario against direct, floodwall and any other
    /// gates, and write a table, JSON and plots (see docs/bench.md).
    Bench(BenchArgs),
    /// Measure distributed mode: one replica without Redis, then N replicas
    /// in lease mode and in strict mode, same run (needs redis-server).
    BenchDistributed(BenchDistributedArgs),
}

#[derive(Debug, clap::Args)]
struct BenchDistributedArgs {
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

async fn bench_distributed(args: BenchDistributedArgs) -> anyhow::Result<()> {
    use floodwall::sim::bench::distributed;
    let report = distributed::run_distributed(&distributed::DistributedOptions {
        binary: std::env::current_exe()?,
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

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// The scenario.
    #[arg(value_enum)]
    scenario: floodwall::sim::bench::ScenarioName,
    /// floodwall's fixed limit. The default suits the built-in backend
    /// (8 workers; see BENCHMARKS.md for why a little above 8).
    #[arg(long, default_value_t = 10)]
    limit: usize,
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
    /// Adaptive floodwall runs, one per algorithm (comma-separated; empty
    /// for none).
    #[arg(long, default_value = "aimd", value_delimiter = ',')]
    adaptive: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// A TOML config file (see docs/config.md).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The proxy's listen address [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The upstream URL, e.g. http://127.0.0.1:3000.
    #[arg(long)]
    upstream: Option<http::Uri>,
    /// Pin a fixed limit on requests in flight per route. Without it the
    /// limit is adaptive (`--algorithm`, default aimd).
    #[arg(long)]
    limit: Option<usize>,
    /// The limit algorithm: fixed, aimd, gradient, vegas or wip.
    #[arg(long)]
    algorithm: Option<String>,
    /// The admin listen address for /metrics, /status, /healthz, /readyz
    /// [default: 127.0.0.1:9464].
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Log format; the level comes from FLOODWALL_LOG or the config.
    #[arg(long, value_enum)]
    log_format: Option<LogFormatArg>,
    /// Distributed mode: share each route's limit through this Redis, e.g.
    /// redis://127.0.0.1:6379. `--limit` is then the GLOBAL limit of every
    /// replica pointed at the same store and route.
    #[arg(long)]
    store: Option<String>,
    /// How replicas share the global limit: lease (a leased share per
    /// replica, few Redis calls) or strict (one Lua call per request).
    #[arg(long, value_enum)]
    store_mode: Option<StoreModeArg>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StoreModeArg {
    Lease,
    Strict,
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Also write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    use floodwall::sim::bench::{self, ScenarioName, Target, TargetKind};
    let mut targets = Vec::new();
    if !args.no_direct {
        targets.push(Target {
            name: "direct".into(),
            kind: TargetKind::Direct,
        });
    }
    if !args.no_floodwall {
        targets.push(Target {
            name: format!("floodwall-fixed-{}", args.limit),
            kind: TargetKind::Floodwall { limit: args.limit },
        });
    }
    for a in args.adaptive.iter().filter(|a| !a.is_empty()) {
        targets.push(Target {
            name: format!("floodwall-{a}"),
            kind: TargetKind::Adaptive {
                algorithm: a.clone(),
            },
        });
    }
    for g in &args.gates {
        targets.push(Target::parse_external(g)?);
    }
    anyhow::ensure!(!targets.is_empty(), "no targets left to run");
    let backend = floodwall::sim::BackendConfig {
        workers: args.workers,
        service_time: args.service_time,
        ..Default::default()
    };
    if args.scenario == ScenarioName::Overhead {
        let report = bench::overhead::run_overhead(&bench::overhead::OverheadOptions {
            targets,
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
        targets,
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

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let report = floodwall::sim::run_demo(
        floodwall::sim::DemoOptions::default(),
        &floodwall::sim::FloodwallGate,
    )
    .await?;
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

fn load(args: &ServeArgs) -> anyhow::Result<Config> {
    let overrides = Overrides {
        listen: args.listen,
        admin: args.admin,
        upstream: args.upstream.clone(),
        limit: args.limit,
        algorithm: args.algorithm.clone(),
        store: args.store.clone(),
        store_mode: args.store_mode.map(|m| match m {
            StoreModeArg::Lease => floodwall::config::StoreMode::Lease,
            StoreModeArg::Strict => floodwall::config::StoreMode::Strict,
        }),
    };
    let mut config = match (&args.config, &args.upstream) {
        (Some(path), _) => Config::load(path)?,
        (None, Some(upstream)) => {
            let mut c = Config::simple(
                args.listen.unwrap_or(([127, 0, 0, 1], 8080).into()),
                upstream.clone(),
                args.limit.unwrap_or(64),
                args.admin.unwrap_or(([127, 0, 0, 1], 9464).into()),
            );
            if args.limit.is_none() {
                // Adaptive is the default: no limit to tune by hand.
                c.routes[0].limit = floodwall::config::LimitConfig::default();
            }
            c
        }
        (None, None) => anyhow::bail!("serve needs --upstream URL or --config FILE"),
    };
    config.apply_overrides(&overrides)?;
    if let Some(f) = args.log_format {
        config.log.format = match f {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        };
    }
    Ok(config)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = load(&args)?;
    floodwall::telemetry::init(&config.log.level, config.log.format);
    let running = floodwall::app::start(config).await?;
    // One machine-readable line on stdout once both ports are bound; logs go
    // to stderr.
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "floodwall listening proxy={} admin={}",
        running.proxy_addr, running.admin_addr
    )?;
    out.flush()?;
    drop(out);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
    running.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("floodwall: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Check { file } => Config::load(&file)
            .map(|c| {
                println!(
                    "{}: ok ({} upstreams, {} routes, {} classes)",
                    file.display(),
                    c.upstreams.len(),
                    c.routes.len(),
                    c.classes.len()
                );
            })
            .map_err(Into::into),
        Command::Demo(args) => runtime.block_on(demo(args)),
        Command::Bench(args) => runtime.block_on(bench(args)),
        Command::BenchDistributed(args) => runtime.block_on(bench_distributed(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floodwall: {e:#}");
            ExitCode::FAILURE
        }
    }
}
