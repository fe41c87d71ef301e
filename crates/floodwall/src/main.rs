//! The `floodwall` command: `serve`, `check`, `report`, `plan`.

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

// Parsed once at start-up, so the size gap between `serve`'s many flags and
// `check`'s one path costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gate as a reverse proxy. Flags override the config file.
    Serve(ServeArgs),
    /// Validate a config file; exits non-zero naming the bad key.
    Check {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Only watch a server's accept backlog and keep a flag file that
    /// nginx answers 503 from while it is too deep (the backlog_reporter
    /// gem, for any server on a TCP port). Stops on SIGTERM or SIGINT,
    /// removing the flag.
    BacklogReporter(ReporterArgs),
    /// The unplanned-work tax of a period, from Prometheus: requests,
    /// rejections, incident windows, time at the floor and limited by each
    /// probe, the cost, and what to do about it.
    Report(floodwall::report::ReportArgs),
    /// PgBouncer pool sizes and floodwall limits for a fleet sharing one
    /// PostgreSQL: the arithmetic, warnings, a pgbouncer.ini fragment and
    /// the floodwall TOML.
    Plan(floodwall::plan::PlanArgs),
    /// The status page's figures in the terminal, redrawn every second
    /// (`q` quits); `--once` prints one screen as text.
    Top(floodwall::top::TopArgs),
    /// A limit chosen from recorded history (the decision log of
    /// `[events]`): the most in use, its 99.9th to 99.999th percentiles,
    /// and what each candidate limit would have refused, in a baseline and
    /// an incident.
    Tune(floodwall::tune::TuneArgs),
}

#[derive(Debug, clap::Args)]
struct ReporterArgs {
    /// The TCP port the watched server listens on (on this host).
    #[arg(long)]
    listen_port: u16,
    /// The flag file: present while the backlog is too deep. An absolute
    /// path, the one nginx checks with `if (-f …)`.
    #[arg(long)]
    flag: PathBuf,
    /// Raise the flag from this many connections waiting to be accepted.
    #[arg(long, default_value_t = 16)]
    max_backlog: usize,
    /// Lower it again at this many or fewer [default: half of max-backlog].
    #[arg(long)]
    recover_backlog: Option<usize>,
    /// How often to read the backlog.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    interval: std::time::Duration,
}

async fn backlog_reporter(args: ReporterArgs) -> anyhow::Result<()> {
    floodwall::telemetry::init("info", LogFormat::Text);
    if args.max_backlog == 0 || args.listen_port == 0 {
        anyhow::bail!("--max-backlog and --listen-port must be at least 1");
    }
    if args.recover_backlog.is_some_and(|r| r >= args.max_backlog) {
        anyhow::bail!("--recover-backlog must be below --max-backlog");
    }
    if !args.flag.is_absolute() {
        anyhow::bail!(
            "--flag must be an absolute path (got {})",
            args.flag.display()
        );
    }
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let config = floodwall::probe::reporter::ReporterConfig {
        port: args.listen_port,
        flag: args.flag,
        max_backlog: args.max_backlog,
        recover_backlog: args.recover_backlog,
        interval: args.interval,
    };
    println!(
        "floodwall backlog-reporter port={} flag={}",
        config.port,
        config.flag.display()
    );
    floodwall::probe::reporter::run(config, stop).await
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
    /// replica pointed at the same store and route. A URL with a password
    /// belongs in FLOODWALL_STORE_URL, not on the command line, where `ps`
    /// shows it to every user of the host; the flag wins over the variable.
    #[arg(long, env = "FLOODWALL_STORE_URL", hide_env_values = true)]
    store: Option<String>,
    /// Distributed mode, with the store URL read from this file (a mounted
    /// Kubernetes Secret, a systemd credential): the password is then in
    /// neither the command line nor the environment. Trailing whitespace
    /// is ignored. Cannot be combined with --store.
    #[arg(long, env = "FLOODWALL_STORE_URL_FILE", conflicts_with = "store")]
    store_file: Option<PathBuf>,
    /// How replicas share the global limit: lease (a leased share per
    /// replica, few Redis calls) or strict (one Lua call per request).
    #[arg(long, value_enum)]
    store_mode: Option<StoreModeArg>,
    /// Shadow mode on every route: every decision (limit, tenant share,
    /// breaker, bulkhead, retry budget) is computed and a would-be refusal
    /// counted in floodwall_shadow_refusals_total and marked with
    /// X-Floodwall-Shadow, but nothing is refused.
    #[arg(long)]
    shadow: bool,
    /// Keep what each route's adaptive limit learns in this file, and
    /// start from it: a restart resumes at the learned limit and baseline
    /// instead of measuring from cold (server.state_file).
    #[arg(long)]
    state_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StoreModeArg {
    Lease,
    Strict,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

/// The store URL from `--store`, `FLOODWALL_STORE_URL`, or the file
/// `--store-file` names.
fn store_url(args: &ServeArgs) -> anyhow::Result<Option<String>> {
    let Some(path) = &args.store_file else {
        return Ok(args.store.clone());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--store-file {}: {e}", path.display()))?;
    let url = text.trim();
    if url.is_empty() {
        anyhow::bail!("--store-file {}: the file is empty", path.display());
    }
    Ok(Some(url.to_owned()))
}

fn load(args: &ServeArgs) -> anyhow::Result<Config> {
    let overrides = Overrides {
        listen: args.listen,
        admin: args.admin,
        upstream: args.upstream.clone(),
        limit: args.limit,
        algorithm: args.algorithm.clone(),
        store: store_url(args)?,
        store_mode: args.store_mode.map(|m| match m {
            StoreModeArg::Lease => floodwall::config::StoreMode::Lease,
            StoreModeArg::Strict => floodwall::config::StoreMode::Strict,
        }),
        shadow: args.shadow,
        state_file: args.state_file.clone(),
    };
    let mut config = match (&args.config, &args.upstream) {
        (Some(path), _) => Config::load(path)?,
        (None, Some(upstream)) => Config::for_upstream(
            args.listen.unwrap_or(([127, 0, 0, 1], 8080).into()),
            upstream.clone(),
            args.limit,
            args.admin.unwrap_or(([127, 0, 0, 1], 9464).into()),
        ),
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
    // With a file, a reload (SIGHUP, POST /reload) reads it again with the
    // same flags over it.
    let reload: Option<Box<floodwall::reload::LoadFn>> = args.config.is_some().then(|| {
        let args = std::sync::Arc::new(args);
        Box::new(move || load(&args)) as Box<floodwall::reload::LoadFn>
    });
    let running = floodwall::app::start_reloadable(config, reload).await?;
    // The handlers go in before the line below announces the ports: a
    // supervisor (or a test) that sends SIGHUP as soon as it reads the line
    // would otherwise hit SIGHUP's default action and kill the process.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
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
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received"); break }
            _ = interrupt.recv() => { tracing::info!("SIGINT received"); break }
            // SIGHUP re-reads the TLS certificate files and the config
            // file; a failed reload of either keeps what runs and is
            // logged (and, for the config, counted and shown on /status).
            _ = hangup.recv() => {
                tracing::info!("SIGHUP received: reloading the TLS certificate and the config");
                let _ = running.reload_tls();
                let _ = running.reload();
            }
        }
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
        Command::BacklogReporter(args) => runtime.block_on(backlog_reporter(args)),
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
        Command::Report(args) => runtime.block_on(floodwall::report::run(args)),
        Command::Plan(args) => floodwall::plan::run(args),
        Command::Top(args) => runtime.block_on(floodwall::top::run(args)),
        Command::Tune(args) => runtime.block_on(floodwall::tune::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floodwall: {e:#}");
            ExitCode::FAILURE
        }
    }
}
