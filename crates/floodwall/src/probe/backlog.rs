//! The upstream's accept queue: connections the kernel has completed that
//! the upstream has not yet accepted (the "backlog" of the backlog_reporter
//! gem).
//!
//! For a socket in LISTEN state, the `rx_queue` column of `/proc/net/tcp`
//! and `/proc/net/tcp6` is the current length of its accept queue. A queue
//! that grows means the upstream's acceptor (or its worker pool) is behind:
//! every queued connection is a request that waits before anyone works on
//! it. The sockets of every listener on the port are added up, so an
//! upstream that listens on both IPv4 and IPv6, or with `SO_REUSEPORT`, is
//! read whole.
//!
//! `/proc/net` shows the sockets of floodwall's own network namespace only:
//! the upstream must run on the same host and, in containers, share the
//! network namespace (the same pod, or `--network host`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use super::check::{Probe, ProbeError, Reading};
use crate::config::{probe::DEFAULT_MAX_BACKLOG, ProbeConfig};

/// TCP state number of LISTEN in `/proc/net/tcp`.
const TCP_LISTEN: u8 = 0x0A;

/// One listening socket from `/proc/net/tcp{,6}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSocket {
    /// The local address it listens on (`0.0.0.0`/`::` for any).
    pub addr: IpAddr,
    /// The local port.
    pub port: u16,
    /// Connections waiting to be accepted.
    pub backlog: u64,
}

/// The LISTEN sockets in the text of `/proc/net/tcp` or `/proc/net/tcp6`.
/// Lines that do not parse (the header, a format from a future kernel) are
/// skipped rather than failing the whole read.
pub fn parse_listen_sockets(text: &str) -> Vec<ListenSocket> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<ListenSocket> {
    // "  0: 0100007F:1F90 00000000:0000 0A 00000000:00000005 00:00000000 ..."
    let mut fields = line.split_whitespace();
    fields.next()?.strip_suffix(':')?;
    let local = fields.next()?;
    let _remote = fields.next()?;
    let state = u8::from_str_radix(fields.next()?, 16).ok()?;
    if state != TCP_LISTEN {
        return None;
    }
    let (_tx, rx) = fields.next()?.split_once(':')?;
    let (addr, port) = local.split_once(':')?;
    Some(ListenSocket {
        addr: parse_addr(addr)?,
        port: u16::from_str_radix(port, 16).ok()?,
        backlog: u64::from_str_radix(rx, 16).ok()?,
    })
}

/// The kernel prints an address as the 32-bit words of its in-memory
/// (network order) bytes, each word as a native-endian integer; reading
/// each word back with the native order restores the bytes.
fn parse_addr(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// Reads the accept queue of the LISTEN sockets on one port.
#[derive(Debug)]
pub struct BacklogProbe {
    port: u16,
    max_backlog: usize,
    /// Once saturated, healthy again only at or below this.
    recover_backlog: usize,
    saturated: bool,
    /// `/proc/net`, or a directory of captured files in tests.
    proc_net: PathBuf,
}

impl BacklogProbe {
    /// A probe of the sockets listening on `port` (the resolved
    /// `port`/`upstream` of `config`).
    pub fn new(config: &ProbeConfig, port: u16) -> Self {
        let max_backlog = config.max_backlog.unwrap_or(DEFAULT_MAX_BACKLOG);
        Self::with_thresholds(port, max_backlog, config.recover_backlog)
    }

    /// A probe of `port`, saturated from `max_backlog` queued connections
    /// until the queue falls to `recover_backlog` (default half of
    /// `max_backlog`): the hysteresis that keeps a flag file from flapping.
    pub fn with_thresholds(port: u16, max_backlog: usize, recover_backlog: Option<usize>) -> Self {
        Self {
            port,
            max_backlog,
            recover_backlog: recover_backlog
                .unwrap_or(max_backlog / 2)
                .min(max_backlog.saturating_sub(1)),
            saturated: false,
            proc_net: PathBuf::from("/proc/net"),
        }
    }

    /// Reads `tcp` and `tcp6` from `dir` instead of `/proc/net`.
    pub fn with_proc_net(mut self, dir: impl Into<PathBuf>) -> Self {
        self.proc_net = dir.into();
        self
    }

    /// The summed backlog of every LISTEN socket on the port, and how many
    /// such sockets there are.
    pub async fn backlog(&self) -> Result<(u64, usize), ProbeError> {
        let mut total = 0;
        let mut sockets = 0;
        for file in ["tcp", "tcp6"] {
            let path = self.proc_net.join(file);
            let text = match tokio::fs::read_to_string(&path).await {
                Ok(t) => t,
                // No IPv6 in this kernel or namespace.
                Err(e) if file == "tcp6" && e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(ProbeError::new(format!(
                        "cannot read {}: {e}",
                        path.display()
                    )))
                }
            };
            for s in parse_listen_sockets(&text) {
                if s.port == self.port {
                    total += s.backlog;
                    sockets += 1;
                }
            }
        }
        Ok((total, sockets))
    }
}

impl Probe for BacklogProbe {
    async fn check(&mut self) -> Result<Reading, ProbeError> {
        let (backlog, sockets) = self.backlog().await?;
        if sockets == 0 {
            return Err(ProbeError::new(format!(
                "nothing listens on port {} in this network namespace: is the upstream down, or not on this host?",
                self.port
            )));
        }
        let detail = format!(
            "backlog={backlog} max_backlog={} port={}",
            self.max_backlog, self.port
        );
        self.saturated = if self.saturated {
            backlog > self.recover_backlog as u64
        } else {
            backlog >= self.max_backlog as u64
        };
        Ok(if self.saturated {
            Reading::saturated(detail)
        } else {
            Reading::healthy(detail)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from a little-endian x86_64 host: a listener on
    /// 127.0.0.1:8080 with 5 queued connections, one of its established
    /// connections (whose rx_queue is unread bytes, not a backlog), and a
    /// listener on 0.0.0.0:5432.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000005 00:00000000 00000000     0        0 911154 6 00000000e245c00b 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000040 00:00000000 00000000     0        0 911160 1 0000000000000000 20 4 30 10 -1
   2: 00000000:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000   105        0 20311 1 0000000000000000 100 0 0 10 0
";

    /// `[::]:8080` with 3 queued, and `[::1]:9000` with none.
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 3456 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3457 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn parses_listen_sockets_only() {
        let v4 = parse_listen_sockets(TCP);
        assert_eq!(v4.len(), 2, "{v4:?}");
        if cfg!(target_endian = "little") {
            assert_eq!(v4[0].addr, IpAddr::from([127, 0, 0, 1]));
        }
        assert_eq!((v4[0].port, v4[0].backlog), (8080, 5));
        assert_eq!(v4[1].addr, IpAddr::from([0, 0, 0, 0]));
        assert_eq!((v4[1].port, v4[1].backlog), (5432, 0));

        let v6 = parse_listen_sockets(TCP6);
        assert_eq!(v6.len(), 2);
        assert_eq!(v6[0].addr, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert_eq!((v6[0].port, v6[0].backlog), (8080, 3));
        if cfg!(target_endian = "little") {
            assert_eq!(v6[1].addr, IpAddr::V6(Ipv6Addr::LOCALHOST));
        }
        assert_eq!(v6[1].port, 9000);
    }

    #[test]
    fn skips_garbage() {
        assert!(parse_listen_sockets("").is_empty());
        assert!(parse_listen_sockets("hello world\n  0: zz:zz 0 0A x\n").is_empty());
    }

    fn captured(dir_name: &str, tcp6: Option<&str>) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "floodwall-backlog-{dir_name}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tcp"), TCP).unwrap();
        if let Some(t) = tcp6 {
            std::fs::write(dir.join("tcp6"), t).unwrap();
        }
        dir
    }

    #[tokio::test]
    async fn sums_v4_and_v6_listeners_on_the_port() {
        let dir = captured("sum", Some(TCP6));
        let mut config = ProbeConfig::new(crate::config::ProbeKind::Backlog);
        config.max_backlog = Some(8);
        let mut p = BacklogProbe::new(&config, 8080).with_proc_net(&dir);
        assert_eq!(p.backlog().await.unwrap(), (8, 2));
        let r = p.check().await.unwrap();
        assert!(r.saturated, "{r:?}");
        assert_eq!(r.detail, "backlog=8 max_backlog=8 port=8080");

        // No tcp6 (IPv6 off): the v4 socket alone.
        let dir4 = captured("v4", None);
        let mut p = BacklogProbe::new(&config, 8080).with_proc_net(&dir4);
        assert!(!p.check().await.unwrap().saturated);

        // Nothing listens on the port: an error that says so.
        let mut p = BacklogProbe::new(&config, 1).with_proc_net(&dir);
        let e = p.check().await.unwrap_err().to_string();
        assert!(e.contains("nothing listens on port 1"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_dir_all(dir4).unwrap();
    }

    #[tokio::test]
    async fn once_saturated_it_holds_until_the_backlog_falls_to_recover_backlog() {
        let dir =
            std::env::temp_dir().join(format!("floodwall-backlog-hyst-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut p = BacklogProbe::with_thresholds(8080, 8, None).with_proc_net(&dir);
        let mut seen = Vec::new();
        for backlog in [7u64, 8, 5, 4, 7, 9] {
            let line = format!(
                "  sl  local_address rem_address   st tx_queue rx_queue\n   0: 0100007F:1F90 00000000:0000 0A 00000000:{backlog:08X} 00:00000000 00000000     0        0 1 1\n"
            );
            std::fs::write(dir.join("tcp"), line).unwrap();
            seen.push(p.check().await.unwrap().saturated);
        }
        assert_eq!(seen, [false, true, true, false, false, true]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
