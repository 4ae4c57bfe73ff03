//! Request buffering (nginx's `proxy_request_buffering`): a request's body is read
//! before the request goes to a replica, so a replica never sees the head of a request
//! whose body turns out malformed or too large, and a slow uploader holds no upstream
//! connection while it trickles.
//!
//! Pingora streams bodies and offers no hook to hand it a body read earlier, except
//! its retry buffer: a copy of what was read, which it sends before reading the client
//! again. Read bodies go out through that: once the client's body is complete, pingora
//! sends the retry buffer's content and `request_body_filter` puts the whole body in
//! its place. The retry buffer holds 64 KiB, which shapes what can be buffered:
//! - a body of declared length (`Content-Length`, HTTP/1 or HTTP/2) up to the route's
//!   `request_buffer`: the retry buffer is switched on only for the last 64 KiB, so it
//!   never overflows;
//! - a chunked HTTP/1 body: the retry buffer is on from the start; a body that ends
//!   within 64 KiB is held whole, a longer one is held up to the point it passed 64 KiB
//!   and then streams, the held part sent first.
//!
//! Everything else (an HTTP/2 body of undeclared length, a declared length over the
//! limit, buffering off) streams as it arrives.

use bytes::{Bytes, BytesMut};
use pingora_core::{Error, ErrorType, Result};
use pingora_proxy::Session;

use super::ctx::Ctx;
use super::error::GatewayError;
use crate::headers::framing;

/// Pingora's retry buffer (`BODY_BUF_LIMIT`), the channel a buffered body goes out by
/// (and so the smallest non-zero `request_buffer` the config accepts).
const RETRY_BUFFER: u64 = crate::config::defaults::MIN_REQUEST_BUFFER;

/// What the request filter read of the body, for `request_body_filter` to send.
#[derive(Default)]
pub enum Held {
    /// Nothing read ahead: the body streams.
    #[default]
    Nothing,
    /// The whole body. It replaces what pingora passes (its retry buffer's copy of
    /// the last part), on every attempt: a retry sends it again.
    Whole(Bytes),
    /// The body's first part; the rest is read as it arrives and this goes before it.
    Head(Bytes),
}

/// Reads the body ahead when the route buffers and the body qualifies (see the module
/// doc). Counts what it reads against the route's `max_body_size`. A malformed body,
/// a timeout or a body over the limit is an error here, before any replica is chosen.
pub async fn read_ahead(session: &mut Session, ctx: &mut Ctx) -> Result<()> {
    let policy = ctx.policy();
    let (limit, max_body) = (policy.request_buffer, policy.max_body_size);
    if limit == 0 || ctx.upgrade || session.is_body_done() {
        return Ok(());
    }
    let req = session.req_header();
    let chunked = is_chunked(req);
    let declared = if chunked {
        None
    } else {
        framing::content_length(req)
    };
    match declared {
        Some(n) if n <= limit => {}
        None if chunked => {}
        // Over the limit, or an HTTP/2 body of unknown length: it streams.
        _ => return Ok(()),
    }
    if expects_continue(req) {
        // The client waits for a go-ahead before sending the body; the gateway gives
        // it now, and the replica gets a request that no longer asks.
        session
            .req_header_mut()
            .remove_header(&http::header::EXPECT);
        session
            .as_downstream_mut()
            .write_continue_response()
            .await?;
    }
    let mut held = BytesMut::new();
    let mut retry_buffering = false;
    // Bytes that went into the retry buffer: pingora sends the body only if some did.
    let mut in_retry_buffer = 0;
    loop {
        let remaining = declared.map(|n| n.saturating_sub(held.len() as u64));
        if !retry_buffering && remaining.is_none_or(|r| r <= RETRY_BUFFER) {
            session.as_mut().enable_retry_buffering();
            retry_buffering = true;
        }
        let piece = session
            .read_request_body()
            .await
            .map_err(|e| e.into_down())?;
        let Some(piece) = piece else {
            if in_retry_buffer == 0 && !held.is_empty() {
                // One read took the whole last 64 KiB and more (only a head read that
                // brought a large part of the body with it could): pingora would not
                // send the body, and the request would hang until the replica's timeout.
                tracing::warn!(request_id = %ctx.request_id, "buffered body could not be handed to pingora");
                return Error::e_explain(ErrorType::InternalError, "buffered body not forwardable");
            }
            ctx.body_bytes = held.len() as u64;
            ctx.held = Held::Whole(held.freeze());
            return Ok(());
        };
        if (held.len() + piece.len()) as u64 > max_body {
            ctx.failure = Some(GatewayError::PayloadTooLarge);
            return Error::e_explain(
                ErrorType::HTTPStatus(413),
                "request body over the route's limit",
            );
        }
        held.extend_from_slice(&piece);
        if retry_buffering {
            in_retry_buffer += piece.len();
        }
        if session.as_ref().retry_buffer_truncated() {
            // Only a chunked body gets here (a declared length never overflows the
            // buffer), and a read that returns data does not finish a chunked body:
            // pingora's own loop reads on, and what was read here goes first.
            ctx.body_bytes = held.len() as u64;
            ctx.held = Held::Head(held.freeze());
            return Ok(());
        }
    }
}

/// `request_body_filter`'s part: puts the held body in place of what pingora passes.
/// Returns how many of the bytes now in `body` are new (not yet counted).
pub fn substitute(held: &mut Held, body: &mut Option<Bytes>) -> u64 {
    match held {
        Held::Nothing => body.as_ref().map_or(0, |b| b.len() as u64),
        Held::Whole(all) => {
            *body = (!all.is_empty()).then(|| all.clone());
            0
        }
        Held::Head(head) => {
            let head = std::mem::take(head);
            *held = Held::Nothing;
            let new = body.as_ref().map_or(0, |b| b.len() as u64);
            *body = Some(match body.take() {
                Some(rest) if !rest.is_empty() => {
                    let mut joined = BytesMut::with_capacity(head.len() + rest.len());
                    joined.extend_from_slice(&head);
                    joined.extend_from_slice(&rest);
                    joined.freeze()
                }
                _ => head,
            });
            new
        }
    }
}

fn is_chunked(req: &pingora_http::RequestHeader) -> bool {
    req.headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .any(|v| {
            v.as_bytes()
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        })
}

fn expects_continue(req: &pingora_http::RequestHeader) -> bool {
    req.version == http::Version::HTTP_11
        && req
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_body_replaces_every_attempt_and_counts_nothing_new() {
        let mut held = Held::Whole(Bytes::from_static(b"hello"));
        for _ in 0..2 {
            let mut body = Some(Bytes::from_static(b"llo"));
            assert_eq!(substitute(&mut held, &mut body), 0);
            assert_eq!(body.as_deref(), Some(&b"hello"[..]));
        }
        let mut empty = Held::Whole(Bytes::new());
        let mut body = None;
        substitute(&mut empty, &mut body);
        assert_eq!(body, None);
    }

    #[test]
    fn head_goes_before_the_next_piece_once() {
        let mut held = Held::Head(Bytes::from_static(b"abc"));
        let mut body = Some(Bytes::from_static(b"def"));
        assert_eq!(substitute(&mut held, &mut body), 3);
        assert_eq!(body.as_deref(), Some(&b"abcdef"[..]));
        let mut body = Some(Bytes::from_static(b"ghi"));
        assert_eq!(substitute(&mut held, &mut body), 3);
        assert_eq!(body.as_deref(), Some(&b"ghi"[..]));
        // The end of the body arriving right after the head: the head alone.
        let mut held = Held::Head(Bytes::from_static(b"abc"));
        let mut body = None;
        assert_eq!(substitute(&mut held, &mut body), 0);
        assert_eq!(body.as_deref(), Some(&b"abc"[..]));
    }

    #[test]
    fn chunked_is_the_last_coding() {
        let mut req = pingora_http::RequestHeader::build("POST", b"/", None).unwrap();
        req.insert_header("transfer-encoding", "gzip, Chunked")
            .unwrap();
        assert!(is_chunked(&req));
        req.insert_header("transfer-encoding", "chunked, gzip")
            .unwrap();
        assert!(!is_chunked(&req));
    }
}
