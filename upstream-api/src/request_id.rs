//! Request ids: keep a sane incoming `X-Request-ID`, else make one; put it in a tracing
//! span (so every log line of the request has it), on the response, and in error bodies.

use axum::extract::Request;
use axum::http::{header::CONTENT_TYPE, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::error::ApiError;

pub const HEADER: &str = "x-request-id";

/// The id of the current request, for handlers that report it.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

fn sane(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic())
}

pub async fn stamp(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = std::time::Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    if let Some(err) = resp.extensions_mut().remove::<ApiError>() {
        let mut fresh = axum::Json(err.body(&id)).into_response();
        *fresh.status_mut() = err.status;
        for (name, value) in resp.headers() {
            if name != CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
                fresh.headers_mut().insert(name.clone(), value.clone());
            }
        }
        resp = fresh;
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(HEADER, v);
    }
    let status = resp.status().as_u16();
    let duration_ms = started.elapsed().as_micros() as f64 / 1000.0;
    // Health checks come every few seconds from every gateway: a passing one is logged
    // at debug only, so the requests a person makes stay readable. A failing one is
    // news, and logged like any request.
    let probe = (path == "/healthz" || path == "/readyz") && resp.status().is_success();
    span.in_scope(|| {
        if probe {
            tracing::debug!(method = %method, path = %path, status, duration_ms, "request");
        } else {
            tracing::info!(method = %method, path = %path, status, duration_ms, "request");
        }
    });
    resp
}

#[cfg(test)]
mod tests {
    use super::sane;

    #[test]
    fn sanity() {
        assert!(sane("abc-123"));
        assert!(!sane(""));
        assert!(!sane("a b"));
        assert!(!sane(&"x".repeat(129)));
        assert!(!sane("a\u{7f}"));
    }
}
