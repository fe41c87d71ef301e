//! What a bench run sends its load through: the contenders.
//!
//! A *contender* is one thing under test in front of the backend: nothing
//! at all (`direct`), an in-process floodwall, or a peer such as HAProxy or
//! nginx started outside. It is not called a gate, because in floodwall
//! "gate" already names the limiter that admits requests; nor a target,
//! because the load generator's target is a URL and `--target` names the
//! user's own service that replaces the built-in backend. (Tables, JSON and
//! docs keep the word "target" for it, as they always have.)

use crate::gateway::{Gateway, GatewayOptions};
use floodwall_core::Limiter;
use http::Uri;
use serde::Serialize;
use std::sync::Arc;

/// How a contender stands in front of the backend.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ContenderKind {
    /// No gate: the load goes straight at the backend.
    Direct,
    /// An in-process floodwall with a fixed limit.
    Floodwall {
        /// The fixed limit.
        limit: usize,
        /// With `[routes.retry_budget]` at its defaults (Finagle's 0.2
        /// over 10 s plus 10/s): the retry-storm comparison of issue 11.
        retry_budget: bool,
    },
    /// An in-process floodwall started exactly as `floodwall serve
    /// --upstream URL` with no other flag: no limit, no algorithm. This is
    /// the contender the goal "the adaptive default must never cost
    /// goodput" is about, so it stays the default even if the default
    /// algorithm or its settings change.
    Default {
        /// What the default resolved to when the bench started (for the
        /// record; it is not passed to the gateway).
        algorithm: String,
    },
    /// [`ContenderKind::Default`] restarted warm: a first floodwall with
    /// `--state-file` runs `warmup` at `warmup_load` × the scenario's
    /// capacity in front of the same backend and stops (writing the
    /// file); the one measured starts from that file.
    Warm {
        /// What the default resolved to (for the record).
        algorithm: String,
        /// The warm-up's length.
        #[serde(with = "humantime_serde")]
        warmup: std::time::Duration,
        /// The warm-up's rate, as a share of the scenario's capacity.
        warmup_load: f64,
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
        #[serde(serialize_with = "crate::bench::contender::uri_str")]
        url: Uri,
        /// Its static limit, if known, for the plot.
        limit: Option<usize>,
    },
}

pub(crate) fn uri_str<S: serde::Serializer>(u: &Uri, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&u.to_string())
}

/// A named contender.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contender {
    /// The name in tables and plots.
    pub name: String,
    /// What it is.
    pub kind: ContenderKind,
}

impl Contender {
    /// `floodwall-default`: floodwall told nothing (see
    /// [`ContenderKind::Default`]).
    pub fn floodwall_default() -> Contender {
        Contender {
            name: "floodwall-default".into(),
            kind: ContenderKind::Default {
                algorithm: crate::gateway::default_algorithm().to_owned(),
            },
        }
    }

    /// `floodwall-default-warm`: floodwall told nothing but
    /// `--state-file`, restarted after 15 s at 0.8x (see
    /// [`ContenderKind::Warm`]).
    pub fn floodwall_default_warm() -> Contender {
        Contender {
            name: "floodwall-default-warm".into(),
            kind: ContenderKind::Warm {
                algorithm: crate::gateway::default_algorithm().to_owned(),
                warmup: std::time::Duration::from_secs(15),
                warmup_load: 0.8,
            },
        }
    }

    /// An in-process floodwall, whatever sets its limit.
    pub fn is_floodwall(&self) -> bool {
        matches!(
            self.kind,
            ContenderKind::Floodwall { .. }
                | ContenderKind::Default { .. }
                | ContenderKind::Warm { .. }
                | ContenderKind::Adaptive { .. }
        )
    }

    /// Parses `NAME=URL` or `NAME=URL@LIMIT` (the `--gate` flag).
    pub fn parse_external(s: &str) -> anyhow::Result<Contender> {
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
        Ok(Contender {
            name: name.to_owned(),
            kind: ContenderKind::External { url, limit },
        })
    }
}

/// A started contender: the URL to load and whatever keeps it alive.
pub(crate) struct Started {
    pub url: Uri,
    pub gateway: Option<Gateway>,
    pub static_limit: Option<usize>,
}

impl Started {
    /// The in-process floodwall's limiter, to sample its limit each second.
    pub fn limiter(&self) -> Option<Arc<Limiter>> {
        self.gateway.as_ref().and_then(Gateway::limiter)
    }

    /// The contender's limit now, for the plot.
    pub fn limit(&self) -> Option<usize> {
        match &self.gateway {
            Some(g) => g.limiter().map(|l| l.limit()),
            None => self.static_limit,
        }
    }

    pub async fn stop(self) {
        if let Some(g) = self.gateway {
            g.stop().await;
        }
    }
}

/// Starts `contender` in front of `upstream`, whose capacity is
/// `capacity` req/s.
pub(crate) async fn start(
    contender: &Contender,
    upstream: &Uri,
    capacity: f64,
) -> anyhow::Result<Started> {
    if let ContenderKind::Warm {
        warmup,
        warmup_load,
        ..
    } = &contender.kind
    {
        return start_warm(upstream, capacity, *warmup, *warmup_load).await;
    }
    let (limit, algorithm) = match &contender.kind {
        ContenderKind::Direct => {
            return Ok(Started {
                url: upstream.clone(),
                gateway: None,
                static_limit: None,
            })
        }
        ContenderKind::External { url, limit } => {
            return Ok(Started {
                url: url.clone(),
                gateway: None,
                static_limit: *limit,
            })
        }
        ContenderKind::Floodwall { limit, .. } => (Some(*limit), None),
        ContenderKind::Default { .. } | ContenderKind::Warm { .. } => (None, None),
        ContenderKind::Adaptive { algorithm } => (None, Some(algorithm.clone())),
    };
    let retry_budget = matches!(
        contender.kind,
        ContenderKind::Floodwall {
            retry_budget: true,
            ..
        }
    );
    let gateway = Gateway::start(
        upstream,
        &GatewayOptions {
            limit,
            algorithm,
            // The bench's clients give up after their own timeout; let the
            // upstream take as long as it takes, like a real deployment
            // would with a generous response timeout.
            pool_max_idle_per_host: Some(1024),
            retry_budget,
            ..GatewayOptions::default()
        },
    )
    .await?;
    let url: Uri = format!("http://{}", gateway.addr()).parse()?;
    Ok(Started {
        url,
        gateway: Some(gateway),
        static_limit: limit,
    })
}

/// [`ContenderKind::Warm`]: a warm-up through a first gateway that writes
/// its state file at stop, then the measured gateway, started from it.
async fn start_warm(
    upstream: &Uri,
    capacity: f64,
    warmup: std::time::Duration,
    load: f64,
) -> anyhow::Result<Started> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let path = std::env::temp_dir().join(format!(
        "floodwall-bench-{}-{nanos}.state",
        std::process::id()
    ));
    let options = GatewayOptions {
        pool_max_idle_per_host: Some(1024),
        state_file: Some(path.clone()),
        ..GatewayOptions::default()
    };
    let first = Gateway::start(upstream, &options).await?;
    let url: Uri = format!("http://{}", first.addr()).parse()?;
    let schedule = crate::bench::scenario::phases(capacity, &[(warmup.as_secs().max(1), load)]);
    crate::loadgen::run(crate::loadgen::LoadConfig::new(url, schedule)).await?;
    first.stop().await;
    anyhow::ensure!(
        path.exists(),
        "the warm-up gateway wrote no state file at {}",
        path.display()
    );
    let gateway = Gateway::start(upstream, &options).await;
    let _ = std::fs::remove_file(&path);
    let gateway = gateway?;
    let url: Uri = format!("http://{}", gateway.addr()).parse()?;
    Ok(Started {
        url,
        gateway: Some(gateway),
        static_limit: None,
    })
}
