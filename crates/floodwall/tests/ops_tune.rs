//! `floodwall tune --prometheus` against a recorded run: a real Prometheus
//! scrapes a real floodwall every second while two routes carry known
//! concurrency (Little's law: rate × the upstream's 100 ms), one of them
//! through an incident at four times its usual load, and the tune (the real
//! binary) must read each route's in-use history back, recommend a limit
//! from the quiet baseline that would have cut the incident, and say "no
//! acceptable number" for the route pinned at its limit.

mod common;
mod ops;

use common::{config_from_toml, start, Upstream};
use std::time::Duration;

const CONFIG: &str = r#"
[[upstreams]]
name = "app"
url = "{upstream}"

[[routes]]
name = "api"
path_prefix = "/a"
upstream = "app"
limit = { algorithm = "fixed", value = 40 }

[[routes]]
name = "full"
path_prefix = "/f"
upstream = "app"
limit = { algorithm = "fixed", value = 3 }
"#;

async fn tune(args: Vec<String>) -> (bool, String, String) {
    ops::floodwall_cli("tune", args).await
}

fn resource<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == name)
        .unwrap_or_else(|| panic!("no resource {name} in {doc}"))
}

fn cut_at(r: &serde_json::Value, limit: u64, key: &str) -> f64 {
    r["what_if"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["limit"] == limit)
        .unwrap_or_else(|| panic!("no what-if row for {limit} in {r}"))[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no {key} at {limit} in {r}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tune_reads_in_use_from_prometheus_and_cuts_the_incident() {
    let upstream = Upstream::start(Duration::from_millis(100)).await;
    let fw = start(config_from_toml(CONFIG, &upstream.uri())).await;
    let prom = ops::Prometheus::start(&[fw.admin_addr], &[]);
    prom.wait_for_targets(1).await;

    let a: &[(&str, &[(&str, &str)])] = &[("/a/x", &[])];
    let f: &[(&str, &[(&str, &str)])] = &[("/f/x", &[])];
    // Quiet: about 4 in use on api (40/s × 100 ms); full wants 6 and is
    // held at its 3.
    let (qa, qf) = tokio::join!(
        ops::open_loop(fw.proxy_addr, a, 40.0, Duration::from_secs(8)),
        ops::open_loop(fw.proxy_addr, f, 60.0, Duration::from_secs(8)),
    );
    assert_eq!(qa.count(503), 0, "api's quiet fits its limit: {qa:?}");
    assert!(qf.count(503) > 0, "full is held at its limit: {qf:?}");
    // The incident: about 16 in use on api (160/s).
    let from = ops::unix_now();
    let inc = ops::open_loop(fw.proxy_addr, a, 160.0, Duration::from_secs(5)).await;
    let to = ops::unix_now();
    assert_eq!(inc.count(200), inc.total(), "{inc:?}");
    ops::open_loop(fw.proxy_addr, a, 40.0, Duration::from_secs(3)).await;
    // Two more scrapes after the last request.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let base: Vec<String> = ["--prometheus", &prom.url(), "--since", "2m", "--step", "1s"]
        .map(String::from)
        .to_vec();
    let with = |extra: &[&str]| {
        let mut v = base.clone();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    // The incident's edges, widened by a scrape either side.
    let window = format!("{:.3}..{:.3}", from - 1.0, to + 1.5);
    let (ok, out, err) = tune(with(&["--incident", &window, "--json"])).await;
    assert!(ok, "floodwall tune failed: {err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(doc["prometheus"]["step_seconds"], 1.0, "{doc}");
    assert!(
        doc["prometheus"]["query"]
            .as_str()
            .unwrap()
            .contains("floodwall_wip_current"),
        "{doc}"
    );

    let api = resource(&doc, "api");
    println!("api: {api}");
    assert_eq!(api["basis"], "samples");
    assert_eq!(api["tickets"], 40, "the limit series was read: {api}");
    assert_eq!(api["no_acceptable_number"], false);
    let rec = api["recommended"].as_u64().unwrap();
    let max = api["max"].as_u64().unwrap();
    assert!(
        (3..=8).contains(&rec) && rec <= max && max <= 8,
        "the quiet baseline is about 4 in use: {api}"
    );
    assert!(
        api["baseline"].as_u64().unwrap() >= 8,
        "a reading a second since the series began (11 s of quiet): {api}"
    );
    assert!(api["incident"].as_u64().unwrap() >= 5, "{api}");
    // The recommendation cuts nothing of the baseline and at least half
    // of the incident's excess area (16 in use against at most 8).
    assert_eq!(cut_at(api, rec, "baseline_refused"), 0.0, "{api}");
    assert!(
        cut_at(api, rec, "incident_refused") >= 0.3,
        "the incident would have been cut: {api}"
    );

    let full = resource(&doc, "full");
    println!("full: {full}");
    assert_eq!(full["tickets"], 3, "{full}");
    assert_eq!(full["max"], 3, "{full}");
    assert_eq!(full["no_acceptable_number"], true, "{full}");

    // Without the incident window, the baseline holds the incident.
    let (ok, out, err) = tune(with(&["--json"])).await;
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let api = resource(&doc, "api");
    assert!(api["max"].as_u64().unwrap() >= 12, "{api}");
    assert!(api["incident"].is_null(), "{api}");

    // The table says the same.
    let (ok, table, err) = tune(with(&["--incident", &window])).await;
    assert!(ok, "{err}");
    println!("{table}");
    assert!(table.contains("## api: "), "{table}");
    assert!(table.contains("readings in the baseline"), "{table}");
    assert!(
        table.contains(
            "| limit | in-use area cut in the baseline | in-use area cut in the incident |"
        ),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "Recommended: `limit = {{ algorithm = \"fixed\", value = {rec} }}`"
        )),
        "{table}"
    );
    assert!(table.contains("No acceptable number"), "{table}");

    // A job that Prometheus does not scrape has no readings: a clear
    // failure, not an empty table.
    let (ok, _, err) = tune(with(&["--job", "not-floodwall"])).await;
    assert!(!ok && err.contains("no in-use readings"), "{err}");
    // Bad flags are refused with a message naming them, before any query.
    let (ok, _, err) = tune(vec!["--prometheus".into(), "https://x:1".into()]).await;
    assert!(!ok && err.contains("--prometheus"), "{err}");
    let month = [
        "--prometheus",
        &prom.url(),
        "--since",
        "30d",
        "--step",
        "1s",
    ]
    .map(String::from);
    let (ok, _, err) = tune(month.to_vec()).await;
    assert!(!ok && err.contains("11,000"), "{err}");
    let (ok, _, err) = tune(vec![]).await;
    assert!(!ok && err.contains("--events"), "neither source: {err}");
    drop(prom);
    fw.shutdown().await;
}
