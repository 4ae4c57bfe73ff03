//! The pingora `ProxyHttp` implementation: one short function per phase, each handing
//! the real work to a pure module (see the table in `lib.rs`).

mod admit;
pub mod body;
pub mod ctx;
pub mod error;
mod limit;
mod log;
pub mod refuse;
pub mod respond;

use std::sync::Arc;

use async_trait::async_trait;
use http::header::Entry;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::compress::{self, encoder::Encoder};
use crate::connection::ClientHandle;
use crate::headers::{
    self, header_value, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID,
};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::state::SharedState;
use crate::store::Store;
use crate::tls::TlsState;
use crate::{request_id, routing};
use ctx::Ctx;
use error::GatewayError;
use respond::send_error;

pub struct Gateway {
    state: SharedState,
    lifecycle: Arc<Lifecycle>,
    metrics: Arc<Metrics>,
    tls: Arc<TlsState>,
    /// The shared store, when `[store]` is configured (cluster rate limits, HTTP-01
    /// tokens another gateway published).
    store: Option<Arc<Store>>,
}

impl Gateway {
    pub fn new(
        state: SharedState,
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
        tls: Arc<TlsState>,
        store: Option<Arc<Store>>,
    ) -> Self {
        Gateway {
            state,
            lifecycle,
            metrics,
            tls,
            store,
        }
    }

    /// Counts one attempt at a replica (and a retry when another follows).
    fn record_attempt(&self, ctx: &Ctx, replica: &HttpPeer, outcome: &str, retry: bool) {
        if let Some(pool) = ctx.pool() {
            let replica = replica._address.to_string();
            self.metrics
                .upstream_requests
                .with_label_values(&[pool.name(), &replica, outcome])
                .inc();
            if retry {
                self.metrics
                    .upstream_retries
                    .with_label_values(&[pool.name()])
                    .inc();
            }
        }
    }

    /// Whether another attempt makes sense: the pool allows more, and a healthy replica
    /// this request has not tried yet exists.
    fn can_retry(ctx: &Ctx) -> bool {
        ctx.pool().is_some_and(|p| {
            ctx.tried.len() <= p.config.max_retries && p.select(&ctx.tried).is_some()
        })
    }
}

/// Vary and, when the route compresses and the client accepts a coding, the compressed
/// response's headers and its encoder (`compress/`). A HEAD gets the GET's headers but
/// no encoder: it has no body.
fn compress_response(
    status: http::StatusCode,
    h: &mut http::HeaderMap,
    ctx: &mut Ctx,
    head: bool,
    http11: bool,
) {
    let Some(policy) = ctx.policy().compression.clone() else {
        return;
    };
    if ctx.upgrade || !policy.candidate(status, h) {
        return;
    }
    compress::vary_on_accept_encoding(h);
    let Some(coding) = ctx.coding else { return };
    if !policy.applies(status, h, ctx.range_request) {
        return;
    }
    let encoder = if head {
        None
    } else {
        match Encoder::new(coding, policy.level(coding)) {
            Ok(e) => Some(Box::new(std::sync::Mutex::new(e))),
            // Cannot happen short of memory: the response goes out as it is.
            Err(e) => {
                tracing::warn!(request_id = %ctx.request_id, error = %e, "cannot start compressing");
                return;
            }
        }
    };
    compress::mark_compressed(h, coding);
    if http11 {
        // The compressed length is not known up front (HTTP/2 frames its own).
        h.insert(
            http::header::TRANSFER_ENCODING,
            http::HeaderValue::from_static("chunked"),
        );
    }
    ctx.encoder = encoder;
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(self.state.load_full(), &self.lifecycle)
    }

    /// No downstream modules. Pingora's default adds its response compression module,
    /// switched off, which still costs an allocation and two filter calls per request;
    /// the gateway does not compress (docs/migrate-from-caddy.md).
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // The head is in: its deadline is met; the body gets its own read timeout.
        let (over_cap, bare_lf) = ClientHandle::of(session.as_downstream().stream())
            .map_or((false, false), ClientHandle::head_received);
        let limits = &ctx.snapshot.config.limits;
        session.set_read_timeout(Some(limits.body_timeout));
        if limits.keepalive_timeout.is_zero() {
            // Pingora sets keep-alive from the request itself once the head is read, so
            // "off" is applied here (the response then says `Connection: close`).
            session.set_keepalive(None);
        }
        let req = session.req_header();
        ctx.request_id = request_id::choose(req.headers.get(&X_REQUEST_ID));
        let trusted = &ctx.snapshot.config.server.trusted_proxies;
        let xff = req.headers.get(&X_FORWARDED_FOR).map(|v| v.as_bytes());
        ctx.client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| headers::client_ip(a.ip(), xff, trusted));
        ctx.upgrade = session.is_upgrade_req();
        ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        if bare_lf {
            // Read differently by different parsers: refused, and the connection closed.
            session.set_keepalive(None);
            send_error(session, ctx, GatewayError::BareLineFeed).await?;
            return Ok(true);
        }
        if over_cap {
            self.metrics.connections_over_cap.inc();
            session.set_keepalive(None);
            send_error(session, ctx, GatewayError::TooManyConnections).await?;
            return Ok(true);
        }
        let answered = admit::admit(
            session,
            ctx,
            &self.tls,
            self.store.as_deref(),
            &self.metrics,
            self.lifecycle.is_shutting_down(),
        )
        .await?;
        if !answered {
            // The upstream request is a copy of this head: without the case map (see
            // `headers::edit_request`) there is one map less to copy, and nothing to drop
            // in `upstream_request_filter`.
            headers::edit_request(session.req_header_mut(), |_| ());
            body::read_ahead(session, ctx).await?;
        }
        Ok(answered)
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // An upgraded connection (WebSocket) is a tunnel, not a request body: no limit.
        if ctx.upgrade && session.as_downstream().was_upgraded() {
            return Ok(());
        }
        // A declared Content-Length was checked on admission; this catches chunked bodies.
        // A body read ahead was counted as it was read.
        ctx.body_bytes += body::substitute(&mut ctx.held, body);
        if ctx.body_bytes > ctx.policy().max_body_size {
            ctx.failure = Some(GatewayError::PayloadTooLarge);
            return Error::e_explain(
                ErrorType::HTTPStatus(413),
                "request body over the route's limit",
            );
        }
        Ok(())
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let picked = ctx
            .pool()
            .map(|pool| (pool.select(&ctx.tried), Arc::clone(pool)));
        match picked {
            Some((Some(addr), pool)) => {
                ctx.tried.push(addr);
                ctx.attempt_started = Some(std::time::Instant::now());
                Ok(pool.peer(addr, ctx.upgrade))
            }
            _ => {
                ctx.failure = Some(ctx.last_failure.unwrap_or(GatewayError::NoHealthyReplica));
                let mut e = Error::explain(ErrorType::ConnectNoRoute, "no healthy replica in pool");
                e.set_retry(false);
                Err(e)
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let trusted = &ctx.snapshot.config.server.trusted_proxies;
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        // HTTP/2 carries the host in `:authority` (the URI), HTTP/1.1 in `Host`.
        let host =
            headers::host::authority(&session.req_header().headers, &session.req_header().uri);
        let http11 = session.req_header().version == http::Version::HTTP_11;
        headers::edit_request(up, |h| -> Result<()> {
            // What pingora's standard upstream request policy would have done, which the
            // pool's peers switch off (`headers::hop_by_hop` says why). A refusal is the
            // client's fault: 400, as the policy answers.
            headers::hop_by_hop::strip_request(h, http11).map_err(|n| {
                let mut e = Error::explain(ErrorType::InvalidHTTPHeader, n.message());
                e.as_down();
                e
            })?;
            // Room for the four added below at once: the map is sized for the client's
            // headers and would otherwise grow (rehashing) more than once on the way.
            h.reserve(4);
            h.insert(X_REQUEST_ID, ctx.request_id.header());
            let from_trusted = peer.is_some_and(|p| headers::is_trusted(p, trusted));
            match peer {
                // One lookup for the read and the write (the name is hashed once).
                Some(peer) => match h.entry(X_FORWARDED_FOR) {
                    Entry::Occupied(mut e) => {
                        let xff = headers::forwarded_for(peer, Some(e.get().as_bytes()), trusted);
                        e.insert(header_value(xff)?);
                    }
                    Entry::Vacant(e) => {
                        e.insert(header_value(headers::forwarded_for(peer, None, trusted))?);
                    }
                },
                // No peer address to vouch for: the client's claim is not passed on.
                None => {
                    h.remove(&X_FORWARDED_FOR);
                }
            }
            // A trusted proxy in front of us knows the original scheme and host; anyone
            // else is told what we saw.
            if !(from_trusted && h.contains_key(&X_FORWARDED_PROTO)) {
                let proto = if ctx.tls { "https" } else { "http" };
                h.insert(X_FORWARDED_PROTO, http::HeaderValue::from_static(proto));
            }
            if !(from_trusted && h.contains_key(&X_FORWARDED_HOST)) {
                match host {
                    Some(v) => h.insert(X_FORWARDED_HOST, v),
                    None => h.remove(&X_FORWARDED_HOST),
                };
            }
            Ok(())
        })?;

        if let Some(route) = ctx.route().filter(|r| r.strip_prefix) {
            let path = routing::strip_prefix(&route.path, up.uri.path());
            let uri = match up.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.into_owned(),
            };
            let uri = uri
                .parse::<http::Uri>()
                .map_err(|e| Error::because(ErrorType::InternalError, "strip prefix", e))?;
            up.set_uri(uri);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // 1xx informational headers are not the answer.
        if !resp.status.is_informational() || resp.status == 101 {
            if let (Some(pool), Some(addr)) = (ctx.pool(), ctx.tried.last()) {
                self.metrics.upstream_ok(pool.name(), *addr).inc();
            }
        }
        Ok(())
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let (false, Some(started), Some(pool)) = (reused, ctx.attempt_started, ctx.pool()) {
            self.metrics
                .upstream_connect
                .with_label_values(&[pool.name()])
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.response_started = true;
        let status = resp.status;
        let req = session.req_header();
        let (head, http11) = (
            req.method == http::Method::HEAD,
            req.version == http::Version::HTTP_11,
        );
        headers::edit_response(resp, |h| {
            headers::hop_by_hop::strip_response(h);
            compress_response(status, h, ctx, head, http11);
            respond::finish_header_map(h, &ctx.finish())
        });
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(encoder) = &ctx.encoder {
            let mut encoder = encoder.lock().unwrap_or_else(|p| p.into_inner());
            let input = body.as_deref().unwrap_or_default();
            let out = encoder.encode(input, end_of_stream).map_err(|e| {
                Error::because(ErrorType::InternalError, "compressing the response", e)
            })?;
            *body = Some(out);
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing reached the replica, so another one may take any request, POST included.
        ctx.last_failure = GatewayError::classify(&e);
        let retry = Self::can_retry(ctx);
        tracing::warn!(request_id = %ctx.request_id, replica = %peer._address, error = %e, retry, "cannot connect to replica");
        self.record_attempt(ctx, peer, "connect_error", retry);
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        _client_reused: bool,
    ) -> Box<Error> {
        if e.esource() == &ErrorSource::Downstream {
            // The client's side failed (it closed, reset, or cancelled the stream): the
            // replica did nothing wrong, and nobody is left to answer. Not retried, not
            // counted against the replica (nginx, HAProxy and Caddy do the same).
            ctx.client_aborted = true;
            tracing::debug!(request_id = %ctx.request_id, replica = %peer._address, error = %e, "client went away");
            let mut e = e;
            e.set_retry(false);
            return e;
        }
        let mut e = e.more_context(format!("replica {}", peer._address));
        ctx.last_failure = GatewayError::classify(&e);
        // A replica that dies or resets before answering may have seen the request; only
        // idempotent methods are safe to send again, and only before any response byte.
        let retry = !matches!(e.etype(), ErrorType::HTTPStatus(_))
            && session.req_header().method.is_idempotent()
            && !ctx.response_started
            && !session.as_ref().retry_buffer_truncated()
            && Self::can_retry(ctx);
        tracing::warn!(request_id = %ctx.request_id, replica = %peer._address, error = %e, retry, "replica failed mid-request");
        let outcome = if matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
        ) {
            "timeout"
        } else {
            "error"
        };
        self.record_attempt(ctx, peer, outcome, retry);
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let err = ctx.failure.take().or_else(|| GatewayError::classify(e));
        let error_code = match err {
            // Only a `100 Continue` (request buffering's go-ahead) may have gone out.
            Some(err)
                if session
                    .response_written()
                    .is_none_or(|r| r.status.is_informational()) =>
            {
                // pingora does not reuse a client connection after a proxy failure, so
                // the response must say so, or the client's next request hits a reset.
                session.set_keepalive(None);
                if let Err(write_err) = send_error(session, ctx, err).await {
                    tracing::debug!(request_id = %ctx.request_id, error = %write_err, "could not send error response");
                }
                err.status()
            }
            // Mid-response failures cannot change the status any more: the connection closes.
            Some(err) => err.status(),
            None => 0,
        };
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if let Some(client) = ClientHandle::of(session.as_downstream().stream()) {
            client.request_done();
        }
        let status = log::status(session, e, ctx);
        log::access_log(session, e, ctx, status);
        log::record(&self.metrics, session, ctx, status);
    }

    fn request_summary(&self, session: &Session, ctx: &Ctx) -> String {
        format!(
            "{}, request_id: {}",
            session.as_ref().request_summary(),
            ctx.request_id
        )
    }
}
