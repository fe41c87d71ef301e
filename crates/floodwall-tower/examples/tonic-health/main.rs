//! A tonic gRPC server behind `AdmissionLayer`: `grpc.health.v1.Health`
//! from `tonic-health` (generated code shipped in that crate, so no protoc),
//! the layer in `Server::builder().layer(..)`, refusals answered as gRPC
//! statuses (`answer_refusals_grpc`).
//!
//! ```sh
//! cargo run -p floodwall-tower --example tonic-health            # the demo
//! cargo run -p floodwall-tower --example tonic-health -- --serve 127.0.0.1:50051 [--limit 2]
//! ```
//!
//! The demo starts the server with a limit of 2 on a free loopback port and
//! calls it with tonic's own client: two `Watch` streams (a server stream
//! holds its slot until it ends: the permit rides the response body), then
//! a `Check`, refused at once with `UNAVAILABLE` and the reason in the
//! `x-floodwall-reason` metadata; one stream closed, the same `Check`
//! passes.

use floodwall_tower::{AdmissionLayer, Limiter};
use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The service name the health server reports on.
pub const SERVICE: &str = "floodwall.example.Greeter";

/// Serves `grpc.health.v1.Health` on `listener`, admitted through
/// `limiter`, until the server fails.
pub async fn serve(
    listener: TcpListener,
    limiter: Arc<Limiter>,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(SERVICE, tonic_health::ServingStatus::Serving)
        .await;
    tonic::transport::Server::builder()
        // Every gRPC call is an `http::Request`: the layer sees all of them,
        // classified by the same headers (`x-priority`, `x-tenant-id` are
        // plain gRPC metadata).
        .layer(AdmissionLayer::new(limiter).answer_refusals_grpc())
        .add_service(health)
        .serve_with_incoming(TcpIncoming::from(listener))
        .await
}

/// What the demo saw.
#[derive(Debug)]
pub struct Demo {
    /// The refused `Check`'s code.
    pub refused: tonic::Code,
    /// Its `x-floodwall-reason` metadata.
    pub reason: String,
    /// Its `grpc-retry-pushback-ms` metadata.
    pub pushback_ms: u64,
    /// The `Check` after one stream closed.
    pub after: ServingStatus,
}

fn check() -> HealthCheckRequest {
    HealthCheckRequest {
        service: SERVICE.into(),
    }
}

/// Runs the demo against a server at `addr` whose limiter is `limiter`
/// (with a limit of 2).
pub async fn demo(addr: SocketAddr, limiter: &Limiter) -> Result<Demo, Box<dyn Error>> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = HealthClient::new(channel);
    let status = client.check(check()).await?.into_inner().status();
    println!(
        "check: {status:?}, {} in flight after it",
        limiter.inflight()
    );

    // Two open streams fill a limit of 2 and hold it.
    let mut first = client.watch(check()).await?.into_inner();
    let mut second = client.watch(check()).await?.into_inner();
    first.message().await?;
    second.message().await?;
    println!("two watch streams open: {} in flight", limiter.inflight());

    let refused = client
        .check(check())
        .await
        .expect_err("a full gate refuses");
    let reason = refused
        .metadata()
        .get("x-floodwall-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let pushback_ms = refused
        .metadata()
        .get("grpc-retry-pushback-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    println!(
        "third call refused at once: {:?} {:?}, retry in {pushback_ms} ms",
        refused.code(),
        reason
    );

    // Closing a stream gives its slot back (the server sees the reset).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    while limiter.inflight() >= 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = client.check(check()).await?.into_inner().status();
    println!("one stream closed: check {after:?}");
    drop(second);
    Ok(Demo {
        refused: refused.code(),
        reason,
        pushback_ms,
        after,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let limit = match args.iter().position(|a| a == "--limit") {
        Some(i) => args.get(i + 1).ok_or("--limit N")?.parse()?,
        None => 2,
    };
    let limiter = floodwall_tower::fixed_limiter(limit);
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        let listener = TcpListener::bind(args.get(i + 1).ok_or("--serve ADDR")?).await?;
        println!("tonic-health listening on {}", listener.local_addr()?);
        serve(listener, limiter).await?;
        return Ok(());
    }
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener, limiter.clone()));
    demo(addr, &limiter).await?;
    Ok(())
}
