//! Response bodies: the one type every proxy response has, and the
//! upstream body read ahead of the client so that a slow reader never holds
//! an admission slot.
//!
//! **What counts as in flight.** A permit protects the upstream, so it is
//! held from admission until the upstream has finished: its response body
//! has been read to the end (or failed). It is not held while a client
//! drains what floodwall already has. To make the two ends independent, the
//! upstream body is read by a task of its own into a buffer of at most
//! `server.response_buffer` bytes per response; a response that fits is
//! released as soon as the upstream sends its last byte, however slowly
//! the client reads. nginx does the same with `proxy_buffering` (spilling
//! to disk past its memory buffers).
//!
//! A larger response, or a client that stops reading, fills the buffer;
//! then the upstream is held back, which is why the slot stays taken. The
//! client must keep making progress: if it takes nothing for
//! `server.send_timeout` (nginx's `send_timeout`, "between two successive
//! write operations"), the response is abandoned, the buffer freed and the
//! stream reset. That is the client's fault, so nothing is recorded
//! against the upstream (`ignored`).
//!
//! Small responses that have fully arrived with their headers skip the
//! task: they are finished on the spot.

use super::endpoints::EndpointPick;
use super::pool::Pooled;
use crate::distributed::Slot;
use bytes::Bytes;
use floodwall_core::{BulkheadPermit, Outcome, Permit};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// The body type of every response the proxy returns: the upstream's body
/// streamed through, or a small body floodwall wrote itself.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// The error type of [`Body`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The largest piece the buffer is counted in: data frames are split to
/// this size, so the buffer's bound in bytes is its bound in pieces times
/// this.
const PIECE: usize = 16 * 1024;

/// The response-side limits, from `[server]`.
#[derive(Debug, Clone)]
pub struct ResponseLimits {
    /// Bytes of an upstream body held for a slow client
    /// (`server.response_buffer`).
    pub buffer: usize,
    /// Bytes held for slow clients over all responses
    /// (`server.response_buffer_total`), in pieces: the bound on what slow
    /// readers can make floodwall spend. When it is spent, a response waits
    /// for its client as if it had no buffer.
    pub total: Arc<Semaphore>,
    /// How long a client may take nothing from a response
    /// (`server.send_timeout`).
    pub send_timeout: Duration,
}

impl ResponseLimits {
    /// Limits of `buffer` bytes a response and `total` bytes over all.
    pub fn new(buffer: usize, total: usize, send_timeout: Duration) -> Self {
        let pieces = (total / PIECE).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            buffer,
            total: Arc::new(Semaphore::new(pieces)),
            send_timeout,
        }
    }
}

/// What ends a forwarded request: the permit, recorded with the outcome
/// the status implies when the upstream finishes, the request's duration
/// observed then, and everything else it held at the upstream released
/// with it. A request shadow mode forwarded past a refusal holds nothing:
/// only its duration is observed.
#[derive(Debug)]
pub struct Finish {
    permit: Option<Permit>,
    outcome: Outcome,
    started: Instant,
    duration: Histogram,
    // Strict distributed mode: the global slot, released with the permit.
    slot: Option<Slot>,
    // The upstream's bulkhead ticket: concurrency at the upstream lasts
    // until its body ends.
    ticket: Option<BulkheadPermit>,
    // The chosen endpoint: its in-flight count (and a hash key's hold)
    // also lasts until the upstream's body ends.
    endpoint: Option<EndpointPick>,
    // The upstream connection: back to its pool when the body ends, closed
    // if it fails or the response is abandoned.
    conn: Option<Pooled>,
    done: bool,
}

impl Finish {
    /// `outcome` is recorded if the upstream body completes. Dropped
    /// before that, the permit keeps whatever it had recorded.
    pub fn new(
        permit: Option<Permit>,
        outcome: Outcome,
        started: Instant,
        duration: Histogram,
        slot: Option<Slot>,
        ticket: Option<BulkheadPermit>,
    ) -> Self {
        Self {
            permit,
            outcome,
            started,
            duration,
            slot,
            ticket,
            endpoint: None,
            conn: None,
            done: false,
        }
    }

    /// Also holds the chosen endpoint until the upstream finishes.
    pub fn holding(mut self, endpoint: EndpointPick) -> Self {
        self.endpoint = Some(endpoint);
        self
    }

    /// Also holds the upstream connection the response arrives on.
    pub fn on(mut self, conn: Pooled) -> Self {
        self.conn = Some(conn);
        self
    }

    /// The upstream went silent mid-body: a drop.
    fn upstream_timed_out(&mut self) {
        self.release(Outcome::Dropped);
    }

    /// The upstream finished (`ok`) or failed mid-body: record, release.
    fn upstream_done(&mut self, ok: bool) {
        if let (true, Some(conn)) = (ok, self.conn.take()) {
            conn.give_back();
        }
        self.release(if ok { self.outcome } else { Outcome::Error });
    }

    /// Records `outcome`, observes the duration and frees the slot (and
    /// the global one), once.
    fn release(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if let Some(mut permit) = self.permit.take() {
            permit.record(outcome);
        }
        self.duration.observe(self.started.elapsed().as_secs_f64());
        self.slot.take();
        self.ticket.take();
        self.endpoint.take();
        self.conn.take();
    }
}

/// The client-facing body for an upstream response (see the module doc).
/// `idle` is the upstream's `response_timeout`, the longest it may go
/// silent mid-body.
pub fn read_ahead(
    mut upstream: Incoming,
    mut finish: Finish,
    limits: &ResponseLimits,
    idle: Duration,
) -> Body {
    use http_body_util::BodyExt;
    let hint = upstream.size_hint().exact();
    // Take what has already arrived, without waiting: most small responses
    // are complete by the time their headers are parsed.
    let mut head = VecDeque::new();
    let mut held = 0;
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if upstream.is_end_stream() {
            finish.upstream_done(true);
            return Ready {
                frames: head,
                remaining: hint,
            }
            .boxed_unsync();
        }
        if held >= limits.buffer {
            break;
        }
        match Pin::new(&mut upstream).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                held += frame.data_ref().map_or(0, Bytes::len);
                head.push_back(frame);
            }
            Poll::Ready(None) => {
                finish.upstream_done(true);
                return Ready {
                    frames: head,
                    remaining: hint,
                }
                .boxed_unsync();
            }
            Poll::Ready(Some(Err(e))) => {
                finish.upstream_done(false);
                return Failed(Some(e.into())).boxed_unsync();
            }
            Poll::Pending => break,
        }
    }
    let slots = (limits.buffer / PIECE).max(1);
    let (tx, rx) = mpsc::channel(slots);
    let buffer = Arc::new(Mutex::new(Buffer {
        rx,
        abandoned: false,
    }));
    tokio::spawn(pump(
        upstream,
        head,
        tx,
        finish,
        limits.clone(),
        idle,
        buffer.clone(),
    ));
    Streamed {
        buffer,
        remaining: hint,
    }
    .boxed_unsync()
}

/// A piece of the response, with its share of the total budget (released
/// when the client takes it), or the error the stream ends with.
type Item = Result<(Frame<Bytes>, Option<OwnedSemaphorePermit>), BoxError>;

/// The buffer between the pump and the client, shared so that the pump
/// can empty it when it abandons a stalled client.
#[derive(Debug)]
struct Buffer {
    rx: mpsc::Receiver<Item>,
    abandoned: bool,
}

fn lock(b: &Mutex<Buffer>) -> std::sync::MutexGuard<'_, Buffer> {
    b.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why the pump stopped handing frames on.
enum Stop {
    /// The client went away.
    Gone,
    /// The client took nothing for `send_timeout`.
    Stalled,
}

/// Reads the upstream to its end into the buffer, releases the permit
/// there, then watches the client drain the rest.
async fn pump(
    mut upstream: Incoming,
    head: VecDeque<Frame<Bytes>>,
    tx: mpsc::Sender<Item>,
    mut finish: Finish,
    limits: ResponseLimits,
    idle: Duration,
    buffer: Arc<Mutex<Buffer>>,
) {
    use http_body_util::BodyExt;
    let stop = async {
        for frame in head {
            send(&tx, frame, &limits).await?;
        }
        loop {
            if upstream.is_end_stream() {
                finish.upstream_done(true);
                break;
            }
            // While waiting for the upstream's next frame: a client whose
            // side is dropped frees the slot at once (`ignored`); an
            // upstream silent for `response_timeout` is cut, as nginx's
            // `proxy_read_timeout` cuts one "between two successive read
            // operations", and counted a drop, like a timeout before the
            // headers. The timeout is also what bounds a stalled upstream
            // whose client has gone: hyper does not notice a client that
            // left while nothing is written to it.
            let next = tokio::select! {
                biased;
                next = upstream.frame() => next,
                () = tx.closed() => return Err(Stop::Gone),
                () = tokio::time::sleep(idle) => {
                    finish.upstream_timed_out();
                    lock(&buffer).abandoned = true;
                    return Err(Stop::Gone);
                }
            };
            match next {
                Some(Ok(frame)) => {
                    // Release before handing on the last frame, so the slot
                    // is free before the client can see the response end
                    // (and send its next request).
                    if upstream.is_end_stream() {
                        finish.upstream_done(true);
                    }
                    send(&tx, frame, &limits).await?;
                }
                None => {
                    finish.upstream_done(true);
                    break;
                }
                Some(Err(e)) => {
                    finish.upstream_done(false);
                    if tx.try_send(Err(e.into())).is_err() {
                        // No room for the error: end the stream with one
                        // once the client has what came before it.
                        lock(&buffer).abandoned = true;
                    }
                    return Err(Stop::Gone);
                }
            }
        }
        drained(&tx, limits.send_timeout).await
    }
    .await;
    if let Err(Stop::Stalled) = stop {
        // Free what the client would not take, and make its next read an
        // error so the stream is reset rather than ended as if complete.
        let mut b = lock(&buffer);
        b.abandoned = true;
        b.rx.close();
        while b.rx.try_recv().is_ok() {}
        tracing::debug!(
            timeout = ?limits.send_timeout,
            "client took nothing from a response for the send timeout; abandoned it"
        );
    }
    // `finish` drops here if the upstream never finished: the permit keeps
    // `ignored`, since a client that stalls or leaves says nothing about
    // the upstream.
}

/// Hands `frame` on in pieces of at most [`PIECE`] bytes, each taking a
/// place in the total budget. Past the budget, a piece waits for its
/// client directly (the response's own channel holds just it).
async fn send(
    tx: &mpsc::Sender<Item>,
    frame: Frame<Bytes>,
    limits: &ResponseLimits,
) -> Result<(), Stop> {
    let timeout = limits.send_timeout;
    let mut pieces = Vec::new();
    match frame.into_data() {
        Ok(mut data) => {
            while data.len() > PIECE {
                pieces.push(Frame::data(data.split_to(PIECE)));
            }
            pieces.push(Frame::data(data));
        }
        Err(other) => pieces.push(other),
    }
    for piece in pieces {
        let share = limits.total.clone().try_acquire_owned().ok();
        if share.is_none() {
            // No budget: wait until the client has taken everything before.
            drained(tx, timeout).await?;
        }
        match tx.send_timeout(Ok((piece, share)), timeout).await {
            Ok(()) => {}
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => return Err(Stop::Stalled),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => return Err(Stop::Gone),
        }
    }
    Ok(())
}

/// Waits until the client has taken everything, as long as it takes
/// something at least every `timeout`.
async fn drained(tx: &mpsc::Sender<Item>, timeout: Duration) -> Result<(), Stop> {
    loop {
        if tx.capacity() == tx.max_capacity() {
            return Ok(());
        }
        // Hold every free place, then wait for one more to open: that is
        // the client taking a piece.
        let free = tx.capacity();
        let _held = match free {
            0 => None,
            n => Some(tx.reserve_many(n).await.map_err(|_| Stop::Gone)?),
        };
        match tokio::time::timeout(timeout, tx.reserve()).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Err(Stop::Gone),
            Err(_) => return Err(Stop::Stalled),
        }
    }
}

/// A response that was complete when it arrived.
struct Ready {
    frames: VecDeque<Frame<Bytes>>,
    remaining: Option<u64>,
}

impl HttpBody for Ready {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = self.frames.pop_front();
        if let (Some(f), Some(r)) = (&frame, &mut self.remaining) {
            *r = r.saturating_sub(f.data_ref().map_or(0, |d| d.len() as u64));
        }
        Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        let held = self
            .frames
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        SizeHint::with_exact(self.remaining.unwrap_or(held))
    }
}

/// An upstream body that failed before any of it was handed on.
struct Failed(Option<BoxError>);

impl HttpBody for Failed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Poll::Ready(self.0.take().map(Err))
    }
}

/// A response read ahead by [`pump`].
struct Streamed {
    buffer: Arc<Mutex<Buffer>>,
    remaining: Option<u64>,
}

/// The error a stalled client's stream ends with.
#[derive(Debug)]
struct Abandoned;

impl std::fmt::Display for Abandoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client took nothing from the response for the send timeout")
    }
}

impl std::error::Error for Abandoned {}

impl HttpBody for Streamed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = {
            let mut b = lock(&self.buffer);
            match b.rx.poll_recv(cx) {
                Poll::Ready(None) if b.abandoned => Poll::Ready(Some(Err(Abandoned.into()))),
                other => other,
            }
        };
        let polled = polled.map(|item| item.map(|r| r.map(|(frame, _share)| frame)));
        if let (Poll::Ready(Some(Ok(f))), Some(r)) = (&polled, &mut self.remaining) {
            *r = r.saturating_sub(f.data_ref().map_or(0, |d| d.len() as u64));
        }
        polled
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
