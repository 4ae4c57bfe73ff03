//! The TOML file as written by operators: serde types with `deny_unknown_fields`.
//!
//! Values that have a syntax of their own (durations, addresses, CIDRs) are parsed
//! here, during deserialisation, so that a bad one is reported with its line and key.
//! Cross-references and defaults are resolved in `validate.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub listeners: Vec<ListenerSection>,
    #[serde(default)]
    pub pools: BTreeMap<String, PoolSection>,
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    /// Response header policy for every route (routes add to it).
    #[serde(default)]
    pub headers: HeadersSection,
    /// Policy for routes that do not set their own.
    #[serde(default)]
    pub route_defaults: PolicySection,
    #[serde(default)]
    pub rate_limits: BTreeMap<String, RateLimitSection>,
    #[serde(default)]
    pub cors: BTreeMap<String, CorsSection>,
    /// Response compression policies, referred to by routes.
    #[serde(default)]
    pub compression: BTreeMap<String, CompressionSection>,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub tls: TlsSection,
    #[serde(default)]
    pub sites: Vec<SiteSection>,
    /// Shared state for several gateways (rate limits, certificates): Redis.
    pub store: Option<StoreSection>,
    /// The DNS server that takes RFC 2136 updates, for DNS-01 challenges.
    pub dns: Option<DnsSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    pub server: String,
    pub zone: String,
    pub tsig_key: String,
    pub tsig_algorithm: Option<String>,
    pub tsig_secret_env: String,
    pub check_servers: Option<Vec<String>>,
    pub ttl: Option<Dur>,
    pub timeout: Option<Dur>,
    pub propagation_timeout: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub redis: String,
    pub password_env: Option<String>,
    pub ca_file: Option<String>,
    pub key_prefix: Option<String>,
    pub timeout: Option<Dur>,
    pub connect_timeout: Option<Dur>,
    pub required: Option<bool>,
    pub encryption_key_env: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub address: Option<SocketAddr>,
    #[serde(default)]
    pub allow: Vec<Cidr>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HeadersSection {
    /// X-Content-Type-Options, X-Frame-Options, Referrer-Policy, Permissions-Policy.
    pub security_defaults: Option<bool>,
    pub content_security_policy: Option<String>,
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Response headers to drop; default `["Server", "X-Powered-By"]`.
    pub remove: Option<Vec<String>>,
}

/// Per-route header changes on top of `[headers]`.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RouteHeadersSection {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Policy keys a route (or `[route_defaults]`) may set.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    pub rate_limits: Option<Vec<String>>,
    pub cors: Option<String>,
    pub compression: Option<String>,
    pub allow: Option<Vec<Cidr>>,
    pub deny: Option<Vec<Cidr>>,
    pub max_body_size: Option<Size>,
    pub request_buffer: Option<Size>,
    pub headers: Option<RouteHeadersSection>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_body_size: Option<Size>,
    pub request_buffer: Option<Size>,
    pub max_header_size: Option<Size>,
    pub header_timeout: Option<Dur>,
    pub body_timeout: Option<Dur>,
    pub keepalive_timeout: Option<Dur>,
    pub max_connections_per_client: Option<u32>,
    pub max_connections: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    pub rate: Rate,
    pub burst: Option<u32>,
    pub key: Option<RateKeyKind>,
    pub header: Option<String>,
    pub ipv6_prefix: Option<u8>,
    pub max_keys: Option<usize>,
    pub exempt_paths: Option<Vec<String>>,
    pub scope: Option<ScopeKind>,
    pub fallback: Option<FallbackKind>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ScopeKind {
    Local,
    Cluster,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FallbackKind {
    Local,
    Allow,
    Deny,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RateKeyKind {
    Address,
    Header,
    Global,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionSection {
    pub encodings: Option<Vec<String>>,
    pub levels: Option<BTreeMap<String, u32>>,
    pub min_length: Option<Size>,
    pub types: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSection {
    pub allow_origins: Vec<String>,
    pub allow_methods: Option<Vec<String>>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    pub max_age: Option<Dur>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub threads: Option<usize>,
    pub shutdown_grace: Option<Dur>,
    pub upgrade_sock: Option<String>,
    pub reuse_port: Option<bool>,
    pub upstream_keepalive: Option<usize>,
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub level: Option<String>,
    pub format: Option<LogFormat>,
    pub access_log: Option<bool>,
    pub access_log_file: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    pub address: SocketAddr,
    /// HTTPS (certificates from `[[sites]]`) instead of plain HTTP.
    #[serde(default)]
    pub tls: bool,
    /// Offer HTTP/2 (ALPN `h2`) besides HTTP/1.1 on a TLS listener.
    pub http2: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub state_dir: Option<String>,

    pub retry_min: Option<Dur>,
    pub retry_max: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSection {
    pub names: Vec<String>,
    pub certificate: CertSourceKind,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub acme: Option<AcmeSection>,
    pub on_demand: Option<OnDemandSection>,
    pub redirect: Option<RedirectKind>,
    pub hsts: Option<bool>,
    pub hsts_max_age: Option<Dur>,
    pub hsts_include_subdomains: Option<bool>,
    pub hsts_preload: Option<bool>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CertSourceKind {
    Internal,
    Acme,
    Files,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
pub enum RedirectKind {
    #[serde(rename = "308")]
    Permanent308,
    #[serde(rename = "301")]
    Moved301,
    #[serde(rename = "off")]
    Off,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeSection {
    pub directory: String,
    pub email: Option<String>,
    pub ca_root: Option<String>,
    pub renew_before: Option<Dur>,
    pub challenge: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnDemandSection {
    pub ask: String,
    pub ask_timeout: Option<Dur>,
    pub handshake_wait: Option<Dur>,
    pub orders_per_minute: Option<u32>,
    pub max_names: Option<usize>,
    pub refusal_ttl: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    pub replicas: Vec<String>,
    pub connect_timeout: Option<Dur>,
    pub read_timeout: Option<Dur>,
    pub write_timeout: Option<Dur>,
    pub idle_timeout: Option<Dur>,
    pub upgrade_idle_timeout: Option<Dur>,
    pub max_retries: Option<usize>,
    pub resolve_interval: Option<Dur>,
    pub health: Option<HealthSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    pub path: Option<String>,
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
    pub healthy_after: Option<usize>,
    pub unhealthy_after: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub name: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    #[serde(default)]
    pub strip_prefix: bool,
    pub pool: String,
    // The policy keys of `PolicySection`, inline: serde cannot combine `flatten` with
    // `deny_unknown_fields`.
    pub rate_limits: Option<Vec<String>>,
    pub cors: Option<String>,
    pub compression: Option<String>,
    pub allow: Option<Vec<Cidr>>,
    pub deny: Option<Vec<Cidr>>,
    pub max_body_size: Option<Size>,
    pub request_buffer: Option<Size>,
    pub headers: Option<RouteHeadersSection>,
}

impl RouteSection {
    /// The route's own policy keys (unset ones fall back to `[route_defaults]`).
    pub fn own_policy(&self) -> PolicySection {
        PolicySection {
            rate_limits: self.rate_limits.clone(),
            cors: self.cors.clone(),
            compression: self.compression.clone(),
            allow: self.allow.clone(),
            deny: self.deny.clone(),
            max_body_size: self.max_body_size,
            request_buffer: self.request_buffer,
            headers: self.headers.clone(),
        }
    }
}

/// A duration written like `10s`, `250ms`, `1m30s`.
#[derive(Debug, Clone, Copy)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?} ({e}); write e.g. \"500ms\", \"10s\", \"1m\""
            ))
        })
    }
}

/// An address range like `10.0.0.0/8`, or one address (`192.0.2.7` means /32).
#[derive(Debug, Clone, Copy)]
pub struct Cidr(pub IpNet);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        s.parse::<std::net::IpAddr>()
            .map(|ip| Cidr(IpNet::from(ip)))
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "invalid address or CIDR {s:?}; write e.g. \"10.0.0.0/8\" or \"192.0.2.7\""
                ))
            })
    }
}

/// `"5 per 15m"`, `"100 per 1m"`, `"10 per hour"`.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub count: u32,
    pub period: Duration,
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_rate(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid rate {s:?}; write \"COUNT per PERIOD\": COUNT a whole number from 1, \
                 PERIOD `second`, `minute`, `hour`, `day` or a duration (`10s`, `15m`, `1h`, \
                 `1h30m`, `2d`); e.g. \"5 per 15m\", \"100 per minute\", \"10 per hour\""
            ))
        })
    }
}

pub fn parse_rate(s: &str) -> Option<Rate> {
    let (count, period) = s.split_once(" per ")?;
    let count: u32 = count.trim().parse().ok().filter(|c| *c > 0)?;
    let period = match period.trim() {
        "second" => Duration::from_secs(1),
        "minute" => Duration::from_secs(60),
        "hour" => Duration::from_secs(3600),
        "day" => Duration::from_secs(86400),
        other => humantime::parse_duration(other).ok()?,
    };
    (!period.is_zero()).then_some(Rate { count, period })
}

/// A byte size: `"10MiB"`, `"512KiB"`, `"1MB"`, `"4096"`.
#[derive(Debug, Clone, Copy)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_size(&s).map(Size).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid size {s:?}; write e.g. \"10MiB\", \"512KiB\" or \"4096\""
            ))
        })
    }
}

pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "KiB" | "K" | "k" => 1024,
        "MB" => 1000 * 1000,
        "MiB" | "M" | "m" => 1024 * 1024,
        "GB" => 1000 * 1000 * 1000,
        "GiB" | "G" | "g" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        let r = parse_rate("5 per 15m").unwrap();
        assert_eq!((r.count, r.period), (5, Duration::from_secs(900)));
        assert_eq!(
            parse_rate("100 per minute").unwrap().period,
            Duration::from_secs(60)
        );
        assert!(parse_rate("0 per 1m").is_none());
        assert!(parse_rate("5/15m").is_none());
        assert!(parse_rate("5 per 0s").is_none());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MiB"), Some(10 * 1024 * 1024));
        assert_eq!(parse_size("1MB"), Some(1_000_000));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1 KiB"), Some(1024));
        assert_eq!(parse_size("ten"), None);
    }
}
