//! A throwaway redis-server per test, on a free loopback port, with no
//! persistence (`--save '' --appendonly no`). Killed when dropped.
//!
//! Needs `redis-server` and `redis-cli` on the PATH: run
//! `scripts/install-deps.sh` (package redis-server).

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) redis-server.
pub struct Redis {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn need(bin: &str) {
    let ok = Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{bin} not found: run scripts/install-deps.sh (Debian package redis-server)"
    );
}

impl Redis {
    /// Starts a redis-server on a free port and waits until it answers.
    pub fn start() -> Redis {
        need("redis-server");
        need("redis-cli");
        for _ in 0..5 {
            let mut r = Redis {
                port: free_port(),
                child: None,
            };
            if r.spawn() {
                return r;
            }
        }
        panic!("could not start redis-server on a free port");
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.try_cli(&["PING"]).as_deref() == Some("PONG") {
                return true;
            }
            if let Some(c) = self.child.as_mut() {
                if c.try_wait().ok().flatten().is_some() {
                    self.child = None;
                    return false;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        false
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to clients) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "redis-server did not restart on {}",
            self.port
        );
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Runs `redis-cli -p PORT ARGS` and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }

    /// A field of `INFO section`, e.g. `info("memory", "used_memory")`.
    pub fn info(&self, section: &str, field: &str) -> Option<String> {
        self.cli(&["INFO", section]).lines().find_map(|l| {
            l.strip_prefix(field)
                .and_then(|r| r.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        })
    }

    /// `INFO commandstats` as (command, calls), e.g. ("evalsha", 12).
    /// Commands run inside Lua scripts are counted under their own names.
    pub fn commandstats(&self) -> Vec<(String, u64)> {
        self.cli(&["INFO", "commandstats"])
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))?
                    .parse()
                    .ok()?;
                Some((name.to_owned(), calls))
            })
            .collect()
    }

    /// Round trips floodwall made: script calls (`EVALSHA`, `EVAL`,
    /// `SCRIPT LOAD`), which is all it ever sends.
    pub fn script_calls(&self) -> u64 {
        self.commandstats()
            .iter()
            .filter(|(n, _)| n == "evalsha" || n == "eval" || n.starts_with("script"))
            .map(|(_, c)| c)
            .sum()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
