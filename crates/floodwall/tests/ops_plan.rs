//! `floodwall plan` against the real thing: a throwaway PostgreSQL, one
//! real `pgbouncer` per pod running the generated pgbouncer.ini, and per
//! pod the real `floodwall` binary running the generated floodwall.toml in
//! front of a small HTTP service (hyper + tokio-postgres) that queries the
//! database through that pod's PgBouncer. Both pods are loaded above
//! capacity while `pg_stat_activity` is sampled: no pod may ever hold more
//! server connections than the plan's `max_db_connections`, nor the fleet
//! more than planned, and no query may fail for want of a connection.

mod common;
mod ops;
mod pg;

use common::{binary_path, spawn_binary};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pg::PgCluster;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const DB_MAX: u32 = 30;
const RESERVED: u32 = 6;
const REPLICAS: u32 = 2;
/// (30 − 6) / 2 = 12 a pod; × 0.8 → 9 pooled, 3 reserve, 12 at most.
const POOL: usize = 9;
const PER_POD: usize = 12;

/// The uid and gid to run pgbouncer as: it refuses to run as root, so as
/// root it runs as `postgres` (the package's user) or `nobody`.
fn run_as() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id(&["-u"]) != Some(0) {
        return None;
    }
    ["postgres", "nobody"]
        .iter()
        .find_map(|u| Some((id(&["-u", u])?, id(&["-g", u])?)))
}

/// A pgbouncer on the generated ini; killed on drop.
struct PgBouncer {
    child: Child,
    dir: PathBuf,
}

impl PgBouncer {
    /// Runs pgbouncer on `generated` (the plan's fragment, unchanged) plus
    /// what belongs to the deployment, not the plan: auth and file paths.
    fn start(dir: &Path, port: u16, generated: &str, user: &str) -> PgBouncer {
        let ini = format!(
            "{generated}\n; the deployment's part\nauth_type = trust\nauth_file = {d}/userlist.txt\n\
             unix_socket_dir =\nlogfile = {d}/pgbouncer.log\npidfile = {d}/pgbouncer.pid\n\
             ignore_startup_parameters = extra_float_digits,options\n",
            d = dir.display()
        );
        std::fs::write(dir.join("pgbouncer.run.ini"), ini).unwrap();
        std::fs::write(dir.join("userlist.txt"), format!("\"{user}\" \"\"\n")).unwrap();
        let mut cmd = Command::new("pgbouncer");
        cmd.arg(dir.join("pgbouncer.run.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = run_as() {
            Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(dir)
                .status()
                .unwrap();
            cmd.uid(uid).gid(gid);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run pgbouncer: {e} (scripts/install-deps.sh)"));
        let b = PgBouncer {
            child,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen:\n{}",
                std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        b
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The service behind floodwall: each request runs `SELECT pg_sleep(0.05)`
/// through PgBouncer on one of 16 client connections (more than the pool,
/// so PgBouncer's caps are what bound the database). 200 on success, 500
/// with the database's error otherwise.
async fn service(pgbouncer: u16, user: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let mut clients = Vec::new();
    for _ in 0..16 {
        let dsn = format!("host=127.0.0.1 port={pgbouncer} user={user} dbname=postgres");
        let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
            .await
            .expect("connect through pgbouncer");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        clients.push(client);
    }
    let clients = Arc::new(clients);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let f = failed.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (clients, next, failed) = (clients.clone(), next.clone(), f.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let (clients, next, failed) = (clients.clone(), next.clone(), failed.clone());
                    async move {
                        let c = &clients[next.fetch_add(1, Ordering::Relaxed) % clients.len()];
                        // The simple protocol: no prepared statement to lose
                        // between transactions in transaction pooling.
                        let (status, body) = match c.simple_query("SELECT pg_sleep(0.05)").await {
                            Ok(_) => (http::StatusCode::OK, "ok".to_owned()),
                            Err(e) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                (http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                            }
                        };
                        let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = status;
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, failed)
}

/// Runs `floodwall plan` for one pod and returns (stdout, pgbouncer.ini,
/// floodwall.toml path).
fn plan(pg_port: u16, pgbouncer_port: u16, out: &Path) -> (String, String, PathBuf) {
    let o = Command::new(binary_path())
        .args(["plan", "--db-max-connections", &DB_MAX.to_string()])
        .args(["--max-replicas", &REPLICAS.to_string()])
        .args(["--reserved", &RESERVED.to_string(), "--safety", "0.8"])
        .args(["--db-host", "127.0.0.1", "--db-port", &pg_port.to_string()])
        .args(["--db-name", "postgres"])
        .args(["--pgbouncer-port", &pgbouncer_port.to_string()])
        .arg("--out")
        .arg(out)
        .output()
        .expect("run floodwall plan");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let ini = std::fs::read_to_string(out.join("pgbouncer.ini")).unwrap();
    (stdout, ini, out.join("floodwall.toml"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_planned_pools_hold_under_load() {
    let db = PgCluster::start(DB_MAX);
    let admin = db.connect().await;
    for pod in 0..REPLICAS {
        admin
            .batch_execute(&format!("CREATE ROLE pod{pod} LOGIN"))
            .await
            .unwrap();
    }

    let mut pods = Vec::new();
    for pod in 0..REPLICAS {
        let user = format!("pod{pod}");
        let dir = ops::temp_dir("pgbouncer");
        let port = ops::free_port();
        let (stdout, ini, toml) = plan(db.port, port, &dir.join("plan"));
        if pod == 0 {
            println!("{stdout}");
        }
        assert!(
            stdout.contains("default_pool_size    9 = floor(12.00 x safety 0.8)"),
            "{stdout}"
        );
        assert!(
            ini.contains(&format!("max_db_connections = {PER_POD}")),
            "{ini}"
        );
        // floodwall.toml is read by floodwall itself below; check it first.
        let check = Command::new(binary_path())
            .arg("check")
            .arg(&toml)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
        let bouncer = PgBouncer::start(&dir, port, &ini, &user);
        let (svc, failed) = service(port, &user).await;
        let fw = spawn_binary(&[
            "--config",
            toml.to_str().unwrap(),
            "--upstream",
            &format!("http://{svc}"),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ]);
        pods.push((user, bouncer, svc, failed, fw));
    }

    // Sample pg_stat_activity every 20 ms: each pod's server connections
    // (idle ones in PgBouncer's pool included) and the fleet's.
    let peaks: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let peak_total = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peaks, peak_total, stop) = (peaks.clone(), peak_total.clone(), stop.clone());
        let client = db.connect().await;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let rows = client
                    .query(
                        "SELECT usename::text, count(*) FROM pg_stat_activity \
                         WHERE usename LIKE 'pod%' GROUP BY usename",
                        &[],
                    )
                    .await
                    .unwrap();
                let mut total = 0;
                {
                    let mut p = peaks.lock().unwrap();
                    for r in rows {
                        let (u, n): (String, i64) = (r.get(0), r.get(1));
                        total += n as usize;
                        let e = p.entry(u).or_default();
                        *e = (*e).max(n as usize);
                    }
                }
                peak_total.fetch_max(total, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Phase 1: both pods through floodwall, 250 requests a second each,
    // about 1.4x what 9 connections of 50 ms serve.
    let loads: Vec<_> = pods
        .iter()
        .map(|(_, _, _, _, fw)| {
            let proxy = fw.proxy;
            tokio::spawn(async move {
                ops::open_loop(proxy, &[("/q", &[])], 250.0, Duration::from_secs(6)).await
            })
        })
        .collect();
    let mut tallies = Vec::new();
    for l in loads {
        tallies.push(l.await.unwrap());
    }
    let through_floodwall = peaks.lock().unwrap().clone();

    // Phase 2: straight at pod0's service, bypassing floodwall, 400 a
    // second: now only the generated pgbouncer.ini stands between 16 busy
    // clients and the database.
    let direct = ops::open_loop(pods[0].2, &[("/q", &[])], 400.0, Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let peaks = peaks.lock().unwrap().clone();
    let peak_total = peak_total.load(Ordering::Relaxed);
    println!(
        "through floodwall: {tallies:?}, peaks {through_floodwall:?}; direct to pod0: {direct:?}; \
         peaks {peaks:?}, fleet peak {peak_total}"
    );

    for (user, _, _, failed, _) in &pods {
        let peak = peaks.get(user).copied().unwrap_or(0);
        assert!(
            peak <= PER_POD,
            "{user}: {peak} server connections > max_db_connections {PER_POD}"
        );
        assert_eq!(failed.load(Ordering::Relaxed), 0, "{user}: queries failed");
        // Not vacuous: the load reached the database.
        assert!(
            through_floodwall.get(user).copied().unwrap_or(0) >= 3,
            "{user}: {through_floodwall:?}"
        );
    }
    assert!(
        peak_total <= PER_POD * REPLICAS as usize,
        "fleet {peak_total}"
    );
    assert!(peak_total as u32 <= DB_MAX - RESERVED);
    // Bypassing floodwall, 16 clients fill the whole pool, and no more.
    assert!(
        peaks["pod0"] >= POOL,
        "pod0 peak {} < pool {POOL}",
        peaks["pod0"]
    );
    for t in &tallies {
        assert!(
            t.count(200) > 0 && t.count(503) > 0,
            "floodwall admitted and refused: {t:?}"
        );
        assert_eq!(t.count(500) + t.count(502) + t.count(0), 0, "{t:?}");
    }
    assert_eq!(direct.count(500), 0, "{direct:?}");
}
