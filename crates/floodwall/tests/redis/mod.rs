//! A throwaway redis-server per test, on a free loopback port, with no
//! persistence (`--save '' --appendonly no`), or a throwaway 3-primary
//! Redis Cluster ([`Cluster`]). Killed when dropped.
//!
//! Needs `redis-server` and `redis-cli` on the PATH: run
//! `scripts/install-deps.sh` (package redis-server).

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) redis-server.
pub struct Redis {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    /// More `redis-server` arguments (`--replicaof`).
    extra: Vec<String>,
    /// Cluster mode: the bus port and the directory of `nodes.conf`.
    cluster: Option<(u16, tempdir::Dir)>,
}

/// What the store tests need of a Redis, one server or a cluster.
pub trait Store {
    /// The `store.url` floodwall is given.
    fn url(&self) -> String;
    /// `redis-cli ARGS` against the store (following `MOVED` on a cluster).
    fn cli(&self, args: &[&str]) -> String;
    /// Script calls over every node (see [`Redis::script_calls`]).
    fn script_calls(&self) -> u64;
    /// Of those, `SCRIPT LOAD`s (see [`Redis::script_loads`]).
    fn script_loads(&self) -> u64;
    /// Keys over every node.
    fn dbsize(&self) -> u64;
}

impl Store for Redis {
    fn url(&self) -> String {
        Redis::url(self)
    }
    fn cli(&self, args: &[&str]) -> String {
        Redis::cli(self, args)
    }
    fn script_calls(&self) -> u64 {
        Redis::script_calls(self)
    }
    fn script_loads(&self) -> u64 {
        Redis::script_loads(self)
    }
    fn dbsize(&self) -> u64 {
        Redis::cli(self, &["DBSIZE"]).parse().unwrap()
    }
}

mod tempdir {
    /// A directory removed when dropped.
    pub struct Dir(pub std::path::PathBuf);

    impl Dir {
        pub fn new(tag: &str) -> Dir {
            let p = std::env::temp_dir().join(format!(
                "floodwall-{tag}-{}-{:08x}",
                std::process::id(),
                fastrand::u32(..)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn need(bin: &str) {
    let ok = Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{bin} not found: run scripts/install-deps.sh (Debian package redis-server)"
    );
}

impl Redis {
    /// Starts a redis-server on a free port and waits until it answers.
    pub fn start() -> Redis {
        need("redis-server");
        need("redis-cli");
        for _ in 0..5 {
            let mut r = Redis {
                port: free_port(),
                child: None,
                extra: Vec::new(),
                cluster: None,
            };
            if r.spawn() {
                return r;
            }
        }
        panic!("could not start redis-server on a free port");
    }

    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ]);
        cmd.args(&self.extra);
        if let Some((bus, dir)) = &self.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
            ])
            .arg("--cluster-config-file")
            .arg(dir.0.join("nodes.conf"))
            .arg("--dir")
            .arg(&dir.0)
            .args(["--cluster-node-timeout", "2000"]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.try_cli(&["PING"]).as_deref() == Some("PONG") {
                return true;
            }
            if let Some(c) = self.child.as_mut() {
                if c.try_wait().ok().flatten().is_some() {
                    self.child = None;
                    return false;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        false
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to clients) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty. While the server was down a
    /// loopback client elsewhere may have been given its port as an
    /// ephemeral one, and redis-server then exits at bind: try again for a
    /// few seconds before giving up (seen once in CI).
    pub fn restart(&mut self) {
        self.stop();
        for _ in 0..5 {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("redis-server did not restart on {}", self.port);
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        cli_on(self.port, args)
    }

    /// Runs `redis-cli -p PORT ARGS` and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }

    /// A field of `INFO section`, e.g. `info("memory", "used_memory")`.
    pub fn info(&self, section: &str, field: &str) -> Option<String> {
        self.cli(&["INFO", section]).lines().find_map(|l| {
            l.strip_prefix(field)
                .and_then(|r| r.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        })
    }

    /// `INFO commandstats` as (command, calls), e.g. ("evalsha", 12).
    /// Commands run inside Lua scripts are counted under their own names.
    pub fn commandstats(&self) -> Vec<(String, u64)> {
        self.commandstat("calls")
            .into_iter()
            .map(|(name, calls)| (name, calls as u64))
            .collect()
    }

    /// One field of `INFO commandstats` per command, e.g.
    /// `commandstat("usec_per_call")`.
    pub fn commandstat(&self, field: &str) -> Vec<(String, f64)> {
        let key = format!("{field}=");
        self.cli(&["INFO", "commandstats"])
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let value = rest
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key.as_str()))?
                    .parse()
                    .ok()?;
                Some((name.to_owned(), value))
            })
            .collect()
    }

    /// Round trips floodwall made: script calls (`EVALSHA`, `EVAL`,
    /// `SCRIPT LOAD`), which is all it ever sends.
    pub fn script_calls(&self) -> u64 {
        self.commandstats()
            .iter()
            .filter(|(n, _)| n == "evalsha" || n == "eval" || n.starts_with("script"))
            .map(|(_, c)| c)
            .sum()
    }

    /// `SCRIPT LOAD`s: one per script and connection the first time it is
    /// used (and, on a cluster, sent to every primary).
    pub fn script_loads(&self) -> u64 {
        self.commandstats()
            .iter()
            .filter(|(n, _)| n == "script|load" || n == "script")
            .map(|(_, c)| c)
            .sum()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A primary, one replica of it and three Sentinels (quorum 2) watching it
/// as [`Sentinels::PRIMARY`], all on free loopback ports, the Sentinels'
/// config files in a temp dir. Down after 1 s without an answer, so a
/// failover takes a few seconds. Killed when dropped.
pub struct Sentinels {
    /// The primary at start.
    pub primary: Redis,
    /// Its replica, the one promoted when the primary dies.
    pub replica: Redis,
    sentinels: Vec<(u16, Child)>,
    _dir: tempdir::Dir,
}

impl Sentinels {
    /// The name the Sentinels monitor the primary under.
    pub const PRIMARY: &'static str = "fwprimary";

    /// Starts them and waits until every Sentinel knows the replica and
    /// the two other Sentinels (so a failover can be agreed).
    pub fn start() -> Sentinels {
        let primary = Redis::start();
        // The replica saves the primary's snapshot at its full sync: into
        // the temp dir, not the test's working directory.
        let dir = tempdir::Dir::new("sentinel");
        let mut replica = None;
        for _ in 0..5 {
            let mut r = Redis {
                port: free_port(),
                child: None,
                extra: vec![
                    "--replicaof".into(),
                    "127.0.0.1".into(),
                    primary.port.to_string(),
                    "--dir".into(),
                    dir.0.display().to_string(),
                ],
                cluster: None,
            };
            if r.spawn() {
                replica = Some(r);
                break;
            }
        }
        let replica = replica.expect("could not start the replica");
        let mut sentinels = Vec::new();
        while sentinels.len() < 3 {
            let port = free_port();
            let conf = dir.0.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
                     sentinel monitor {p} 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds {p} 1000\n\
                     sentinel failover-timeout {p} 10000\n\
                     sentinel parallel-syncs {p} 1\n",
                    dir.0.display(),
                    primary.port,
                    p = Self::PRIMARY
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server --sentinel");
            let mut child = Some(child);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if cli_on(port, &["PING"]).as_deref() == Some("PONG") {
                    sentinels.push((port, child.take().unwrap()));
                    break;
                }
                if child.as_mut().unwrap().try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Some(mut c) = child {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let set = Sentinels {
            primary,
            replica,
            sentinels,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = set.sentinels.iter().all(|(port, _)| {
                let q = |what: &str| {
                    cli_on(*port, &["SENTINEL", what, Self::PRIMARY])
                        .map_or(0, |o| o.lines().filter(|l| *l == "name").count())
                };
                q("replicas") >= 1 && q("sentinels") >= 2
            });
            if ready {
                return set;
            }
            assert!(
                Instant::now() < deadline,
                "the Sentinels did not find each other and the replica in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/PRIMARY`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|(p, _)| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/{}", hosts.join(","), Self::PRIMARY)
    }

    /// The primary's port as a live Sentinel reports it now.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|(port, _)| {
            let out = cli_on(
                *port,
                &["SENTINEL", "get-master-addr-by-name", Self::PRIMARY],
            )?;
            out.lines().nth(1)?.trim().parse().ok()
        })
    }

    /// The node that is primary now (the replica once it was promoted).
    pub fn current(&self) -> &Redis {
        if self.primary_port() == Some(self.replica.port) {
            &self.replica
        } else {
            &self.primary
        }
    }
}

impl Store for Sentinels {
    fn url(&self) -> String {
        Sentinels::url(self)
    }
    fn cli(&self, args: &[&str]) -> String {
        self.current().cli(args)
    }
    fn script_calls(&self) -> u64 {
        self.current().script_calls()
    }
    fn script_loads(&self) -> u64 {
        self.current().script_loads()
    }
    fn dbsize(&self) -> u64 {
        self.current().cli(&["DBSIZE"]).parse().unwrap()
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for (_, c) in &mut self.sentinels {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `redis-cli -p PORT ARGS`: its trimmed output, or `None` if it failed
/// (a server or sentinel not up yet).
fn cli_on(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A Redis Cluster of three primaries and no replicas on loopback, each on
/// free ports (client and bus) with its `nodes.conf` in its own temp dir,
/// created with `redis-cli --cluster create`. Killed when dropped.
pub struct Cluster {
    /// The primaries.
    pub nodes: Vec<Redis>,
}

impl Cluster {
    /// Starts three cluster-enabled servers, joins them into one cluster
    /// (slots split evenly) and waits for `cluster_state:ok` on each.
    pub fn start() -> Cluster {
        need("redis-server");
        need("redis-cli");
        let mut nodes = Vec::new();
        'node: for i in 0..3 {
            for _ in 0..5 {
                let (port, bus) = (free_port(), free_port());
                let mut r = Redis {
                    port,
                    child: None,
                    extra: Vec::new(),
                    cluster: Some((bus, tempdir::Dir::new(&format!("cluster{i}")))),
                };
                if r.spawn() {
                    nodes.push(r);
                    continue 'node;
                }
            }
            panic!("could not start a cluster node on free ports");
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let c = Cluster { nodes };
        c.wait_ok();
        c
    }

    /// Kills every node (SIGKILL), keeping their ports and `nodes.conf`.
    pub fn stop(&mut self) {
        for n in &mut self.nodes {
            n.stop();
        }
    }

    /// Starts every node again from its `nodes.conf` (same ids, same
    /// slots, no data) and waits for `cluster_state:ok`.
    pub fn restart(&mut self) {
        for n in &mut self.nodes {
            n.restart();
        }
        self.wait_ok();
    }

    fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.nodes.iter().all(|n| {
            n.try_cli(&["CLUSTER", "INFO"])
                .is_some_and(|i| i.contains("cluster_state:ok"))
        }) {
            assert!(Instant::now() < deadline, "cluster_state never ok");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The primary that owns `key`'s slot (`CLUSTER KEYSLOT`, then the
    /// slot ranges of `CLUSTER SHARDS`/`SLOTS`), as an index into `nodes`.
    pub fn owner(&self, key: &str) -> usize {
        let slot: u64 = self.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", key])
            .parse()
            .unwrap();
        // `CLUSTER NODES`: "id addr@bus flags master - ping pong epoch
        // connected 0-5460 ...".
        let table = self.nodes[0].cli(&["CLUSTER", "NODES"]);
        for line in table.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port: u16 = f[1]
                .split('@')
                .next()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let owns = f[8..].iter().any(|r| {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                match (a.parse::<u64>(), b.parse::<u64>()) {
                    (Ok(a), Ok(b)) => (a..=b).contains(&slot),
                    _ => false,
                }
            });
            if owns {
                return self.nodes.iter().position(|n| n.port == port).unwrap();
            }
        }
        panic!("no node owns slot {slot} of {key}:\n{table}");
    }
}

impl Store for Cluster {
    /// Every node, comma-separated: the list form of `store.url`.
    fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.url())
            .collect::<Vec<_>>()
            .join(",")
    }
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-c", "-p", &self.nodes[0].port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        assert!(out.status.success(), "redis-cli -c {args:?} failed");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
    fn script_calls(&self) -> u64 {
        self.nodes.iter().map(Redis::script_calls).sum()
    }
    fn script_loads(&self) -> u64 {
        self.nodes.iter().map(Redis::script_loads).sum()
    }
    fn dbsize(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| n.cli(&["DBSIZE"]).parse::<u64>().unwrap())
            .sum()
    }
}
