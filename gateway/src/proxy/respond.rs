//! Responses the gateway writes itself, and the one place that maps a failure to a
//! status: every error a client sees is `{"error": {"code", "message", "request_id"}}`
//! with a generic message; internal error text goes to the log only.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::ctx::{Ctx, RateInfo};
use super::error::GatewayError;
use crate::headers::{
    edit_response, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET, X_REQUEST_ID,
};
use crate::policy::CompiledPolicy;
use crate::request_id::RequestId;

/// What the headers of a response depend on besides the response itself: the request
/// id, the HSTS value (only where TLS terminates), the governing policy (security
/// headers, CORS) and the rate-limit state. Built from a request's `Ctx`, or for a
/// head refused before any request phase ran (`refuse.rs`) from the snapshot alone.
pub struct Finish<'a> {
    pub request_id: &'a RequestId,
    pub hsts: Option<&'a HeaderValue>,
    pub policy: &'a CompiledPolicy,
    pub cors_origin: Option<&'a HeaderValue>,
    /// A CORS preflight answer carries its own CORS headers.
    pub preflight: bool,
    pub rate: Option<RateInfo>,
}

impl Ctx {
    pub fn finish(&self) -> Finish<'_> {
        Finish {
            request_id: &self.request_id,
            // HSTS only where TLS terminates: never on a plain-HTTP response.
            hsts: if self.tls {
                self.snapshot.sites.hsts(self.site)
            } else {
                None
            },
            policy: self.policy(),
            cors_origin: self.cors_origin.as_ref(),
            preflight: self.preflight,
            rate: self.rate,
        }
    }
}

/// Headers every response gets, proxied or gateway-made: the one function both paths
/// call. Request id, HSTS, the route's header rules (security headers), CORS and
/// rate-limit state.
pub fn finish_headers(resp: &mut ResponseHeader, f: &Finish) {
    edit_response(resp, |h| finish_header_map(h, f))
}

/// [`finish_headers`] on a header map already taken out of its head.
pub fn finish_header_map(h: &mut HeaderMap, f: &Finish) {
    let policy = f.policy;
    // Room for everything added below at once, so the map grows (rehashing) once at
    // most, not once per few headers.
    h.reserve(
        2 + policy.headers.added()
            + if policy.cors.is_some() { 4 } else { 0 }
            + if f.rate.is_some() { 4 } else { 0 },
    );
    h.insert(X_REQUEST_ID, f.request_id.header());
    if let Some(v) = f.hsts {
        h.insert(http::header::STRICT_TRANSPORT_SECURITY, v.clone());
    }
    policy.headers.apply(h);
    if let (Some(cors), false) = (&policy.cors, f.preflight) {
        cors.apply(f.cors_origin, h);
    }
    if let Some(r) = f.rate {
        h.insert(X_RATELIMIT_LIMIT, HeaderValue::from(r.limit));
        h.insert(X_RATELIMIT_REMAINING, HeaderValue::from(r.remaining));
        h.insert(X_RATELIMIT_RESET, HeaderValue::from(r.reset_secs));
        if let Some(after) = r.retry_after_secs {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(after));
        }
    }
}

/// Sends a plain-HTTP request to the same host, path and query over HTTPS.
pub async fn send_redirect(
    session: &mut Session,
    ctx: &Ctx,
    status: u16,
) -> pingora_core::Result<()> {
    let req = session.req_header();
    let host = crate::headers::request_host(&req.headers, &req.uri);
    let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let location = ctx.snapshot.sites.location(host, target);
    let mut resp = ResponseHeader::build_no_case(status, Some(8))?;
    resp.insert_header(http::header::LOCATION, location)?;
    resp.insert_header(http::header::CONTENT_LENGTH, 0)?;
    finish_headers(&mut resp, &ctx.finish());
    session.write_response_header(Box::new(resp), true).await
}

/// Answers an ACME HTTP-01 challenge (the key authorization), or 404 for unknown tokens.
pub async fn send_challenge(
    session: &mut Session,
    ctx: &Ctx,
    answer: Option<String>,
) -> pingora_core::Result<()> {
    let Some(answer) = answer else {
        return send_error(session, ctx, GatewayError::NoRoute).await;
    };
    let mut resp = ResponseHeader::build_no_case(200, Some(6))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/octet-stream")?;
    resp.insert_header(http::header::CONTENT_LENGTH, answer.len())?;
    finish_headers(&mut resp, &ctx.finish());
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(answer)), true)
        .await
}

/// Answers an allowed CORS preflight with 204 and the prepared headers.
pub async fn send_preflight(
    session: &mut Session,
    ctx: &Ctx,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
) -> pingora_core::Result<()> {
    let mut resp = ResponseHeader::build_no_case(204, Some(headers.len() + 8))?;
    for (n, v) in headers {
        resp.insert_header(n, v)?;
    }
    resp.insert_header(http::header::CONTENT_LENGTH, 0)?;
    finish_headers(&mut resp, &ctx.finish());
    session.write_response_header(Box::new(resp), true).await
}

pub fn error_body(err: GatewayError, request_id: &str) -> Bytes {
    let body = serde_json::json!({
        "error": { "code": err.code(), "message": err.message(), "request_id": request_id }
    });
    Bytes::from(body.to_string())
}

/// The head of a gateway-made error response whose body is `error_body`.
fn error_header(
    f: &Finish,
    err: GatewayError,
    body_len: usize,
) -> pingora_core::Result<ResponseHeader> {
    let mut resp = ResponseHeader::build_no_case(err.status(), Some(12))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body_len)?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    finish_headers(&mut resp, f);
    Ok(resp)
}

/// Writes `err` as the whole response.
pub async fn send_error(
    session: &mut Session,
    ctx: &Ctx,
    err: GatewayError,
) -> pingora_core::Result<()> {
    let body = error_body(err, ctx.request_id.as_str());
    let resp = error_header(&ctx.finish(), err, body.len())?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// `err` as the bytes of a whole HTTP/1.1 response that closes the connection, with
/// the body's length: for where no pingora session is left to write it
/// (`refuse.rs`).
pub fn error_response_bytes(f: &Finish, err: GatewayError) -> (Vec<u8>, usize) {
    let body = error_body(err, f.request_id.as_str());
    let status = http::StatusCode::from_u16(err.status()).unwrap_or(http::StatusCode::BAD_REQUEST);
    let mut out = Vec::with_capacity(512 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    match error_header(f, err, body.len()) {
        Ok(mut resp) => {
            // Insert cannot fail for a static name and value; the fallback below covers it.
            let _ = resp.insert_header(http::header::CONNECTION, "close");
            resp.header_to_h1_wire(&mut out);
        }
        Err(_) => {
            out.extend_from_slice(b"Connection: close\r\nContent-Length: ");
            out.extend_from_slice(body.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    (out, body.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn error_bytes_are_a_whole_closing_response() {
        let snapshot = std::sync::Arc::new(
            crate::state::Snapshot::build(
                crate::config::load_str(
                    std::path::Path::new("t.toml"),
                    "[[listeners]]\naddress = \"127.0.0.1:8080\"\n[pools.p]\nreplicas = [\"127.0.0.1:9\"]\n[[routes]]\npool = \"p\"\n",
                    &|_| None,
                )
                .unwrap(),
                None,
            )
            .await
            .unwrap(),
        );
        let mut ctx = Ctx::new(snapshot, &std::sync::Arc::default());
        ctx.request_id = crate::request_id::choose(Some(&http::HeaderValue::from_static("rid-1")));
        let (bytes, body_len) = error_response_bytes(&ctx.finish(), GatewayError::BadRequest);
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        // Pingora writes a few common names title-cased, the rest in lowercase.
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("\r\nconnection: close"), "{head}");
        assert!(lower.contains("\r\nx-request-id: rid-1"), "{head}");
        assert!(
            lower.contains(&format!("\r\ncontent-length: {body_len}")),
            "{head}"
        );
        assert_eq!(body.len(), body_len);
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "bad_request");
        assert_eq!(v["error"]["request_id"], "rid-1");
    }

    #[test]
    fn body_is_json_with_escaped_id() {
        let b = error_body(GatewayError::NoRoute, "a\"b\\c");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["request_id"], "a\"b\\c");
        assert_eq!(v["error"]["code"], "no_route");
    }
}
