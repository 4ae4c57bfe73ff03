//! One limiter's decision for one request, wherever the limit counts: in this process,
//! or in the shared store for limits with `scope = "cluster"`. While the store cannot
//! answer (down, or over its time budget), the limit's `fallback` decides: count in
//! this process, allow, or deny.

use std::net::IpAddr;

use http::HeaderMap;

use super::key::{key_for, shared_key};
use super::{Decision, Limiter};
use crate::config::{Fallback, Scope};
use crate::store::Store;

/// What a limiter made of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Counted in this process.
    Local(Decision),
    /// Counted in the shared store.
    Shared(Decision),
    /// The store could not answer; this fallback decided (`allow`: no decision, the
    /// request passes this limit).
    Fallback(Fallback, Option<Decision>),
    /// The limit does not apply (no key: the client address is unknown).
    NotApplicable,
}

/// Counts one request.
pub async fn decide(
    limiter: &Limiter,
    store: Option<&Store>,
    client: Option<IpAddr>,
    headers: &HeaderMap,
) -> Outcome {
    let local = || {
        key_for(
            &limiter.config.key,
            limiter.config.ipv6_prefix,
            client,
            headers,
        )
        .map(|key| limiter.check(key, limiter.now()))
    };
    let (Scope::Cluster(fallback), Some(shape), Some(store)) =
        (limiter.config.scope, &limiter.shared, store)
    else {
        return local().map_or(Outcome::NotApplicable, Outcome::Local);
    };
    let Some(key) = shared_key(
        &limiter.config.key,
        limiter.config.ipv6_prefix,
        client,
        headers,
    ) else {
        return Outcome::NotApplicable;
    };
    let full = store.key(&format!("{}{key}", shape.key_prefix));
    match store.gcra(&full, shape.t_us, shape.cap_us).await {
        Ok(s) => Outcome::Shared(Decision {
            allowed: s.allowed,
            remaining: s.remaining,
            reset_ns: s.reset_ns,
            retry_after_ns: s.retry_after_ns,
        }),
        Err(_) => match fallback {
            Fallback::Local => Outcome::Fallback(fallback, local()),
            Fallback::Allow => Outcome::Fallback(fallback, None),
            Fallback::Deny => {
                // Come back after one emission interval, as a full bucket would say.
                let t_ns = shape.t_us.saturating_mul(1000);
                Outcome::Fallback(
                    fallback,
                    Some(Decision {
                        allowed: false,
                        remaining: 0,
                        reset_ns: t_ns,
                        retry_after_ns: t_ns,
                    }),
                )
            }
        },
    }
}
