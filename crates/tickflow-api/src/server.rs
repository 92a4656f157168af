//! The accept loop: HTTP/1.1 over hyper with the limits a server facing unknown clients
//! needs, which `axum::serve` leaves out (docs/security.md):
//!
//! - a client has `[http] header_timeout_secs` to send a request's headers, and a
//!   connection idle between requests is closed after it, so slow or silent sockets do not
//!   pile up;
//! - at most `[http] max_connections` are served at once; past it a new connection is
//!   closed as it comes (and counted), so a flood of sockets cannot take the memory and file
//!   descriptors ingest needs; one client address may hold at most
//!   `max_connections_per_address` of them, so one host cannot take every slot;
//! - every request carries its client's address (`ConnectInfo`) for the auth limiter;
//! - with `[tls]`, the TLS handshake is made within the header timeout, and only HTTPS is
//!   served.
//!
//! Shutdown stops accepting, lets each connection finish the request it is in, and waits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// How long shutdown lets open connections finish their requests.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// How many connections, and how long each may take over its headers or stay idle.
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) max_per_address: usize,
    pub(crate) header_timeout: Duration,
    /// Connections closed on arrival: past the cap, and past an address's share.
    pub(crate) refused: Arc<std::sync::atomic::AtomicU64>,
    pub(crate) refused_per_address: Arc<std::sync::atomic::AtomicU64>,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Serves `app` on `listener` until `shutdown` completes.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Limits {
        max_connections,
        max_per_address,
        header_timeout,
        refused,
        refused_per_address,
        tls,
    } = limits;
    let slots = Arc::new(Semaphore::new(max_connections));
    let addresses = tickflow_core::auth::Shares::new(max_per_address);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was taken: neither
                    // stops the server. A short pause keeps an fd shortage from spinning.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Finished connections are reaped as new ones come, so the set stays small.
        while connections.try_join_next().is_some() {}
        let Some(share) = tickflow_core::auth::Shares::take(&addresses, peer.ip()) else {
            refused_per_address.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            drop(socket);
            continue;
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        let service =
            TowerToHyperService::new(app.clone().layer(axum::Extension(ConnectInfo(peer))));
        let stop = stop_rx.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _slots = (slot, share);
            let Some(tls) = tls else {
                return serve_one(socket, service, header_timeout, stop, peer).await;
            };
            match tokio::time::timeout(header_timeout, tls.accept(socket)).await {
                Ok(Ok(stream)) => serve_one(stream, service, header_timeout, stop, peer).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_LIMIT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        // A client that stops reading its answer must not hold the shutdown.
        tracing::warn!(
            open = connections.len(),
            "HTTP connections still open after {} s; closing them",
            DRAIN_LIMIT.as_secs()
        );
        connections.abort_all();
    }
    Ok(())
}

/// Serves HTTP/1.1 on one connection, plain or TLS, until it ends or the server stops.
async fn serve_one<I>(
    io: I,
    service: TowerToHyperService<Router>,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    peer: SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let stopping = async move {
        // The guard `wait_for` returns is not `Send`: drop it before awaiting on.
        let _ = stop.wait_for(|s| *s).await.map(|_| ());
    };
    tokio::select! {
        result = conn.as_mut() => log_end(peer, result),
        () = stopping => {
            conn.as_mut().graceful_shutdown();
            log_end(peer, conn.await);
        }
    }
}

fn log_end(peer: SocketAddr, result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "HTTP connection ended");
    }
}
