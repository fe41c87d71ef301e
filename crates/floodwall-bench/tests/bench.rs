//! `floodwall-bench run` end to end, shortened: the spike collapses the direct
//! run and not the gated one, the outputs are written, and `--target` works
//! against a server the bench did not start.

use floodwall_bench::backend;
use floodwall_bench::bench::{self, BenchOptions, Contender, ContenderKind, ScenarioName};
use floodwall_bench::BackendConfig;

fn contenders() -> Vec<Contender> {
    vec![
        Contender {
            name: "direct".into(),
            kind: ContenderKind::Direct,
        },
        Contender {
            name: "floodwall-fixed-5".into(),
            kind: ContenderKind::Floodwall { limit: 5 },
        },
    ]
}

/// 4 workers × 10 ms = 400 req/s: the same capacity as the default backend,
/// half the in-flight work, which a debug build handles comfortably.
fn small() -> BackendConfig {
    BackendConfig {
        workers: 4,
        service_time: std::time::Duration::from_millis(10),
        ..BackendConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spike_collapses_direct_but_not_floodwall_and_writes_outputs() {
    let opts = BenchOptions {
        scenario: ScenarioName::Spike,
        contenders: contenders(),
        external: None,
        capacity: None,
        backend: small(),
        backend_addr: None,
        scale: 0.2,
        progress: false,
    };
    let report = bench::run_bench(&opts).await.unwrap();
    let h = bench::report::headlines(&report);
    assert_eq!(h.len(), 2);
    assert!(
        h[0].goodput_percent < 50.0,
        "direct should collapse: {:?}",
        h[0]
    );
    assert!(
        h[1].goodput_percent > 70.0,
        "floodwall should hold: {:?}",
        h[1]
    );
    assert!(h[1].percent_rejected > 30.0, "{:?}", h[1]);
    assert!(h[1].percent_timed_out < 5.0, "{:?}", h[1]);
    // The gate's limit is sampled for the plot.
    assert!(report.runs[1].limit.iter().flatten().all(|l| *l == 5));
    assert!(report.runs[0].limit.iter().all(Option::is_none));

    let dir = std::env::temp_dir().join(format!("floodwall-bench-test-{}", std::process::id()));
    let paths = bench::report::write_all(&report, &dir).unwrap();
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["spike.json", "spike.md", "spike.svg", "spike.png"]);
    let md = std::fs::read_to_string(dir.join("spike.md")).unwrap();
    assert!(
        md.contains("| direct |") && md.contains("| floodwall-fixed-5 |"),
        "{md}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("spike.json")).unwrap()).unwrap();
    assert_eq!(json["report"]["runs"].as_array().unwrap().len(), 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_url_loads_a_server_the_bench_did_not_start() {
    let outside = backend::start(small()).await.unwrap();
    let opts = BenchOptions {
        scenario: ScenarioName::Spike,
        contenders: contenders(),
        external: Some(format!("http://{}", outside.addr).parse().unwrap()),
        capacity: Some(400.0),
        backend: BackendConfig::default(),
        backend_addr: None,
        scale: 0.1,
        progress: false,
    };
    let report = bench::run_bench(&opts).await.unwrap();
    assert!(report.external.is_some());
    assert!(
        report.runs.iter().all(|r| r.backend.is_none()),
        "no built-in backend"
    );
    let completed = outside.stats().completed;
    assert!(
        completed > 100,
        "the outside server did the work: {completed}"
    );
    let h = bench::report::headlines(&report);
    assert!(
        h[1].percent_rejected > 0.0,
        "floodwall in front of it shed load: {:?}",
        h[1]
    );
    outside.shutdown().await;
}
