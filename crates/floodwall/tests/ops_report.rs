//! `floodwall report` against a recorded run: a real Prometheus scrapes a
//! real floodwall through two load spikes separated by quiet, and the
//! report (the real binary) must find exactly two incident windows, each
//! inside its spike, with rejection and request totals within 5% of
//! floodwall's own counters.

mod common;
mod ops;

use common::{config_from_toml, metrics, start, sum, Upstream};
use std::time::Duration;

const CONFIG: &str = r#"
[[upstreams]]
name = "app"
url = "{upstream}"

[[routes]]
name = "api"
upstream = "app"
limit = { algorithm = "fixed", value = 4 }
"#;

async fn report(args: Vec<String>) -> (bool, String, String) {
    ops::floodwall_cli("report", args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_finds_two_spikes_and_counts_like_floodwall() {
    // 4 slots of 50 ms: about 80 requests a second.
    let upstream = Upstream::start(Duration::from_millis(50)).await;
    let fw = start(config_from_toml(CONFIG, &upstream.uri())).await;
    let prom = ops::Prometheus::start(&[fw.admin_addr], &[]);
    // Counters scraped at 0 before any traffic, so increase() sees it all.
    prom.wait_for_targets(1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let api: &[(&str, &[(&str, &str)])] = &[("/x", &[])];
    let quiet = |secs| ops::open_loop(fw.proxy_addr, api, 10.0, Duration::from_secs(secs));
    let spike = |secs| ops::open_loop(fw.proxy_addr, api, 200.0, Duration::from_secs(secs));
    let mut spikes = Vec::new();
    let q1 = quiet(3).await;
    for (i, secs) in [6, 6].into_iter().enumerate() {
        let from = ops::unix_now();
        let s = spike(secs).await;
        spikes.push((from, ops::unix_now(), s));
        if i == 0 {
            quiet(12).await;
        }
    }
    let q2 = quiet(4).await;
    // Two more scrapes after the last request.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(q1.count(503) + q2.count(503), 0, "quiet is quiet");
    for (_, _, s) in &spikes {
        assert!(s.count(503) > 200, "each spike is refused: {s:?}");
    }

    let scrape = metrics(fw.admin_addr).await;
    let own_rejected = sum(&scrape, "floodwall_rejections_total", &[("route", "api")]);
    let own_requests = sum(&scrape, "floodwall_requests_total", &[("route", "api")]);

    let args: Vec<String> = [
        "--prometheus",
        &prom.url(),
        "--since",
        "2m",
        "--step",
        "1s",
        "--rate-window",
        "3s",
        "--merge-gap",
        "2s",
        "--threshold",
        "5",
        "--job",
        "floodwall",
    ]
    .map(String::from)
    .to_vec();
    let mut json_args = args.clone();
    json_args.push("--json".into());
    let (ok, out, err) = report(json_args).await;
    assert!(ok, "floodwall report failed: {err}");
    let r: serde_json::Value = serde_json::from_str(&out).expect("--json prints JSON");
    let route = r["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["route"] == "api")
        .unwrap_or_else(|| panic!("no route api in {out}"));
    let rejected: f64 = route["rejections"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_f64().unwrap())
        .sum();
    let requests: f64 = route["requests"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_f64().unwrap())
        .sum();
    let within = |a: f64, b: f64| (a - b).abs() <= 0.05 * b;
    println!(
        "rejections: report {rejected:.1}, floodwall {own_rejected}; requests: report {requests:.1}, floodwall {own_requests}"
    );
    assert!(
        within(rejected, own_rejected),
        "rejections {rejected} vs {own_rejected}"
    );
    assert!(
        within(requests, own_requests),
        "requests {requests} vs {own_requests}"
    );

    let incidents = route["incidents"].as_array().unwrap();
    println!("incidents: {incidents:?}");
    assert_eq!(incidents.len(), 2, "exactly two incidents: {out}");
    for (w, (from, to, _)) in incidents.iter().zip(&spikes) {
        let start = w["start"].as_f64().unwrap();
        let seconds = w["seconds"].as_f64().unwrap();
        // Each window starts within its spike (the rate needs a scrape or
        // two to rise) and ends within the rate window after it.
        assert!(
            start >= from - 1.0 && start <= to + 1.0,
            "{w} vs spike {from}..{to}"
        );
        assert!(
            seconds >= 3.0 && start + seconds <= to + 6.0,
            "{w} vs spike {from}..{to}"
        );
        assert!(w["peak"].as_f64().unwrap() > 50.0, "{w}");
    }
    assert_eq!(r["cost"]["incidents"], 2);
    assert_eq!(r["cost"]["total"], 600.0);
    assert!(r["retried"].is_null(), "retries are not measured");

    // The table says the same, with the arithmetic.
    let (ok, table, err) = report(args).await;
    assert!(ok, "{err}");
    println!("{table}");
    assert!(table.contains("route api"), "{table}");
    assert!(
        table.contains("2 incidents × 2 h × 150.00/h = 600.00"),
        "{table}"
    );
    assert!(table.contains("retried requests: not measured"), "{table}");
    assert!(
        table.contains("demand exceeded the upstream's capacity"),
        "{table}"
    );

    // A bad flag is refused with a message naming it, before any query.
    let (ok, _, err) = report(vec!["--prometheus".into(), "https://x:1".into()]).await;
    assert!(!ok && err.contains("--prometheus"), "{err}");
    drop(prom);
    fw.shutdown().await;
}
