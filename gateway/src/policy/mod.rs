//! Edge policy per route, compiled once per snapshot so the request path only looks
//! things up: response header rules, CORS, compression, access lists, size limits and
//! the route's rate limiters.

pub mod access;
pub mod cors;
pub mod response_headers;

use std::sync::Arc;

use crate::compress::CompiledCompression;
use crate::config::{Config, RoutePolicy};
use crate::ratelimit::Limiter;
use cors::CompiledCors;
use response_headers::HeaderRules;

/// Everything the proxy needs to apply one route's policy.
pub struct CompiledPolicy {
    pub headers: HeaderRules,
    pub cors: Option<Arc<CompiledCors>>,
    pub compression: Option<Arc<CompiledCompression>>,
    pub allow: Vec<ipnet::IpNet>,
    pub deny: Vec<ipnet::IpNet>,
    pub max_body_size: u64,
    pub request_buffer: u64,
    pub limiters: Vec<Arc<Limiter>>,
}

impl CompiledPolicy {
    pub fn compile(
        p: &RoutePolicy,
        limiters: &[Arc<Limiter>],
        cors: &[Arc<CompiledCors>],
        compression: &[Arc<CompiledCompression>],
    ) -> Self {
        CompiledPolicy {
            headers: HeaderRules::compile(&p.headers),
            cors: p.cors.and_then(|i| cors.get(i).cloned()),
            compression: p.compression.and_then(|i| compression.get(i).cloned()),
            allow: p.allow.clone(),
            deny: p.deny.clone(),
            max_body_size: p.max_body_size,
            request_buffer: p.request_buffer,
            limiters: p
                .rate_limits
                .iter()
                .filter_map(|&i| limiters.get(i).cloned())
                .collect(),
        }
    }

    /// The policy of responses that match no route: global headers only.
    pub fn fallback(config: &Config) -> Self {
        CompiledPolicy {
            headers: HeaderRules::compile(&config.headers),
            cors: None,
            compression: None,
            allow: Vec::new(),
            deny: Vec::new(),
            max_body_size: config.limits.max_body_size,
            request_buffer: config.limits.request_buffer,
            limiters: Vec::new(),
        }
    }
}
