//! A bare hyper 1.x server behind `AdmissionLayer`, no framework: a
//! `tower::ServiceBuilder` stack, made into a hyper service by
//! `hyper_util::service::TowerToHyperService`, served on each connection by
//! `hyper_util::server::conn::auto` (HTTP/1.1 and HTTP/2 on one port).
//!
//! ```sh
//! cargo run -p floodwall-tower --example hyper-server -- \
//!     [--listen 127.0.0.1:8080] [--limit 4] [--work-ms 200]
//! curl -i http://127.0.0.1:8080/
//! ```
//!
//! Every request works for `--work-ms` (default 200 ms). With `--limit N`
//! the limit is fixed at N, else adaptive (AIMD, as `floodwall serve` runs
//! without `--limit`). Past the limit a request is answered at once with
//! the gateway's own 503: `Retry-After`, `X-Floodwall-Reason:
//! wip_limit_exceeded` and the JSON body.

use bytes::Bytes;
use floodwall_tower::{AdmissionLayer, Limiter};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceBuilder;

/// The handler: some work, then a greeting.
async fn hello(
    _req: Request<Incoming>,
    work: Duration,
) -> Result<Response<Full<Bytes>>, Infallible> {
    tokio::time::sleep(work).await;
    Ok(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
}

/// Serves `listener` until it fails, every request admitted through
/// `limiter` and then worked on for `work`.
pub async fn serve(listener: TcpListener, limiter: Arc<Limiter>, work: Duration) {
    let service = ServiceBuilder::new()
        // Admission first, so that a refused request never reaches the
        // handler; `answer_refusals` makes a refusal the gateway's
        // response, so the stack's error stays `Infallible` as hyper wants.
        .layer(AdmissionLayer::new(limiter).answer_refusals())
        .service_fn(move |req| hello(req, work));
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            // Out of descriptors, most likely: wait, do not spin.
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // One service per connection; clones share the layer's limiter.
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            // A client that hangs up mid-request is not the server's fault.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let listen = arg(&args, "--listen").unwrap_or_else(|| "127.0.0.1:8080".into());
    let work = Duration::from_millis(match arg(&args, "--work-ms") {
        Some(ms) => ms.parse()?,
        None => 200,
    });
    let limiter = match arg(&args, "--limit") {
        Some(n) => floodwall_tower::fixed_limiter(n.parse()?),
        None => floodwall_tower::adaptive_limiter()?,
    };
    let listener = TcpListener::bind(&listen).await?;
    println!(
        "hyper-server listening on http://{} (limit {})",
        listener.local_addr()?,
        limiter.limit()
    );
    serve(listener, limiter, work).await;
    Ok(())
}
