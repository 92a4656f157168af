//! Who may use the API (docs/security.md).
//!
//! - Open: `/healthz`, `/readyz` (load balancers ask them), the dashboard's static files
//!   (they hold no data) and `POST /api/v1/login`.
//! - Ingest endpoints: their source's token, checked by the handler before the body is read.
//! - Everything else, when `[http] token` is set: that token, as `Authorization: Bearer` or
//!   as the cookie `POST /api/v1/login` sets for the dashboard (a browser cannot put a header
//!   on an `EventSource`).
//!
//! Wrong credentials are counted by surface and by address: past
//! [`Limiter::MAX_FAILURES`] an address is answered 429 with `Retry-After` without its
//! credentials being looked at. Missing credentials are refused but not counted, so a
//! dashboard left open before logging in does not lock its own address out.

use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tickflow_core::auth::{Limiter, bearer, same_secret};

use crate::AppState;
use crate::error::ApiError;
use crate::routes;

/// The dashboard's session cookie: the API token itself, HttpOnly and SameSite=Strict, and
/// Secure under `[tls]`.
pub(crate) const COOKIE: &str = "tickflow_token";

/// The largest sign-in body, and how long it may take to arrive.
pub(crate) const LOGIN_BODY_BYTES: usize = 4096;
const LOGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The client's address; loopback when the server was not told (a router driven directly).
pub(crate) fn peer(extensions: &axum::http::Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip())
}

/// The credential a request carries: its bearer token, else the dashboard's cookie.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
    {
        return Some(token);
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// Checks `expected` against what the request carries, counting a wrong credential for
/// `surface` and refusing an address that failed too often.
pub(crate) fn check(
    state: &AppState,
    ip: IpAddr,
    headers: &HeaderMap,
    expected: &str,
    surface: &'static str,
    missing: impl FnOnce() -> String,
) -> Result<(), ApiError> {
    if let Some(wait) = state.limiter.blocked(ip, surface) {
        state.pipeline.metrics().auth_failures.add("limited", 1);
        return Err(ApiError::too_many_failures(wait));
    }
    match presented(headers) {
        Some(given) if same_secret(given.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => {
            state.limiter.failed(ip, surface);
            state.pipeline.metrics().auth_failures.add(surface, 1);
            tracing::warn!(%ip, surface, "refused a wrong credential");
            Err(ApiError::unauthorized(format!(
                "wrong token: {}",
                missing()
            )))
        }
        None => Err(ApiError::unauthorized(missing())),
    }
}

/// Whether `path` is served without the API token (ingest checks its own).
fn open(path: &str) -> bool {
    matches!(
        path,
        routes::HEALTHZ
            | routes::READYZ
            | routes::DASHBOARD
            | routes::SCRIPT
            | routes::STYLE
            | routes::LOGIN
            | routes::LOGOUT
            | routes::INGEST
    ) || path.starts_with(routes::INGEST_PREFIX)
}

/// The router's gate: see the module docs.
pub(crate) async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = state.pipeline.plan().http.token.as_ref() else {
        return next.run(request).await;
    };
    if open(request.uri().path()) {
        return next.run(request).await;
    }
    let ip = peer(request.extensions());
    match check(&state, ip, request.headers(), &token.0, "api", || {
        "this API needs `Authorization: Bearer <token>` with [http] token (the dashboard asks for it)".to_string()
    }) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
pub(crate) struct Login {
    token: String,
}

/// `POST /api/v1/login {"token"}`: the dashboard's way in. A right token is set as an
/// HttpOnly, SameSite=Strict cookie for the whole API; 204 either way when no token is
/// configured.
pub(crate) async fn login(
    State(state): State<AppState>,
    ConnectInfoOr(ip): ConnectInfoOr,
    request: Request,
) -> Result<Response, ApiError> {
    let Some(token) = state.pipeline.plan().http.token.as_ref() else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    // Open to anyone, so small and quick: a client that trickles its body must not hold a
    // connection (the router caps the size at LOGIN_BODY_BYTES).
    let body = tokio::time::timeout(LOGIN_TIMEOUT, axum::body::Bytes::from_request(request, &()))
        .await
        .map_err(|_| ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            message: "the sign-in body did not arrive in time".into(),
            line: None,
            retry_after: None,
        })??;
    let login: Login = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"token\": \"…\"}}: {e}")))?;
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {}", login.token))
        .map_err(|_| ApiError::bad_request("the token holds characters a header cannot"))?;
    headers.insert(header::AUTHORIZATION, value);
    check(&state, ip, &headers, &token.0, "api", || {
        "send {\"token\": \"<[http] token>\"}".to_string()
    })?;
    // Over TLS the browser must never send it in the clear.
    let secure = if state.pipeline.plan().tls.is_some() {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{secure}",
        token.0
    );
    let cookie = HeaderValue::from_str(&cookie).map_err(|_| {
        ApiError::bad_request(
            "[http] token holds characters a cookie cannot; use letters, digits and -_.",
        )
    })?;
    Ok((
        StatusCode::OK,
        [(header::SET_COOKIE, cookie)],
        Json(json!({"ok": true})),
    )
        .into_response())
}

/// `POST /api/v1/logout`: forgets the dashboard's cookie.
pub(crate) async fn logout() -> Response {
    (
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            HeaderValue::from_static(
                "tickflow_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
            ),
        )],
    )
        .into_response()
}

/// The client's address as an extractor that never fails (see [`peer`]).
pub(crate) struct ConnectInfoOr(pub IpAddr);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ConnectInfoOr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(peer(&parts.extensions)))
    }
}

/// The limiter every surface of one process shares.
pub type SharedLimiter = std::sync::Arc<Limiter>;
