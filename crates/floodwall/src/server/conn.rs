//! One accepted connection, from accept to close: hyper serves it, and a
//! watchdog closes it when it holds a descriptor for nothing.
//!
//! hyper's own header timeout cannot do this alone. The auto (HTTP/1 or
//! HTTP/2) builder first reads the bytes that tell the versions apart,
//! with no timer at all, so a connection that never sends a byte was never
//! closed; HTTP/1's `header_read_timeout` starts only after those bytes;
//! and it also runs while an HTTP/1 connection waits between requests, so
//! the keep-alive idle time could not be longer than it. The watchdog
//! keeps both clocks, as nginx (`client_header_timeout`,
//! `keepalive_timeout`) and HAProxy (`timeout http-request`, `timeout
//! http-keep-alive`) do:
//!
//! - **header read**: the first request's headers must be complete within
//!   `header_read_timeout` of the accept; a later HTTP/1 request's within
//!   `header_read_timeout` of its first byte;
//! - **keep-alive**: with no request in flight, the connection is closed
//!   `keepalive_timeout` after the last one ended;
//! - **send**: with a request in flight, a write to the client that has
//!   stayed blocked for `send_timeout` (nginx's `send_timeout`, "between
//!   two successive write operations") closes the connection: the client
//!   stopped reading. The proxy already released the request's slot when
//!   the upstream finished (`proxy/body.rs`); this frees the connection and
//!   the bytes hyper holds for it.
//!
//! A request is in flight from its headers to the end of its response
//! body ([`Tracked`]), and otherwise nothing in flight is cut by the
//! watchdog: slow upstreams are bounded by the upstream's
//! `response_timeout`.

use super::stats::{ListenerStats, Slot, Timeout};
use crate::proxy::Body;
use http::{Request, Response, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

/// After a keep-alive timeout, how long a connection asked to close
/// gracefully (an HTTP/2 GOAWAY) may take before it is dropped.
const GRACE: Duration = Duration::from_secs(1);

/// The two clocks of [`Activity::next`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    /// `server.header_read_timeout`.
    pub header_read: Duration,
    /// `server.keepalive_timeout`.
    pub keepalive: Duration,
    /// `server.send_timeout`.
    pub send: Duration,
}

/// What every connection of one listener shares.
#[derive(Debug)]
pub(super) struct Shared {
    /// hyper's HTTP/1 and HTTP/2 settings.
    pub builder: auto::Builder<TokioExecutor>,
    pub timeouts: Timeouts,
    /// Raised when the listener drains: each connection then finishes
    /// what it has in flight and closes.
    pub drain: watch::Receiver<bool>,
}

/// Serves one accepted connection with `handler` until it closes, times
/// out or is drained, holding `slot` (its place under the listener's cap)
/// meanwhile. `stream` is whatever carries the bytes: a TCP stream, or
/// one wrapped by a layer in between.
///
/// The watchdog runs in the connection's own task: a timer, reset only
/// when it fires, and [`Activity::next`] deciding what to do then.
pub(super) async fn serve<S, F, Fut>(stream: S, shared: Arc<Shared>, slot: Slot, handler: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Observed {
        inner: stream,
        activity: activity.clone(),
    });
    let on_request = activity.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let guard = on_request.begin(req.version());
        let response = handler(req);
        async move { Ok::<_, Infallible>(response.await.map(|body| Tracked { body, guard })) }
    });
    let mut conn = pin!(shared.builder.serve_connection(io, svc));
    let timeouts = shared.timeouts;
    let stats: &ListenerStats = slot.stats();
    let mut drain = shared.drain.clone();
    let mut draining = false;
    let mut closing = false;
    // The first check at the earliest deadline any event could set (the
    // tick is at most the header timeout), so none is overslept.
    let mut timer = pin!(tokio::time::sleep_until(activity.start + timeouts.tick()));
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = drain.wait_for(|d| *d), if !draining => {
                // A dropped sender is a drain too, never a busy loop.
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = timer.as_mut() => {
                let now = Instant::now();
                if closing {
                    // Asked to close a grace ago: drop it, unless a
                    // request slipped in before the GOAWAY.
                    if activity.in_flight() == 0 {
                        return;
                    }
                    timer.as_mut().reset(now + timeouts.tick());
                    continue;
                }
                match activity.next(now, &timeouts) {
                    Next::Check(at) => timer.as_mut().reset(at),
                    Next::Expired(t @ (Timeout::HeaderRead | Timeout::Send)) => {
                        // No request to answer, or a client that reads
                        // nothing of its answer: close now.
                        stats.timed_out(t);
                        return;
                    }
                    Next::Expired(Timeout::Keepalive) => {
                        // Graceful, so an HTTP/2 client learns from the
                        // GOAWAY which of its requests were not taken.
                        stats.timed_out(Timeout::Keepalive);
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                        timer.as_mut().reset(now + GRACE);
                    }
                }
            }
        }
    }
}

impl Timeouts {
    /// The longest the watchdog may sleep without missing a deadline that
    /// an event after now could set: a request that ends now expires at
    /// now + keepalive at the earliest, a byte read now at now +
    /// header_read.
    fn tick(&self) -> Duration {
        self.header_read.min(self.keepalive).min(self.send)
    }
}

/// The watchdog's verdict: check again at a time, or close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Check(Instant),
    Expired(Timeout),
}

/// No time recorded.
const NEVER: u64 = u64::MAX;

/// What one connection is doing, written by its requests and its reads,
/// read by its watchdog. Times are milliseconds since `start`. Atomics,
/// because HTTP/2 runs each request on a task of its own.
#[derive(Debug)]
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// When the last request in flight ended.
    idle_since: AtomicU64,
    /// When the first byte after `idle_since` was read ([`NEVER`] until
    /// then): the start of the next request's headers. HTTP/1 only: an
    /// HTTP/2 client's pings and window updates are not a request.
    read_at: AtomicU64,
    track_reads: AtomicBool,
    /// Since when a write to the client has been blocked ([`NEVER`] while
    /// writes go through).
    blocked_at: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            read_at: AtomicU64::new(NEVER),
            track_reads: AtomicBool::new(false),
            blocked_at: AtomicU64::new(NEVER),
        }
    }

    fn millis(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.start).as_millis()).unwrap_or(NEVER - 1)
    }

    fn at(&self, millis: u64) -> Instant {
        self.start + Duration::from_millis(millis)
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// A request's headers are in: it is in flight until the guard drops.
    fn begin(self: &Arc<Self>, version: Version) -> InFlight {
        self.start_request(version);
        InFlight(self.clone())
    }

    fn start_request(&self, version: Version) {
        if self.requests.fetch_add(1, Ordering::Relaxed) == 0 {
            self.track_reads
                .store(version < Version::HTTP_2, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.read_at.store(NEVER, Ordering::Relaxed);
    }

    fn end_request(&self, now: Instant) {
        // The idle time first, so a watchdog that sees nothing in flight
        // never reads the idle time of an earlier pause.
        self.idle_since
            .fetch_max(self.millis(now), Ordering::AcqRel);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Bytes were read (at `now()`, only asked for if needed): if nothing
    /// is in flight, the next request's headers have begun.
    fn read(&self, now: impl FnOnce() -> Instant) {
        if self.track_reads.load(Ordering::Relaxed)
            && self.read_at.load(Ordering::Relaxed) == NEVER
            && self.in_flight.load(Ordering::Acquire) == 0
        {
            self.read_at.store(self.millis(now()), Ordering::Relaxed);
        }
    }

    /// A write to the client returned `blocked` (pending) or went through.
    /// Only a change is stored, so a flowing connection pays one load.
    fn wrote(&self, blocked: bool, now: impl FnOnce() -> Instant) {
        let was = self.blocked_at.load(Ordering::Relaxed);
        if blocked && was == NEVER {
            self.blocked_at.store(self.millis(now()), Ordering::Relaxed);
        } else if !blocked && was != NEVER {
            self.blocked_at.store(NEVER, Ordering::Relaxed);
        }
    }

    /// When to check again, or which timeout has expired at `now`.
    ///
    /// The watchdog sleeps until the earliest deadline known now, and
    /// never longer than [`Timeouts::tick`], so a deadline set by a later
    /// event (which can only be later than that) is not missed.
    fn next(&self, now: Instant, t: &Timeouts) -> Next {
        if self.in_flight() > 0 {
            return match self.blocked_at.load(Ordering::Relaxed) {
                NEVER => Next::Check(now + t.tick()),
                at if now >= self.at(at) + t.send => Next::Expired(Timeout::Send),
                at => Next::Check((self.at(at) + t.send).min(now + t.tick())),
            };
        }
        if self.requests.load(Ordering::Relaxed) == 0 {
            let deadline = self.start + t.header_read;
            return if now >= deadline {
                Next::Expired(Timeout::HeaderRead)
            } else {
                Next::Check(deadline)
            };
        }
        let idle = self.at(self.idle_since.load(Ordering::Acquire)) + t.keepalive;
        let (deadline, which) = match self.read_at.load(Ordering::Relaxed) {
            NEVER => (idle, Timeout::Keepalive),
            read => {
                let head = self.at(read) + t.header_read;
                if head < idle {
                    (head, Timeout::HeaderRead)
                } else {
                    (idle, Timeout::Keepalive)
                }
            }
        };
        if now >= deadline {
            Next::Expired(which)
        } else {
            Next::Check(deadline.min(now + t.tick()))
        }
    }
}

/// One request in flight on its connection; dropping it (at the end of
/// the response body, or when hyper drops an unfinished request) makes
/// the connection idle once the last one goes.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end_request(Instant::now());
    }
}

pin_project! {
    /// A response body that keeps its request in flight until it ends.
    /// Every call is passed through, `is_end_stream` included, so hyper
    /// sees the body it was given.
    struct Tracked<B> {
        #[pin]
        body: B,
        guard: InFlight,
    }
}

impl<B: HttpBody> HttpBody for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pin_project! {
    /// The connection's byte stream, telling [`Activity`] when bytes
    /// arrive and when writes to the client are blocked.
    struct Observed<S> {
        #[pin]
        inner: S,
        activity: Arc<Activity>,
    }
}

impl<S: AsyncRead> AsyncRead for Observed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.read(Instant::now);
        }
        polled
    }
}

impl<S: AsyncWrite> AsyncWrite for Observed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        this.activity.wrote(polled.is_pending(), Instant::now);
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let polled = this.inner.poll_flush(cx);
        this.activity.wrote(polled.is_pending(), Instant::now);
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        this.activity.wrote(polled.is_pending(), Instant::now);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header_read: Duration::from_secs(10),
        keepalive: Duration::from_secs(75),
        send: Duration::from_secs(30),
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_client_that_reads_nothing_of_its_response_is_cut_at_the_send_timeout() {
        let a = Activity::new();
        let s = a.start;
        a.start_request(Version::HTTP_11);
        // Writes flow, then block at 5 s: closed 30 s later, not before.
        a.wrote(false, || s);
        a.wrote(true, || s + ms(5_000));
        a.wrote(true, || s + ms(9_000));
        assert_eq!(a.next(s + ms(20_000), &T), Next::Check(s + ms(30_000)));
        assert_eq!(a.next(s + ms(34_999), &T), Next::Check(s + ms(35_000)));
        assert_eq!(a.next(s + ms(35_000), &T), Next::Expired(Timeout::Send));
        // A write that goes through resets the clock.
        a.wrote(false, || s + ms(34_000));
        assert_eq!(a.next(s + ms(40_000), &T), Next::Check(s + ms(50_000)));
    }

    #[test]
    fn the_first_request_is_timed_from_the_accept() {
        let a = Activity::new();
        let s = a.start;
        assert_eq!(a.next(s, &T), Next::Check(s + ms(10_000)));
        // Bytes before the first request change nothing: the clock runs
        // from the accept.
        a.read(|| s + ms(5_000));
        assert_eq!(a.next(s + ms(9_999), &T), Next::Check(s + ms(10_000)));
        assert_eq!(
            a.next(s + ms(10_000), &T),
            Next::Expired(Timeout::HeaderRead)
        );
    }

    #[test]
    fn between_requests_keepalive_runs_until_a_byte_starts_the_header_clock() {
        let a = Activity::new();
        let s = a.start;
        a.start_request(Version::HTTP_11);
        assert_eq!(a.next(s + ms(60_000), &T), Next::Check(s + ms(70_000)));
        a.end_request(s + ms(1_000));
        // Idle since 1 s: keep-alive until 76 s, checked every 10 s.
        assert_eq!(a.next(s + ms(1_000), &T), Next::Check(s + ms(11_000)));
        assert_eq!(a.next(s + ms(70_000), &T), Next::Check(s + ms(76_000)));
        assert_eq!(
            a.next(s + ms(76_000), &T),
            Next::Expired(Timeout::Keepalive)
        );
        // A byte at 20 s starts the next request's header clock.
        a.read(|| s + ms(20_000));
        a.read(|| s + ms(25_000));
        assert_eq!(a.next(s + ms(20_000), &T), Next::Check(s + ms(30_000)));
        assert_eq!(
            a.next(s + ms(30_000), &T),
            Next::Expired(Timeout::HeaderRead)
        );
        // Its headers complete: in flight, nothing expires.
        a.start_request(Version::HTTP_11);
        assert_eq!(a.next(s + ms(90_000), &T), Next::Check(s + ms(100_000)));
    }

    #[test]
    fn a_short_keepalive_is_never_overslept() {
        let t = Timeouts {
            header_read: Duration::from_secs(10),
            keepalive: Duration::from_secs(1),
            send: Duration::from_secs(30),
        };
        let a = Activity::new();
        let s = a.start;
        a.start_request(Version::HTTP_11);
        a.end_request(s);
        a.read(|| s + ms(100));
        // The header clock says 10.1 s, but a request that starts and
        // ends meanwhile may expire 1 s after: check within the tick.
        assert_eq!(a.next(s + ms(500), &t), Next::Check(s + ms(1_000)));
        assert_eq!(a.next(s + ms(1_000), &t), Next::Expired(Timeout::Keepalive));
    }

    #[test]
    fn http2_reads_between_requests_are_not_headers() {
        let a = Activity::new();
        let s = a.start;
        a.start_request(Version::HTTP_2);
        a.end_request(s);
        a.read(|| s + ms(5_000));
        assert_eq!(a.next(s + ms(74_000), &T), Next::Check(s + ms(75_000)));
        assert_eq!(
            a.next(s + ms(75_000), &T),
            Next::Expired(Timeout::Keepalive)
        );
    }
}
