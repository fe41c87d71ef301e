//! Limit poisoning: clients must not be able to drag the adaptive limit
//! down.
//!
//! Two kinds of bad traffic cost a client nothing and, counted naively,
//! look like an overloaded upstream to the adaptive limit:
//!
//! - a POST whose chunked body is invalid (`zz` is not a chunk size): if
//!   the failed upload is recorded as an upstream error, ten a second is
//!   over the 5 % error threshold and cuts the limit every window;
//! - a request whose client hangs up after 5 ms, long before any upstream
//!   could answer: if every early hang-up is a drop, the same ten a second
//!   is over the 1 % drop threshold.
//!
//! The test plays the same open-loop legitimate load through two fresh
//! backends, each with a fresh floodwall in front that has no limit
//! configured (the default adaptive algorithm, AIMD): one alone (control),
//! one with both kinds of bad traffic added (attack). It compares the limit
//! each found and the legitimate goodput. On the code before the fix the
//! attack pulled the limit from 20 to 4 and the legitimate goodput from
//! 130/s to 66/s (figures in BENCHMARKS.md, "Limit poisoning").
//!
//! **The load.** First [`KNEE`] at 1.2 × the backend's capacity, so that
//! the limit finds the backend's knee: the probe measures the unloaded
//! latency at the floor, slow start doubles the limit to 24, the window at
//! 24 queues on 16 workers, and the limit is cut in proportion to its
//! latency, to about 1.2 × the workers. Hysteresis then holds it for 10 s:
//! growth waits, a cut does not. Then the legitimate load drops to
//! [`LEGIT_RPS`], under capacity, and the bad traffic starts: the hardening
//! issue's scenario, a settled limit and bad traffic arriving. Any error or
//! drop it got recorded would cut the limit within a window (×0.7); none
//! may. Limit and goodput are measured over that stretch. Under capacity
//! every legitimate request can be served, so goodput is the offered rate
//! unless the gate refuses it, and the backend has room for the work the
//! hang-ups leave behind (it does not cancel work).
//!
//! Why not one steady rate: under capacity alone the limit does not settle.
//! AIMD grows an app-limited limit whenever a window's in-flight peak
//! reaches half of it, so it floats at about twice the peak and ratchets up
//! a ×1.1 step whenever a stall of the shared machine leaves requests in
//! flight longer; the hang-ups, really in flight for their 5 ms, sometimes
//! add the one request that takes a step (in trials, one run in five ended
//! a step apart: 31 against 35). At the knee the limit is set by latency,
//! in proportion. And why the bad traffic stays out of the first phase:
//! there the work the hang-ups leave behind queues on the backend like any
//! other, the knee's latency is a few per cent higher and its cut a step
//! lower (17 against 20 in one trial of nine): a busier backend, not
//! poisoning.
//!
//! **Side by side.** The two runs play at the same time, in one process, so
//! a stall of the two shared cores hits both alike, and the CPU the bad
//! traffic costs is shared by both: what differs is only what the attacked
//! floodwall records.

use floodwall_bench::backend::{self, Backend};
use floodwall_bench::loadgen::{self, LoadConfig, Phase, Schedule};
use floodwall_bench::{BackendConfig, Gateway, GatewayOptions};
use floodwall_core::Outcome;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// 16 workers × 80 ms: 200 req/s nominal, slower as the queue grows
/// (default contention). The hardening issue's setup: 130 req/s on it
/// left a limit of 26.
fn backend_config() -> BackendConfig {
    BackendConfig {
        workers: WORKERS,
        service_time: Duration::from_millis(80),
        ..BackendConfig::default()
    }
}

/// The backend's workers: its knee.
const WORKERS: usize = 16;

/// The first phase, at [`KNEE_RPS`]: long enough for the probe (200
/// requests at the floor of 3, about 6 s at 80 ms) and the slow start to
/// 24 and the cut (about 12 s in).
const KNEE: Duration = Duration::from_secs(14);

/// 1.2 × the backend's capacity.
const KNEE_RPS: f64 = 240.0;

/// The second phase, at [`LEGIT_RPS`], within the 10 s the limit is held
/// after its cut.
const HELD: Duration = Duration::from_secs(9);

/// Legitimate arrivals per second in the second phase: two thirds of the
/// backend's capacity.
const LEGIT_RPS: f64 = 130.0;

/// Figures are taken from here to the end: a second into the second phase,
/// once what queued in the first has drained.
const SETTLED: Duration = Duration::from_secs(15);

/// How many times the pair of runs is played when the control run itself is
/// not a measurement (see [`Figures::valid_control`]).
const ATTEMPTS: usize = 3;

/// Each kind of bad traffic, per second, in the second phase: 20/s
/// together, 13 % of the arrivals (the hardening issue's 20 out of
/// 130-odd).
const BAD_RPS: f64 = 10.0;

/// What one run measured.
#[derive(Debug)]
struct Figures {
    /// The median of the limit sampled every 100 ms once settled.
    limit: usize,
    /// The mean of the same samples, for the record.
    mean: f64,
    /// The highest limit before that: the one the first phase's latency
    /// cut came down from.
    peak: usize,
    /// The limit at each second.
    trajectory: Vec<usize>,
    /// Legitimate 2xx within the SLO per second once settled.
    goodput: f64,
    /// The limiter's finished requests by outcome, over the whole run.
    outcomes: BTreeMap<&'static str, u64>,
    /// The invalid-body requests' answers: "status reason" → count.
    invalid: BTreeMap<String, u64>,
    /// Hang-up requests sent.
    hangups: u64,
}

/// A fresh backend with floodwall in front, told nothing about it.
struct Stand {
    backend: Backend,
    gateway: Gateway,
}

async fn stand() -> Stand {
    let backend = backend::start(backend_config()).await.unwrap();
    let gateway = Gateway::start(
        &format!("http://{}", backend.addr).parse().unwrap(),
        &GatewayOptions {
            pool_max_idle_per_host: Some(1024),
            ..GatewayOptions::default()
        },
    )
    .await
    .unwrap();
    Stand { backend, gateway }
}

/// Plays the legitimate load on `stand`, with the bad traffic if `attack`.
async fn play(Stand { backend, gateway }: Stand, attack: bool) -> Figures {
    let limiter = gateway.limiter().expect("one route");
    let addr = gateway.addr();
    let done = Arc::new(AtomicBool::new(false));

    // The limit, every 100 ms.
    let sampler = {
        let (limiter, done) = (limiter.clone(), done.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !done.load(Ordering::Relaxed) {
                tick.tick().await;
                samples.push(limiter.limit());
            }
            samples
        })
    };

    // The bad traffic, open loop like the legitimate load, once the limit
    // has found the knee.
    let invalid = Arc::new(Mutex::new(BTreeMap::new()));
    let bad = attack.then(|| {
        let bodies = tokio::spawn(every(BAD_RPS, done.clone(), {
            let invalid = invalid.clone();
            move || {
                let invalid = invalid.clone();
                async move {
                    let answer = invalid_chunked(addr).await;
                    *invalid.lock().unwrap().entry(answer).or_insert(0) += 1;
                }
            }
        }));
        let hangups = tokio::spawn(every(BAD_RPS, done.clone(), move || {
            hang_up_after_5ms(addr)
        }));
        (bodies, hangups)
    });

    let schedule = Schedule {
        phases: vec![
            Phase {
                duration: KNEE,
                rate_rps: KNEE_RPS,
            },
            Phase {
                duration: HELD,
                rate_rps: LEGIT_RPS,
            },
        ],
    };
    let run = schedule.seconds();
    let load = loadgen::run(LoadConfig::new(
        format!("http://{addr}/").parse().unwrap(),
        schedule,
    ))
    .await
    .unwrap();
    done.store(true, Ordering::Relaxed);
    let mut hangups = 0;
    if let Some((bodies, hangs)) = bad {
        bodies.await.unwrap();
        hangups = hangs.await.unwrap();
    }
    let samples = sampler.await.unwrap();

    let (before, settled) = samples.split_at((SETTLED.as_millis() / 100) as usize);
    let peak = before.iter().copied().max().unwrap_or(0);
    let mean = settled.iter().sum::<usize>() as f64 / settled.len() as f64;
    let mut settled = settled.to_vec();
    settled.sort_unstable();
    let limit = settled[settled.len() / 2];
    let goodput = load.goodput_rps(SETTLED.as_secs() as usize..run);
    let mut outcomes = BTreeMap::new();
    for class in limiter.snapshot().classes {
        for (o, n) in Outcome::ALL.iter().zip(class.outcomes) {
            *outcomes.entry(o.as_str()).or_insert(0) += n;
        }
    }
    let invalid = std::mem::take(&mut *invalid.lock().unwrap());

    gateway.stop().await;
    backend.shutdown().await;
    Figures {
        limit,
        mean,
        peak,
        trajectory: samples.iter().copied().step_by(10).collect(),
        goodput,
        outcomes,
        invalid,
        hangups,
    }
}

/// From `KNEE` on, calls `f` `rate` times a second on its own task until
/// `done`; returns how many it started.
async fn every<F, Fut>(rate: f64, done: Arc<AtomicBool>, f: F) -> u64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::time::sleep(KNEE).await;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut tasks = JoinSet::new();
    let mut sent = 0;
    while !done.load(Ordering::Relaxed) {
        tick.tick().await;
        tasks.spawn(f());
        sent += 1;
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    sent
}

/// A POST whose chunked body has `zz` for a chunk size; returns the
/// answer's status and `x-floodwall-reason`, or what went wrong instead.
async fn invalid_chunked(addr: SocketAddr) -> String {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(
            b"POST /upload HTTP/1.1\r\nHost: poison\r\n\
              Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        )
        .await?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        std::io::Result::Ok(String::from_utf8_lossy(&head).into_owned())
    };
    let head = match tokio::time::timeout(Duration::from_secs(3), exchange).await {
        Ok(Ok(head)) => head,
        Ok(Err(e)) => return format!("io error: {}", e.kind()),
        Err(_) => return "no answer in 3 s".into(),
    };
    let status = head.split_whitespace().nth(1).unwrap_or("none").to_string();
    let reason = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-floodwall-reason")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| "-".into());
    format!("{status} {reason}")
}

/// A GET whose client hangs up 5 ms after sending it, long before the
/// backend (80 ms a request) could answer.
async fn hang_up_after_5ms(addr: SocketAddr) {
    if let Ok(mut s) = TcpStream::connect(addr).await {
        let _ = s
            .write_all(b"GET /report HTTP/1.1\r\nHost: poison\r\n\r\n")
            .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(s);
    }
}

impl Figures {
    /// Whether this run, as the control, measured anything: it found the
    /// knee (its limit was cut from its peak to no less than the workers)
    /// and then served its load. A stall of the shared machine during the
    /// window at 24 inflates its latency and cuts deeper (to 12 in a trial
    /// at a load average of 7.5 on 2 cores), and a long one times clients
    /// out, which are drops; both runs then go wrong alike, and there is
    /// nothing to compare with.
    fn valid_control(&self) -> bool {
        self.peak > self.limit && self.limit >= WORKERS && self.goodput >= 0.95 * LEGIT_RPS
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_do_not_drag_the_adaptive_limit_down() {
    let mut attempt = 0;
    let (control, attack) = loop {
        attempt += 1;
        let (control, attack) = (stand().await, stand().await);
        let (control, attack) = tokio::join!(play(control, false), play(attack, true));
        for (name, f) in [("control", &control), ("attack", &attack)] {
            eprintln!(
                "attempt {attempt}, {name}: limit median {} mean {:.1} after a peak of {} \
                 (each second: {:?}), goodput {:.1}/s, outcomes {:?}, invalid bodies {:?}, \
                 {} hang-ups",
                f.limit, f.mean, f.peak, f.trajectory, f.goodput, f.outcomes, f.invalid, f.hangups
            );
        }
        if control.valid_control() || attempt == ATTEMPTS {
            break (control, attack);
        }
    };
    assert!(
        control.valid_control(),
        "in {ATTEMPTS} attempts the control run never found the knee and served its load: \
         the machine is too loaded to measure anything ({control:?})"
    );

    // The attack left the limit where the legitimate load put it, and the
    // legitimate clients were served as well.
    assert!(
        control.limit.abs_diff(attack.limit) * 10 <= control.limit,
        "settled limit {} under attack vs {} alone",
        attack.limit,
        control.limit
    );
    assert!(
        attack.goodput >= 0.95 * control.goodput,
        "legitimate goodput {:.1}/s under attack vs {:.1}/s alone",
        attack.goodput,
        control.goodput
    );

    // Every invalid body was refused by floodwall as the client's fault.
    let sent: u64 = attack.invalid.values().sum();
    assert!(
        sent as f64 >= 0.9 * BAD_RPS * HELD.as_secs_f64(),
        "{:?}",
        attack.invalid
    );
    assert_eq!(
        attack.invalid.get("400 invalid_body"),
        Some(&sent),
        "{:?}",
        attack.invalid
    );

    // Nothing recorded against the upstream: no errors at all, and the
    // hang-ups left too soon to count as drops (the drop rule's threshold
    // is 1 % of a window's samples).
    assert_eq!(control.outcomes["error"], 0, "{:?}", control.outcomes);
    assert_eq!(attack.outcomes["error"], 0, "{:?}", attack.outcomes);
    let samples = attack.outcomes["success"] + attack.outcomes["dropped"];
    assert!(
        (attack.outcomes["dropped"] as f64) < 0.01 * samples as f64,
        "{:?}",
        attack.outcomes
    );
    // The hang-ups were admitted (the limit has room for them all) and
    // recorded as nothing.
    assert!(
        attack.outcomes["ignored"] as f64 >= 0.9 * BAD_RPS * HELD.as_secs_f64(),
        "{} hang-ups, {:?}",
        attack.hangups,
        attack.outcomes
    );
}
