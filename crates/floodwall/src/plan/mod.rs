//! `floodwall plan`: PgBouncer pool sizes and floodwall limits for a
//! PostgreSQL shared by an autoscaled fleet.
//!
//! The "Adaptive Concurrency Sharding" article sizes each pod's PgBouncer
//! pool as `PoolSize = (TotalDBConnections / MaxReplicas) × SafetyFactor`,
//! so that the fleet at its largest still fits in `max_connections`. The
//! plan applies it to the connections left after `--reserved` (superuser
//! slots, migrations, monitoring), and takes the rest of each pod's equal
//! part as its reserve pool:
//!
//! ```text
//! usable   = db_max_connections − reserved
//! part     = usable / max_replicas            (a pod's equal part)
//! pool     = floor(part × safety)             default_pool_size
//! reserve  = floor(part) − pool               reserve_pool_size
//! per pod  = pool + reserve                   max_db_connections (the hard cap)
//! fleet    = per pod × max_replicas  ≤ usable
//! ```
//!
//! floodwall in front admits at most `pool` requests per pod: with
//! transaction pooling a request holds one server connection at a time,
//! so admitting more only queues in PgBouncer, where nobody sees it;
//! floodwall refuses it visibly with a `Retry-After` instead. With
//! `--store` the limit is global, `pool × max_replicas`, shared by the
//! replicas through Redis. Everything here is pure arithmetic and text, so
//! it is tested on numbers; the real check runs PgBouncer with the output.

use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;

/// `floodwall plan` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// PostgreSQL's max_connections.
    #[arg(long)]
    pub db_max_connections: u32,
    /// The most replicas (pods) the autoscaler may run.
    #[arg(long)]
    pub max_replicas: u32,
    /// Connections kept out of every pool: superuser slots
    /// (superuser_reserved_connections, 3 by default), migrations,
    /// monitoring, a direct probe.
    #[arg(long, default_value_t = 3)]
    pub reserved: u32,
    /// The share of a pod's equal part its main pool gets; the rest is its
    /// reserve pool and the fleet's headroom.
    #[arg(long, default_value_t = 0.8)]
    pub safety: f64,
    /// Distributed mode: the Redis URL; the floodwall limit is then global.
    #[arg(long)]
    pub store: Option<String>,
    /// The database's host, for the pgbouncer.ini fragment.
    #[arg(long, default_value = "127.0.0.1")]
    pub db_host: String,
    /// The database's port.
    #[arg(long, default_value_t = 5432)]
    pub db_port: u16,
    /// The database's name (also the name clients use at PgBouncer).
    #[arg(long, default_value = "app")]
    pub db_name: String,
    /// The port PgBouncer listens on (a sidecar: on 127.0.0.1).
    #[arg(long, default_value_t = 6432)]
    pub pgbouncer_port: u16,
    /// The service floodwall protects, for the floodwall TOML.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub upstream: http::Uri,
    /// Also write pgbouncer.ini and floodwall.toml into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The numbers of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Connections left for the pools: max_connections − reserved.
    pub usable: u32,
    /// A pod's equal part of them (usable ÷ max replicas).
    pub part: f64,
    /// PgBouncer `default_pool_size` per pod.
    pub pool: u32,
    /// PgBouncer `reserve_pool_size` per pod.
    pub reserve: u32,
    /// PgBouncer `max_db_connections` per pod: pool + reserve.
    pub per_pod: u32,
    /// The fleet at max replicas: per pod × max replicas.
    pub fleet: u32,
    /// floodwall's limit per pod (the adaptive limit's `max`).
    pub limit: u32,
    /// With `--store`: the global limit shared by the replicas.
    pub global_limit: Option<u32>,
    /// Why these numbers may not work.
    pub warnings: Vec<String>,
}

/// Computes the plan, or says why no plan exists.
pub fn plan(a: &PlanArgs) -> anyhow::Result<Plan> {
    if a.db_max_connections == 0 {
        anyhow::bail!("--db-max-connections must be at least 1");
    }
    if a.max_replicas == 0 {
        anyhow::bail!("--max-replicas must be at least 1");
    }
    if !(a.safety > 0.0 && a.safety <= 1.0) {
        anyhow::bail!("--safety must be above 0 and at most 1, not {}", a.safety);
    }
    if a.reserved >= a.db_max_connections {
        anyhow::bail!(
            "--reserved {} leaves none of --db-max-connections {} for the pools",
            a.reserved,
            a.db_max_connections
        );
    }
    let usable = a.db_max_connections - a.reserved;
    let part = f64::from(usable) / f64::from(a.max_replicas);
    // The product is rounded to 9 digits first, so 9.8 × 0.8 = 7.84 does
    // not floor to 7 through 7.839999….
    let pool = ((part * a.safety * 1e9).round() / 1e9).floor() as u32;
    if pool == 0 {
        anyhow::bail!(
            "cannot work: {usable} connections ({} − {} reserved) over {} replicas is {part:.2} a pod, \
             × safety {} = {:.2}: less than one connection per pod. Lower --max-replicas to at most {} \
             or raise max_connections.",
            a.db_max_connections,
            a.reserved,
            a.max_replicas,
            a.safety,
            part * a.safety,
            (f64::from(usable) * a.safety) as u32
        );
    }
    let reserve = (part.floor() as u32).saturating_sub(pool);
    let per_pod = pool + reserve;
    let fleet = per_pod * a.max_replicas;
    let mut warnings = Vec::new();
    if pool < 2 {
        warnings.push(format!(
            "fewer than 2 connections per pod ({pool}): one slow query stalls the pod; lower --max-replicas or raise max_connections"
        ));
    }
    if reserve == 0 {
        warnings.push(
            "no reserve pool: a burst past the pool waits in PgBouncer with no spare connection; lower --safety"
                .to_owned(),
        );
    }
    if a.safety > 0.95 {
        warnings.push(format!(
            "safety {} leaves almost no headroom for the fleet's rounding, deploys that briefly run extra pods, and admin sessions",
            a.safety
        ));
    }
    // A floodwall postgres probe connecting directly holds one connection
    // per pod outside the pools; superuser slots are not for it.
    let outside = usable - fleet + a.reserved.saturating_sub(3);
    if outside < a.max_replicas {
        warnings.push(format!(
            "a direct floodwall postgres probe per pod needs {} connections outside the pools; {outside} are left: point the probes at PgBouncer, or raise --reserved",
            a.max_replicas
        ));
    }
    let global_limit = a.store.as_ref().map(|_| pool * a.max_replicas);
    if let Some(g) = global_limit {
        if a.max_replicas > 1 {
            warnings.push(format!(
                "with one global limit of {g}, fewer live replicas each get a share above their {pool} pooled connections; the excess waits in their PgBouncer (never past {per_pod} server connections a pod)"
            ));
        }
    }
    Ok(Plan {
        usable,
        part,
        pool,
        reserve,
        per_pod,
        fleet,
        limit: pool,
        global_limit,
        warnings,
    })
}

/// The `pgbouncer.ini` fragment: the pool sizes, transaction pooling, the
/// database; auth and file locations are the deployment's.
pub fn pgbouncer_ini(a: &PlanArgs, p: &Plan) -> String {
    format!(
        "; floodwall plan: max_connections {max}, {reserved} reserved, {replicas} replicas, safety {safety}\n\
         ; default_pool_size = floor(({max} - {reserved}) / {replicas} x {safety}) = {pool}\n\
         [databases]\n\
         {name} = host={host} port={port} dbname={name}\n\
         \n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {listen}\n\
         ; a request holds a server connection for one transaction\n\
         pool_mode = transaction\n\
         default_pool_size = {pool}\n\
         ; connections a burst may borrow after reserve_pool_timeout seconds\n\
         reserve_pool_size = {reserve}\n\
         reserve_pool_timeout = 1\n\
         ; the hard cap on this pod's server connections: {per_pod} x {replicas} pods = {fleet} <= {usable}\n\
         max_db_connections = {per_pod}\n\
         ; clients may queue here; floodwall keeps their number near the pool\n\
         max_client_conn = 1000\n",
        max = a.db_max_connections,
        reserved = a.reserved,
        replicas = a.max_replicas,
        safety = a.safety,
        pool = p.pool,
        reserve = p.reserve,
        per_pod = p.per_pod,
        fleet = p.fleet,
        usable = p.usable,
        name = a.db_name,
        host = a.db_host,
        port = a.db_port,
        listen = a.pgbouncer_port,
    )
}

/// The floodwall config: one route in front of the service, its adaptive
/// limit capped at the pool (or the global limit with `--store`).
pub fn floodwall_toml(a: &PlanArgs, p: &Plan) -> String {
    let max = p.global_limit.unwrap_or(p.limit);
    let mut t = format!(
        "# floodwall plan: at most {pool} requests in flight per pod, one PgBouncer\n\
         # server connection each (transaction pooling); the adaptive limit may\n\
         # go lower when the database slows, never above the pool.\n\
         [[upstreams]]\n\
         name = \"app\"\n\
         url = \"{upstream}\"\n\
         \n\
         [[routes]]\n\
         name = \"app\"\n\
         upstream = \"app\"\n\
         \n\
         [routes.limit]\n\
         algorithm = \"aimd\"\n\
         min = {min}\n\
         max = {max}\n",
        pool = p.limit,
        upstream = a.upstream.to_string().trim_end_matches('/'),
        min = p.limit.min(3),
    );
    if let Some(store) = &a.store {
        let _ = write!(
            t,
            "\n# One global limit of {max} ({pool} x {replicas} replicas) shared through Redis.\n\
             [store]\nurl = \"{store}\"\n",
            pool = p.limit,
            replicas = a.max_replicas,
            store = store.replace('\\', "\\\\").replace('"', "\\\"")
        );
    }
    t
}

/// The plan as text: the arithmetic, the warnings, both files.
pub fn render(a: &PlanArgs, p: &Plan) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "floodwall plan");
    let _ = writeln!(
        o,
        "  usable connections   {} = {} max_connections - {} reserved",
        p.usable, a.db_max_connections, a.reserved
    );
    let _ = writeln!(
        o,
        "  per pod              {:.2} = {} / {} replicas",
        p.part, p.usable, a.max_replicas
    );
    let _ = writeln!(
        o,
        "  default_pool_size    {} = floor({:.2} x safety {})",
        p.pool, p.part, a.safety
    );
    let _ = writeln!(
        o,
        "  reserve_pool_size    {} = floor({:.2}) - {}",
        p.reserve, p.part, p.pool
    );
    let _ = writeln!(
        o,
        "  max_db_connections   {} per pod; {} at {} replicas (of {} usable)",
        p.per_pod, p.fleet, a.max_replicas, p.usable
    );
    match p.global_limit {
        None => {
            let _ = writeln!(o, "  floodwall limit      {} per pod (aimd max)", p.limit);
        }
        Some(g) => {
            let _ = writeln!(
                o,
                "  floodwall limit      {g} global ({} x {} replicas), shared through Redis",
                p.limit, a.max_replicas
            );
        }
    }
    if p.warnings.is_empty() {
        let _ = writeln!(o, "\nno warnings");
    } else {
        let _ = writeln!(o, "\nwarnings:");
        for w in &p.warnings {
            let _ = writeln!(o, "  - {w}");
        }
    }
    let _ = writeln!(o, "\n--- pgbouncer.ini ---\n{}", pgbouncer_ini(a, p));
    let _ = write!(o, "--- floodwall.toml ---\n{}", floodwall_toml(a, p));
    o
}

/// Runs `floodwall plan`: prints the plan, and writes both files under
/// `--out` if given.
pub fn run(a: PlanArgs) -> anyhow::Result<()> {
    let p = plan(&a)?;
    print!("{}", render(&a, &p));
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("--out {}: {e}", dir.display()))?;
        for (file, text) in [
            ("pgbouncer.ini", pgbouncer_ini(&a, &p)),
            ("floodwall.toml", floodwall_toml(&a, &p)),
        ] {
            let path = dir.join(file);
            std::fs::write(&path, text)
                .map_err(|e| anyhow::anyhow!("--out: {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: PlanArgs,
    }

    fn args(flags: &[&str]) -> PlanArgs {
        let mut v = vec!["plan"];
        v.extend(flags);
        Cli::try_parse_from(v).unwrap().args
    }

    #[test]
    fn the_articles_example() {
        // (500 / 50) × 0.8 = 8, with nothing reserved: the article's pool.
        let p = plan(&args(&[
            "--db-max-connections",
            "500",
            "--max-replicas",
            "50",
            "--reserved",
            "0",
        ]))
        .unwrap();
        assert_eq!((p.pool, p.reserve, p.per_pod, p.fleet), (8, 2, 10, 500));
        // With 10 reserved: 490 / 50 = 9.8, × 0.8 = 7.84.
        let a = args(&[
            "--db-max-connections",
            "500",
            "--max-replicas",
            "50",
            "--reserved",
            "10",
        ]);
        let p = plan(&a).unwrap();
        assert_eq!(
            (p.pool, p.reserve, p.per_pod, p.fleet, p.limit),
            (7, 2, 9, 450, 7)
        );
        assert!(p.fleet <= p.usable);
        let ini = pgbouncer_ini(&a, &p);
        for line in [
            "default_pool_size = 7",
            "reserve_pool_size = 2",
            "max_db_connections = 9",
            "pool_mode = transaction",
        ] {
            assert!(ini.contains(line), "{line}\n{ini}");
        }
    }

    #[test]
    fn the_toml_is_a_valid_config() {
        for extra in [&[][..], &["--store", "redis://127.0.0.1:6379"][..]] {
            let mut f = vec!["--db-max-connections", "100", "--max-replicas", "4"];
            f.extend(extra);
            let a = args(&f);
            let p = plan(&a).unwrap();
            let c = crate::config::Config::from_toml_str(&floodwall_toml(&a, &p))
                .unwrap_or_else(|e| panic!("{e}"));
            c.validate().unwrap();
            assert_eq!(
                c.routes[0].limit.ceiling(),
                p.global_limit.unwrap_or(p.pool) as usize
            );
        }
    }

    #[test]
    fn numbers_that_cannot_work_are_refused_or_warned() {
        let e = plan(&args(&[
            "--db-max-connections",
            "40",
            "--max-replicas",
            "50",
        ]))
        .unwrap_err();
        assert!(e.to_string().starts_with("cannot work"), "{e}");
        let p = plan(&args(&[
            "--db-max-connections",
            "100",
            "--max-replicas",
            "50",
            "--reserved",
            "0",
        ]))
        .unwrap();
        assert_eq!(p.pool, 1);
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("fewer than 2 connections per pod")),
            "{:?}",
            p.warnings
        );
        for bad in [
            &[
                "--db-max-connections",
                "10",
                "--max-replicas",
                "2",
                "--reserved",
                "10",
            ][..],
            &["--db-max-connections", "10", "--max-replicas", "0"][..],
            &[
                "--db-max-connections",
                "10",
                "--max-replicas",
                "2",
                "--safety",
                "1.5",
            ][..],
        ] {
            assert!(plan(&args(bad)).is_err(), "{bad:?}");
        }
        let p = plan(&args(&[
            "--db-max-connections",
            "500",
            "--max-replicas",
            "50",
            "--reserved",
            "10",
        ]))
        .unwrap();
        assert!(
            p.warnings.iter().any(|w| w.contains("postgres probe")),
            "{:?}",
            p.warnings
        );
    }
}
