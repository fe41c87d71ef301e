//! Proxy workers: one thread per core, each a single-threaded tokio
//! runtime with its own `SO_REUSEPORT` listener on the proxy port.
//!
//! The kernel spreads new connections over the workers' listeners, and a
//! connection then lives its whole life on one thread: its requests, their
//! upstream connections (each worker has its own pool, see
//! `proxy/forward.rs`), their body pumps and their timers. Nothing on the
//! request path crosses threads except the limiter's atomics. This is how
//! nginx (`worker_processes`, `reuseport`), Envoy (a listener per worker)
//! and Pingora run. Measured against tokio's work-stealing runtime on this
//! project's 2-core machine (BENCHMARKS.md, "overhead"), the same hyper
//! proxy spent about a fifth less CPU per request this way: under
//! work stealing, a connection's task, its upstream connection's task and
//! its body pump are woken on whichever thread is free, and each hand-off
//! is a cross-thread wake-up and a cold cache.
//!
//! The cost: a busy worker cannot hand work to an idle one. With many
//! connections the kernel's hash spreads them evenly; a handful of very
//! busy keep-alive connections can land on one worker. That is nginx's
//! trade too.

use std::future::Future;
use std::net::SocketAddr;
use tokio::sync::oneshot;

/// Binds `n` listeners on `addr`, all with `SO_REUSEPORT`, so each worker
/// accepts on its own: the first binds `addr` (a port of 0 picks one), the
/// rest the address it got. Returned as std listeners, not registered with
/// any runtime: each worker registers its own with its own reactor.
pub(super) fn bind_reuseport(
    addr: SocketAddr,
    n: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::with_capacity(n);
    let mut at = addr;
    for _ in 0..n.max(1) {
        let socket = match at {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(at)?;
        // What `TcpListener::bind` uses; the kernel caps it at somaxconn.
        let listener = socket.listen(1024)?;
        at = listener.local_addr()?;
        out.push(listener.into_std()?);
    }
    Ok(out)
}

/// A started worker: its thread runs until the future it was given ends.
#[derive(Debug)]
pub(super) struct Worker {
    done: oneshot::Receiver<()>,
    index: usize,
}

impl Worker {
    /// Starts worker `index` on a thread of its own, running what `task`
    /// builds on a fresh single-threaded runtime. The task is built on the
    /// worker's thread, inside its runtime, so whatever it registers
    /// (listeners, timers) belongs to that runtime.
    pub(super) fn start<F, Fut>(index: usize, task: F) -> std::io::Result<Self>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("floodwall-worker-{index}"))
            .spawn(move || {
                crate::proxy::enter_worker(index);
                runtime.block_on(task());
                // Connections still open past the drain are closed here,
                // with the runtime.
                drop(runtime);
                let _ = tx.send(());
            })?;
        Ok(Self { done, index })
    }

    /// Waits until the worker's task has ended and its runtime is gone.
    pub(super) async fn finished(self) {
        if self.done.await.is_err() {
            tracing::error!(worker = self.index, "proxy worker thread panicked");
        }
    }
}
