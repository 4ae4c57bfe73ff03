//! Responses the gateway writes itself, and the one place that maps a failure to a
//! status: every error a client sees is `{"error": {"code", "message", "request_id"}}`
//! with a generic message; internal error text goes to the log only.

use bytes::Bytes;
use pingora_core::{Error, ErrorSource, ErrorType};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::ctx::Ctx;
use crate::headers::X_REQUEST_ID;

/// A failure named for its condition; `status()` is the only status mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayError {
    NoRoute,
    InvalidPath,
    NoHealthyReplica,
    BadGateway,
    GatewayTimeout,
    BadRequest,
    RequestTimeout,
    Internal,
}

impl GatewayError {
    pub fn status(self) -> u16 {
        match self {
            GatewayError::NoRoute => 404,
            GatewayError::InvalidPath | GatewayError::BadRequest => 400,
            GatewayError::RequestTimeout => 408,
            GatewayError::NoHealthyReplica => 503,
            GatewayError::BadGateway => 502,
            GatewayError::GatewayTimeout => 504,
            GatewayError::Internal => 500,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            GatewayError::NoRoute => "no_route",
            GatewayError::InvalidPath => "invalid_path",
            GatewayError::NoHealthyReplica => "no_healthy_upstream",
            GatewayError::BadGateway => "bad_gateway",
            GatewayError::GatewayTimeout => "upstream_timeout",
            GatewayError::BadRequest => "bad_request",
            GatewayError::RequestTimeout => "request_timeout",
            GatewayError::Internal => "internal_error",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            GatewayError::NoRoute => "no route for this host and path",
            GatewayError::InvalidPath => "the path contains '.' or '..' segments",
            GatewayError::NoHealthyReplica => "the service is temporarily unavailable",
            GatewayError::BadGateway => "the upstream service failed to answer",
            GatewayError::GatewayTimeout => "the upstream service did not answer in time",
            GatewayError::BadRequest => "the request could not be understood",
            GatewayError::RequestTimeout => "the request was not received in time",
            GatewayError::Internal => "internal error",
        }
    }

    /// What a pingora error means for the client; `None` when the client is gone.
    pub fn classify(e: &Error) -> Option<GatewayError> {
        use ErrorType::*;
        let timeout = matches!(e.etype(), ConnectTimedout | ReadTimedout | WriteTimedout);
        match (e.esource(), e.etype()) {
            (_, HTTPStatus(code)) => Some(match *code {
                400 => GatewayError::BadRequest,
                408 => GatewayError::RequestTimeout,
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

/// Headers every response gets, proxied or gateway-made: the one function both paths call.
pub fn finish_headers(resp: &mut ResponseHeader, ctx: &Ctx) -> pingora_core::Result<()> {
    resp.insert_header(X_REQUEST_ID, ctx.request_id.as_str())?;
    Ok(())
}

pub fn error_body(err: GatewayError, request_id: &str) -> Bytes {
    let body = serde_json::json!({
        "error": { "code": err.code(), "message": err.message(), "request_id": request_id }
    });
    Bytes::from(body.to_string())
}

/// Writes `err` as the whole response.
pub async fn send_error(
    session: &mut Session,
    ctx: &Ctx,
    err: GatewayError,
) -> pingora_core::Result<()> {
    let body = error_body(err, &ctx.request_id);
    let mut resp = ResponseHeader::build(err.status(), Some(5))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    finish_headers(&mut resp, ctx)?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
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

    #[test]
    fn body_is_json_with_escaped_id() {
        let b = error_body(GatewayError::NoRoute, "a\"b\\c");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["request_id"], "a\"b\\c");
        assert_eq!(v["error"]["code"], "no_route");
    }
}
