//! `floodwall-bench tls`: what TLS termination adds to a request's
//! latency, for floodwall and for nginx, in the same run.
//!
//! One backend that answers at once (so everything measured is the path),
//! four contenders in front of it, each a real process:
//!
//! 1. `floodwall`: `floodwall serve`, plain HTTP;
//! 2. `floodwall-tls`: the same with `server.tls` (rustls, ring);
//! 3. `nginx`: a plain `server` block proxying with a keep-alive upstream;
//! 4. `nginx-tls`: an `ssl` server block in the same nginx process
//!    (OpenSSL), same certificate and key.
//!
//! Each is loaded in turn by the open-loop generator at one fixed rate over
//! a fixed number of HTTP/1.1 keep-alive connections (TLS with rustls for
//! the `-tls` ones; wrk2's `-c` and `-R`), the first seconds not counted,
//! so the handshakes are paid during warm-up and the figures are steady
//! state. Without the cap a slow patch on this shared machine opens new
//! connections, each a handshake that slows everything further: a storm
//! that measures the machine, not the termination.
//! Rounds rotate the order so drift on the shared machine does not favour
//! one contender. The figure reported is the added p99 of TLS:
//! p99(TLS) − p99(plain) of the same gateway, in the same round.
//!
//! The certificate (ECDSA P-256, from a CA made for the run) is generated
//! with rcgen; nginx is started with `-p DIR -g 'daemon off;'` and stopped
//! by PID. Needs the `floodwall` binary and nginx (bench/tls.sh installs
//! it).

use super::distributed::{free_port, Proc};
use crate::backend;
use crate::loadgen::{self, LoadConfig, Phase, Schedule};
use anyhow::Context;
use http::Uri;
use serde::Serialize;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Knobs of the TLS benchmark.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// The `floodwall` gateway binary.
    pub binary: PathBuf,
    /// The nginx binary.
    pub nginx: PathBuf,
    /// The open-loop rate, req/s.
    pub rate_rps: f64,
    /// Seconds at the rate before measuring (connections and handshakes).
    pub warmup: Duration,
    /// Seconds measured after the warm-up.
    pub measure: Duration,
    /// Rounds over all four contenders.
    pub rounds: usize,
    /// Keep-alive connections the generator keeps (at most this many
    /// requests on the wire at once).
    pub connections: usize,
}

/// One contender in one round.
#[derive(Debug, Clone, Serialize)]
pub struct TlsRow {
    /// The contender.
    pub name: String,
    /// The round, from 0.
    pub round: usize,
    /// p50 of 2xx latency over the measured seconds, ms.
    pub p50_ms: Option<f64>,
    /// p99, ms.
    pub p99_ms: Option<f64>,
    /// p99.9, ms.
    pub p999_ms: Option<f64>,
    /// Requests scheduled in the measured seconds.
    pub sent: u64,
    /// Share of them without a 2xx.
    pub percent_failed: f64,
    /// CPU time the contender's processes (nginx: master and workers) used
    /// over the whole run, warm-up included, per request sent, µs; `None`
    /// where `/proc` cannot say. Steadier than a tail latency on a shared
    /// machine: it is what the termination costs, not when it was paid.
    pub cpu_us_per_request: Option<f64>,
}

/// What a TLS contender negotiated with the generator's client.
#[derive(Debug, Clone, Serialize)]
pub struct Negotiated {
    /// The contender.
    pub name: String,
    /// e.g. `TLSv1_3`.
    pub version: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct TlsReport {
    /// The fixed open-loop rate.
    pub rate_rps: f64,
    /// The generator's keep-alive connections.
    pub connections: usize,
    /// Seconds measured per contender and round.
    pub measure_s: f64,
    /// `nginx -v`.
    pub nginx_version: String,
    /// What each TLS contender negotiated.
    pub negotiated: Vec<Negotiated>,
    /// Every contender in every round, in the order they ran.
    pub rows: Vec<TlsRow>,
}

const CONTENDERS: [&str; 4] = ["floodwall", "floodwall-tls", "nginx", "nginx-tls"];

/// A CA and a leaf for 127.0.0.1 / localhost, written into `dir`; returns
/// the client config that trusts the CA.
fn certificates(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, Arc<rustls::ClientConfig>)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "floodwall-bench CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?
        .signed_by(&key, &ca, &ca_key)?;
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, leaf.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone())?;
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok((cert_path, key_path, Arc::new(client)))
}

/// `floodwall serve --config FILE`, and its proxy URL from the ready line.
fn start_floodwall(binary: &Path, config: &str, file: &Path) -> anyhow::Result<(Proc, String)> {
    std::fs::write(file, config)?;
    let mut child = Command::new(binary)
        .args(["serve", "--config"])
        .arg(file)
        .env("FLOODWALL_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start floodwall")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let proxy = line
        .trim()
        .strip_prefix("floodwall listening proxy=")
        .and_then(|r| r.split_once(' '))
        .map(|(p, _)| p.to_owned())
        .with_context(|| format!("unexpected ready line {line:?}"))?;
    Ok((Proc(child), proxy))
}

fn floodwall_config(backend: &str, tls: Option<(&Path, &Path)>) -> String {
    let tls = tls.map_or(String::new(), |(c, k)| {
        format!(
            "tls = {{ cert = {:?}, key = {:?} }}\n",
            c.display().to_string(),
            k.display().to_string()
        )
    });
    // A limit far above the load: this measures the hop, not refusals.
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{tls}\n\
         [[upstreams]]\nname = \"backend\"\nurl = \"http://{backend}\"\n\n\
         [[routes]]\nname = \"all\"\nupstream = \"backend\"\n\
         limit = {{ algorithm = \"fixed\", value = 100000 }}\n"
    )
}

/// nginx with a plain and an `ssl` server in one process, both proxying to
/// `backend` over a keep-alive upstream. Keep-alive limits are raised so
/// nginx never closes a client connection during a run (its default
/// `keepalive_requests 1000` would make the TLS side pay a handshake every
/// 1000 requests, which floodwall never does), the forwarding headers
/// floodwall adds are added too, and TLS 1.3 is enabled as floodwall has it
/// (nginx before 1.23.4 leaves it off by default).
fn start_nginx(
    nginx: &Path,
    dir: &Path,
    backend: &str,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<(Proc, u16, u16)> {
    let (plain, tls) = (free_port()?, free_port()?);
    let d = dir.display();
    let conf = format!(
        r#"worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 8000; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp_body;
  proxy_temp_path {d}/tmp_proxy;
  fastcgi_temp_path {d}/tmp_fcgi;
  uwsgi_temp_path {d}/tmp_uwsgi;
  scgi_temp_path {d}/tmp_scgi;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  upstream be {{
    server {backend};
    keepalive 64;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
  }}
  server {{
    listen 127.0.0.1:{plain};
    listen 127.0.0.1:{tls} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      proxy_pass http://be;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
    }}
  }}
}}
"#,
        cert = cert.display(),
        key = key.display(),
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let child = Command::new(nginx)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("start {}", nginx.display()))?;
    let mut p = Proc(child);
    for _ in 0..250 {
        if std::net::TcpStream::connect(("127.0.0.1", tls)).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", plain)).is_ok()
        {
            return Ok((p, plain, tls));
        }
        if let Ok(Some(status)) = p.0.try_wait() {
            anyhow::bail!(
                "nginx exited ({status}): {}",
                std::fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("nginx did not listen on {plain} and {tls}")
}

/// One handshake with `addr`, to report what was negotiated.
async fn negotiate(
    name: &str,
    addr: &str,
    client: &Arc<rustls::ClientConfig>,
) -> anyhow::Result<Negotiated> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(client.clone())
        .connect("127.0.0.1".try_into()?, tcp)
        .await?;
    let (_, conn) = tls.get_ref();
    Ok(Negotiated {
        name: name.to_owned(),
        version: conn
            .protocol_version()
            .map_or("?".into(), |v| format!("{v:?}")),
        cipher_suite: conn
            .negotiated_cipher_suite()
            .map_or("?".into(), |c| format!("{:?}", c.suite())),
    })
}

/// utime + stime, in clock ticks, of `pid` and its direct children (nginx's
/// workers), from `/proc`.
fn cpu_ticks(pid: u32) -> Option<u64> {
    // Fields after the parenthesised command name: state ppid ... utime
    // (14th field overall) stime (15th).
    let parse = |text: &str| -> Option<(u32, u64)> {
        let rest = &text[text.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some((
            f.get(1)?.parse().ok()?,
            f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
        ))
    };
    let (_, own) = parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let mut total = own;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(name) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if name == pid {
            continue;
        }
        if let Some((ppid, t)) = std::fs::read_to_string(format!("/proc/{name}/stat"))
            .ok()
            .as_deref()
            .and_then(parse)
        {
            if ppid == pid {
                total += t;
            }
        }
    }
    Some(total)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux if that fails).
fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

/// Runs the rounds and returns every row.
pub async fn run_tls(opts: &TlsOptions) -> anyhow::Result<TlsReport> {
    anyhow::ensure!(opts.rounds > 0, "at least one round");
    let nginx_version = Command::new(&opts.nginx)
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
        .with_context(|| format!("run {} -v", opts.nginx.display()))?;
    let dir = std::env::temp_dir().join(format!("floodwall-bench-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (cert, key, client) = certificates(&dir)?;
    let backend = backend::start_trivial().await?;
    let be = backend.addr.to_string();

    let (fw_proc, fw) = start_floodwall(
        &opts.binary,
        &floodwall_config(&be, None),
        &dir.join("plain.toml"),
    )?;
    let (fw_tls_proc, fw_tls) = start_floodwall(
        &opts.binary,
        &floodwall_config(&be, Some((&cert, &key))),
        &dir.join("tls.toml"),
    )?;
    let (nginx_proc, nginx_plain, nginx_tls) = start_nginx(&opts.nginx, &dir, &be, &cert, &key)?;
    // nginx serves both of its contenders from the same processes; they
    // run one at a time, so each run's CPU is its own.
    let pids = [
        fw_proc.0.id(),
        fw_tls_proc.0.id(),
        nginx_proc.0.id(),
        nginx_proc.0.id(),
    ];
    let tick = ticks_per_second();
    let nginx_tls = format!("127.0.0.1:{nginx_tls}");
    let urls: [Uri; 4] = [
        format!("http://{fw}/").parse()?,
        format!("https://{fw_tls}/").parse()?,
        format!("http://127.0.0.1:{nginx_plain}/").parse()?,
        format!("https://{nginx_tls}/").parse()?,
    ];
    let negotiated = vec![
        negotiate("floodwall-tls", &fw_tls, &client).await?,
        negotiate("nginx-tls", &nginx_tls, &client).await?,
    ];

    let warm = opts.warmup.as_secs() as usize;
    let mut rows = Vec::new();
    for round in 0..opts.rounds {
        for i in 0..CONTENDERS.len() {
            // Rotate the order each round.
            let c = (i + round) % CONTENDERS.len();
            let name = CONTENDERS[c];
            eprintln!(
                "tls: round {}/{}, {name} at {:.0} req/s...",
                round + 1,
                opts.rounds,
                opts.rate_rps
            );
            let mut load = LoadConfig::new(
                urls[c].clone(),
                Schedule {
                    phases: vec![Phase {
                        duration: opts.warmup + opts.measure,
                        rate_rps: opts.rate_rps,
                    }],
                },
            );
            load.client_timeout = Duration::from_secs(2);
            load.tls = Some(client.clone());
            load.max_connections = Some(opts.connections);
            let cpu_before = cpu_ticks(pids[c]);
            let res = loadgen::run(load).await?;
            let cpu = cpu_before
                .zip(cpu_ticks(pids[c]))
                .map(|(a, b)| b.saturating_sub(a));
            let all_sent = res.summary(..).totals.sent.max(1) as f64;
            let sum = res.summary(warm..);
            let sent = sum.totals.sent;
            rows.push(TlsRow {
                name: name.to_owned(),
                round,
                p50_ms: ms(res.success_latency(warm.., 0.5)),
                p99_ms: ms(res.success_latency(warm.., 0.99)),
                p999_ms: ms(res.success_latency(warm.., 0.999)),
                sent,
                percent_failed: 100.0 * (sent - sum.totals.ok.min(sent)) as f64
                    / sent.max(1) as f64,
                cpu_us_per_request: cpu.map(|t| t as f64 / tick * 1e6 / all_sent),
            });
        }
    }
    backend.shutdown().await;
    drop((fw_proc, fw_tls_proc, nginx_proc));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(TlsReport {
        rate_rps: opts.rate_rps,
        connections: opts.connections,
        measure_s: opts.measure.as_secs_f64(),
        nginx_version,
        negotiated,
        rows,
    })
}

fn f(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.3}"))
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

/// The markdown: every round's figures, the added p99 (and p50) of TLS per
/// gateway and round, and their medians over the rounds.
pub fn markdown(r: &TlsReport) -> String {
    let mut out = String::new();
    let row = |name: &str, round: usize| r.rows.iter().find(|x| x.name == name && x.round == round);
    let rounds = r.rows.iter().map(|x| x.round).max().map_or(0, |m| m + 1);
    let _ = writeln!(
        out,
        "Open loop at {:.0} req/s over at most {} HTTP/1.1 keep-alive connections, {:.0} s measured per contender and round (after warm-up); latencies in ms, from each request's scheduled arrival.\n",
        r.rate_rps, r.connections, r.measure_s
    );
    out.push_str("| round | contender | p50 | p99 | p99.9 | failed | CPU µs / request |\n|---:|---|---:|---:|---:|---:|---:|\n");
    for x in &r.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.2}% | {} |",
            x.round + 1,
            x.name,
            f(x.p50_ms),
            f(x.p99_ms),
            f(x.p999_ms),
            x.percent_failed,
            x.cpu_us_per_request
                .map_or("n/a".into(), |c| format!("{c:.1}"))
        );
    }
    out.push_str(
        "\nAdded by TLS termination (TLS − plain, same gateway, same round):\n\n\
         | round | floodwall added p50 | floodwall added p99 | nginx added p50 | nginx added p99 |\n\
         |---:|---:|---:|---:|---:|\n",
    );
    let added = |gw: &str, round: usize, q: fn(&TlsRow) -> Option<f64>| {
        let tls = row(&format!("{gw}-tls"), round).and_then(q)?;
        let plain = row(gw, round).and_then(q)?;
        Some(tls - plain)
    };
    let p50 = |x: &TlsRow| x.p50_ms;
    let p99 = |x: &TlsRow| x.p99_ms;
    let sign = |x: Option<f64>| x.map_or("n/a".into(), |v| format!("{v:+.3}"));
    let mut cols: [Vec<f64>; 4] = Default::default();
    for round in 0..rounds {
        let v = [
            added("floodwall", round, p50),
            added("floodwall", round, p99),
            added("nginx", round, p50),
            added("nginx", round, p99),
        ];
        for (c, x) in cols.iter_mut().zip(v) {
            c.extend(x);
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            round + 1,
            sign(v[0]),
            sign(v[1]),
            sign(v[2]),
            sign(v[3])
        );
    }
    let m: Vec<String> = cols.iter().map(|c| sign(median(c.clone()))).collect();
    let _ = writeln!(
        out,
        "| median | {} | {} | {} | {} |",
        m[0], m[1], m[2], m[3]
    );
    let cpu: Vec<String> = CONTENDERS
        .iter()
        .map(|c| {
            let xs: Vec<f64> = r
                .rows
                .iter()
                .filter(|x| x.name == *c)
                .filter_map(|x| x.cpu_us_per_request)
                .collect();
            format!(
                "{c} {}",
                median(xs).map_or("n/a".into(), |m| format!("{m:.1}"))
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "\nMedian CPU µs per request (the gateway's processes, warm-up included): {}.",
        cpu.join(", ")
    );
    let neg: Vec<String> = r
        .negotiated
        .iter()
        .map(|n| format!("{}: {} {}", n.name, n.version, n.cipher_suite))
        .collect();
    let _ = writeln!(
        out,
        "\n{}; the generator's client is rustls (ring), ECDSA P-256 certificate; negotiated {}. Generator, backend, floodwall and nginx share the machine's cores, so compare within the table.",
        r.nginx_version,
        neg.join(", ")
    );
    out
}
