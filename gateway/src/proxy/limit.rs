//! The route's rate limits, after every other admission check: each limiter decides
//! (locally, or in the shared store: `ratelimit/cluster.rs`), the first refusal
//! answers 429, and the tightest state goes out as `X-RateLimit-*`.

use pingora_http::RequestHeader;

use super::ctx::{Ctx, RateInfo};
use super::error::GatewayError;
use crate::config::Fallback;
use crate::metrics::Metrics;
use crate::ratelimit::cluster::{decide, Outcome};
use crate::store::Store;

const NS_PER_SEC: u64 = 1_000_000_000;

/// Checks every limiter of the request's route; `Err(TooManyRequests)` when one refuses.
pub async fn check(
    req: &RequestHeader,
    ctx: &mut Ctx,
    store: Option<&Store>,
    metrics: &Metrics,
) -> Result<(), GatewayError> {
    // Held apart from ctx so the policy can be read while ctx is written.
    let snapshot = std::sync::Arc::clone(&ctx.snapshot);
    let policy = ctx
        .route
        .and_then(|i| snapshot.policies.get(i))
        .unwrap_or(&snapshot.fallback);
    let path = req.uri.path();
    let mut tightest: Option<RateInfo> = None;
    for limiter in &policy.limiters {
        if limiter.is_exempt(path) {
            continue;
        }
        let d = match decide(limiter, store, ctx.client_ip, &req.headers).await {
            Outcome::Local(d) | Outcome::Shared(d) => d,
            Outcome::NotApplicable => continue,
            Outcome::Fallback(mode, d) => {
                let label = match mode {
                    Fallback::Local => "local",
                    Fallback::Allow => "allow",
                    Fallback::Deny => "deny",
                };
                metrics
                    .ratelimit_fallbacks
                    .with_label_values(&[&limiter.config.name, label])
                    .inc();
                match d {
                    Some(d) => d,
                    None => continue,
                }
            }
        };
        let info = RateInfo {
            limit: limiter.config.burst,
            remaining: d.remaining,
            reset_secs: d.reset_ns.div_ceil(NS_PER_SEC),
            retry_after_secs: (!d.allowed).then(|| d.retry_after_ns.div_ceil(NS_PER_SEC).max(1)),
        };
        if !d.allowed {
            if let Some(ip) = ctx.client_ip {
                limiter.refused.note(ip, std::time::Instant::now());
            }
            ctx.rate = Some(info);
            ctx.rate_limited_by = Some(limiter.config.name.clone());
            return Err(GatewayError::TooManyRequests);
        }
        if tightest.is_none_or(|t| info.remaining < t.remaining) {
            tightest = Some(info);
        }
    }
    ctx.rate = tightest;
    Ok(())
}
