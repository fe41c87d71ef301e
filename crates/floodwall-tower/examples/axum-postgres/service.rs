//! The example service, shared by `main.rs` (run it) and `spike.rs`
//! (bench it): an axum app whose one endpoint runs a query on a
//! deadpool-postgres pool, built three ways so the bench can compare them.

use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use deadpool_postgres::Pool;
use floodwall_core::bulkhead::Capacity;
use floodwall_core::{Breaker, BreakerConfig, Bulkhead, Limiter, MonotonicClock};
use floodwall_tower::probe::{self, Constraint};
use floodwall_tower::{AdmissionLayer, Events, Guard, GuardError};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceBuilder;

/// How the service is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Nothing: requests wait in the pool's queue for as long as it takes.
    None,
    /// tower's `ConcurrencyLimit(w)` with `LoadShed` in front: at most `w`
    /// in flight, the rest shed with a bare 503.
    Tower(usize),
    /// `AdmissionLayer` with the gateway's default adaptive limit, capped
    /// by a [`PoolProbe`].
    Floodwall,
}

impl std::str::FromStr for Protection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Protection::None),
            "floodwall" => Ok(Protection::Floodwall),
            t => match t.strip_prefix("tower:").map(str::parse) {
                Some(Ok(w)) if w > 0 => Ok(Protection::Tower(w)),
                _ => Err(format!(
                    "protection: expected none, floodwall or tower:N (got {s:?})"
                )),
            },
        }
    }
}

/// The pool's wait queue as a constraint on the limiter: in-process, the
/// service knows exactly how many requests wait for a connection. While
/// any do, the pool is the bottleneck, and more requests in flight only
/// lengthen its queue: the limit is capped at the pool's size plus
/// `queue_per_connection` waiters per connection (so a freed connection
/// is taken at once). With no waiter, the cap is lifted and the adaptive
/// limit alone decides.
pub struct PoolProbe {
    pool: Pool,
    queue_per_connection: usize,
}

impl PoolProbe {
    /// A probe over `pool`'s `Status`.
    pub fn new(pool: Pool, queue_per_connection: usize) -> Self {
        Self {
            pool,
            queue_per_connection,
        }
    }
}

impl Constraint for PoolProbe {
    fn constraint(&self, _: &Limiter) -> Option<usize> {
        let status = self.pool.status();
        (status.waiting > 0).then(|| status.max_size * (1 + self.queue_per_connection))
    }
}

#[derive(Clone)]
struct App {
    pool: Pool,
    db: Option<Guard>,
    query: Arc<str>,
}

/// The endpoint: one query on a pooled connection, in the guard if there
/// is one. A guard refusal is answered with the gateway's response for it.
async fn work(State(app): State<App>) -> Response {
    let client = match app.pool.get().await {
        Ok(c) => c,
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    let query = client.query_one(&*app.query, &[]);
    let result = match &app.db {
        Some(guard) => guard.run(query).await,
        None => query.await.map_err(GuardError::Inner),
    };
    match result {
        Ok(_) => "ok".into_response(),
        Err(GuardError::Refused(r)) => r.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// What a running service holds besides its router.
pub struct Built {
    /// The app.
    pub router: Router,
    /// The admission limiter, with `Protection::Floodwall`.
    pub limiter: Option<Arc<Limiter>>,
    /// The pool probe's task, with `Protection::Floodwall`.
    pub probe: Option<tokio::task::JoinHandle<()>>,
}

/// The service over `pool`, running `query` per request, protected by
/// `protection`; its outbound metrics go into `registry`.
pub fn build(pool: Pool, query: &str, protection: Protection, registry: &mut Registry) -> Built {
    let events = Events::new(registry, 1024);
    let size = pool.status().max_size;
    let db = (protection == Protection::Floodwall).then(|| {
        let clock = Arc::new(MonotonicClock::new());
        Guard::new("postgres", "postgres")
            .breaker(Breaker::new("postgres", BreakerConfig::default(), clock).unwrap())
            .bulkhead(Bulkhead::new("postgres", Capacity::Tickets(size)).unwrap())
            .timeout(Duration::from_secs(5))
            .events(events)
    });
    let app = App {
        pool: pool.clone(),
        db,
        query: query.into(),
    };
    let router = Router::new().route("/", get(work)).with_state(app);
    match protection {
        Protection::None => Built {
            router,
            limiter: None,
            probe: None,
        },
        Protection::Tower(w) => Built {
            router: router.layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                        StatusCode::SERVICE_UNAVAILABLE
                    }))
                    .load_shed()
                    .concurrency_limit(w),
            ),
            limiter: None,
            probe: None,
        },
        Protection::Floodwall => {
            let limiter = floodwall_tower::adaptive_limiter().unwrap();
            let probe = probe::watch(
                limiter.clone(),
                Duration::from_millis(50),
                PoolProbe::new(pool, 1),
            );
            Built {
                router: router.layer(AdmissionLayer::new(limiter.clone()).answer_refusals()),
                limiter: Some(limiter),
                probe: Some(probe),
            }
        }
    }
}

/// A pool of `size` connections to `dsn`.
pub fn pool(dsn: &str, size: usize) -> Pool {
    let pg: tokio_postgres::Config = dsn.parse().expect("a valid connection string");
    let manager = deadpool_postgres::Manager::new(pg, tokio_postgres::NoTls);
    Pool::builder(manager)
        .max_size(size)
        .build()
        .expect("a pool with a runtime")
}
