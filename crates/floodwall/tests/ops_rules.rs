//! The Prometheus rules of deploy/prometheus, checked by the tools they are
//! written for: `promtool check rules`, `promtool test rules` (whose unit
//! tests must fire and hold every alert), and a real Prometheus loading
//! them, whose parsed queries must name only metrics that docs/metrics.md
//! documents and a real floodwall exposes.

mod common;
mod ops;

use common::{config_from_toml, metrics_text, start, Upstream};
use ops::{documented_metrics, exposed_metrics, family_of, metric_names, rule_files, run};
use std::collections::BTreeSet;
use std::time::Duration;

fn paths(files: &[std::path::PathBuf]) -> Vec<String> {
    files.iter().map(|p| p.display().to_string()).collect()
}

#[test]
fn promtool_checks_the_rules() {
    let files = paths(&rule_files());
    let mut args = vec!["check", "rules"];
    args.extend(files.iter().map(String::as_str));
    let (ok, out) = run("promtool", &args);
    assert!(ok, "promtool check rules failed:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The alert names of the rule files, from their `- alert:` lines.
fn alert_names() -> Vec<String> {
    rule_files()
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter_map(|l| l.trim().strip_prefix("- alert:"))
                .map(|n| n.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn promtool_unit_tests_fire_and_hold_every_alert() {
    let test = ops::repo_root().join("deploy/prometheus/tests/floodwall_test.yml");
    let (ok, out) = run("promtool", &["test", "rules", &test.display().to_string()]);
    assert!(ok, "promtool test rules failed:\n{out}");

    // Every alert has a case where it fires (a non-empty exp_alerts) and one
    // where it does not (exp_alerts: []).
    let text = std::fs::read_to_string(&test).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let alerts = alert_names();
    assert_eq!(alerts.len(), 7, "{alerts:?}");
    for alert in &alerts {
        let (mut fires, mut holds) = (false, false);
        for (i, l) in lines.iter().enumerate() {
            if *l != format!("alertname: {alert}") {
                continue;
            }
            match lines.get(i + 1) {
                Some(&"exp_alerts: []") => holds = true,
                Some(&"exp_alerts:") => fires = true,
                other => panic!("{alert}: unexpected line after alertname: {other:?}"),
            }
        }
        assert!(fires, "no promtool test where {alert} fires");
        assert!(holds, "no promtool test where {alert} does not fire");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_a_rule_names_is_documented_and_exposed() {
    let upstream = Upstream::start(Duration::from_millis(5)).await;
    let fw = start(config_from_toml(&ops::everything_toml(), &upstream.uri())).await;
    // Let the memory probe take its first reading: its constraint exists only
    // while it constrains.
    common::wait_until(
        Duration::from_secs(10),
        "the memory probe constrains",
        || async {
            metrics_text(fw.admin_addr)
                .await
                .contains("floodwall_probe_constraint{")
        },
    )
    .await;
    let prom = ops::Prometheus::start(&[fw.admin_addr], &rule_files());
    let rules = {
        let mut r = Vec::new();
        for _ in 0..100 {
            r = prom.rules().await;
            if !r.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        r
    };
    let recorded: BTreeSet<String> = rules
        .iter()
        .filter(|(kind, _, _)| kind == "recording")
        .map(|(_, name, _)| name.clone())
        .collect();
    let alerts: Vec<&str> = rules
        .iter()
        .filter(|(kind, _, _)| kind == "alerting")
        .map(|(_, name, _)| name.as_str())
        .collect();
    assert_eq!(alerts, alert_names(), "Prometheus loaded every alert");
    assert!(
        recorded.contains("floodwall:wip_utilization"),
        "{recorded:?}"
    );
    assert!(
        recorded.contains("floodwall:effective_load"),
        "{recorded:?}"
    );

    let documented = documented_metrics();
    let exposed = exposed_metrics(&metrics_text(fw.admin_addr).await);
    let mut checked = BTreeSet::new();
    for (_, rule, query) in &rules {
        let names = metric_names(query);
        assert!(!names.is_empty(), "{rule}: no metric found in {query}");
        for name in names {
            if name.contains(':') {
                assert!(
                    recorded.contains(&name),
                    "{rule} reads {name}, which no recording rule defines"
                );
                continue;
            }
            assert!(
                name.starts_with("floodwall_"),
                "{rule} reads {name}, not a floodwall metric"
            );
            let family = family_of(&name).to_owned();
            assert!(
                documented.contains(&family),
                "{rule} reads {name}: {family} is not in docs/metrics.md"
            );
            assert!(
                exposed.contains(&family),
                "{rule} reads {name}: a real floodwall's /metrics has no {family}\n{exposed:?}"
            );
            checked.insert(name);
        }
    }
    // The extraction found the metrics the alerts are about.
    for name in [
        "floodwall_wip_current",
        "floodwall_limit",
        "floodwall_probe_constraint",
        "floodwall_limit_algorithm",
        "floodwall_store_up",
        "floodwall_probe_errors_total",
        "floodwall_limit_min",
        "floodwall_effective_load",
        "floodwall_request_duration_seconds_bucket",
    ] {
        assert!(
            checked.contains(name),
            "{name} not found in any rule: {checked:?}"
        );
    }
    println!(
        "checked {} metric names of {} rules",
        checked.len(),
        rules.len()
    );
    drop(prom);
    fw.shutdown().await;
}

#[test]
fn metric_names_are_extracted_from_promql() {
    let q = r#"sum by (job, route) (rate(floodwall_rejections_total{reason=~"a|b", class="x"}[5m]))
        / on (job) group_left () max without (le) (floodwall:wip_utilization offset 1m) > bool 0.95
        and histogram_quantile(0.99, foo_bucket{le="+Inf"}) or vector(1)"#;
    let names: Vec<String> = metric_names(q).into_iter().collect();
    assert_eq!(
        names,
        [
            "floodwall:wip_utilization",
            "floodwall_rejections_total",
            "foo_bucket"
        ]
    );
}
