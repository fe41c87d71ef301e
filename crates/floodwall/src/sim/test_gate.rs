//! A stand-in gate for testing the demo without the real proxy: a fixed
//! limit, `try_acquire` or 503, forward, release when the answer is read.

use std::{
    convert::Infallible,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    net::TcpListener,
    sync::Semaphore,
    task::{JoinHandle, JoinSet},
};

use super::demo::Gate;

pub(crate) struct StandInGate;

impl Gate for StandInGate {
    type Running = JoinHandle<()>;

    async fn start(
        &self,
        backend: SocketAddr,
        limit: usize,
    ) -> anyhow::Result<(SocketAddr, Self::Running)> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let permits = Arc::new(Semaphore::new(limit));
        let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(usize::MAX)
            .build_http();
        let upstream: Uri = format!("http://{backend}/").parse()?;
        let accept = tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    Ok((stream, _)) = listener.accept() => {
                        let _ = stream.set_nodelay(true);
                        let (permits, client, upstream) =
                            (permits.clone(), client.clone(), upstream.clone());
                        let builder = builder.clone();
                        connections.spawn(async move {
                            let service = service_fn(move |_req: Request<Incoming>| {
                                let (permits, client, upstream) =
                                    (permits.clone(), client.clone(), upstream.clone());
                                async move {
                                    Ok::<_, Infallible>(forward(&permits, &client, upstream).await)
                                }
                            });
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok((addr, accept))
    }

    async fn stop(&self, running: Self::Running) {
        running.abort();
        let _ = running.await;
    }
}

async fn forward(
    permits: &Arc<Semaphore>,
    client: &Client<HttpConnector, Empty<Bytes>>,
    upstream: Uri,
) -> Response<Full<Bytes>> {
    let Ok(_permit) = permits.clone().try_acquire_owned() else {
        return respond(StatusCode::SERVICE_UNAVAILABLE, "over limit\n");
    };
    let answer = async {
        let response = client.get(upstream).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    match answer.await {
        Ok((status, body)) => {
            let mut response = Response::new(Full::new(body));
            *response.status_mut() = status;
            response
        }
        Err(_) => respond(StatusCode::BAD_GATEWAY, "upstream failed\n"),
    }
}

fn respond(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}
