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

/// A request a local REST server saw: path with query, `Authorization`-like headers, and
/// when it arrived.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) uri: String,
    pub(crate) headers: axum::http::HeaderMap,
    pub(crate) at: std::time::Instant,
}

/// What a scripted REST server answers: status, extra headers and body.
pub(crate) type Answer = (u16, Vec<(&'static str, String)>, String);

/// Serves `answer(request number, uri)` over HTTP on a local port, with `{BASE}` in a body
/// replaced by the server's own address (vendors' next-page URLs are absolute); returns that
/// `http://` address and every request seen, in order.
pub(crate) fn rest_server(
    answer: impl Fn(usize, &str) -> Answer + Send + Sync + 'static,
) -> (String, Arc<std::sync::Mutex<Vec<Seen>>>) {
    use axum::response::IntoResponse;
    let seen = Arc::new(std::sync::Mutex::new(Vec::<Seen>::new()));
    let log = Arc::clone(&seen);
    let answer = Arc::new(answer);
    let url = local_server(move |listener| {
        let base = format!("http://{}", listener.local_addr().unwrap());
        Box::pin(async move {
            let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
                let (log, answer, base) = (Arc::clone(&log), Arc::clone(&answer), base.clone());
                async move {
                    let uri = request.uri().to_string();
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push(Seen {
                            uri: uri.clone(),
                            headers: request.headers().clone(),
                            at: std::time::Instant::now(),
                        });
                        log.len() - 1
                    };
                    let (status, headers, body) = answer(n, &uri);
                    let body = body.replace("{BASE}", &base);
                    let mut response = (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                        .into_response();
                    for (name, value) in headers {
                        response
                            .headers_mut()
                            .insert(name, axum::http::HeaderValue::from_str(&value).unwrap());
                    }
                    response
                }
            });
            axum::serve(listener, app).await.unwrap();
        })
    });
    (url.replacen("ws://", "http://", 1), seen)
}
