//! Helpers for the operator tests (reload, admin lockdown, status page,
//! backlog flag): a closed-loop load that records every answer, signals,
//! and admin requests with a token. Built on `common`.

#![allow(dead_code)]

use super::common::*;
use bytes::Bytes;
use http::{Method, StatusCode};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;

/// Closed-loop clients that send requests until stopped and keep every
/// status they got (and every connection error).
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: JoinSet<()>,
    /// Status codes seen, by code.
    pub statuses: Arc<Mutex<std::collections::BTreeMap<u16, usize>>>,
    /// Connection errors seen.
    pub errors: Arc<Mutex<Vec<String>>>,
    /// Requests answered.
    pub answered: Arc<AtomicUsize>,
}

impl Load {
    /// `clients` clients, each sending `GET http://{addr}{path}` in a loop.
    pub fn start(addr: SocketAddr, path: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let statuses: Arc<Mutex<std::collections::BTreeMap<u16, usize>>> = Arc::default();
        let errors = Arc::new(Mutex::new(Vec::new()));
        let answered = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        for _ in 0..clients {
            let (stop, statuses, errors, answered) = (
                stop.clone(),
                statuses.clone(),
                errors.clone(),
                answered.clone(),
            );
            let path = path.to_owned();
            tasks.spawn(async move {
                let client = Client::http1();
                while !stop.load(Ordering::Relaxed) {
                    let req = request(Method::GET, addr, &path, &[], Bytes::new());
                    match client.try_send(req).await {
                        Ok(r) => {
                            *statuses
                                .lock()
                                .unwrap()
                                .entry(r.status.as_u16())
                                .or_default() += 1;
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => errors.lock().unwrap().push(e),
                    }
                }
            });
        }
        Load {
            stop,
            tasks,
            statuses,
            errors,
            answered,
        }
    }

    /// Stops the clients and waits for their last requests.
    pub async fn stop(mut self) -> (std::collections::BTreeMap<u16, usize>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        let statuses = self.statuses.lock().unwrap().clone();
        let errors = self.errors.lock().unwrap().clone();
        (statuses, errors)
    }
}

/// Sends `signal` (e.g. "HUP") to `pid` with kill(1).
pub fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

/// An admin request with an optional bearer token.
pub async fn admin(method: Method, addr: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    Client::http1()
        .send(request(method, addr, path, &headers, Bytes::new()))
        .await
}

/// `/status` as JSON.
pub async fn status_json(addr: SocketAddr) -> serde_json::Value {
    let r = admin(Method::GET, addr, "/status", None).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    r.json()
}

/// The route named `name` in a `/status` document.
pub fn route<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no route {name} in {status}"))
}

/// Polls `cond` every 20 ms for up to `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A private temp dir under cargo's per-target temp dir.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("floodwall-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
