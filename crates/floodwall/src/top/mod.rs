//! `floodwall top`: the status page's figures in a terminal, the way
//! operators watch a host with `htop` or a database with `pg_top`.
//!
//! It polls the admin API (`GET /status` and `GET /history.json`, the
//! documents the page reads) every `--interval` and redraws; `q`, Esc or
//! Ctrl-C quits. With `--once` it polls once and prints the same screen as
//! plain text, for scripts, tickets and tests. What it draws is
//! [`view`]'s; this module is the I/O: the HTTP polls and the terminal.

pub mod view;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use view::Snapshot;

/// How long one poll may take before the screen says it failed.
const POLL_TIMEOUT: Duration = Duration::from_secs(5);

/// `floodwall top`'s flags.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// The admin address of the floodwall to watch (`server.admin`).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub admin: String,
    /// How often to poll and redraw (100ms to 60s).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// A file holding the read token (or the admin token) when the admin
    /// port's reads are locked down. Unset, `FLOODWALL_ADMIN_READ_TOKEN`,
    /// then `FLOODWALL_ADMIN_TOKEN`, is used if set.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Poll once, print the screen as plain text and exit.
    #[arg(long)]
    pub once: bool,
    /// With `--once`: the width of the printed screen (40 to 500).
    #[arg(long, default_value_t = 140)]
    pub width: u16,
    /// With `--once`: its height (10 to 500).
    #[arg(long, default_value_t = 40)]
    pub height: u16,
}

/// The admin API of one floodwall, over the hyper client the proxy uses.
struct Admin {
    base: String,
    token: Option<String>,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Admin {
    fn new(addr: &str, token: Option<String>) -> anyhow::Result<Self> {
        let base = if addr.contains("://") {
            addr.trim_end_matches('/').to_owned()
        } else {
            format!("http://{addr}")
        };
        let uri: Uri = base
            .parse()
            .map_err(|e| anyhow::anyhow!("--admin {addr:?}: not an address: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            anyhow::bail!("--admin {addr:?}: needs host:port (or http://host:port)");
        }
        Ok(Self {
            base,
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let mut req = Request::get(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Empty::new())?;
        let call = async {
            let resp = self.client.request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(POLL_TIMEOUT, call)
            .await
            .map_err(|_| anyhow::anyhow!("{path}: no answer within {POLL_TIMEOUT:?}"))?
            .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
            anyhow::bail!("{path}: HTTP {status}: {}", text.trim());
        }
        serde_json::from_slice(&body).map_err(|e| anyhow::anyhow!("{path}: not JSON: {e}"))
    }

    /// Polls both documents into `snap`; on failure keeps the old figures
    /// and says why.
    async fn poll(&self, snap: &mut Snapshot) {
        match tokio::try_join!(self.get("/status"), self.get("/history.json")) {
            Ok((status, history)) => {
                snap.status = status;
                snap.history = history;
                snap.error = None;
            }
            Err(e) => snap.error = Some(format!("{e:#}")),
        }
    }
}

/// The read token: `--token-file`, else the environment.
fn token(args: &TopArgs) -> anyhow::Result<Option<String>> {
    let tokens = crate::config::AdminConfig {
        read_token_file: args.token_file.clone(),
        token_file: None,
    }
    .tokens()
    .map_err(|e| anyhow::anyhow!("--token-file: {e}"))?;
    Ok(tokens.read.or(tokens.write))
}

/// Runs `floodwall top`.
pub async fn run(args: TopArgs) -> anyhow::Result<()> {
    if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&args.interval) {
        anyhow::bail!("--interval must be 100ms to 60s, got {:?}", args.interval);
    }
    if args.once && !((40..=500).contains(&args.width) && (10..=500).contains(&args.height)) {
        anyhow::bail!(
            "--width must be 40 to 500 and --height 10 to 500, got {}x{}",
            args.width,
            args.height
        );
    }
    let admin = Admin::new(&args.admin, token(&args)?)?;
    let mut snap = Snapshot {
        admin: args.admin.clone(),
        ..Snapshot::default()
    };
    admin.poll(&mut snap).await;
    if args.once {
        if let Some(e) = &snap.error {
            anyhow::bail!("{}: {e}", args.admin);
        }
        print!("{}", view::to_text(&snap, args.width, args.height));
        return Ok(());
    }
    let mut terminal = ratatui::init();
    let result = watch(&admin, &mut snap, args.interval, &mut terminal).await;
    ratatui::restore();
    result
}

async fn watch(
    admin: &Admin,
    snap: &mut Snapshot,
    interval: Duration,
    terminal: &mut ratatui::DefaultTerminal,
) -> anyhow::Result<()> {
    loop {
        terminal
            .draw(|f| view::render(snap, f.area(), f.buffer_mut()))
            .context("drawing the terminal")?;
        // Keys are read on a blocking thread for one interval, then the
        // next poll runs: a key ends the wait at once.
        let quit = tokio::task::spawn_blocking(move || quit_pressed(interval))
            .await
            .context("the key reader")??;
        if quit {
            return Ok(());
        }
        admin.poll(snap).await;
    }
}

/// Waits up to `within` for a key; true if it asks to quit.
fn quit_pressed(within: Duration) -> anyhow::Result<bool> {
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
    let deadline = std::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || !event::poll(left)? {
            return Ok(false);
        }
        if let Event::Key(k) = event::read()? {
            let ctrl_c =
                k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
            if ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) {
                return Ok(true);
            }
        }
    }
}
