//! The reverse proxy: classify, admit, forward, record.

mod body;
mod forward;
mod refusals;
pub mod respond;
mod route;
mod router;
mod service;

pub use body::PermitBody;
pub use forward::Upstream;
pub use refusals::RefusalCounters;
pub use respond::Refusal;
pub use route::Route;
pub use router::{Classified, Router};
pub use service::Proxy;

/// The body type of every response the proxy returns: the upstream's body
/// streamed through, or a small body floodwall wrote itself.
pub type Body = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;

/// The error type of [`Body`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
