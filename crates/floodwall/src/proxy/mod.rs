//! The reverse proxy: classify, admit, forward, record.

mod body;
mod forward;
mod route;
mod service;

pub use body::PermitBody;
pub use forward::Upstream;
pub use route::{Classified, Route, Router};
pub use service::Proxy;

/// The body type of every response the proxy returns: the upstream's body
/// streamed through, or a small body floodwall wrote itself.
pub type Body = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;

/// The error type of [`Body`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
