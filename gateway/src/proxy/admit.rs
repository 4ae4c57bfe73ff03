//! `request_filter`'s decisions, in order: on plain HTTP the ACME challenge answer and
//! the redirect to HTTPS (before any policy: a CA's validator is never limited), then
//! framing, header size, Host, path, route, address lists, CORS preflight, declared
//! body size, then the route's rate limits (`limit.rs`). Each refusal is a JSON error
//! from `respond`; `Ok(true)` means a response was written and the request ends here.

use pingora_core::Result;
use pingora_proxy::Session;

use super::ctx::Ctx;
use super::error::GatewayError;
use super::limit;
use super::respond::{send_challenge, send_error, send_preflight, send_redirect};
use crate::headers::framing;
use crate::metrics::Metrics;
use crate::policy::access;
use crate::store::Store;
use crate::tls::sites::ACME_CHALLENGE_PREFIX;
use crate::tls::TlsState;
use crate::{headers, routing};

/// Runs every admission check; returns true when the request was answered.
pub async fn admit(
    session: &mut Session,
    ctx: &mut Ctx,
    tls: &TlsState,
    store: Option<&Store>,
    metrics: &Metrics,
    shutting_down: bool,
) -> Result<bool> {
    let outcome = match check(session, ctx, tls, shutting_down) {
        Ok(Admission::Limits) => limit::check(session.req_header(), ctx, store, metrics)
            .await
            .map(|()| Admission::Limits),
        // A token another gateway published (the CA may ask any of them).
        Ok(Admission::Challenge(None, token)) => match store {
            Some(store) => Ok(Admission::Challenge(
                store.http01(&token).await.ok().flatten(),
                token,
            )),
            None => Ok(Admission::Challenge(None, token)),
        },
        other => other,
    };
    match outcome {
        Ok(Admission::Limits) => Ok(false),
        Ok(Admission::Challenge(answer, _)) => {
            send_challenge(session, ctx, answer).await?;
            Ok(true)
        }
        Ok(Admission::Redirect(status)) => {
            send_redirect(session, ctx, status).await?;
            Ok(true)
        }
        Ok(Admission::Preflight(h)) => {
            ctx.preflight = true;
            send_preflight(session, ctx, h).await?;
            Ok(true)
        }
        Err(err) => {
            send_error(session, ctx, err).await?;
            Ok(true)
        }
    }
}

enum Admission {
    /// Admitted so far; the route's rate limits decide (`limit.rs`).
    Limits,
    /// An ACME HTTP-01 token's answer (`None`: unknown here, 404), and the token.
    Challenge(Option<String>, String),
    Redirect(u16),
    Preflight(Vec<(http::HeaderName, http::HeaderValue)>),
}

fn check(
    session: &Session,
    ctx: &mut Ctx,
    tls: &TlsState,
    shutting_down: bool,
) -> Result<Admission, GatewayError> {
    let req = session.req_header();
    let host = headers::request_host(&req.headers, &req.uri);
    let path = req.uri.path();
    ctx.site = ctx.snapshot.sites.find(host).or_else(|| {
        // A name issued on demand belongs to the site that issues them (its redirect
        // and HSTS), once it has its certificate.
        let issuer = ctx.snapshot.sites.on_demand?;
        tls.store
            .get(&headers::ascii_lowercase(host))
            .map(|_| issuer)
    });
    if !ctx.tls {
        if let Some(token) = path.strip_prefix(ACME_CHALLENGE_PREFIX) {
            return Ok(Admission::Challenge(
                tls.challenges.get(token).map(|a| a.clone()),
                token.to_owned(),
            ));
        }
        if let Some(status) = ctx.snapshot.sites.redirect(ctx.site) {
            return Ok(Admission::Redirect(status));
        }
    }
    let keepalive_off = session.as_downstream().get_keepalive().is_none();
    if framing::had_length_and_chunked(req, keepalive_off, shutting_down) {
        return Err(GatewayError::AmbiguousFraming);
    }
    if framing::header_size(req) > ctx.snapshot.config.limits.max_header_size {
        return Err(GatewayError::HeadersTooLarge);
    }
    if !headers::host_acceptable(&req.headers, &req.uri, req.version) {
        return Err(GatewayError::InvalidHost);
    }
    if routing::has_dot_segment(path) {
        return Err(GatewayError::InvalidPath);
    }
    ctx.route = ctx.snapshot.router.resolve_index(host, path);
    if ctx.route.is_none() {
        return Err(GatewayError::NoRoute);
    }
    // Hold the snapshot separately so the policy can be read while ctx is written.
    let snapshot = std::sync::Arc::clone(&ctx.snapshot);
    let policy = ctx
        .route
        .and_then(|i| snapshot.policies.get(i))
        .unwrap_or(&snapshot.fallback);
    if !access::address_allowed(ctx.client_ip, &policy.allow, &policy.deny) {
        return Err(GatewayError::Forbidden);
    }
    if let Some(cors) = &policy.cors {
        if let Some(origin) = req.headers.get(http::header::ORIGIN) {
            let preflight_method = req.headers.get(http::header::ACCESS_CONTROL_REQUEST_METHOD);
            if let (true, Some(method)) = (req.method == http::Method::OPTIONS, preflight_method) {
                let requested = req
                    .headers
                    .get(http::header::ACCESS_CONTROL_REQUEST_HEADERS);
                return match cors.preflight(origin, method.as_bytes(), requested) {
                    Some(h) => Ok(Admission::Preflight(h)),
                    None => Err(GatewayError::CorsRejected),
                };
            }
            if origin.to_str().is_ok_and(|o| cors.allows(o)) {
                ctx.cors_origin = Some(origin.clone());
            }
        }
    }
    // The response's coding, agreed now from the request (the decision to use it waits
    // for the response: `response_filter`).
    if let Some(c) = &policy.compression {
        ctx.coding = c.choose(req.headers.get(http::header::ACCEPT_ENCODING));
        ctx.range_request = req.headers.contains_key(http::header::RANGE);
    }
    if framing::content_length(req).is_some_and(|n| n > policy.max_body_size) {
        return Err(GatewayError::PayloadTooLarge);
    }
    Ok(Admission::Limits)
}
