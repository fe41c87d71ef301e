//! Helpers shared by the tower crate's tests: a limiter on tokio's clock, a
//! body the test ends by hand, and outcome counts.

#![allow(dead_code)]

use bytes::Bytes;
use floodwall_core::{FixedLimit, Limiter, LimiterConfig, QueueSpec};
use floodwall_tower::TokioClock;
use http_body::{Body, Frame};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// A limiter with a fixed `limit`, the default classes, on tokio's clock.
pub fn limiter(limit: usize) -> Arc<Limiter> {
    Limiter::new(
        LimiterConfig::default(),
        FixedLimit::new(limit),
        Arc::new(TokioClock::new()),
    )
    .unwrap()
}

/// The same with a wait queue of `capacity`.
pub fn queued_limiter(limit: usize, capacity: usize) -> Arc<Limiter> {
    let config = LimiterConfig {
        queue: QueueSpec {
            capacity,
            ..QueueSpec::default()
        },
        ..LimiterConfig::default()
    };
    Limiter::new(config, FixedLimit::new(limit), Arc::new(TokioClock::new())).unwrap()
}

/// Finished requests by outcome over all classes, in `Outcome::ALL` order
/// (success, error, dropped, ignored).
pub fn outcomes(l: &Limiter) -> [u64; 4] {
    let mut sum = [0; 4];
    for c in l.snapshot().classes {
        for (s, n) in sum.iter_mut().zip(c.outcomes) {
            *s += n;
        }
    }
    sum
}

/// A body whose frames the test sends; it ends when the sender is dropped.
pub struct Gated(pub mpsc::UnboundedReceiver<Result<Bytes, std::io::Error>>);

/// A gated body and the handle that feeds it.
pub fn gated() -> (mpsc::UnboundedSender<Result<Bytes, std::io::Error>>, Gated) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, Gated(rx))
}

impl Body for Gated {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

/// Polls `body` to its end, returning the bytes (or the error).
pub async fn read_all<B>(body: B) -> Result<Vec<u8>, B::Error>
where
    B: Body<Data = Bytes> + Unpin,
{
    use http_body_util::BodyExt;
    let collected = body.collect().await?;
    Ok(collected.to_bytes().to_vec())
}

/// Runs `promtool check metrics` on `text` and fails with its complaint;
/// skips (saying so) where promtool is not installed
/// (scripts/install-deps.sh installs it).
pub fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("note: promtool is not on PATH, skipping `promtool check metrics`");
            return;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- metrics ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}
