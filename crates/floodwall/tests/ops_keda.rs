//! The KEDA ScaledObject of deploy/keda/, validated by `check-jsonschema`
//! (PyPI) against KEDA's own CRD schema, `deploy/keda/scaledobject.schema.json`
//! (the `openAPIV3Schema` of kedacore/keda's
//! `config/crd/bases/keda.sh_scaledobjects.yaml`, made strict; or the file
//! at `$FLOODWALL_KEDA_SCHEMA`), which refuses unknown keys such as a
//! misspelt `cooldownperiod` that Kubernetes would drop silently.
//!
//! `check-jsonschema` is installed with pip into a venv cached under cargo's
//! target dir (about 4 s the first time, nothing after). The query itself is
//! run against a real Prometheus in `ops_prometheus.rs`.

mod common;
mod ops;

use std::path::{Path, PathBuf};
use std::process::Command;

const CHECK_JSONSCHEMA: &str = "check-jsonschema==0.33.0";

fn schema() -> PathBuf {
    if let Some(p) = std::env::var_os("FLOODWALL_KEDA_SCHEMA") {
        return p.into();
    }
    let p = ops::repo_root().join("deploy/keda/scaledobject.schema.json");
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

/// The venv's bin dir, with check-jsonschema installed.
fn venv() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("check-jsonschema-venv");
    let bin = dir.join("bin");
    if bin.join("check-jsonschema").is_file() {
        return bin;
    }
    let (ok, out) = ops::run("python3", &["-m", "venv", &dir.display().to_string()]);
    assert!(ok, "python3 -m venv failed:\n{out}");
    let pip = bin.join("pip").display().to_string();
    let (ok, out) = ops::run(&pip, &["install", "-q", CHECK_JSONSCHEMA]);
    assert!(
        ok,
        "pip install {CHECK_JSONSCHEMA} failed (network?):\n{out}"
    );
    bin
}

fn validate(bin: &Path, file: &Path) -> (bool, String) {
    let out = Command::new(bin.join("check-jsonschema"))
        .arg("--schemafile")
        .arg(schema())
        .arg(file)
        .output()
        .expect("run check-jsonschema");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The YAML file as JSON, read by the YAML parser check-jsonschema itself
/// uses (ruamel.yaml, installed with it).
fn as_json(bin: &Path, file: &Path) -> serde_json::Value {
    let out = Command::new(bin.join("python"))
        .args([
            "-c",
            "import sys, json; from ruamel.yaml import YAML; \
             print(json.dumps(YAML(typ='safe').load(open(sys.argv[1]))))",
        ])
        .arg(file)
        .output()
        .expect("run the venv's python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_scaled_object_validates_against_the_keda_schema() {
    let bin = venv();
    let file = ops::scaled_object_path();
    let (ok, out) = validate(&bin, &file);
    assert!(ok, "check-jsonschema refused {}:\n{out}", file.display());

    // The validator is not a rubber stamp: a misspelt key, a number where
    // KEDA wants a string, and a wrong apiVersion are each refused.
    let text = std::fs::read_to_string(&file).unwrap();
    let dir = ops::temp_dir("keda");
    for (what, from, to) in [
        ("misspelt key", "cooldownPeriod: 300", "cooldownperiod: 300"),
        (
            "number for a string",
            r#"threshold: "0.75""#,
            "threshold: 0.75",
        ),
        (
            "apiVersion",
            "apiVersion: keda.sh/v1alpha1",
            "apiVersion: keda.sh/v1",
        ),
    ] {
        assert!(text.contains(from), "{from}");
        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, text.replacen(from, to, 1)).unwrap();
        let (ok, out) = validate(&bin, &bad);
        assert!(!ok, "check-jsonschema accepted a {what}:\n{out}");
    }

    // What the issue asks of it, read by a real YAML parser.
    let so = as_json(&bin, &file);
    let spec = &so["spec"];
    let trigger = &spec["triggers"][0];
    assert_eq!(trigger["type"], "prometheus");
    assert_eq!(trigger["metadata"]["threshold"], "0.75");
    assert_eq!(
        trigger["metadata"]["query"].as_str().unwrap().trim(),
        ops::keda_query(),
        "the Prometheus test runs the query the file holds"
    );
    assert!(spec["cooldownPeriod"].as_u64().unwrap() >= 120);
    let behavior = &spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"];
    let down = &behavior["scaleDown"];
    assert!(down["stabilizationWindowSeconds"].as_u64().unwrap() >= 120);
    assert_eq!(
        down["selectPolicy"], "Min",
        "scale down by the gentlest policy"
    );
    for p in down["policies"].as_array().unwrap() {
        assert!(p["periodSeconds"].as_u64().unwrap() >= 60, "{p}");
    }
    assert!(behavior["scaleUp"]["policies"].as_array().is_some());
    let _ = std::fs::remove_dir_all(dir);
}
