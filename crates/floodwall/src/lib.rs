//! floodwall: an adaptive admission-control gateway.
//!
//! The crate is the I/O side of floodwall; the admission algorithm and its
//! enforcement live in `floodwall-core`, which has no I/O at all.
//!
//! - [`app`]: start-up, in order: routes → distributed → probes →
//!   listeners ([`app::start`]).
//! - [`proxy`]: a request's journey, written out in
//!   [`proxy::Proxy::handle`]: classify, admit, forward, record; every
//!   response floodwall makes itself is decided in [`proxy::respond`].
//! - [`admin`]: `/metrics`, `/status`, `/healthz`, `/readyz`, rendered from
//!   snapshots.
//! - [`probe`]: bottleneck probes that constrain routes' limits.
//! - [`distributed`]: one global limit per route across replicas, through
//!   Redis.
//! - [`server`]: the listeners and their connections: the connection
//!   budget, header, keep-alive and send timeouts, graceful drain; its
//!   counters ([`server::stats`]) are a leaf that `admin` renders.
//! - [`tls`]: TLS on the proxy listener and to `https://` upstreams
//!   (rustls).
//! - [`reload`]: SIGHUP and `POST /reload` re-read the config file and
//!   apply it whole or not at all, keeping each kept route's limiter.
//! - [`state`]: `server.state_file`, what each route's adaptive limit
//!   learned, written every 5 s and at shutdown and read at start (a warm
//!   start).
//! - [`config`]: the config file, validated; [`telemetry`]: logging.
//! - [`report`]: `floodwall report`, the unplanned-work tax of a period
//!   read from Prometheus (a client of its API, beside the gateway);
//!   [`plan`]: `floodwall plan`, pool and limit sizing (pure arithmetic).
//!
//! Layers import downwards only: `app` → `server` → `admin` → `proxy` →
//! `probe`, `distributed`, `tls` → `config`; `server::stats` imports
//! nothing of floodwall, so `admin` can read it. The one exception is
//! `tls`'s PEM reader, a leaf that config validation calls so `floodwall
//! check` refuses exactly the files TLS would.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod config;
pub mod distributed;
pub mod events;
pub mod plan;
pub mod probe;
pub mod prometheus;
pub mod proxy;
pub mod reload;
pub mod report;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod top;
pub mod tune;
