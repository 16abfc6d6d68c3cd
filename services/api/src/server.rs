//! The HTTP/1.1 server loop: hyper with the connection limits `axum::serve` does not offer.
//!
//! - `HTTP_HEADER_TIMEOUT_MS`: hyper closes a connection whose request headers have not arrived
//!   in time (a byte-a-time sender), and likewise a keep-alive connection idle that long. It
//!   closes without an answer: hyper writes no response for a header timeout.
//! - `HTTP_MAX_CONNECTIONS`: a connection is accepted only when one of that many slots is free.
//!   Over the cap, new connections wait in the kernel's listen backlog (the client sees a slow
//!   connect, not an error) and are served as slots free up; since every connection ends within
//!   the header timeout when idle, and within `HTTP_REQUEST_TIMEOUT_MS` when busy, a slot never
//!   stays taken for long by a slow or silent client.
//! - A request head (request line and headers) may hold [`MAX_HEAD_BYTES`]; hyper answers a
//!   larger one 431. The read buffer is capped alike, which bounds what a connection can make
//!   us hold before its headers complete to about `HTTP_MAX_CONNECTIONS` × 64 KiB (hyper's
//!   default is ~400 KiB).
//! - Shutdown: stop accepting, let every connection finish its request in flight (idle ones
//!   close at once), then return. A connection that has not sent a full request yet is closed
//!   by its header timeout; the wait as a whole is bounded by `drain_timeout` (the header plus
//!   the request timeout), after which the connections left, such as a client reading its
//!   answer very slowly, are cut.
//!
//! hyper answers requests it cannot parse itself, before any of our code runs: 400 (malformed
//! request line or header), 414 (URI over 65,534 bytes), 431 (head over [`MAX_HEAD_BYTES`] or
//! more than 100 headers). Those answers have no body: hyper offers no hook to give them ours.
//! URIs over 8 KiB that hyper does read get our 414 with the error body ([`crate::limits`]).

use std::{future::Future, io, pin::pin, sync::Arc, time::Duration};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinSet};

/// Largest request head (request line and headers) hyper buffers.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The connection limits of [`serve`].
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
    /// Longest wait for the connections to finish once shutdown began.
    pub drain_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains the connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES);
    let mut shutdown = pin!(shutdown);
    let mut connections = JoinSet::new();
    loop {
        // Forget the connections that ended, so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small JSON answers go out at once rather than waiting for Nagle's timer.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "stopped accepting; finishing requests in flight"
    );
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            drain_timeout_ms = limits.drain_timeout.as_millis(),
            "connections still open after the drain timeout are cut"
        );
    }
    connections.shutdown().await;
}

/// A failed accept: a connection reset before it was accepted is the client's business; running
/// out of file descriptors is ours, and retrying at once would spin.
async fn accept_failed(error: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(%error, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
