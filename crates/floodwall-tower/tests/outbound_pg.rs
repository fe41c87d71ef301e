//! The database guard around tokio-postgres calls to a real PostgreSQL
//! (its own cluster, initdb/pg_ctl in a temp dir): while a transaction
//! holds a row lock, the bulkhead caps how many queries wait on it, the
//! rest are refused at once, and a guard timeout opens the breaker so that
//! later calls never reach the database.

#[path = "../../floodwall/tests/pg/mod.rs"]
mod pg;

use floodwall_core::breaker::{BreakerConfig, State, Trip};
use floodwall_core::bulkhead::Capacity;
use floodwall_core::{Breaker, Bulkhead};
use floodwall_tower::{Events, Guard, GuardError, Refused};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

async fn lock_waiters(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bulkhead_caps_queries_waiting_on_a_lock_and_the_breaker_stops_the_rest() {
    let cluster = pg::PgCluster::start(40);
    let admin = cluster.connect().await;
    admin
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0);")
        .await
        .unwrap();
    // The lock holder.
    let holder = cluster.connect().await;
    holder
        .batch_execute("BEGIN; SELECT * FROM t WHERE id = 1 FOR UPDATE;")
        .await
        .unwrap();

    let mut registry = Registry::default();
    let events = Events::new(&mut registry, 1024);
    let bulkhead = Bulkhead::new("postgres", Capacity::Tickets(3)).unwrap();
    let guard = Guard::new("postgres", "postgres")
        .bulkhead(bulkhead.clone())
        .events(events.clone());

    // Ten callers, each with its own session, update the locked row.
    let mut sessions = Vec::new();
    for _ in 0..10 {
        sessions.push(Arc::new(cluster.connect().await));
    }
    let mut calls = Vec::new();
    for s in &sessions {
        let (g, s) = (guard.clone(), s.clone());
        calls.push(tokio::spawn(async move {
            g.run(s.execute("UPDATE t SET v = v + 1 WHERE id = 1", &[]))
                .await
        }));
    }
    // The refused return at once; the admitted wait on the lock.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while lock_waiters(&admin).await < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(lock_waiters(&admin).await, 3, "the bulkhead's 3, no more");
    assert_eq!(bulkhead.in_use(), 3);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("floodwall_bulkhead_inflight{resource=\"postgres\"} 3"),
        "{text}"
    );

    holder.batch_execute("COMMIT").await.unwrap();
    let (mut done, mut busy) = (0, 0);
    for c in calls {
        match c.await.unwrap() {
            Ok(1) => done += 1,
            Err(GuardError::Refused(Refused::BulkheadFull(_))) => busy += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((done, busy), (3, 7));
    let v: i32 = admin
        .query_one("SELECT v FROM t WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 3, "only the admitted updates ran");
    assert_eq!(bulkhead.in_use(), 0);

    // A guard with a timeout and a breaker: calls stuck on the lock time
    // out, two of them open the breaker, and the next is refused at once
    // without a query reaching PostgreSQL.
    holder
        .batch_execute("BEGIN; SELECT * FROM t WHERE id = 1 FOR UPDATE;")
        .await
        .unwrap();
    let breaker = Breaker::new(
        "postgres-writes",
        BreakerConfig {
            trip: Trip::Count {
                error_threshold: 2,
                error_threshold_timeout: Duration::from_secs(10),
            },
            error_timeout: Duration::from_secs(30),
            ..BreakerConfig::default()
        },
        Arc::new(floodwall_core::MonotonicClock::new()),
    )
    .unwrap();
    let writes = Guard::new("postgres-writes", "postgres")
        .breaker(breaker.clone())
        .timeout(Duration::from_millis(200))
        .events(events.clone());
    let s = &sessions[0];
    for _ in 0..2 {
        let r = writes
            .run(s.execute("UPDATE t SET v = v + 1 WHERE id = 1", &[]))
            .await;
        assert!(matches!(r, Err(GuardError::TimedOut(_))), "{r:?}");
    }
    assert_eq!(breaker.state(), State::Open);
    let r = writes
        .run(s.execute("UPDATE t SET v = 1000 WHERE id = 1", &[]))
        .await;
    let Err(GuardError::Refused(Refused::CircuitOpen(open))) = r else {
        panic!("expected circuit_open, got {r:?}")
    };
    assert!(open.retry_after() > Duration::from_secs(29));
    holder.batch_execute("COMMIT").await.unwrap();
    // The timed-out statements may still run once the lock is gone (the
    // guard cancels the wait, not a statement already sent); the refused
    // one, which would set 1000, was never sent.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v: i32 = admin
        .query_one("SELECT v FROM t WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        (3..=5).contains(&v),
        "the refused update never reached the database ({v})"
    );
}
