//! The reverse proxy: classify, admit, forward, record.
//!
//! [`Proxy::handle`] (`service.rs`) is a request's journey, in order. It
//! makes the request canonical (`canonical.rs`: one host, one normalised
//! path) and classifies it with the [`Router`] (`router.rs`) onto a [`Route`]
//! (`route.rs`), which owns everything per route: its limiter, upstream,
//! distributed handle and refusal counters (`refusals.rs`). It forwards
//! with the route's [`Upstream`] (`forward.rs`), on a connection of the
//! worker's own pool (`pool.rs`), the client's body read
//! under a rate rule (`upload.rs`), and reads the answer ahead of the
//! client (`body.rs`) so the permit is released when the upstream
//! finishes, not when a slow client does.
//! After admission, the request's endpoint is chosen (`endpoints.rs`,
//! over `floodwall_core::balance`); a `dns` upstream's members are its
//! name's answer, resolved again every `dns_refresh` (`dns.rs`).
//! An upstream's breaker and bulkhead, and a route's retry budget, are
//! built in `resilience.rs`; `service.rs` runs them in a written order.
//! Every response floodwall makes itself is decided in [`respond`].

mod body;
pub mod canonical;
pub mod dns;
pub mod endpoints;
mod forward;
mod pool;
mod refusals;
pub mod resilience;
pub mod respond;
mod route;
mod router;
mod series;
mod service;
pub mod upload;

pub use body::{Body, BoxError, ResponseLimits};
pub use endpoints::{Endpoints, RING_VERSION_HEADER};
pub use forward::{enter_worker, Upstream};
pub use refusals::{RefusalCounters, ShadowCounters};
pub use respond::Refusal;
pub use route::{limiter_carries as route_limiter_carries, Route, RouteLimiter};
pub use router::{Classified, RouteTable, Router};
pub use series::{duration_histogram, RouteSeries, LOAD_SPAN};
pub use service::Proxy;
pub use upload::UploadLimits;
