//! `floodwall-bench run` end to end, shortened: the spike collapses the direct
//! run and not the gated one, the outputs are written, and `--target` works
//! against a server the bench did not start; cold-start and fast-upstream
//! report what a fresh gate and a gate that should never bind cost.

use floodwall_bench::backend;
use floodwall_bench::bench::{self, BenchOptions, Contender, ContenderKind, ScenarioName};
use floodwall_bench::BackendConfig;

/// The tests of this file load a backend for real and some assert what a
/// gate achieves under overload; run side by side on two cores in a debug
/// build they starve each other, so they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn contenders() -> Vec<Contender> {
    vec![
        Contender {
            name: "direct".into(),
            kind: ContenderKind::Direct,
        },
        Contender {
            name: "floodwall-fixed-5".into(),
            kind: ContenderKind::Floodwall {
                limit: 5,
                retry_budget: false,
            },
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
    let _turn = SERIAL.lock().await;
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
    let _turn = SERIAL.lock().await;
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

/// Cold start: a steady 0.8x from the first second, each floodwall started
/// fresh at that instant. The report carries each first second's served
/// share, the whole run's, and how the gate was started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_reports_served_fractions_of_a_fresh_gate() {
    let _turn = SERIAL.lock().await;
    let opts = BenchOptions {
        scenario: ScenarioName::ColdStart,
        contenders: vec![
            Contender {
                name: "direct".into(),
                kind: ContenderKind::Direct,
            },
            Contender::floodwall_default(),
        ],
        external: None,
        capacity: None,
        backend: small(),
        backend_addr: None,
        // 30 s × 0.15: a 5-second run (4.5 s of arrivals).
        scale: 0.15,
        progress: false,
    };
    let report = bench::run_bench(&opts).await.unwrap();
    assert_eq!(
        report.scenario.window,
        0..5,
        "the window is the run's start"
    );
    let h = bench::report::headlines(&report);
    assert_eq!(h.len(), 2);
    let unit = 0.0..=1.0;
    for h in &h {
        assert_eq!(h.served_by_second.len(), 5, "{h:?}");
        for f in &h.served_by_second {
            assert!(
                unit.contains(&f.expect("every second has arrivals")),
                "{h:?}"
            );
        }
        assert!(unit.contains(&h.served_in_window.unwrap()), "{h:?}");
        assert!(unit.contains(&h.served_whole_run.unwrap()), "{h:?}");
        assert!(h.extra.iter().any(|(k, _)| k == "worst second"), "{h:?}");
    }

    let direct = &report.runs[0];
    assert_eq!(direct.gate_started_before_ms, None);
    assert_eq!(direct.limit_at_start, None);
    // The default floodwall is told nothing and starts fresh: started
    // right before the first arrival, nothing sent through it before.
    let fresh = &report.runs[1];
    assert!(
        matches!(fresh.contender.kind, ContenderKind::Default { .. }),
        "{:?}",
        fresh.contender
    );
    let age = fresh.gate_started_before_ms.unwrap();
    assert!((0.0..1000.0).contains(&age), "started {age} ms before");
    let start = fresh.limit_at_start.unwrap();
    assert!(start >= 1, "{start}");
    assert_eq!(fresh.limit_trace.len(), 50, "every 100 ms for 5 s");
    assert_eq!(fresh.limit_trace[0], Some(start), "no request before t0");
    assert_eq!(fresh.limit.len(), 5);

    let md = bench::report::markdown(&report);
    assert!(md.contains("| s 0 |") && md.contains("| s 4 |"), "{md}");
    assert!(md.contains("before the first arrival"), "{md}");
}

/// fast-upstream: a backend that answers at once, closed loop, through a
/// fixed limit that never binds, the default floodwall and one that does
/// bind (so refusals are seen to be counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_upstream_counts_refusals_and_samples_the_limit() {
    let _turn = SERIAL.lock().await;
    use bench::fast_upstream::{self, FastUpstreamOptions, CONNECTIONS, FIXED_LIMIT};
    let fixed = format!("floodwall-fixed-{FIXED_LIMIT}");
    let opts = FastUpstreamOptions {
        contenders: vec![
            Contender {
                name: "direct".into(),
                kind: ContenderKind::Direct,
            },
            Contender {
                name: fixed.clone(),
                kind: ContenderKind::Floodwall {
                    limit: FIXED_LIMIT,
                    retry_budget: false,
                },
            },
            Contender::floodwall_default(),
            Contender {
                name: "floodwall-fixed-2".into(),
                kind: ContenderKind::Floodwall {
                    limit: 2,
                    retry_budget: false,
                },
            },
        ],
        backend_addr: None,
        concurrency: CONNECTIONS,
        round: std::time::Duration::from_secs(1),
        rounds: 2,
    };
    let report = fast_upstream::run_fast_upstream(&opts).await.unwrap();
    assert_eq!(report.rows.len(), 4);
    for row in &report.rows {
        assert_eq!(row.rounds.len(), 2, "{}", row.contender.name);
        assert!(row.requests > 0 && row.rps.median > 0.0, "{row:?}");
        assert!((0.0..=100.0).contains(&row.percent_refused), "{row:?}");
        assert!(row.rps.min <= row.rps.median && row.rps.median <= row.rps.max);
        assert_eq!(row.errors, 0, "{row:?}");
    }
    let direct = report.row("direct").unwrap();
    assert_eq!(direct.refused, 0);
    assert_eq!(direct.limit, None);
    let never_binds = report.fixed().unwrap();
    assert_eq!(never_binds.contender.name, fixed);
    assert_eq!(
        never_binds.refused, 0,
        "a limit of 1000 never binds 64 connections"
    );
    let l = never_binds.limit.unwrap();
    assert_eq!((l.min, l.median, l.max), (1000.0, 1000.0, 1000.0));
    let default = report.row("floodwall-default").unwrap();
    let l = default.limit.expect("the adaptive limit is sampled");
    assert!(
        1.0 <= l.min && l.min <= l.median && l.median <= l.max,
        "{l:?}"
    );
    assert_eq!(default.rounds[0].limit_trace.len(), 10, "every 100 ms");
    let binds = report.row("floodwall-fixed-2").unwrap();
    assert!(binds.refused > 0, "{binds:?}");
    assert!(binds.percent_refused > 50.0, "2 of 64 admitted: {binds:?}");

    let md = fast_upstream::markdown(&report);
    assert!(md.contains(&format!("vs {fixed}")), "{md}");
    assert!(md.contains("| floodwall-default |"), "{md}");
    let dir = std::env::temp_dir().join(format!("floodwall-fast-test-{}", std::process::id()));
    let paths = fast_upstream::write_all(&report, &dir).unwrap();
    assert_eq!(paths.len(), 4);
    assert!(dir.join("fast-upstream.png").exists());
    let _ = std::fs::remove_dir_all(dir);
}
