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
    /// The unplanned-work tax of a period, from Prometheus: requests,
    /// rejections, incident windows, time at the floor and limited by each
    /// probe, the cost, and what to do about it.
    Report(floodwall::report::ReportArgs),
    /// PgBouncer pool sizes and floodwall limits for a fleet sharing one
    /// PostgreSQL: the arithmetic, warnings, a pgbouncer.ini fragment and
    /// the floodwall TOML.
    Plan(floodwall::plan::PlanArgs),
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
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received"); break }
            _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT received"); break }
            // SIGHUP re-reads the TLS certificate files (not the config
            // file); a failed reload keeps the current ones and is logged.
            _ = hangup.recv() => {
                tracing::info!("SIGHUP received: reloading the TLS certificate");
                let _ = running.reload_tls();
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floodwall: {e:#}");
            ExitCode::FAILURE
        }
    }
}
