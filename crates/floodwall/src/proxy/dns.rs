//! `dns` upstreams: the name resolved again every `dns_refresh`, and the
//! answer made the balancer's membership, as Envoy's `STRICT_DNS` cluster
//! does. A changed answer is a membership change like a reload's: a new
//! ring version, removed addresses finish their requests, keys whose owner
//! moved drain (`floodwall_core::balance`).
//!
//! A failed or empty answer keeps the last membership: a resolver that
//! hiccups must not take every endpoint away (Envoy keeps its hosts on a
//! failed resolution for the same reason). The resolver is injected
//! ([`Resolve`]), so the membership logic is tested on a paused clock; the
//! system's one ([`SystemResolver`], `getaddrinfo`, so `/etc/hosts`,
//! `resolv.conf` and the search domains apply) is what `serve` uses.

use floodwall_core::balance::Balancer;
use http::uri::Authority;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// The longest one resolution may take before it counts as failed: a
/// resolver that hangs must not stop the refreshes.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// An answer: the addresses a name has now.
pub type Answer = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// What turns a name and port into addresses.
pub trait Resolve: Send + Sync + std::fmt::Debug + 'static {
    /// The addresses of `host` at `port`.
    fn resolve(&self, host: &str, port: u16) -> Answer;
}

/// The system's resolver (`getaddrinfo`, on tokio's blocking pool).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> Answer {
        let host = host.to_owned();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    }
}

/// One `dns` upstream's resolutions, for `/status` and `/metrics`.
#[derive(Debug)]
pub struct DnsStatus {
    /// The name resolved.
    pub name: String,
    /// How often.
    pub refresh: Duration,
    ok: AtomicU64,
    failed: AtomicU64,
    changes: AtomicU64,
    last: Mutex<Last>,
    attempted: Notify,
}

#[derive(Debug, Default)]
struct Last {
    error: Option<String>,
    addresses: Vec<String>,
}

/// A copy of a [`DnsStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSnapshot {
    /// The name resolved.
    pub name: String,
    /// How often, in milliseconds.
    pub refresh_ms: u64,
    /// Resolutions that gave at least one address.
    pub ok: u64,
    /// Resolutions that failed, timed out or gave none (the membership was
    /// kept).
    pub failed: u64,
    /// Answers that changed the membership (the first one included).
    pub changes: u64,
    /// The last failure's message, cleared by a success.
    pub last_error: Option<String>,
    /// The addresses of the last good answer, sorted.
    pub addresses: Vec<String>,
}

impl DnsStatus {
    fn new(name: String, refresh: Duration) -> Self {
        Self {
            name,
            refresh,
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            last: Mutex::new(Last::default()),
            attempted: Notify::new(),
        }
    }

    /// A copy now.
    pub fn snapshot(&self) -> DnsSnapshot {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        DnsSnapshot {
            name: self.name.clone(),
            refresh_ms: self.refresh.as_millis() as u64,
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            changes: self.changes.load(Ordering::Relaxed),
            last_error: last.error.clone(),
            addresses: last.addresses.clone(),
        }
    }

    /// Returns once the first resolution has been tried (successfully or
    /// not), so start-up can wait for a membership before it serves.
    pub async fn first_attempt(&self) {
        loop {
            let woken = self.attempted.notified();
            if self.ok.load(Ordering::Acquire) + self.failed.load(Ordering::Acquire) > 0 {
                return;
            }
            woken.await;
        }
    }

    fn record(&self, result: Result<&[String], String>, changed: bool) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(addresses) => {
                last.error = None;
                last.addresses = addresses.to_vec();
                self.ok.fetch_add(1, Ordering::Release);
            }
            Err(e) => {
                last.error = Some(e);
                self.failed.fetch_add(1, Ordering::Release);
            }
        }
        if changed {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
        drop(last);
        self.attempted.notify_waiters();
    }
}

/// The members an answer names: each address once, sorted, named
/// `ip:port` (`[v6]:port`).
fn members_of(mut addrs: Vec<SocketAddr>) -> Vec<(String, Authority)> {
    addrs.sort();
    addrs.dedup();
    addrs
        .into_iter()
        .filter_map(|a| {
            let name = a.to_string();
            Authority::try_from(name.as_str())
                .ok()
                .map(|auth| (name, auth))
        })
        .collect()
}

/// Starts resolving `host:port` for the upstream `upstream` every
/// `refresh`, setting `balancer`'s membership from each good answer. The
/// task holds the balancer weakly and ends once the upstream is gone (a
/// reload that replaced it). Needs a tokio runtime.
pub fn spawn(
    upstream: String,
    host: String,
    port: u16,
    refresh: Duration,
    balancer: &Arc<Balancer<Authority>>,
    resolver: Arc<dyn Resolve>,
) -> Arc<DnsStatus> {
    let status = Arc::new(DnsStatus::new(format!("{host}:{port}"), refresh));
    let weak = Arc::downgrade(balancer);
    tokio::spawn(watch(upstream, host, port, weak, resolver, status.clone()));
    status
}

async fn watch(
    upstream: String,
    host: String,
    port: u16,
    balancer: Weak<Balancer<Authority>>,
    resolver: Arc<dyn Resolve>,
    status: Arc<DnsStatus>,
) {
    let mut failing = false;
    loop {
        let answer = tokio::time::timeout(RESOLVE_TIMEOUT, resolver.resolve(&host, port)).await;
        let Some(balancer) = balancer.upgrade() else {
            return;
        };
        let result = match answer {
            Ok(Ok(addrs)) if !addrs.is_empty() => Ok(members_of(addrs)),
            Ok(Ok(_)) => Err("the name has no addresses".to_owned()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer within {}",
                humantime::format_duration(RESOLVE_TIMEOUT)
            )),
        };
        match result {
            Ok(members) => {
                let names: Vec<String> = members.iter().map(|(n, _)| n.clone()).collect();
                let change = balancer.set_members(members);
                if let Some(c) = &change {
                    tracing::info!(
                        upstream = %upstream,
                        dns = %status.name,
                        version = c.version,
                        added = %c.added.join(","),
                        removed = %c.removed.join(","),
                        "upstream membership changed (dns answer); removed endpoints finish their requests"
                    );
                } else if failing {
                    tracing::info!(upstream = %upstream, dns = %status.name, "dns resolves again");
                }
                failing = false;
                status.record(Ok(&names), change.is_some());
            }
            Err(e) => {
                // Logged once per run of failures, not every refresh.
                if !failing {
                    tracing::warn!(
                        upstream = %upstream,
                        dns = %status.name,
                        error = %e,
                        "dns resolution failed; the last membership is kept"
                    );
                }
                failing = true;
                status.record(Err(e), false);
            }
        }
        drop(balancer);
        tokio::time::sleep(status.refresh).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodwall_core::balance::BalanceConfig;
    use floodwall_core::clock::ManualClock;

    /// Answers from a script the test changes.
    #[derive(Debug)]
    struct Scripted {
        answer: Mutex<io::Result<Vec<SocketAddr>>>,
        asked: AtomicU64,
    }

    impl Default for Scripted {
        fn default() -> Self {
            Self {
                answer: Mutex::new(Ok(Vec::new())),
                asked: AtomicU64::new(0),
            }
        }
    }

    impl Scripted {
        fn set(&self, answer: io::Result<Vec<SocketAddr>>) {
            *self.answer.lock().unwrap() = answer;
        }
    }

    impl Resolve for Arc<Scripted> {
        fn resolve(&self, _host: &str, _port: u16) -> Answer {
            self.asked.fetch_add(1, Ordering::Relaxed);
            let a = match &*self.answer.lock().unwrap() {
                Ok(v) => Ok(v.clone()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            Box::pin(async move { a })
        }
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn names(b: &Balancer<Authority>) -> Vec<String> {
        let mut v: Vec<String> = b
            .snapshot()
            .endpoints
            .iter()
            .filter(|e| !e.leaving)
            .map(|e| e.name.clone())
            .collect();
        v.sort();
        v
    }

    #[tokio::test(start_paused = true)]
    async fn the_membership_follows_the_answer_within_one_refresh_and_survives_failures() {
        let clock = Arc::new(ManualClock::new());
        let balancer = Balancer::new(BalanceConfig::default(), Vec::new(), clock, 7);
        let script = Arc::new(Scripted::default());
        script.set(Ok(addrs(&["127.0.0.3:80", "127.0.0.2:80", "127.0.0.2:80"])));
        let refresh = Duration::from_secs(5);
        let status = spawn(
            "api".into(),
            "api.internal".into(),
            80,
            refresh,
            &balancer,
            Arc::new(script.clone()),
        );
        status.first_attempt().await;
        assert_eq!(names(&balancer), ["127.0.0.2:80", "127.0.0.3:80"]);
        let v1 = balancer.snapshot().version;

        // The same answer in another order changes nothing.
        script.set(Ok(addrs(&["127.0.0.2:80", "127.0.0.3:80"])));
        tokio::time::sleep(refresh + Duration::from_millis(1)).await;
        assert_eq!(balancer.snapshot().version, v1);

        // A failure and an empty answer keep the membership.
        script.set(Err(io::Error::other("SERVFAIL")));
        tokio::time::sleep(refresh).await;
        script.set(Ok(Vec::new()));
        tokio::time::sleep(refresh).await;
        assert_eq!(names(&balancer), ["127.0.0.2:80", "127.0.0.3:80"]);
        let s = status.snapshot();
        assert_eq!((s.ok, s.failed, s.changes), (2, 2, 1), "{s:?}");
        assert_eq!(s.last_error.as_deref(), Some("the name has no addresses"));

        // A new answer is the membership one refresh later, as one change.
        script.set(Ok(addrs(&["127.0.0.3:80", "[::1]:80"])));
        tokio::time::sleep(refresh).await;
        assert_eq!(names(&balancer), ["127.0.0.3:80", "[::1]:80"]);
        assert_eq!(balancer.snapshot().version, v1 + 1);
        let s = status.snapshot();
        assert_eq!(s.last_error, None);
        assert_eq!(s.addresses, ["127.0.0.3:80", "[::1]:80"]);

        // The task ends with the upstream.
        drop(balancer);
        let asked = script.asked.load(Ordering::Relaxed);
        tokio::time::sleep(refresh * 3).await;
        assert!(script.asked.load(Ordering::Relaxed) <= asked + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_resolver_that_hangs_counts_as_failed_and_the_refreshes_go_on() {
        #[derive(Debug)]
        struct Hangs;
        impl Resolve for Hangs {
            fn resolve(&self, _: &str, _: u16) -> Answer {
                Box::pin(std::future::pending())
            }
        }
        let clock = Arc::new(ManualClock::new());
        let balancer = Balancer::new(BalanceConfig::default(), Vec::new(), clock, 7);
        let status = spawn(
            "api".into(),
            "api.internal".into(),
            80,
            Duration::from_secs(1),
            &balancer,
            Arc::new(Hangs),
        );
        status.first_attempt().await;
        tokio::time::sleep(RESOLVE_TIMEOUT * 2 + Duration::from_secs(3)).await;
        let s = status.snapshot();
        assert!(s.failed >= 2, "{s:?}");
        assert!(s.last_error.unwrap().contains("no answer within"));
        assert!(names(&balancer).is_empty());
    }
}
