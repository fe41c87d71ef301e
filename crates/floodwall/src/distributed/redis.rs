//! The Redis side: one auto-reconnecting connection (to one Redis, or to a
//! Redis Cluster), the Lua scripts, a deadline on every call, and the
//! figures `/metrics` shows about them.
//!
//! On a cluster every script's keys share one route's `{ROUTE}` hash tag,
//! so each call goes to the one primary that owns that slot (redis-rs's
//! cluster client routes `EVALSHA` by its first key, follows `MOVED` and
//! `ASK`, and loads a script on every primary on `NOSCRIPT`). Routes spread
//! over the primaries; one route never spans two.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::AsyncConnectionConfig;
use redis::Script;
use tokio::sync::OnceCell;

use crate::config::{SentinelTarget, StoreConfig};

/// The keys of one route's global limit. They share the `{ROUTE}` hash tag
/// so that every script's keys live in one Redis Cluster slot.
#[derive(Debug, Clone)]
pub struct RouteKeys {
    /// ZSET replica id → lease expiry (ms).
    pub members: String,
    /// HASH replica id → slots it may hold (lease mode).
    pub usage: String,
    /// HASH replica id → slots it asked for (lease mode).
    pub demand: String,
    /// HASH replica id → slots held now (strict mode).
    pub held: String,
    /// HASH replica id → its fair share as of the last fill (lease mode).
    pub fair: String,
    /// HASH `total` (Σ usage), `filled` (ms), `global` (lease mode).
    pub meta: String,
}

impl RouteKeys {
    /// `PREFIX:{ROUTE}:members` and friends.
    pub fn new(prefix: &str, route: &str) -> Self {
        Self::at(&format!("{prefix}:{{{route}}}"))
    }

    /// The keys of `tenant`'s quota on `route`:
    /// `PREFIX:{ROUTE}:tenant:TENANT:members` and friends, in the route's
    /// slot. Only configured tenants have them, so their number is the
    /// configuration's, never the clients'.
    pub fn for_tenant(prefix: &str, route: &str, tenant: &str) -> Self {
        Self::at(&format!("{prefix}:{{{route}}}:tenant:{tenant}"))
    }

    fn at(base: &str) -> Self {
        let k = |s: &str| format!("{base}:{s}");
        Self {
            members: k("members"),
            usage: k("usage"),
            demand: k("demand"),
            held: k("held"),
            fair: k("fair"),
            meta: k("meta"),
        }
    }
}

/// What a lease renewal returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    /// The slots this replica may now admit up to.
    pub grant: usize,
    /// What Redis now counts against this replica (≥ grant).
    pub usage: usize,
    /// Live members, this replica included.
    pub members: usize,
    /// Its fair share as of the last fill (`None` before its first).
    pub fair: Option<usize>,
}

/// What a lease renewal asks for (see `lease.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// The most this replica will take whatever its fair share (the
    /// global limit, or the resync cap after a failure).
    pub cap: usize,
    /// What it may still hold whatever the grant: at least its in flight.
    pub floor: usize,
    /// Its demand, published for the others' fair-share computation.
    pub demand: usize,
}

/// Why a Redis call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No answer within the configured `store.timeout`.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Redis (or the connection) returned an error.
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
}

/// How the backend reaches Redis.
enum Conn {
    /// One Redis: a connection manager, which reconnects by itself.
    Single(ConnectionManager),
    /// A Redis Cluster: connected at the first call that finds it up (so a
    /// floodwall whose cluster is down at start still starts), then kept;
    /// the cluster connection reconnects to nodes and refreshes its slot
    /// map by itself.
    Cluster(Box<ClusterConn>),
    /// A primary behind Redis Sentinel: found through the Sentinels, and
    /// found again after any failed call, so a failover is followed.
    Sentinel(Box<SentinelConn>),
}

/// A primary behind Sentinel and the connection to it.
///
/// Any failed call drops the connection and the next call asks the
/// Sentinels where the primary is (redis-rs's `SentinelClient`, which also
/// checks with `ROLE` that the node it names is a primary). A node that was
/// demoted answers writes with `READONLY`, a dead one does not answer:
/// either way the next call looks again. When the primary found is not the
/// one before, that is a **switch**: counted ([`Backend::switches`]) and
/// logged, and the renew loop then treats every lease as gone (see
/// `distributed/mod.rs`, "Failover").
struct SentinelConn {
    client: Arc<tokio::sync::Mutex<SentinelClient>>,
    config: AsyncConnectionConfig,
    current: Arc<Mutex<Option<Primary>>>,
    /// The address of the last primary connected to, once there was one.
    last: Arc<Mutex<Option<String>>>,
    switches: Arc<AtomicU64>,
    connecting: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
}

/// The primary connected to now.
#[derive(Clone)]
struct Primary {
    generation: u64,
    conn: MultiplexedConnection,
}

impl SentinelConn {
    fn new(
        store: &StoreConfig,
        target: SentinelTarget,
        connect: Duration,
    ) -> Result<Self, StoreError> {
        let settings =
            redis::IntoConnectionInfo::into_connection_info(target.primary_settings.as_str())?
                .redis_settings()
                .clone();
        let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(settings);
        let client = SentinelClient::build(
            target.sentinels,
            target.primary,
            Some(node),
            SentinelServerType::Master,
        )?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect))
            .set_response_timeout(Some(store.timeout));
        Ok(Self {
            client: Arc::new(tokio::sync::Mutex::new(client)),
            config,
            current: Arc::default(),
            last: Arc::default(),
            switches: Arc::default(),
            connecting: Arc::default(),
            generation: Arc::default(),
        })
    }

    /// The primary's connection. Finding it (Sentinels, `ROLE`, connect)
    /// runs on its own task, one attempt at a time, so a call's deadline
    /// never cancels it halfway: calls fail by their deadline until it
    /// succeeds.
    async fn get(&self) -> Primary {
        loop {
            if let Some(p) = lock(&self.current).clone() {
                return p;
            }
            if !self.connecting.swap(true, Ordering::AcqRel) {
                let client = self.client.clone();
                let config = self.config.clone();
                let (current, last) = (self.current.clone(), self.last.clone());
                let (switches, generation) = (self.switches.clone(), self.generation.clone());
                let flag = self.connecting.clone();
                tokio::spawn(async move {
                    let found = async {
                        let c = client.lock().await.async_get_client().await?;
                        let addr = c.get_connection_info().addr().to_string();
                        let conn = c
                            .get_multiplexed_async_connection_with_config(&config)
                            .await?;
                        Ok::<_, redis::RedisError>((addr, conn))
                    };
                    match found.await {
                        Ok((addr, conn)) => {
                            let was = lock(&last).replace(addr.clone());
                            if let Some(was) = was.filter(|w| *w != addr) {
                                switches.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(from = %was, to = %addr, "store primary switched (Sentinel failover): re-registering every lease");
                            }
                            let generation = generation.fetch_add(1, Ordering::Relaxed) + 1;
                            *lock(&current) = Some(Primary { generation, conn });
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "no Redis primary from the Sentinels yet");
                        }
                    }
                    flag.store(false, Ordering::Release);
                });
            }
            // The caller's deadline ends the wait.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A call on the connection of `generation` failed: drop it, unless a
    /// newer one replaced it already.
    fn failed(&self, generation: u64) {
        let mut current = lock(&self.current);
        if current.as_ref().is_some_and(|p| p.generation == generation) {
            *current = None;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A Redis Cluster's client and its connection once made.
struct ClusterConn {
    client: ClusterClient,
    config: ClusterConfig,
    conn: Arc<OnceCell<ClusterConnection>>,
    /// A connection attempt is running on its own task.
    connecting: Arc<AtomicBool>,
}

impl ClusterConn {
    /// The connection, once made. Connecting (every node, then the slot
    /// map) runs on its own task, one attempt at a time, so that a call's
    /// deadline, which may be shorter than a cluster handshake over TLS,
    /// never cancels it: calls fail by their deadline until it succeeds.
    async fn get(&self) -> ClusterConnection {
        loop {
            if let Some(c) = self.conn.get() {
                return c.clone();
            }
            if !self.connecting.swap(true, Ordering::AcqRel) {
                let (cell, flag) = (self.conn.clone(), self.connecting.clone());
                let (client, config) = (self.client.clone(), self.config.clone());
                tokio::spawn(async move {
                    let made = cell
                        .get_or_try_init(|| client.get_async_connection_with_config(config))
                        .await;
                    if let Err(e) = made {
                        tracing::debug!(error = %e, "could not connect to the Redis Cluster yet");
                    }
                    flag.store(false, Ordering::Release);
                });
            }
            // The caller's deadline ends the wait.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The connection, the scripts and the call figures.
pub struct Backend {
    conn: Conn,
    timeout: Duration,
    lease: Script,
    acquire: Script,
    release: Script,
    heartbeat: Script,
    leave: Script,
    /// Whether the last call succeeded.
    pub up: AtomicBool,
    /// Redis commands sent (one per script call).
    pub commands: AtomicU64,
    /// Calls that failed or timed out.
    pub errors: AtomicU64,
    /// Round-trip time of every call, successful or not.
    pub latency: Histogram,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("timeout", &self.timeout)
            .field("up", &self.up)
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// A backend for the `[store]` section's `url` (one Redis, or a
    /// cluster's nodes) that connects lazily: a floodwall whose Redis is
    /// down at start still starts, under its failure policy.
    pub fn new(store: &StoreConfig) -> Result<Self, StoreError> {
        let timeout = store.timeout;
        let connect = timeout.max(Duration::from_millis(100));
        let conn = if let Some(target) = store.sentinel() {
            let target = target.map_err(|e| {
                StoreError::Redis(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "store.url",
                    e,
                )))
            })?;
            Conn::Sentinel(Box::new(SentinelConn::new(store, target, connect)?))
        } else if store.is_cluster() {
            let client = ClusterClient::builder(store.nodes())
                .connection_timeout(connect)
                .response_timeout(timeout)
                .retries(2)
                .build()?;
            let config = ClusterConfig::new()
                .set_connection_timeout(connect)
                .set_response_timeout(timeout);
            Conn::Cluster(Box::new(ClusterConn {
                client,
                config,
                conn: Arc::default(),
                connecting: Arc::default(),
            }))
        } else {
            let client = redis::Client::open(store.url.as_str())?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(connect))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(2)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_secs(1));
            Conn::Single(ConnectionManager::new_lazy_with_config(client, config)?)
        };
        Ok(Self {
            conn,
            timeout,
            lease: Script::new(include_str!("lua/lease.lua")),
            acquire: Script::new(include_str!("lua/acquire.lua")),
            release: Script::new(include_str!("lua/release.lua")),
            heartbeat: Script::new(include_str!("lua/heartbeat.lua")),
            leave: Script::new(include_str!("lua/leave.lua")),
            up: AtomicBool::new(false),
            commands: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: Histogram::new(exponential_buckets(0.0001, 2.0, 14)),
        })
    }

    /// Times the primary behind Sentinel changed (always 0 for one Redis or
    /// a cluster): each one means the leases this replica held may be gone.
    pub fn switches(&self) -> u64 {
        match &self.conn {
            Conn::Sentinel(c) => c.switches.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// Runs one script invocation under the deadline, counting it.
    async fn call<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let started = tokio::time::Instant::now();
        self.commands.fetch_add(1, Ordering::Relaxed);
        // The Sentinel primary's connection generation this call used (0:
        // none; generations start at 1).
        let used = AtomicU64::new(0);
        let invoke = async {
            match &self.conn {
                Conn::Single(c) => inv.invoke_async(&mut c.clone()).await,
                Conn::Cluster(c) => inv.invoke_async(&mut c.get().await).await,
                Conn::Sentinel(c) => {
                    let mut p = c.get().await;
                    used.store(p.generation, Ordering::Relaxed);
                    inv.invoke_async(&mut p.conn).await
                }
            }
        };
        let result = match tokio::time::timeout(self.timeout, invoke).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Redis(e)),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        };
        if let (Conn::Sentinel(c), Err(_)) = (&self.conn, &result) {
            c.failed(used.load(Ordering::Relaxed));
        }
        self.latency.observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => self.up.store(true, Ordering::Release),
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.up.store(false, Ordering::Release);
            }
        }
        result
    }

    /// Renews this replica's lease on a route and takes its fair share,
    /// the shares recomputed if the last fill is older than `fill` (see
    /// `lease.lua`).
    pub async fn renew(
        &self,
        keys: &RouteKeys,
        id: &str,
        global: usize,
        ttl: Duration,
        fill: Duration,
        ask: Ask,
    ) -> Result<Renewal, StoreError> {
        let mut inv = self.lease.prepare_invoke();
        inv.key(&keys.members)
            .key(&keys.usage)
            .key(&keys.demand)
            .key(&keys.fair)
            .key(&keys.meta)
            .arg(id)
            .arg(global)
            .arg(ttl.as_millis() as u64)
            .arg(ask.cap)
            .arg(ask.floor)
            .arg(ask.demand)
            .arg(fill.as_millis().max(1) as u64);
        let (grant, usage, members, fair): (i64, i64, i64, i64) = self.call(inv).await?;
        Ok(Renewal {
            grant: grant.max(0) as usize,
            usage: usage.max(0) as usize,
            members: members.max(1) as usize,
            fair: usize::try_from(fair).ok(),
        })
    }

    /// Strict mode: takes one slot if the route's global total is below
    /// `global` (see `acquire.lua`). `Ok(false)` when it is full.
    pub async fn acquire(
        &self,
        keys: &RouteKeys,
        id: &str,
        global: usize,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut inv = self.acquire.prepare_invoke();
        inv.key(&keys.members)
            .key(&keys.held)
            .arg(id)
            .arg(global)
            .arg(ttl.as_millis() as u64);
        let admitted: i64 = self.call(inv).await?;
        Ok(admitted == 1)
    }

    /// Strict mode: gives one slot back (see `release.lua`).
    pub async fn release(&self, keys: &RouteKeys, id: &str) -> Result<(), StoreError> {
        let mut inv = self.release.prepare_invoke();
        inv.key(&keys.held).arg(id);
        let _: i64 = self.call(inv).await?;
        Ok(())
    }

    /// Strict mode: renews the lease and reconciles the held count (see
    /// `heartbeat.lua`). Returns the live member count.
    pub async fn heartbeat(
        &self,
        keys: &RouteKeys,
        id: &str,
        ttl: Duration,
        held: usize,
    ) -> Result<usize, StoreError> {
        let mut inv = self.heartbeat.prepare_invoke();
        inv.key(&keys.members)
            .key(&keys.held)
            .arg(id)
            .arg(ttl.as_millis() as u64)
            .arg(held);
        let n: i64 = self.call(inv).await?;
        Ok(n.max(0) as usize)
    }

    /// Removes this replica from a route (see `leave.lua`).
    pub async fn leave(&self, keys: &RouteKeys, id: &str) -> Result<(), StoreError> {
        let mut inv = self.leave.prepare_invoke();
        inv.key(&keys.members)
            .key(&keys.usage)
            .key(&keys.demand)
            .key(&keys.held)
            .key(&keys.fair)
            .key(&keys.meta)
            .arg(id);
        let _: i64 = self.call(inv).await?;
        Ok(())
    }
}
