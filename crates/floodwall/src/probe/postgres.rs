//! PostgreSQL: connection saturation and lock waits, from
//! `pg_stat_activity` (the bottleneck probe of the Phoenix WIP-gate
//! article, with its failure mode fixed: an error is a failing probe, not a
//! saturated database).
//!
//! One query per check, on one connection the probe keeps:
//!
//! - **connections**: client backends against `max_connections`. Near the
//!   ceiling, a burst gets `FATAL: too many connections` before any limit
//!   can react; saturated at `conn_ratio` (default 0.8).
//! - **lock waits**: sessions whose `wait_event_type` is `Lock`. A lock
//!   convoy only grows with more concurrency; saturated at `lock_waits`
//!   (default 3) waiting at once.
//!
//! A role that is neither superuser nor a member of `pg_read_all_stats`
//! sees other roles' sessions with their wait events hidden (NULL), so it
//! would read "no lock waits" during the worst convoy. The probe refuses to
//! report from such a role and says what to grant.
//!
//! The connection is made lazily at the first check and remade after any
//! error or timeout (a check cut by the timeout drops it half way, so it
//! is never reused). It is plain TCP or a unix socket: TLS is not supported
//! yet, so `sslmode=require` is refused when the config is validated.

use std::error::Error as _;

use tokio_postgres::{Client, NoTls, Statement};

use super::check::{Probe, ProbeError, Reading};
use crate::config::probe::{DEFAULT_CONN_RATIO, DEFAULT_LOCK_WAITS};
use crate::config::ProbeConfig;

/// The one query of a check: who we are and whether we can see every
/// session, the connection ceiling, client connections and lock waits.
pub const QUERY: &str = "\
SELECT current_user::text,
       coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false)
         OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'),
       (SELECT setting::int4 FROM pg_settings WHERE name = 'max_connections'),
       count(*) FILTER (WHERE backend_type = 'client backend'),
       count(*) FILTER (WHERE wait_event_type = 'Lock')
FROM pg_stat_activity";

/// What one query read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgActivity {
    /// `max_connections`.
    pub max_connections: i64,
    /// Client backends now, the probe's own included.
    pub connections: i64,
    /// Sessions waiting on a heavyweight lock.
    pub lock_waits: i64,
}

/// Reads `pg_stat_activity` once per check.
pub struct PostgresProbe {
    config: tokio_postgres::Config,
    /// `host:port` for messages; never the DSN, which may hold a password.
    target: String,
    conn_ratio: f64,
    lock_waits: usize,
    session: Option<(Client, Statement)>,
}

impl std::fmt::Debug for PostgresProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresProbe")
            .field("target", &self.target)
            .field("connected", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

impl PostgresProbe {
    /// The probe of a validated `config`; an error if its `dsn` is missing
    /// or does not parse.
    pub fn new(config: &ProbeConfig) -> Result<Self, String> {
        let dsn = config.dsn.as_deref().ok_or("dsn is required")?;
        let pg: tokio_postgres::Config = dsn
            .parse()
            .map_err(|e| format!("dsn is not a PostgreSQL connection string: {e}"))?;
        let host = pg
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".to_owned());
        let port = pg.get_ports().first().copied().unwrap_or(5432);
        Ok(Self {
            config: pg,
            target: format!("{host}:{port}"),
            conn_ratio: config.conn_ratio.unwrap_or(DEFAULT_CONN_RATIO),
            lock_waits: config.lock_waits.unwrap_or(DEFAULT_LOCK_WAITS),
            session: None,
        })
    }

    async fn connect(&self) -> Result<(Client, Statement), ProbeError> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| self.error("cannot connect", &e))?;
        // The connection ends when the client is dropped.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres probe connection closed");
            }
        });
        let statement = client
            .prepare(QUERY)
            .await
            .map_err(|e| self.error("cannot prepare the probe query", &e))?;
        Ok((client, statement))
    }

    fn error(&self, what: &str, e: &tokio_postgres::Error) -> ProbeError {
        ProbeError::new(format!(
            "postgres at {}: {what}: {}",
            self.target,
            describe(e)
        ))
    }

    /// Reads the activity once, connecting first if needed.
    pub async fn read(&mut self) -> Result<PgActivity, ProbeError> {
        // Taken out for the check and put back only on success: after an
        // error, or if the runner drops this future on its timeout, the
        // connection is gone and the next check makes a new one.
        let (client, statement) = match self.session.take() {
            Some(s) if !s.0.is_closed() => s,
            _ => self.connect().await?,
        };
        let row = client
            .query_one(&statement, &[])
            .await
            .map_err(|e| self.error("probe query failed", &e))?;
        // The connection is fine whatever the answer says.
        self.session = Some((client, statement));
        let unexpected = |e: tokio_postgres::Error| self.error("unexpected answer", &e);
        let user: String = row.try_get(0).map_err(unexpected)?;
        let sees_all: bool = row.try_get(1).map_err(unexpected)?;
        if !sees_all {
            return Err(ProbeError::new(format!(
                "postgres at {}: role {user:?} needs pg_read_all_stats to see other sessions' \
                 connections and lock waits (GRANT pg_read_all_stats TO {user};)",
                self.target
            )));
        }
        let max: Option<i32> = row.try_get(2).map_err(unexpected)?;
        let activity = PgActivity {
            max_connections: max.map_or(0, i64::from),
            connections: row.try_get(3).map_err(unexpected)?,
            lock_waits: row.try_get(4).map_err(unexpected)?,
        };
        Ok(activity)
    }

    /// The reading for `a` under this probe's thresholds.
    pub fn reading(&self, a: PgActivity) -> Reading {
        let detail = format!(
            "lock_waits={} conns={}/{}",
            a.lock_waits, a.connections, a.max_connections
        );
        let conns_full = a.max_connections > 0
            && a.connections as f64 >= self.conn_ratio * a.max_connections as f64;
        let convoy = a.lock_waits >= self.lock_waits as i64;
        Reading {
            saturated: conns_full || convoy,
            hard: false,
            detail,
        }
    }
}

/// The error and its causes on one line: tokio-postgres puts the server's
/// message (or the OS error) in the source chain.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

impl Probe for PostgresProbe {
    async fn check(&mut self) -> Result<Reading, ProbeError> {
        let a = self.read().await?;
        Ok(self.reading(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProbeKind;

    fn probe(conn_ratio: Option<f64>, lock_waits: Option<usize>) -> PostgresProbe {
        let mut c = ProbeConfig::new(ProbeKind::Postgres);
        c.dsn = Some("host=db.internal port=6432 user=fw password=secret".into());
        c.conn_ratio = conn_ratio;
        c.lock_waits = lock_waits;
        PostgresProbe::new(&c).unwrap()
    }

    #[test]
    fn thresholds() {
        let p = probe(None, None);
        let a = |connections, lock_waits| PgActivity {
            max_connections: 100,
            connections,
            lock_waits,
        };
        let r = p.reading(a(87, 3));
        assert!(r.saturated);
        assert_eq!(r.detail, "lock_waits=3 conns=87/100");
        assert!(!p.reading(a(79, 2)).saturated);
        assert!(p.reading(a(80, 0)).saturated);
        let strict = probe(Some(0.5), Some(1));
        assert!(strict.reading(a(50, 0)).saturated);
        assert!(strict.reading(a(1, 1)).saturated);
    }

    #[test]
    fn messages_name_the_target_not_the_dsn() {
        let p = probe(None, None);
        assert_eq!(p.target, "db.internal:6432");
        assert!(!format!("{p:?}").contains("secret"));
    }
}
