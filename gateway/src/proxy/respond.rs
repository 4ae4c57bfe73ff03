//! Responses the gateway writes itself, and the one place that maps a failure to a
//! status: every error a client sees is `{"error": {"code", "message", "request_id"}}`
//! with a generic message; internal error text goes to the log only.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use pingora_core::{Error, ErrorSource, ErrorType};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::ctx::Ctx;
use crate::headers::{
    edit_response, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET, X_REQUEST_ID,
};

/// A failure named for its condition; `info()` is the only status mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayError {
    NoRoute,
    InvalidPath,
    InvalidHost,
    AmbiguousFraming,
    BareLineFeed,
    Forbidden,
    CorsRejected,
    PayloadTooLarge,
    HeadersTooLarge,
    TooManyRequests,
    TooManyConnections,
    NoHealthyReplica,
    BadGateway,
    GatewayTimeout,
    BadRequest,
    MethodNotAllowed,
    RequestTimeout,
    Internal,
}

impl GatewayError {
    /// Status, stable machine code, and the generic message a client sees.
    pub fn info(self) -> (u16, &'static str, &'static str) {
        use GatewayError::*;
        match self {
            NoRoute => (404, "no_route", "no route for this host and path"),
            InvalidHost => (400, "invalid_host", "the Host header is missing or invalid"),
            InvalidPath => (
                400,
                "invalid_path",
                "the path contains '.' or '..' segments",
            ),
            AmbiguousFraming => (
                400,
                "ambiguous_framing",
                "the request has both Content-Length and Transfer-Encoding",
            ),
            BareLineFeed => (
                400,
                "invalid_line_ending",
                "request lines must end with CRLF",
            ),
            Forbidden => (403, "forbidden", "access denied"),
            CorsRejected => (
                403,
                "cors_rejected",
                "this origin, method or header is not allowed",
            ),
            PayloadTooLarge => (413, "payload_too_large", "the request body is too large"),
            HeadersTooLarge => (
                431,
                "headers_too_large",
                "the request headers are too large",
            ),
            TooManyRequests => (429, "rate_limited", "too many requests, retry later"),
            TooManyConnections => (
                429,
                "too_many_connections",
                "too many connections from this address",
            ),
            NoHealthyReplica => (
                503,
                "no_healthy_upstream",
                "the service is temporarily unavailable",
            ),
            BadGateway => (502, "bad_gateway", "the upstream service failed to answer"),
            GatewayTimeout => (
                504,
                "upstream_timeout",
                "the upstream service did not answer in time",
            ),
            BadRequest => (400, "bad_request", "the request could not be understood"),
            MethodNotAllowed => (405, "method_not_allowed", "this method is not supported"),
            RequestTimeout => (
                408,
                "request_timeout",
                "the request was not received in time",
            ),
            Internal => (500, "internal_error", "internal error"),
        }
    }

    pub fn status(self) -> u16 {
        self.info().0
    }

    pub fn code(self) -> &'static str {
        self.info().1
    }

    pub fn message(self) -> &'static str {
        self.info().2
    }

    /// What a pingora error means for the client; `None` when the client is gone.
    pub fn classify(e: &Error) -> Option<GatewayError> {
        use ErrorType::*;
        let timeout = matches!(e.etype(), ConnectTimedout | ReadTimedout | WriteTimedout);
        match (e.esource(), e.etype()) {
            (_, HTTPStatus(code)) => Some(match *code {
                400 => GatewayError::BadRequest,
                408 => GatewayError::RequestTimeout,
                413 => GatewayError::PayloadTooLarge,
                431 => GatewayError::HeadersTooLarge,
                502 => GatewayError::BadGateway,
                503 => GatewayError::NoHealthyReplica,
                504 => GatewayError::GatewayTimeout,
                _ => GatewayError::Internal,
            }),
            (ErrorSource::Upstream, _) if timeout => Some(GatewayError::GatewayTimeout),
            (ErrorSource::Upstream, _) => Some(GatewayError::BadGateway),
            (ErrorSource::Downstream, ReadError | WriteError | ConnectionClosed) => None,
            (ErrorSource::Downstream, ReadTimedout) => Some(GatewayError::RequestTimeout),
            (ErrorSource::Downstream, _) => Some(GatewayError::BadRequest),
            _ => Some(GatewayError::Internal),
        }
    }
}

/// Headers every response gets, proxied or gateway-made: the one function both paths
/// call. Request id, the route's header rules (security headers), CORS and rate-limit
/// state.
pub fn finish_headers(resp: &mut ResponseHeader, ctx: &Ctx) {
    edit_response(resp, |h| finish_header_map(h, ctx))
}

/// [`finish_headers`] on a header map already taken out of its head.
pub fn finish_header_map(h: &mut HeaderMap, ctx: &Ctx) {
    let policy = ctx.policy();
    // Room for everything added below at once, so the map grows (rehashing) once at
    // most, not once per few headers.
    h.reserve(
        2 + policy.headers.added()
            + if policy.cors.is_some() { 4 } else { 0 }
            + if ctx.rate.is_some() { 4 } else { 0 },
    );
    h.insert(X_REQUEST_ID, ctx.request_id.header());
    // HSTS only where TLS terminates: never on a plain-HTTP response.
    if ctx.tls {
        if let Some(v) = ctx.snapshot.sites.hsts(ctx.site) {
            h.insert(http::header::STRICT_TRANSPORT_SECURITY, v.clone());
        }
    }
    policy.headers.apply(h);
    if let (Some(cors), false) = (&policy.cors, ctx.preflight) {
        cors.apply(ctx.cors_origin.as_ref(), h);
    }
    if let Some(r) = ctx.rate {
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
    finish_headers(&mut resp, ctx);
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
    finish_headers(&mut resp, ctx);
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
    finish_headers(&mut resp, ctx);
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
    ctx: &Ctx,
    err: GatewayError,
    body_len: usize,
) -> pingora_core::Result<ResponseHeader> {
    let mut resp = ResponseHeader::build_no_case(err.status(), Some(12))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body_len)?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    finish_headers(&mut resp, ctx);
    Ok(resp)
}

/// Writes `err` as the whole response.
pub async fn send_error(
    session: &mut Session,
    ctx: &Ctx,
    err: GatewayError,
) -> pingora_core::Result<()> {
    let body = error_body(err, ctx.request_id.as_str());
    let resp = error_header(ctx, err, body.len())?;
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
/// (`downstream::refuse`).
pub fn error_response_bytes(ctx: &Ctx, err: GatewayError) -> (Vec<u8>, usize) {
    let body = error_body(err, ctx.request_id.as_str());
    let status = http::StatusCode::from_u16(err.status()).unwrap_or(http::StatusCode::BAD_REQUEST);
    let mut out = Vec::with_capacity(512 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    match error_header(ctx, err, body.len()) {
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

    #[test]
    fn classification() {
        let up = |t| {
            let mut e = Error::new(t);
            e.as_up();
            e
        };
        let down = |t| {
            let mut e = Error::new(t);
            e.as_down();
            e
        };
        assert_eq!(
            GatewayError::classify(&up(ErrorType::ConnectRefused)),
            Some(GatewayError::BadGateway)
        );
        assert_eq!(
            GatewayError::classify(&up(ErrorType::ConnectTimedout)),
            Some(GatewayError::GatewayTimeout)
        );
        assert_eq!(
            GatewayError::classify(&up(ErrorType::ReadTimedout)),
            Some(GatewayError::GatewayTimeout)
        );
        assert_eq!(
            GatewayError::classify(&up(ErrorType::ConnectionClosed)),
            Some(GatewayError::BadGateway)
        );
        assert_eq!(
            GatewayError::classify(&down(ErrorType::ConnectionClosed)),
            None
        );
        assert_eq!(
            GatewayError::classify(&down(ErrorType::InvalidHTTPHeader)),
            Some(GatewayError::BadRequest)
        );
    }

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
        let (bytes, body_len) = error_response_bytes(&ctx, GatewayError::BadRequest);
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
