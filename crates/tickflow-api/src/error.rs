//! Every HTTP error status the API returns is chosen here.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer: a status and a message that says what is wrong.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// For ingest: the 1-based line of the body that could not be parsed.
    pub line: Option<usize>,
    /// Seconds to wait, sent as `Retry-After` (429 and 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// 401: the credentials are missing or wrong.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
            line: None,
            retry_after: None,
        }
    }

    /// 429: this address failed too often; it may try again after `wait`.
    pub fn too_many_failures(wait: std::time::Duration) -> Self {
        let secs = wait.as_secs().max(1);
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!("too many failed attempts from this address: try again in {secs} s"),
            line: None,
            retry_after: Some(secs),
        }
    }

    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            line: None,
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(line) = self.line {
            body["line"] = json!(line);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"tickflow\""),
            );
        }
        response
    }
}

impl ApiError {
    /// A body the server would not read: too large, or cut off.
    fn unread_body(status: StatusCode, text: String) -> Self {
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body is larger than http.max_body_mb allows; send smaller batches".to_string()
        } else {
            text
        };
        Self {
            status,
            message,
            line: None,
            retry_after: None,
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(r: axum::extract::rejection::BytesRejection) -> Self {
        Self::unread_body(r.status(), r.body_text())
    }
}

impl From<axum::extract::rejection::StringRejection> for ApiError {
    fn from(r: axum::extract::rejection::StringRejection) -> Self {
        Self::unread_body(r.status(), r.body_text())
    }
}

impl From<tickflow_core::Error> for ApiError {
    fn from(e: tickflow_core::Error) -> Self {
        match e {
            tickflow_core::Error::Ingest { line, message } => Self {
                status: StatusCode::BAD_REQUEST,
                message: format!("line {line}: {message}"),
                line: Some(line),
                retry_after: None,
            },
            other => Self::bad_request(other.to_string()),
        }
    }
}

impl From<tickflow_pipeline::Error> for ApiError {
    fn from(e: tickflow_pipeline::Error) -> Self {
        let (status, retry_after) = match e {
            tickflow_pipeline::Error::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, None),
            // Nothing was written: the client keeps its batch and sends it again later.
            tickflow_pipeline::Error::Log(tickflow_log::Error::DiskFull { .. }) => {
                (StatusCode::INSUFFICIENT_STORAGE, Some(10))
            }
            // The broker holding the log did not confirm: nothing is acknowledged, and the
            // batch is sent again (what the broker did store is dropped as a duplicate).
            tickflow_pipeline::Error::LogUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, Some(2))
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, None),
        };
        Self {
            status,
            message: e.to_string(),
            line: None,
            retry_after,
        }
    }
}

impl From<tickflow_query::Error> for ApiError {
    fn from(e: tickflow_query::Error) -> Self {
        let status = match e {
            tickflow_query::Error::Sql(_) => StatusCode::BAD_REQUEST,
            // What the query asked for is over the configured limits: the client's to fix.
            tickflow_query::Error::Limit(_) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            status,
            message: e.to_string(),
            line: None,
            retry_after: None,
        }
    }
}
