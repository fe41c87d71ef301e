//! The connection budget: how many connections each listener may hold,
//! derived from the process's file-descriptor limit so that the proxy
//! refuses connections (fast, counted) before the process runs out of
//! descriptors (every `accept(2)` failing, the admin port with it).
//!
//! The arithmetic ([`plan`]) is pure and unit-tested; the one system call
//! ([`raise_fd_limit`]) sits apart.

use crate::config::ServerConfig;

/// Descriptors kept for everything that is neither a client nor an
/// upstream connection: stdio, the runtime's epoll and wake-up fds, the
/// two listeners, the Redis connections of distributed mode, one
/// connection per Postgres probe, files probes read or write, DNS
/// look-ups. A few dozen in practice; 128 leaves room for all of them.
pub(crate) const BASE_RESERVE: u64 = 128;

/// Below this many client connections a derived cap is too small to serve
/// much: start-up says the descriptor limit is too low.
const LOW_CAP: usize = 64;

/// The largest cap floodwall derives or accepts (as `check` does for every
/// count of connections).
const MAX_CAP: usize = 1_000_000;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as HAProxy does at
/// start-up, and returns the soft limit now in force. A process starts
/// with a soft limit of 1,024 on most systems whatever its hard limit
/// allows; the hard limit is the administrator's decision, the soft one
/// only a default. `None` if the limit cannot be read.
pub(crate) fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => Some(soft),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-files limit");
            rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
        }
    }
}

/// The caps both listeners run with, and what start-up should say about
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The soft descriptor limit the plan was made for (`u64::MAX` when
    /// unknown or unlimited).
    pub fd_limit: u64,
    /// The proxy listener's cap.
    pub proxy: usize,
    /// The admin listener's cap.
    pub admin: usize,
    /// Warnings to log at start-up, each naming the key concerned.
    pub warnings: Vec<String>,
}

/// The caps for `config` under a soft descriptor limit of `fd_limit`.
///
/// The admin listener gets `server.admin_max_connections`, and that many
/// descriptors plus [`BASE_RESERVE`] are set aside first. Of the rest,
/// the proxy's default cap is **half**: each proxied request holds a
/// client descriptor and an upstream one, and an HTTP/1 client connection
/// carries one request at a time, so clients plus upstream connections
/// (pooled idle ones included, since the pool only keeps connections that
/// were once in use at the same time) stay within the budget. This is
/// HAProxy's rule too: without `maxconn`, it derives it from `ulimit -n`
/// as about half the descriptors, each connection counting a frontend and
/// a backend socket.
///
/// An explicit `server.max_connections` above the half is kept, with a
/// warning (it is safe when most clients are idle); above the whole rest
/// it is lowered to it, with a warning, since past that the descriptors
/// reserved for the admin listener would go to clients.
pub(crate) fn plan(config: &ServerConfig, fd_limit: Option<u64>) -> Plan {
    let fd_limit = fd_limit.unwrap_or(u64::MAX);
    let admin = config.admin_max_connections;
    let reserve = BASE_RESERVE.saturating_add(admin as u64);
    let rest = fd_limit.saturating_sub(reserve);
    let whole = usize::try_from(rest).unwrap_or(usize::MAX).min(MAX_CAP);
    let half = usize::try_from(rest / 2).unwrap_or(usize::MAX).min(MAX_CAP);
    let mut warnings = Vec::new();
    let raise = "raise it (ulimit -n, systemd LimitNOFILE=, docker --ulimit nofile=)";
    if rest == 0 {
        warnings.push(format!(
            "the open-files limit {fd_limit} leaves no descriptors for clients after the \
             {reserve} reserved (server.admin_max_connections = {admin} plus {BASE_RESERVE}); \
             {raise} or lower server.admin_max_connections"
        ));
    }
    let proxy = match config.max_connections {
        None => {
            let cap = half.max(1);
            if cap < LOW_CAP && rest > 0 {
                warnings.push(format!(
                    "the open-files limit {fd_limit} allows only {cap} client connections \
                     (server.max_connections derived as half of what is left after \
                     {reserve} reserved); {raise}"
                ));
            }
            cap
        }
        Some(n) if n > whole => {
            let cap = whole.max(1);
            warnings.push(format!(
                "server.max_connections = {n} is above the {whole} descriptors the \
                 open-files limit {fd_limit} leaves after {reserve} reserved for the admin \
                 listener and the process; using {cap}. {raise}"
            ));
            cap
        }
        Some(n) if n > half => {
            warnings.push(format!(
                "server.max_connections = {n}: with every connection busy the proxy needs \
                 about {} descriptors (a client and an upstream one each) but the open-files \
                 limit {fd_limit} leaves {whole}; accepts and upstream connects may fail \
                 before the cap is reached. {raise}",
                n.saturating_mul(2)
            ));
            n
        }
        Some(n) => n,
    };
    Plan {
        fd_limit,
        proxy,
        admin,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max: Option<usize>, admin: usize) -> ServerConfig {
        ServerConfig {
            max_connections: max,
            admin_max_connections: admin,
            ..ServerConfig::default()
        }
    }

    #[test]
    fn the_default_cap_is_half_of_what_the_reserve_leaves() {
        let p = plan(&config(None, 64), Some(1024));
        assert_eq!((p.proxy, p.admin), ((1024 - 128 - 64) / 2, 64));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        // A typical raised limit, and an unknown one, are capped.
        assert_eq!(plan(&config(None, 64), Some(1_048_576)).proxy, 524_192);
        assert_eq!(plan(&config(None, 64), None).proxy, MAX_CAP);
        assert_eq!(plan(&config(None, 64), Some(u64::MAX)).proxy, MAX_CAP);
    }

    #[test]
    fn a_tiny_limit_still_gives_a_cap_and_a_warning() {
        let p = plan(&config(None, 64), Some(256));
        assert_eq!(p.proxy, 32);
        assert!(p.warnings[0].contains("allows only 32"), "{:?}", p.warnings);
        let p = plan(&config(None, 64), Some(10));
        assert_eq!(p.proxy, 1);
        assert!(
            p.warnings[0].contains("leaves no descriptors"),
            "{:?}",
            p.warnings
        );
        let p = plan(&config(Some(5), 1_000_000), Some(0));
        assert_eq!(p.proxy, 1);
    }

    #[test]
    fn an_explicit_cap_is_kept_with_a_warning_or_lowered_to_the_rest() {
        let p = plan(&config(Some(100), 64), Some(1024));
        assert_eq!(p.proxy, 100);
        assert!(p.warnings.is_empty());
        let p = plan(&config(Some(600), 64), Some(1024));
        assert_eq!(p.proxy, 600, "above half: kept");
        assert!(p.warnings[0].starts_with("server.max_connections = 600"));
        let p = plan(&config(Some(5000), 64), Some(1024));
        assert_eq!(p.proxy, 1024 - 128 - 64, "above the rest: lowered");
        assert!(p.warnings[0].contains("using 832"), "{:?}", p.warnings);
    }
}
