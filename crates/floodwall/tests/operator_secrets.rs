//! Secrets stay secret: a real password-protected redis-server as the
//! store and a real PostgreSQL role with a password (scram-sha-256) as a
//! probe; the passwords appear nowhere in `/status`, `/metrics`,
//! `/history.json`, the page or the logs (at debug level), including
//! after a failed probe login and a refused reload whose error quotes the
//! line holding the URL. Reads need the read token once one is set.

mod common;
mod operator;
mod pg;
mod redis;

use common::*;
use http::{Method, StatusCode};
use operator::*;
use std::time::Duration;

const REDIS_PASSWORD: &str = "redis-pw-Zq8v1TgH";
const PG_PASSWORD: &str = "pg-pw-Kd93mXw2";
const WRONG_PG_PASSWORD: &str = "pg-wrong-Rr71Lqp0";
const READ_TOKEN: &str = "read-token-abcdefghijklmnop";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_appear_nowhere_and_reads_can_need_a_token() {
    let up = Upstream::start(Duration::from_millis(2)).await;
    let redis = redis::Redis::start();
    redis.cli(&["CONFIG", "SET", "requirepass", REDIS_PASSWORD]);
    let cluster = pg::PgCluster::start(20);
    {
        // A role that must log in with its password over TCP.
        let su = cluster.connect().await;
        su.batch_execute(&format!(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE prober LOGIN PASSWORD '{PG_PASSWORD}';
             GRANT pg_read_all_stats TO prober;"
        ))
        .await
        .unwrap();
        let hba: String = su.query_one("SHOW hba_file", &[]).await.unwrap().get(0);
        su.batch_execute(&format!(
            "COPY (SELECT unnest(ARRAY[
               'local all all trust',
               'host all postgres 127.0.0.1/32 trust',
               'host all all 127.0.0.1/32 scram-sha-256'])) TO '{hba}';
             SELECT pg_reload_conf();"
        ))
        .await
        .unwrap();
    }
    let port = cluster
        .dsn()
        .split("port=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let dsn = |pw: &str| {
        format!("host=127.0.0.1 port={port} user=prober password={pw} dbname=postgres connect_timeout=2")
    };
    // The password really is checked: the wrong one is refused.
    assert!(
        tokio_postgres::connect(&dsn(WRONG_PG_PASSWORD), tokio_postgres::NoTls)
            .await
            .is_err()
    );
    let (ok, conn) = tokio_postgres::connect(&dsn(PG_PASSWORD), tokio_postgres::NoTls)
        .await
        .expect("the probe role logs in with its password");
    tokio::spawn(conn);
    drop(ok);

    let dir = temp_dir("secrets");
    let read_token = dir.join("read-token");
    std::fs::write(&read_token, READ_TOKEN).unwrap();
    let store_url = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}", redis.port);
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[log]
level = "debug"

[admin]
read_token_file = "{}"

[store]
url = "{store_url}"

[[upstreams]]
name = "app"
url = "{}"

[[routes]]
name = "api"
upstream = "app"
limit = {{ algorithm = "fixed", value = 8 }}

[[probes]]
name = "pg"
kind = "postgres"
dsn = "{}"
interval = "300ms"
timeout = "300ms"

[[probes]]
name = "pg-wrong"
kind = "postgres"
dsn = "{}"
interval = "300ms"
timeout = "300ms"
"#,
        read_token.display(),
        up.uri(),
        dsn(PG_PASSWORD),
        dsn(WRONG_PG_PASSWORD),
    );
    let path = temp_file("secrets", &text);
    let fw = spawn_binary(&["--config", path.to_str().unwrap()]);

    // Reads need the read token now; health checks stay open.
    for p in ["/status", "/metrics", "/", "/history.json"] {
        let r = admin(Method::GET, fw.admin, p, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{p}");
    }
    assert_eq!(
        admin(Method::GET, fw.admin, "/healthz", None).await.status,
        StatusCode::OK
    );
    let get = |p: &'static str| async move {
        let r = admin(Method::GET, fw.admin, p, Some(READ_TOKEN)).await;
        assert_eq!(r.status, StatusCode::OK, "{p}");
        String::from_utf8_lossy(&r.body).into_owned()
    };

    // Let traffic, the store and both probes run (one logging in, one
    // refused).
    let load = Load::start(fw.proxy, "/x", 4);
    eventually(
        Duration::from_secs(15),
        "probes checked, store up",
        || async {
            let s: serde_json::Value = serde_json::from_str(&get("/status").await).unwrap();
            let probes = s["probes"].as_array().unwrap();
            probes
                .iter()
                .any(|p| p["name"] == "pg" && p["state"] == "ok")
                && probes
                    .iter()
                    .any(|p| p["name"] == "pg-wrong" && p["state"] == "failing")
                && s["store"]["state"]
                    .as_str()
                    .is_some_and(|st| st != "starting")
        },
    )
    .await;
    let (statuses, _) = load.stop().await;
    assert!(statuses.get(&200).copied().unwrap_or(0) > 0, "{statuses:?}");

    // A refused reload whose error quotes the store URL's line.
    std::fs::write(
        &path,
        text.replace(
            &format!("url = \"{store_url}\""),
            &format!("url = \"{store_url}\" oops"),
        ),
    )
    .unwrap();
    signal(fw.pid(), "HUP");
    eventually(
        Duration::from_secs(5),
        "the refused reload is counted",
        || async {
            let s: serde_json::Value = serde_json::from_str(&get("/status").await).unwrap();
            s["reload"]["error_total"] == 1
        },
    )
    .await;

    let status = get("/status").await;
    let outputs = [
        ("/status", status.clone()),
        ("/metrics", get("/metrics").await),
        ("/history.json", get("/history.json").await),
        ("/", get("/").await),
        ("the log", fw.stderr()),
        ("stdout", fw.stdout_after_ready()),
    ];
    for (what, out) in &outputs {
        for secret in [REDIS_PASSWORD, PG_PASSWORD, WRONG_PG_PASSWORD, READ_TOKEN] {
            assert!(!out.contains(secret), "{secret} appears in {what}:\n{out}");
        }
    }
    // The figures are there, just not the secrets.
    let s: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        s["store"]["url"],
        format!("redis://***@127.0.0.1:{}", redis.port),
        "{s}"
    );
    let error = s["reload"]["last_error"].as_str().unwrap();
    assert!(
        error.contains("redis://***@"),
        "the error still says where: {error}"
    );
    let log = fw.stderr();
    assert!(
        log.contains("DEBUG") || log.contains("debug"),
        "the log ran at debug"
    );
    assert!(log.contains("config reload refused"), "{log}");
    println!("last reload error as shown: {error}");
}
