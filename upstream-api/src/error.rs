//! The one error contract: `{"error": {"code", "message", "request_id"}}` plus `X-Request-ID`.
//!
//! Handlers return an `ApiError` without knowing the request id; the request-id
//! middleware renders the body, so every error (including 404/405 fallbacks and
//! body rejections) carries the id and nothing internal leaks.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error a client may see: a status, a stable machine code and a human message.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            message,
        )
    }

    /// The body, once the request id is known.
    pub fn body(&self, request_id: &str) -> serde_json::Value {
        serde_json::json!({
            "error": { "code": self.code, "message": self.message, "request_id": request_id }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The middleware finds this extension and writes the JSON body with the id.
        let mut resp = self.status.into_response();
        resp.extensions_mut().insert(self);
        resp
    }
}
