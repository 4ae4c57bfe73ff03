//! The failures a client can be told about, each named for its condition, and the one
//! place that maps them (and pingora's errors) to a status, a stable code and the
//! generic message a client sees (linkerd2-proxy's shape: conditions as types, one
//! mapping).

use pingora_core::{Error, ErrorSource, ErrorType};

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
}
