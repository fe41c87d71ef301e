//! The command line: `floodwall check` on good and bad files, and
//! `floodwall serve` refusing a bad file before it binds anything.

mod common;

use common::{binary_path, temp_file};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A valid file that each bad case changes one thing of.
const GOOD: &str = r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[[upstreams]]
name = "app"
url = "http://127.0.0.1:3000"

[[routes]]
name = "all"
upstream = "app"
"#;

/// Runs `floodwall ARGS`, killing it if it has not exited within 10 s (a
/// `serve` that wrongly starts would otherwise hang the test).
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(binary_path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn floodwall");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "floodwall {args:?} still running after 10 s; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Writes `toml` to a temp file and runs `floodwall check` on it.
fn check(tag: &str, toml: &str) -> Output {
    let path = temp_file(tag, toml);
    let out = run(&["check", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(path);
    out
}

/// Asserts `out` failed and its stderr mentions every one of `parts`.
#[track_caller]
fn assert_refused(out: &Output, parts: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr:\n{stderr}");
    for part in parts {
        assert!(
            stderr.contains(part),
            "expected {part:?} in stderr:\n{stderr}"
        );
    }
}

#[test]
fn check_accepts_a_good_file() {
    let out = check("good", GOOD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn check_names_an_unknown_key_with_its_line() {
    let bad = GOOD.replace("listen =", "lisen =");
    let out = check("unknown-key", &bad);
    assert_refused(&out, &["lisen", "line"]);
    // `lisen` is on line 3 of the file.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 3"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_names_a_syntax_error_with_line_and_column() {
    let bad = GOOD.replace("name = \"all\"", "name = \"all");
    let out = check("syntax", &bad);
    assert_refused(&out, &["line", "column"]);
}

#[test]
fn check_names_a_zero_limit() {
    let bad = format!("{GOOD}\n[routes.limit]\nalgorithm = \"fixed\"\nvalue = 0\n");
    let out = check("zero-limit", &bad);
    assert_refused(&out, &["routes[0].limit.value"]);
}

#[test]
fn check_names_a_route_to_a_missing_upstream() {
    let bad = GOOD.replace("upstream = \"app\"", "upstream = \"nope\"");
    let out = check("missing-upstream", &bad);
    assert_refused(&out, &["routes[0].upstream", "nope"]);
}

#[test]
fn check_accepts_every_example() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = run(&["check", path.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "examples/ has the shipped configs");
}

#[test]
fn check_of_a_missing_file_fails() {
    let out = run(&["check", "/nonexistent/floodwall.toml"]);
    assert_refused(&out, &["/nonexistent/floodwall.toml"]);
}

#[test]
fn serve_refuses_a_bad_file_naming_the_key() {
    let bad = format!("{GOOD}\n[routes.limit]\nalgorithm = \"fixed\"\nvalue = 0\n");
    let path = temp_file("serve-bad", &bad);
    let out = run(&["serve", "--config", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(path);
    assert_refused(&out, &["routes[0].limit.value"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "a bad config never gets as far as listening"
    );

    let bad = GOOD.replace("listen =", "lisen =");
    let path = temp_file("serve-unknown", &bad);
    let out = run(&["serve", "--config", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(path);
    assert_refused(&out, &["lisen", "line"]);
}

#[test]
fn serve_refuses_a_bad_flag() {
    let out = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--upstream",
        "http://127.0.0.1:3000",
        "--limit",
        "0",
    ]);
    assert_refused(&out, &["--limit"]);
}
