//! Memory pressure: a hard throttle before the OOM killer ("OOMKilled Due
//! to Buffer Bloat", in the article "How I Slashed P99 Latency by 82% ...
//! with Adaptive Concurrency Sharding").
//!
//! floodwall streams bodies, but every admitted request still holds buffers
//! and connections; when the upstream slows down they pile up. Above
//! `ratio` of the limit the probe reports a *hard* saturation, which drops
//! the constraint straight to `min_limit`: memory does not degrade
//! gracefully, it ends in a kill.
//!
//! Two limits are read, and the tighter one counts:
//!
//! - **cgroup v2** (a container, or a systemd unit with `MemoryMax=`):
//!   `memory.current` against `memory.max` at floodwall's own cgroup (from
//!   `/proc/self/cgroup`) and each ancestor that sets a number rather than
//!   `max`, since the kernel enforces every level.
//! - **resident memory**: `VmRSS` of `/proc/self/status` against
//!   `max_bytes`, when set.
//!
//! A probe with neither refuses to start: it would have nothing to say.

use std::path::{Path, PathBuf};

use super::check::{Probe, ProbeError, Reading};
use crate::config::{probe::DEFAULT_MEMORY_RATIO, ProbeConfig};

/// `VmRSS` of `/proc/self/status`, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(n * 1024),
        Some(_) => None,
    }
}

/// The cgroup v2 path of `/proc/self/cgroup` (the `0::` line), e.g.
/// `/system.slice/floodwall.service`; `None` on a v1-only host.
pub fn parse_cgroup_path(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// A cgroup v2 `memory.max`: `None` for `max` (no limit) or garbage.
pub fn parse_memory_max(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// One limit and how much of it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// Where it comes from: `"rss"` or `"cgroup /path"`.
    pub source: String,
    /// Bytes in use.
    pub used: u64,
    /// The limit in bytes.
    pub limit: u64,
}

impl Usage {
    /// `used / limit`.
    pub fn ratio(&self) -> f64 {
        self.used as f64 / self.limit as f64
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}MiB", bytes as f64 / (1 << 20) as f64)
}

/// Reads memory against the cgroup v2 limits and `max_bytes`.
#[derive(Debug)]
pub struct MemoryProbe {
    ratio: f64,
    max_bytes: Option<u64>,
    /// `/`, or a directory of captured files in tests.
    root: PathBuf,
}

impl MemoryProbe {
    /// The probe of `config`; an error when there is no limit to measure
    /// against.
    pub fn new(config: &ProbeConfig) -> Result<Self, String> {
        Self::with_root(config, "/")
    }

    /// Reads `proc/self/…` and `sys/fs/cgroup/…` under `root` instead of
    /// `/`.
    pub fn with_root(config: &ProbeConfig, root: impl Into<PathBuf>) -> Result<Self, String> {
        let probe = Self {
            ratio: config.ratio.unwrap_or(DEFAULT_MEMORY_RATIO),
            max_bytes: config.max_bytes,
            root: root.into(),
        };
        match read(&probe.root, probe.max_bytes) {
            Ok(u) if u.is_empty() => Err(
                "no memory limit to measure against: floodwall is not in a cgroup v2 with a \
                 memory.max, and max_bytes is not set"
                    .to_owned(),
            ),
            Ok(_) => Ok(probe),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Every limit that applies, with its usage.
pub fn read(root: &Path, max_bytes: Option<u64>) -> Result<Vec<Usage>, ProbeError> {
    let mut out = Vec::new();
    let cgroup = std::fs::read_to_string(root.join("proc/self/cgroup")).unwrap_or_default();
    if let Some(path) = parse_cgroup_path(&cgroup) {
        let mount = root.join("sys/fs/cgroup");
        let mut level = path.trim_end_matches('/');
        loop {
            let dir = mount.join(level.trim_start_matches('/'));
            let max = std::fs::read_to_string(dir.join("memory.max"))
                .ok()
                .and_then(|t| parse_memory_max(&t));
            if let Some(limit) = max {
                let current = std::fs::read_to_string(dir.join("memory.current")).map_err(|e| {
                    ProbeError::new(format!(
                        "cannot read {}: {e}",
                        dir.join("memory.current").display()
                    ))
                })?;
                let used = current.trim().parse().map_err(|_| {
                    ProbeError::new(format!(
                        "{}: not a number: {current:?}",
                        dir.join("memory.current").display()
                    ))
                })?;
                let at = if level.is_empty() { "/" } else { level };
                out.push(Usage {
                    source: format!("cgroup {at}"),
                    used,
                    limit: limit.max(1),
                });
            }
            match level.rfind('/') {
                Some(i) if !level.is_empty() => level = &level[..i],
                _ => break,
            }
        }
    }
    if let Some(limit) = max_bytes {
        let path = root.join("proc/self/status");
        let status = std::fs::read_to_string(&path)
            .map_err(|e| ProbeError::new(format!("cannot read {}: {e}", path.display())))?;
        let used = parse_vm_rss(&status)
            .ok_or_else(|| ProbeError::new(format!("no VmRSS line in {}", path.display())))?;
        out.push(Usage {
            source: "rss".to_owned(),
            used,
            limit,
        });
    }
    Ok(out)
}

impl MemoryProbe {
    fn reading(&self, usage: &[Usage]) -> Reading {
        let saturated = usage.iter().any(|u| u.ratio() >= self.ratio);
        let detail = usage
            .iter()
            .map(|u| {
                format!(
                    "{}={}/{} ({:.0}%)",
                    u.source,
                    mib(u.used),
                    mib(u.limit),
                    u.ratio() * 100.0
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        Reading {
            saturated,
            hard: saturated,
            detail,
        }
    }
}

impl Probe for MemoryProbe {
    async fn check(&mut self) -> Result<Reading, ProbeError> {
        let root = self.root.clone();
        let max = self.max_bytes;
        // /proc and /sys never touch a disk, but they are still blocking
        // reads: keep them off the runtime's workers.
        let usage = tokio::task::spawn_blocking(move || read(&root, max))
            .await
            .map_err(|e| ProbeError::new(format!("memory read panicked: {e}")))??;
        Ok(self.reading(&usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProbeKind;

    fn fake_root(name: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("floodwall-mem-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("proc/self")).unwrap();
        std::fs::write(
            root.join("proc/self/status"),
            "Name:\tfloodwall\nVmHWM:\t  9000 kB\nVmRSS:\t  2048 kB\nThreads:\t4\n",
        )
        .unwrap();
        root
    }

    fn cgroup(root: &Path, path: &str, max: &str, current: u64) {
        let dir = root
            .join("sys/fs/cgroup")
            .join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("memory.max"), format!("{max}\n")).unwrap();
        std::fs::write(dir.join("memory.current"), format!("{current}\n")).unwrap();
    }

    #[test]
    fn parsers() {
        assert_eq!(parse_vm_rss("VmRSS:\t  2048 kB\n"), Some(2 << 20));
        assert_eq!(parse_vm_rss("VmSize: 1 kB\n"), None);
        assert_eq!(
            parse_cgroup_path("12:memory:/x\n0::/system.slice/fw.service\n"),
            Some("/system.slice/fw.service")
        );
        assert_eq!(parse_cgroup_path("4:memory:/docker/abc\n"), None);
        assert_eq!(parse_memory_max("max\n"), None);
        assert_eq!(parse_memory_max("1073741824\n"), Some(1 << 30));
    }

    #[test]
    fn reads_this_process_rss() {
        let usage = read(Path::new("/"), Some(1 << 40)).unwrap();
        let rss = usage.iter().find(|u| u.source == "rss").unwrap();
        assert!(
            rss.used > 1 << 20,
            "a test binary uses more than 1 MiB: {rss:?}"
        );
    }

    #[test]
    fn the_tightest_cgroup_level_and_rss_all_count() {
        let root = fake_root("levels");
        std::fs::write(root.join("proc/self/cgroup"), "0::/pod/fw\n").unwrap();
        cgroup(&root, "/pod/fw", "max", 500);
        cgroup(&root, "/pod", "1000", 950);
        cgroup(&root, "/", "max", 0);
        let mut config = ProbeConfig::new(ProbeKind::Memory);
        let p = MemoryProbe::with_root(&config, &root).unwrap();
        let usage = read(&root, None).unwrap();
        assert_eq!(
            usage,
            vec![Usage {
                source: "cgroup /pod".into(),
                used: 950,
                limit: 1000
            }]
        );
        let r = p.reading(&usage);
        assert!(r.saturated && r.hard, "95% of the pod's limit: {r:?}");

        config.max_bytes = Some(4 << 20);
        config.ratio = Some(0.99);
        let p = MemoryProbe::with_root(&config, &root).unwrap();
        let usage = read(&root, p.max_bytes).unwrap();
        let r = p.reading(&usage);
        assert!(!r.saturated, "{r:?}");
        assert_eq!(
            r.detail,
            "cgroup /pod=0.0MiB/0.0MiB (95%), rss=2.0MiB/4.0MiB (50%)"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test]
    async fn rss_above_max_bytes_is_a_hard_saturation() {
        let root = fake_root("rss");
        let mut config = ProbeConfig::new(ProbeKind::Memory);
        assert!(MemoryProbe::with_root(&config, &root)
            .unwrap_err()
            .contains("max_bytes is not set"));
        config.max_bytes = Some(2 << 20);
        let mut p = MemoryProbe::with_root(&config, &root).unwrap();
        let r = p.check().await.unwrap();
        assert!(r.saturated && r.hard, "{r:?}");
        std::fs::remove_dir_all(root).unwrap();
    }
}
