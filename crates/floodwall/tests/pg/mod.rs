//! A throwaway PostgreSQL cluster per test: `initdb` into a temp dir, then
//! `pg_ctl start` on a free loopback port with its unix socket in the same
//! dir, stopped (`-m immediate`) and deleted on drop.
//!
//! - **Binaries**: `$FLOODWALL_PG_BIN` if set, else `initdb` on the `PATH`,
//!   else the newest `/usr/lib/postgresql/*/bin` (where Debian's
//!   `postgresql` package puts them; `scripts/install-deps.sh` installs it).
//! - **Not as root**: `initdb` and `postgres` refuse to run as root. When
//!   the tests run as root (CI containers), the cluster's dir is given to the
//!   `postgres` user if it exists (the package creates it), else to
//!   `nobody`, and every PostgreSQL command runs through `runuser -u USER`.
//!   As any other user, they run as that user.
//! - **Fast and disposable**: `fsync`, `synchronous_commit` and
//!   `full_page_writes` off, 16 MB of shared buffers, no autovacuum; trust
//!   authentication on loopback only. A cluster starts in about a second.

// Each test binary uses a different subset of the harness.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// A running cluster; stopped and deleted on drop.
pub struct PgCluster {
    /// The loopback TCP port it listens on.
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

/// Where `initdb`, `pg_ctl` and `postgres` are.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLOODWALL_PG_BIN") {
        return dir.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = std::env::split_paths(&path).find(|d| d.join("initdb").is_file()) {
        return dir;
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: run scripts/install-deps.sh \
             (it installs the postgresql package) or set FLOODWALL_PG_BIN"
        )
    })
}

fn succeeds(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The user to run PostgreSQL as when we are root; `None` otherwise.
fn run_as() -> Option<&'static str> {
    static USER: OnceLock<Option<&'static str>> = OnceLock::new();
    *USER.get_or_init(|| {
        if succeeds("id", &["-u"]).as_deref() != Some("0") {
            return None;
        }
        Some(if succeeds("id", &["-u", "postgres"]).is_some() {
            "postgres"
        } else {
            "nobody"
        })
    })
}

/// `program` from the PostgreSQL bin dir, as the unprivileged user if
/// needed.
fn pg_command(bin: &Path, program: &str) -> Command {
    let exe = bin.join(program);
    match run_as() {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(exe);
            c
        }
        None => Command::new(exe),
    }
}

fn check(what: &str, out: std::io::Result<Output>) -> Output {
    let out = out.unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PgCluster {
    /// Creates and starts a cluster allowing `max_connections`.
    pub fn start(max_connections: u32) -> PgCluster {
        static N: AtomicUsize = AtomicUsize::new(0);
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "floodwall-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sock")).unwrap();
        if let Some(user) = run_as() {
            check(
                "chown",
                Command::new("chown").arg("-R").arg(user).arg(&dir).output(),
            );
        }
        let data = dir.join("data");
        check(
            "initdb",
            pg_command(&bin, "initdb")
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-A", "trust", "-E", "UTF8"])
                .args(["--locale=C", "--no-sync"])
                .output(),
        );
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             max_connections = {max_connections}\nshared_buffers = 16MB\nfsync = off\n\
             synchronous_commit = off\nfull_page_writes = off\nautovacuum = off\n",
            dir.join("sock").display()
        );
        let conf_path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).unwrap();
        text.push_str(&conf);
        std::fs::write(&conf_path, text).unwrap();

        let mut cluster = PgCluster { port: 0, dir, bin };
        // A free port can be taken between our probe and postgres' bind:
        // try a few.
        for _ in 0..5 {
            cluster.port = free_port();
            let out = pg_command(&cluster.bin, "pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(cluster.dir.join("log"))
                .args(["-w", "-t", "30", "-o", &format!("-p {}", cluster.port)])
                .arg("start")
                .output()
                .expect("run pg_ctl");
            if out.status.success() {
                return cluster;
            }
        }
        let log = std::fs::read_to_string(cluster.dir.join("log")).unwrap_or_default();
        panic!("postgres did not start:\n{log}");
    }

    /// A connection string for `user` (the superuser is `postgres`).
    pub fn dsn_for(&self, user: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} dbname=postgres",
            self.port
        )
    }

    /// A connection string for the superuser.
    pub fn dsn(&self) -> String {
        self.dsn_for("postgres")
    }

    /// A new superuser session.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.dsn(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test cluster");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = pg_command(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
