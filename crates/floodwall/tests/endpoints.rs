//! Upstreams of many endpoints against real upstream processes on loopback
//! (`tests/endpoints/upstream.py`, one process per instance, free ports):
//! a `kill -9`'d instance is ejected and its traffic moves, then it
//! rejoins; a slow instance gets less work with least in-flight; and
//! sharding by key over a membership change (hot reload) under load never
//! has a key in flight on two instances at once.

mod common;

use bytes::Bytes;
use common::*;
use floodwall::config::Config;
use http::Method;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One upstream instance: a real process.
struct Instance {
    child: Child,
    host: &'static str,
    port: u16,
}

impl Instance {
    /// Starts `upstream.py` on `port` (0: a free one), each request taking
    /// `delay_ms`.
    fn start(port: u16, delay_ms: u64) -> Instance {
        Self::start_on("127.0.0.1", port, delay_ms).expect("upstream.py starts")
    }

    /// Starts `upstream.py` on `host:port`; `None` if it cannot bind there.
    fn start_on(host: &'static str, port: u16, delay_ms: u64) -> Option<Instance> {
        Self::start_with(host, port, delay_ms, 0)
    }

    /// Starts `upstream.py` serving at most `workers` requests at once
    /// (0: no cap), the rest waiting: a capacity of `workers / delay`.
    fn start_with(
        host: &'static str,
        port: u16,
        delay_ms: u64,
        workers: usize,
    ) -> Option<Instance> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/endpoints/upstream.py");
        // A restart on the same port may meet it still held for a moment.
        for _ in 0..20 {
            let mut child = Command::new("python3")
                .args([
                    script,
                    &port.to_string(),
                    &delay_ms.to_string(),
                    host,
                    &workers.to_string(),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("python3 runs");
            let mut line = String::new();
            let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
            if let Some(p) = line.trim().strip_prefix("listening ") {
                return Some(Instance {
                    child,
                    host,
                    port: p.parse().unwrap(),
                });
            }
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(250));
        }
        None
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn name(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `kill -9`.
    fn kill9(&mut self) {
        let status = Command::new("kill")
            .args(["-9", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let _ = self.child.wait();
    }

    /// Every request it served: (key, start ns, end ns, ring version).
    async fn records(&self) -> Vec<(String, u64, u64, String)> {
        let addr: SocketAddr = format!("{}:{}", self.host, self.port).parse().unwrap();
        let reply = Client::http1().get(addr, "/__records", &[]).await;
        String::from_utf8(reply.body.to_vec())
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["key"].as_str().unwrap_or("").to_owned(),
                    v["start"].as_u64().unwrap(),
                    v["end"].as_u64().unwrap(),
                    v["version"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(instances: &[&Instance], upstream_keys: &str) -> String {
    let endpoints: Vec<String> = instances
        .iter()
        .map(|i| format!("\"{}\"", i.url()))
        .collect();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[[upstreams]]
name = "svc"
endpoints = [{}]
{upstream_keys}

[[routes]]
name = "all"
path_prefix = "/"
upstream = "svc"
limit = {{ algorithm = "fixed", value = 64 }}
queue = {{ capacity = 1000, timeout = "20s" }}
"#,
        endpoints.join(", ")
    )
}

fn parse(text: &str) -> Config {
    Config::from_toml_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The route's `endpoints` object on /status.
async fn membership(admin: SocketAddr) -> Value {
    status(admin).await["routes"][0]["endpoints"].clone()
}

fn member<'a>(m: &'a Value, name: &str) -> Option<&'a Value> {
    m["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == name)
}

/// Closed-loop clients, each sending `GET path` with `X-Tenant-Id` from
/// `key(i)` until stopped; every answer kept as (finished at, status).
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    answers: Arc<Mutex<Vec<(Instant, u16)>>>,
}

impl Load {
    fn start(
        addr: SocketAddr,
        path: &'static str,
        clients: usize,
        key: impl Fn(usize) -> String + Send + Sync + 'static,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let key = Arc::new(key);
        let tasks = (0..clients)
            .map(|c| {
                let (stop, answers, key) = (stop.clone(), answers.clone(), key.clone());
                tokio::spawn(async move {
                    let client = Client::http1();
                    let mut i = c;
                    while !stop.load(Ordering::Relaxed) {
                        let k = key(i);
                        i += clients;
                        let req = request(
                            Method::GET,
                            addr,
                            path,
                            &[("x-tenant-id", &k)],
                            Bytes::new(),
                        );
                        let status = match client.try_send(req).await {
                            Ok(r) => r.status.as_u16(),
                            Err(_) => 0,
                        };
                        answers.lock().unwrap().push((Instant::now(), status));
                    }
                })
            })
            .collect();
        Load {
            stop,
            tasks,
            answers,
        }
    }

    async fn stop(self) -> Vec<(Instant, u16)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let mut a = self.answers.lock().unwrap().clone();
        a.sort_by_key(|(t, _)| *t);
        a
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_endpoint_is_ejected_its_traffic_moves_and_it_rejoins_after_restart() {
    let mut instances: Vec<Instance> = (0..4).map(|_| Instance::start(0, 10)).collect();
    let refs: Vec<&Instance> = instances.iter().collect();
    let text = config_text(&refs, "base_ejection_time = \"2s\"");
    let fw = start(parse(&text)).await;
    let load = Load::start(fw.proxy_addr, "/", 8, |i| format!("k{i}"));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let victim = instances[2].name();
    let port = instances[2].port;
    let killed_at = Instant::now();
    instances[2].kill9();
    wait_until(
        Duration::from_secs(10),
        "the killed endpoint is ejected",
        || async { member(&membership(fw.admin_addr).await, &victim).unwrap()["ejected"] == true },
    )
    .await;
    let ejected_after = killed_at.elapsed();
    let before = member(&membership(fw.admin_addr).await, &victim).unwrap()["requests"]
        .as_u64()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = membership(fw.admin_addr).await;
    let during = member(&m, &victim).unwrap()["requests"].as_u64().unwrap();
    // Ejected for 2 s: while out, it is sent nothing.
    assert_eq!(during, before, "an ejected endpoint got requests: {m}");

    // Restarted on the same port, it rejoins when its ejection ends (at
    // most 2 s, or 4 s if it failed once more on rejoining).
    instances[2] = Instance::start(port, 10);
    wait_until(
        Duration::from_secs(15),
        "the restarted endpoint serves again",
        || async {
            let m = membership(fw.admin_addr).await;
            let e = member(&m, &victim).unwrap();
            e["ejected"] == false && e["requests"].as_u64().unwrap() > during + 20
        },
    )
    .await;
    let served_after_restart = instances[2].records().await.len();
    let answers = load.stop().await;

    let bad: Vec<_> = answers.iter().filter(|(_, s)| *s != 200).collect();
    let mut run = 0;
    let mut longest = 0;
    for (_, s) in &answers {
        run = if *s == 502 { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    eprintln!(
        "kill -9: {} answers, {} not 200 ({:?}), longest run of 502s {longest}, ejected {:?} after the kill, {} served by the restarted instance",
        answers.len(),
        bad.len(),
        bad.iter().fold(BTreeMap::<u16, usize>::new(), |mut m, (_, s)| {
            *m.entry(*s).or_default() += 1;
            m
        }),
        ejected_after,
        served_after_restart
    );
    assert!(served_after_restart > 0);
    // What it had in flight, plus the failures that eject it (3 in a row,
    // and the clients' requests already on their way): bounded by the
    // clients, never a long outage.
    assert!(longest <= 8, "a run of {longest} 502s");
    assert!(bad.len() <= 24, "{} failed requests", bad.len());
    assert!(bad.iter().all(|(_, s)| *s == 502), "only 502s: {bad:?}");
    fw.shutdown().await;
}

/// Requests each endpoint served in `run` seconds of `clients` closed-loop
/// clients, over instances of 20 ms with one of 100 ms, with `balance`.
async fn shares(balance: &str, clients: usize, run: Duration) -> (Vec<u64>, f64) {
    let instances: Vec<Instance> = [20, 20, 20, 100]
        .into_iter()
        .map(|d| Instance::start(0, d))
        .collect();
    let refs: Vec<&Instance> = instances.iter().collect();
    let fw = start(parse(&config_text(
        &refs,
        &format!("balance = \"{balance}\""),
    )))
    .await;
    let load = Load::start(fw.proxy_addr, "/", clients, |i| format!("k{i}"));
    tokio::time::sleep(run).await;
    let answers = load.stop().await;
    let ok = answers.iter().filter(|(_, s)| *s == 200).count();
    let m = membership(fw.admin_addr).await;
    let served = instances
        .iter()
        .map(|i| member(&m, &i.name()).unwrap()["requests"].as_u64().unwrap())
        .collect();
    fw.shutdown().await;
    (served, ok as f64 / run.as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_gets_less_work_with_least_inflight() {
    let run = Duration::from_secs(6);
    let (least, least_rate) = shares("least_inflight", 12, run).await;
    let (rr, rr_rate) = shares("round_robin", 12, run).await;
    let share = |v: &[u64]| v[3] as f64 / v.iter().sum::<u64>() as f64;
    eprintln!(
        "4 endpoints, the 4th 5x slower, 12 clients, {run:?}: least_inflight served {least:?} \
         (slow share {:.3}, {least_rate:.0} ok/s); round_robin served {rr:?} (slow share {:.3}, \
         {rr_rate:.0} ok/s)",
        share(&least),
        share(&rr)
    );
    // Round robin gives the slow one a quarter; least in-flight gives it
    // far less (its in-flight count stays higher), and serves more.
    assert!((0.2..=0.3).contains(&share(&rr)), "round robin: {rr:?}");
    assert!(share(&least) < 0.15, "least_inflight: {least:?}");
    assert!(least_rate > rr_rate, "{least_rate} ok/s against {rr_rate}");
}

/// The p99 of `floodwall_request_duration_seconds` over every route and
/// class, in ms, from a scrape: the upper bound of the bucket where 99 %
/// of the count is reached.
fn floodwall_p99_ms(scrape: &str) -> f64 {
    let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("floodwall_request_duration_seconds_bucket{") else {
            continue;
        };
        let (labels, value) = rest.rsplit_once("} ").unwrap();
        let le = labels
            .split(',')
            .find_map(|l| l.strip_prefix("le=\""))
            .unwrap()
            .trim_end_matches('"');
        let le = if le == "+Inf" {
            u64::MAX
        } else {
            (le.parse::<f64>().unwrap() * 1e6) as u64
        };
        *buckets.entry(le).or_default() += value.parse::<f64>().unwrap();
    }
    let total = buckets.values().copied().fold(0.0, f64::max);
    buckets
        .iter()
        .find(|(_, n)| **n >= 0.99 * total)
        .map_or(f64::NAN, |(le, _)| *le as f64 / 1e3)
}

/// One run over three instances of 4 workers × 50 ms (80 req/s each) and
/// one 5x slower (4 × 250 ms, 16 req/s), with `balance`, behind the
/// default adaptive route limit (`floodwall serve`'s), 32 closed-loop
/// clients for `run`: (requests each served, ok/s, p99 bound in ms).
async fn slow_endpoint_run(balance: &str, run: Duration) -> (Vec<u64>, f64, f64) {
    let instances: Vec<Instance> = [50, 50, 50, 250]
        .into_iter()
        .map(|d| Instance::start_with("127.0.0.1", 0, d, 4).expect("upstream.py starts"))
        .collect();
    let refs: Vec<&Instance> = instances.iter().collect();
    let text = config_text(&refs, &format!("balance = \"{balance}\""))
        .replace("limit = { algorithm = \"fixed\", value = 64 }\n", "")
        .replace("queue = { capacity = 1000, timeout = \"20s\" }\n", "");
    let fw = start(parse(&text)).await;
    let load = Load::start(fw.proxy_addr, "/", 32, |i| format!("k{i}"));
    tokio::time::sleep(run).await;
    let m = membership(fw.admin_addr).await;
    let answers = load.stop().await;
    let rate = answers.iter().filter(|(_, s)| *s == 200).count() as f64 / run.as_secs_f64();
    let served: Vec<u64> = instances
        .iter()
        .map(|i| member(&m, &i.name()).unwrap()["requests"].as_u64().unwrap())
        .collect();
    let p99 = floodwall_p99_ms(&metrics_text(fw.admin_addr).await);
    fw.shutdown().await;
    (served, rate, p99)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_of_finite_capacity_gets_its_share_and_costs_the_route_nothing() {
    let run = Duration::from_secs(8);
    let (served, rate, p99) = slow_endpoint_run("least_inflight", run).await;
    let share = served[3] as f64 / served.iter().sum::<u64>() as f64;
    eprintln!(
        "3 endpoints of 80 req/s and one of 16, 32 clients, {run:?}: served {served:?} \
         (slow share {share:.3}), {rate:.0} ok/s, p99 at most {p99:.0} ms"
    );
    // The healthy three can do 240 a second: the route keeps at least 0.9
    // of that, and the slow one gets about its capacity's share (16 of
    // 256), not a quarter.
    assert!(rate >= 0.9 * 240.0, "{rate} ok/s");
    assert!(share < 0.12, "slow share {served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharding_over_membership_changes_never_puts_a_key_on_two_instances() {
    let instances: Vec<Instance> = (0..5).map(|_| Instance::start(0, 150)).collect();
    let keys = "balance = \"hash\"\nhash_on = \"header:X-Tenant-Id\"\ndrain_timeout = \"3s\"";
    let four: Vec<&Instance> = instances[..4].iter().collect();
    let five: Vec<&Instance> = instances.iter().collect();
    let without_first: Vec<&Instance> = instances[1..].iter().collect();
    let text = Arc::new(Mutex::new(config_text(&four, keys)));
    let source = text.clone();
    let load_fn: Box<floodwall::reload::LoadFn> =
        Box::new(move || Ok(parse(&source.lock().unwrap())));
    let first = parse(&text.lock().unwrap());
    let fw = floodwall::app::start_reloadable(first, Some(load_fn))
        .await
        .unwrap();
    // 40 clients over 30 keys of 150 ms: a key has 1.3 requests in flight
    // on average, so a moved key is nearly always still in flight on its
    // old owner when its next request comes (with drain_timeout = "1ms"
    // this test finds overlaps), yet idle often enough to drain well
    // within 3 s.
    let load = Load::start(fw.proxy_addr, "/", 40, |i| {
        format!("tenant-{}", (i.wrapping_mul(2_654_435_761)) % 30)
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    *text.lock().unwrap() = config_text(&five, keys);
    let changes = fw.reload().expect("reload to five endpoints");
    assert!(
        changes.iter().any(|c| c.contains("membership version 2")),
        "{changes:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    *text.lock().unwrap() = config_text(&without_first, keys);
    let changes = fw.reload().expect("reload without the first endpoint");
    assert!(
        changes.iter().any(|c| c.contains("membership version 3")),
        "{changes:?}"
    );
    assert_eq!(membership(fw.admin_addr).await["ring_version"], 3);
    // Past the drain, each key settles on its owner.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let answers = load.stop().await;
    assert!(
        answers.iter().all(|(_, s)| *s == 200),
        "every request answered 200"
    );

    let mut all = Vec::new();
    for (i, inst) in instances.iter().enumerate() {
        for (key, start, end, version) in inst.records().await {
            all.push((key, start, end, version, i));
        }
    }
    // No key in flight on two instances at once.
    let mut by_key: HashMap<&str, Vec<(u64, u64, usize, &str)>> = HashMap::new();
    for (k, s, e, v, i) in &all {
        by_key
            .entry(k.as_str())
            .or_default()
            .push((*s, *e, *i, v.as_str()));
    }
    // When each ring version was first seen by an upstream: no earlier
    // than the membership change that made it.
    let mut first_seen: HashMap<&str, u64> = HashMap::new();
    for (_, s, _, v, _) in &all {
        let t = first_seen.entry(v.as_str()).or_insert(*s);
        *t = (*t).min(*s);
    }
    const DRAIN_NS: u64 = 3_000_000_000;
    // When each membership change happened, at the latest: its version's
    // first request, less the little a request takes to get there.
    const SLACK_NS: u64 = 250_000_000;
    let mut changes: Vec<u64> = first_seen
        .iter()
        .filter(|(v, _)| **v != "1")
        .map(|(_, t)| t.saturating_sub(SLACK_NS))
        .collect();
    changes.sort();
    // A key is "busy without a break" over a run of its requests, on any
    // instance, with gaps under 50 ms bridged (the gateway holds a key a
    // little longer than the upstream sees it).
    const GAP_NS: u64 = 50_000_000;
    let run_start = |spans: &[(u64, u64, usize, &str)], at: u64| {
        let mut sorted: Vec<(u64, u64)> = spans.iter().map(|s| (s.0, s.1)).collect();
        sorted.sort();
        let (mut start, mut end) = sorted[0];
        for (s, e) in sorted {
            if s > end + GAP_NS {
                if s > at {
                    break;
                }
                start = s;
            }
            end = end.max(e);
        }
        start
    };
    let mut overlaps = Vec::new();
    let mut moved = 0;
    for (k, spans) in &by_key {
        for a in spans {
            for b in spans {
                // b started while a was in flight elsewhere. That is the
                // duplicate work the drain exists to prevent, unless the
                // key was moved anyway: busy without a break for a whole
                // drain_timeout since the first membership change during
                // that busy run (docs/config.md, `drain_timeout`), which a
                // loaded run with 1.3 requests in flight per key does
                // reach, across both changes.
                if a.2 != b.2 && a.0 <= b.0 && b.0 < a.1 {
                    let busy = run_start(spans, b.0);
                    let forced = changes
                        .iter()
                        .find(|c| **c + SLACK_NS >= busy)
                        .is_some_and(|c| b.0 >= c + DRAIN_NS);
                    if !forced {
                        overlaps.push((k.to_string(), *a, *b));
                    }
                }
            }
        }
        let mut on: Vec<usize> = spans.iter().map(|s| s.2).collect();
        on.sort();
        on.dedup();
        moved += usize::from(on.len() > 1);
    }
    assert!(
        overlaps.is_empty(),
        "{} overlaps, e.g. {:?}",
        overlaps.len(),
        &overlaps[..overlaps.len().min(3)]
    );
    // Every version seen, and only those: one per membership change.
    let mut versions: Vec<&str> = all.iter().map(|r| r.3.as_str()).collect();
    versions.sort();
    versions.dedup();
    assert_eq!(versions, ["1", "2", "3"]);
    // In the last second (well past the second change's drain), each key
    // is served by one instance, and never by the removed one.
    let last = all.iter().map(|r| r.2).max().unwrap();
    let mut late: HashMap<&str, Vec<usize>> = HashMap::new();
    for (k, s, _, v, i) in &all {
        if *s > last - 1_000_000_000 {
            assert_eq!(v, "3");
            assert_ne!(*i, 0, "the removed instance served {k} late");
            late.entry(k.as_str()).or_default().push(*i);
        }
    }
    for (k, on) in &late {
        assert!(on.iter().all(|i| *i == on[0]), "{k} late on {on:?}");
    }
    let served_by_new = all.iter().filter(|r| r.4 == 4).count();
    eprintln!(
        "sharding: {} requests over {} keys, {moved} keys served by more than one instance over the two changes, {served_by_new} by the added one, 0 overlaps",
        all.len(),
        by_key.len()
    );
    assert!(served_by_new > 0 && moved > 0);
    assert_eq!(membership(fw.admin_addr).await["keys_in_flight"], 0);
    fw.shutdown().await;
}

/// Three instances on one port of three loopback addresses, for a `dns`
/// upstream whose name resolves to some of them.
fn instances_on_one_port(hosts: [&'static str; 3]) -> Vec<Instance> {
    for _ in 0..10 {
        let first = Instance::start_on(hosts[0], 0, 5).expect("upstream.py starts");
        let port = first.port;
        let rest: Vec<Instance> = hosts[1..]
            .iter()
            .filter_map(|h| Instance::start_on(h, port, 5))
            .collect();
        if rest.len() == 2 {
            return std::iter::once(first).chain(rest).collect();
        }
    }
    panic!("no port free on all of {hosts:?}");
}

/// Sends `n` requests through the gateway; every one must answer 200.
async fn send(proxy: SocketAddr, n: usize) {
    for _ in 0..n {
        let reply = Client::http1().get(proxy, "/", &[]).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }
}

/// A `dns` upstream follows its name's real answer, through the system's
/// resolver: floodwall runs in a mount namespace of its own (`unshare -m`)
/// whose /etc/hosts is a file this test rewrites in place. A changed
/// answer is a membership change (a new ring version; the dropped address
/// gets no more requests, the new one gets some); a name that stops
/// resolving keeps the last membership, and requests go on answering 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_upstream_follows_its_names_answer() {
    let inst = instances_on_one_port(["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    let port = inst[0].port;
    let addr = |i: usize| format!("{}:{port}", inst[i].host);
    let name = "svc.floodwall.test";
    let hosts_file = |ips: &[usize]| {
        let mut text = String::from("127.0.0.1 localhost\n");
        for i in ips {
            text.push_str(&format!("{} {name}\n", inst[*i].host));
        }
        text
    };
    let hosts = temp_file("dns-hosts", &hosts_file(&[0, 1]));
    let config = temp_file(
        "dns",
        &format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[[upstreams]]
name = "svc"
dns = "{name}:{port}"
dns_refresh = "200ms"
balance = "round_robin"

[[routes]]
name = "all"
path_prefix = "/"
upstream = "svc"
"#
        ),
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-m",
        "sh",
        "-c",
        r#"mount --bind "$0" /etc/hosts && exec "$1" serve --config "$2""#,
        hosts.to_str().unwrap(),
        binary_path().to_str().unwrap(),
        config.to_str().unwrap(),
    ]);
    let fw = spawn_command(cmd);
    let served = |i: usize| {
        let inst = &inst[i];
        async move { inst.records().await.len() }
    };

    // Start-up waited for the first answer: both addresses are members.
    let m = membership(fw.admin).await;
    assert_eq!(m["dns"]["name"], format!("{name}:{port}"), "{m}");
    assert_eq!(m["dns"]["addresses"], serde_json::json!([addr(0), addr(1)]));
    assert!(member(&m, &addr(0)).is_some() && member(&m, &addr(1)).is_some());
    assert!(member(&m, &addr(2)).is_none(), "{m}");
    // Version 1 had no members; the first answer made version 2.
    assert_eq!(m["ring_version"], 2, "{m}");
    send(fw.proxy, 20).await;
    assert!(served(0).await >= 5 && served(1).await >= 5);
    assert_eq!(served(2).await, 0);

    // The answer changes to the second and third: a new membership.
    std::fs::write(&hosts, hosts_file(&[1, 2])).unwrap();
    let admin = fw.admin;
    wait_until(
        Duration::from_secs(5),
        "the new answer is the membership",
        || async move {
            let m = membership(admin).await;
            m["dns"]["addresses"] == serde_json::json!([addr(1), addr(2)])
                && m["ring_version"] == 3
                && member(&m, &addr(0)).is_none_or(|e| e["leaving"] == true)
        },
    )
    .await;
    let before = served(0).await;
    send(fw.proxy, 20).await;
    assert_eq!(served(0).await, before, "the dropped address got requests");
    assert!(served(2).await >= 5, "the new address got none");

    // The name stops resolving: the membership is kept. A resolution that
    // read the hosts file while the write above was rewriting it may
    // already have failed once (and been cleared by the next success), so
    // wait for a failure after this write, with its error still standing.
    let failed_before = membership(admin).await["dns"]["failures"]
        .as_u64()
        .unwrap_or(0);
    std::fs::write(&hosts, hosts_file(&[])).unwrap();
    wait_until(
        Duration::from_secs(5),
        "a failed resolution",
        || async move {
            let m = membership(admin).await;
            m["dns"]["failures"].as_u64() > Some(failed_before)
                && m["dns"]["last_error"].is_string()
        },
    )
    .await;
    let m = membership(fw.admin).await;
    assert!(m["dns"]["last_error"].is_string(), "{m}");
    assert_eq!(m["ring_version"], 3, "a failure is no membership change");
    assert!(member(&m, &addr(1)).is_some() && member(&m, &addr(2)).is_some());
    send(fw.proxy, 10).await;
    let scrape = metrics(fw.admin).await;
    let failed = sum(
        &scrape,
        "floodwall_upstream_dns_resolutions_total",
        &[("upstream", "svc"), ("result", "failed")],
    );
    let ok = sum(
        &scrape,
        "floodwall_upstream_dns_resolutions_total",
        &[("upstream", "svc"), ("result", "ok")],
    );
    assert!(failed >= 1.0 && ok >= 2.0, "failed {failed}, ok {ok}");
    assert!(
        fw.stderr().contains("dns resolution failed"),
        "the failure is logged"
    );
}
