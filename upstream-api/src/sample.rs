//! `GET /api/sample`: a response shaped by its query, so the gateway's tests can ask for
//! exactly the response a real app sends (size, media type, status, validators, an
//! encoding of its own, cache directives), and a slow body sent in pieces.
//!
//! Query: `size` (bytes, default 2048, at most 8 MiB), `type` (default
//! `application/json`), `status` (default 200), `etag`, `cache_control`, `encoding`
//! (sets `Content-Encoding`; the body is not encoded: only the header matters to a
//! proxy), `chunks` and `chunk_ms` (send the body in that many pieces, that far apart).

use std::time::Duration;

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::Query;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Deserialize;

#[derive(Deserialize)]
pub struct SampleQuery {
    size: Option<usize>,
    r#type: Option<String>,
    status: Option<u16>,
    etag: Option<String>,
    cache_control: Option<String>,
    encoding: Option<String>,
    chunks: Option<usize>,
    chunk_ms: Option<u64>,
}

/// Text that compresses like real JSON does (repetitive, not all the same byte).
fn body(size: usize) -> Vec<u8> {
    let unit = br#"{"id":12345,"name":"green tea","tags":["loose","organic"],"price":4.5},"#;
    unit.iter().cycle().take(size).copied().collect()
}

pub async fn sample(Query(q): Query<SampleQuery>) -> Response {
    let size = q.size.unwrap_or(2048).min(8 << 20);
    let status = StatusCode::from_u16(q.status.unwrap_or(200)).unwrap_or(StatusCode::OK);
    let data = body(size);
    let chunks = q.chunks.unwrap_or(1).clamp(1, 1000);
    let body = if chunks == 1 || matches!(status.as_u16(), 204 | 304) {
        if matches!(status.as_u16(), 204 | 304) {
            Body::empty()
        } else {
            Body::from(data)
        }
    } else {
        let pause = Duration::from_millis(q.chunk_ms.unwrap_or(100).min(5_000));
        let piece = size.div_ceil(chunks).max(1);
        let parts: Vec<Bytes> = data.chunks(piece).map(Bytes::copy_from_slice).collect();
        let stream = futures_util::stream::unfold((0usize, parts), move |(i, parts)| async move {
            if i >= parts.len() {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            let next = parts[i].clone();
            Some((Ok::<_, std::convert::Infallible>(next), (i + 1, parts)))
        });
        Body::from_stream(stream)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    let media = q.r#type.as_deref().unwrap_or("application/json");
    for (name, value) in [
        (header::CONTENT_TYPE, Some(media)),
        (header::ETAG, q.etag.as_deref()),
        (header::CACHE_CONTROL, q.cache_control.as_deref()),
        (header::CONTENT_ENCODING, q.encoding.as_deref()),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            h.insert(name, v);
        }
    }
    if chunks == 1 {
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    resp
}
