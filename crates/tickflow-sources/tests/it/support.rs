//! What the WebSocket sources' tests share: a local server on a thread of its own, and a
//! source run until it fails.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tickflow_core::codec::Batch;
use tickflow_core::source::{Append, Source, SourceContext, SourceError};

/// Serves with `serve` on a local port from a thread of its own; returns the `ws://` address.
pub(crate) fn local_server(
    serve: impl FnOnce(tokio::net::TcpListener) -> Pin<Box<dyn Future<Output = ()> + Send>>
    + Send
    + 'static,
) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            serve(tokio::net::TcpListener::from_std(listener).unwrap()).await;
        });
    });
    url
}

/// A log that takes nothing: a source refused by its venue never appends.
#[derive(Debug)]
struct Unused;

impl Append for Unused {
    fn append(&self, _: &str, _: &Batch) -> Result<std::ops::Range<u64>, SourceError> {
        Err("nothing should be appended".into())
    }
}

/// Runs `source` under the id `refused` until it returns, which it must with an error.
pub(crate) fn run_until_failed(source: Box<dyn Source>) -> SourceError {
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let ctx = SourceContext::new(
        "refused",
        Arc::new(Unused),
        Arc::new(tickflow_core::metrics::Metrics::default()),
        stop_rx,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(source.run(ctx))
        .expect_err("a source its venue refuses stops with an error")
}
