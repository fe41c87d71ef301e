//! What a bench run sends its load through.

use floodwall::config::{Config, LimitConfig};
use floodwall::server::{self, Running};
use http::Uri;
use serde::Serialize;
use std::net::SocketAddr;

/// How a target gates the backend.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum TargetKind {
    /// No gate: the load goes straight at the backend.
    Direct,
    /// An in-process floodwall with a fixed limit.
    Floodwall {
        /// The fixed limit.
        limit: usize,
    },
    /// An in-process floodwall with an adaptive limit: nobody told it the
    /// backend's capacity.
    Adaptive {
        /// The algorithm (`aimd`, `gradient`, `vegas`, `wip`).
        algorithm: String,
    },
    /// A gate started outside the bench (HAProxy, nginx, a remote
    /// floodwall), already pointed at the backend.
    External {
        /// Where it listens.
        #[serde(serialize_with = "crate::bench::target::uri_str")]
        url: Uri,
        /// Its static limit, if known, for the plot.
        limit: Option<usize>,
    },
}

pub(crate) fn uri_str<S: serde::Serializer>(u: &Uri, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&u.to_string())
}

/// A named target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// The name in tables and plots.
    pub name: String,
    /// How it gates.
    pub kind: TargetKind,
}

impl Target {
    /// Parses `NAME=URL` or `NAME=URL@LIMIT` (the `--gate` flag).
    pub fn parse_external(s: &str) -> anyhow::Result<Target> {
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--gate {s:?}: expected NAME=URL[@LIMIT]"))?;
        let (url, limit) =
            match rest.rsplit_once('@') {
                Some((u, l)) => (
                    u,
                    Some(l.parse().map_err(|_| {
                        anyhow::anyhow!("--gate {s:?}: limit {l:?} is not a number")
                    })?),
                ),
                None => (rest, None),
            };
        let url: Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("--gate {s:?}: bad URL: {e}"))?;
        Ok(Target {
            name: name.to_owned(),
            kind: TargetKind::External { url, limit },
        })
    }
}

/// A started target: the URL to load and whatever keeps it alive.
pub(crate) struct Started {
    pub url: Uri,
    pub gate: Option<Running>,
    pub static_limit: Option<usize>,
}

impl Started {
    /// The gate's limit now, for the plot.
    pub fn limit(&self) -> Option<usize> {
        match &self.gate {
            Some(r) => r
                .proxy
                .router
                .routes()
                .first()
                .map(|route| route.limiter.limit()),
            None => self.static_limit,
        }
    }

    pub async fn stop(self) {
        if let Some(r) = self.gate {
            r.shutdown().await;
        }
    }
}

/// Starts `target` in front of `upstream`.
pub(crate) async fn start(
    target: &Target,
    upstream: &Uri,
    tenant_share: Option<f64>,
) -> anyhow::Result<Started> {
    match &target.kind {
        TargetKind::Direct => Ok(Started {
            url: upstream.clone(),
            gate: None,
            static_limit: None,
        }),
        TargetKind::External { url, limit } => Ok(Started {
            url: url.clone(),
            gate: None,
            static_limit: *limit,
        }),
        TargetKind::Floodwall { .. } | TargetKind::Adaptive { .. } => {
            let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
            let (fixed, limit_config) = match &target.kind {
                TargetKind::Floodwall { limit } => (Some(*limit), None),
                TargetKind::Adaptive { algorithm } => (
                    None,
                    Some(
                        LimitConfig::named(algorithm)
                            .ok_or_else(|| anyhow::anyhow!("unknown algorithm {algorithm:?}"))?,
                    ),
                ),
                _ => unreachable!("matched above"),
            };
            let mut config =
                Config::simple(loopback, upstream.clone(), fixed.unwrap_or(64), loopback);
            if let Some(l) = limit_config {
                config.routes[0].limit = l;
            }
            if let Some(share) = tenant_share {
                config.routes[0].tenant.max_share = share;
            }
            // The bench's clients give up after their own timeout; let the
            // upstream take as long as it takes, like a real deployment
            // would with a generous response timeout.
            config.upstreams[0].pool_max_idle_per_host = 1024;
            let running = server::start(config).await?;
            let url: Uri = format!("http://{}", running.proxy_addr).parse()?;
            Ok(Started {
                url,
                gate: Some(running),
                static_limit: fixed,
            })
        }
    }
}
