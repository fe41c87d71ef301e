//! The Grafana dashboard, the Prometheus rules and the KEDA query against a
//! real Prometheus scraping a real floodwall under load: every expression
//! must parse and return at least one series. A dashboard whose queries
//! return nothing is the most common way dashboards break, and an alert
//! that cannot fire on real data is the same failure one level down, so
//! the floodwall here is set up so that every alert's condition holds
//! (`ops::everything_toml`), and each alert expression must return series
//! too. The KEDA query must read below 1 at rest and rise above 1 in the
//! spike.

mod common;
mod ops;

use common::{config_from_toml, start, Upstream};
use ops::{dashboard_queries, keda_query, label_values_as_promql, rule_files, substitute};
use std::time::Duration;

/// How long one expression may take to show data while the load runs.
const EVENTUALLY: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_rule_alert_and_keda_query_returns_data() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ops::repo_root().join("deploy/grafana/floodwall.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let (targets, variables) = dashboard_queries(&dashboard);
    assert!(targets.len() >= 15, "{} panel queries", targets.len());
    let names: Vec<&str> = variables.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["job", "instance", "route"], "template variables");

    // 50 ms answers: route api (limit 8, held at 4 by the memory probe)
    // serves about 80 requests a second.
    let upstream = Upstream::start(Duration::from_millis(50)).await;
    let fw = start(config_from_toml(&ops::everything_toml(), &upstream.uri())).await;
    let prom = ops::Prometheus::start(&[fw.admin_addr], &rule_files());
    prom.wait_for_targets(1).await;

    // At rest the autoscaler sees nothing to do.
    let keda = keda_query();
    let rest = prom.query_until_data(&keda, EVENTUALLY).await.unwrap();
    assert!(rest[0].value < 1.0, "KEDA query at rest: {rest:?}");

    // The spike: 400 requests a second for 45 s, so every check below runs
    // inside it, 80/s to each entry: interactive to api twice (160/s, twice
    // what api's limit of 4 serves, so interactive alone keeps the whole
    // gate full: batch can never use the slots reserved for interactive,
    // and with interactive at 80/s a loaded CI machine kept the gate at 3
    // of 4 and FloodwallGateSaturated's expression empty), batch to api,
    // sick, and tripped, whose breaker opens on its first connect errors.
    let proxy = fw.proxy_addr;
    let load = tokio::spawn(async move {
        ops::open_loop(
            proxy,
            &[
                ("/api/x", &[("x-priority", "interactive")]),
                ("/api/x", &[("x-priority", "interactive")]),
                ("/api/x", &[("x-priority", "batch")]),
                ("/sick/x", &[]),
                ("/tripped/x", &[]),
            ],
            400.0,
            Duration::from_secs(45),
        )
        .await
    });
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut failures = Vec::new();
    let mut checked = 0;
    let instance = fw.admin_addr;
    for (panel, expr) in &targets {
        let q = substitute(expr, instance, "api");
        match prom.query_until_data(&q, EVENTUALLY).await {
            Ok(_) => checked += 1,
            Err(e) => failures.push(format!("panel {panel:?}: {q}\n  -> {e}")),
        }
    }
    for (name, query) in &variables {
        let q = label_values_as_promql(&substitute(query, instance, "api"))
            .unwrap_or_else(|| panic!("variable {name}: not label_values(…): {query}"));
        match prom.query_until_data(&q, EVENTUALLY).await {
            Ok(_) => checked += 1,
            Err(e) => failures.push(format!("variable {name}: {q}\n  -> {e}")),
        }
    }
    let rules = prom.rules().await;
    assert_eq!(
        rules.iter().filter(|r| r.0 == "alerting").count(),
        7,
        "{rules:?}"
    );
    for (kind, name, query) in &rules {
        match prom.query_until_data(query, EVENTUALLY).await {
            Ok(series) => {
                checked += 1;
                println!("{kind} {name}: {} series", series.len());
            }
            Err(e) => failures.push(format!("{kind} rule {name}: {query}\n  -> {e}")),
        }
    }

    // The KEDA query rises above 1 while the gate refuses.
    let started = std::time::Instant::now();
    let mut peak = 0.0f64;
    while peak <= 1.0 && started.elapsed() < EVENTUALLY {
        if let Ok(v) = prom.query(&keda).await {
            peak = peak.max(v.first().map_or(0.0, |s| s.value));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let spike = started.elapsed();
    let raw = prom
        .query(r#"floodwall_effective_load{route="api"}"#)
        .await
        .unwrap();
    println!("floodwall_effective_load{{route=\"api\"}} now: {raw:?}");
    assert!(
        raw[0].value > 1.0,
        "the gauge itself reads above 1: {raw:?}"
    );
    if peak <= 1.0 {
        failures.push(format!(
            "KEDA query {keda}: peak {peak} in the spike, not above 1"
        ));
    }
    checked += 1;
    let tally = load.await.unwrap();
    println!(
        "{checked} expressions returned data; KEDA query {:.3} at rest, {peak:.2} in the spike \
         ({spike:?} into the check); load {:?}",
        rest[0].value, tally.by_status
    );
    assert!(
        failures.is_empty(),
        "{} expressions returned no data:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(tally.count(503) > 0 && tally.count(200) > 0, "{tally:?}");
    drop(prom);
    fw.shutdown().await;
}
