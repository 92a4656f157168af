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
}

impl ApiError {
    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            line: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(line) = self.line {
            body["line"] = json!(line);
        }
        (self.status, Json(body)).into_response()
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
            },
            other => Self::bad_request(other.to_string()),
        }
    }
}

impl From<tickflow_pipeline::Error> for ApiError {
    fn from(e: tickflow_pipeline::Error) -> Self {
        let status = match e {
            tickflow_pipeline::Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            status,
            message: e.to_string(),
            line: None,
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
        }
    }
}
