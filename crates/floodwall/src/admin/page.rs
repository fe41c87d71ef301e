//! The live status page served at `GET /` on the admin port: one
//! self-contained HTML file compiled into the binary, with no CDN, no build
//! step and nothing fetched from elsewhere. Its script polls `/status` and
//! `/history.json` every second and draws its charts as inline SVG.

/// The page, as served.
pub const PAGE: &str = include_str!("page.html");
