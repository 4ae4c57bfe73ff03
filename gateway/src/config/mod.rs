//! Configuration: the TOML file (`schema`), `${VAR}` expansion and error locations
//! (`doc`, `error`), and the typed runtime config built once from it (`validate`).
//!
//! `load(path)` is the only entry: it returns a fully checked `Config` or every problem
//! found, each naming file, line:column, key and what is wrong.

pub mod defaults;
mod doc;
mod error;
mod schema;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

pub use error::{ConfigError, ConfigErrors};
pub use schema::LogFormat;

/// The default config, embedded so `gateway run` works on localhost with no file.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/gateway.toml");
/// How the embedded default is named in messages.
/// Named like the file it embeds, so relative paths in it resolve the same way.
pub const DEFAULT_CONFIG_NAME: &str = "config/gateway.toml (embedded)";

/// The typed runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    /// The first 12 hex digits of the file's SHA-256 (before `${VAR}` expansion, so no
    /// secret goes into it): which edit is running, on the status page.
    pub digest: String,
    pub server: Server,
    pub log: Log,
    pub listeners: Vec<Listener>,
    /// Sorted by name; routes refer to pools by index into this list.
    pub pools: Vec<Pool>,
    /// In file order; the router decides precedence.
    pub routes: Vec<Route>,
    /// The response header policy every route starts from.
    pub headers: HeaderPolicy,
    /// Sorted by name; `RoutePolicy::rate_limits` indexes here.
    pub rate_limits: Vec<RateLimit>,
    /// Sorted by name; `RoutePolicy::cors` indexes here.
    pub cors: Vec<Cors>,
    /// Sorted by name; `RoutePolicy::compression` indexes here.
    pub compression: Vec<Compression>,
    pub limits: Limits,
    pub admin: Admin,
    pub tls: Tls,
    pub sites: Vec<Site>,
    /// Redis, shared by several gateways; `None`: everything stays in this process.
    pub store: Option<Store>,
    /// Things that are allowed but probably not meant (printed by `gateway check`).
    pub warnings: Vec<String>,
}

/// The shared store (`[store]`): a Redis (or Valkey) server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    /// `redis://host:port/db` or `rediss://...` as written (never with a password).
    pub url: String,
    /// From the environment variable `password_env` names.
    pub password: Option<Secret>,
    /// A CA to trust for `rediss://` instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Every key the gateway writes starts with this.
    pub key_prefix: String,
    /// Longest wait for one store call on the request path; past it the fallback
    /// decides.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Refuse to start while the store cannot be reached (default: start, and serve
    /// with the fallbacks).
    pub required: bool,
    /// 32 bytes from the environment variable `encryption_key_env` names: private keys
    /// are sealed with it (AES-256-GCM) before they go to the store.
    pub encryption_key: Option<Secret>,
}

/// A value from the environment that must never be printed (`Debug` shows `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(v: impl Into<Vec<u8>>) -> Self {
        Secret(v.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Where a rate limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// In this process.
    #[default]
    Local,
    /// In the store, shared by every gateway using it; `Fallback` decides while the
    /// store cannot answer.
    Cluster(Fallback),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Count in this process meanwhile (each gateway admits the limit on its own).
    Local,
    Allow,
    Deny,
}

/// The admin listener: metrics, health, status and reload; never on a public listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub address: SocketAddr,
    /// Who may use it; empty means loopback only.
    pub allow: Vec<IpNet>,
}

/// Response headers to set and remove, names lowercase, values checked at load.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderPolicy {
    pub set: Vec<(String, String)>,
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_body_size: u64,
    /// Bodies up to this size are read in full before the request is forwarded; 0 = off.
    pub request_buffer: u64,
    pub max_header_size: u64,
    /// From a connection's start (or a keep-alive request's first byte) to the end of
    /// the request head: trickled headers (slowloris) are cut off here.
    pub header_timeout: Duration,
    /// Longest wait for the next piece of a request body.
    pub body_timeout: Duration,
    /// How long an idle keep-alive connection is kept; zero turns keep-alive off.
    pub keepalive_timeout: Duration,
    /// Concurrent connections one client address (IPv6: its /64) may hold; 0 = no cap.
    pub max_connections_per_client: u32,
    /// Client connections served at once, in all; past it new ones are closed at
    /// accept (0: no cap).
    pub max_connections: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub name: Arc<str>,
    pub count: u32,
    pub period: Duration,
    pub burst: u32,
    pub key: RateKey,
    /// IPv6 clients are grouped by this prefix length (one /64 is one household).
    pub ipv6_prefix: u8,
    pub max_keys: usize,
    pub exempt_paths: Vec<String>,
    pub scope: Scope,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// The client address (after trusted-proxy resolution).
    Address,
    /// A request header's value (hashed), else the client address.
    Header(http::HeaderName),
    /// One bucket for everyone.
    Global,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    pub name: Arc<str>,
    pub origins: Vec<OriginMatch>,
    pub methods: Vec<http::Method>,
    /// Lowercase.
    pub headers: Vec<String>,
    pub expose: Vec<String>,
    pub credentials: bool,
    pub max_age: Option<Duration>,
}

/// A response compression policy (`[compression.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compression {
    pub name: Arc<str>,
    /// In the server's order of preference, each with its level.
    pub encodings: Vec<(Coding, u32)>,
    /// Bodies shorter than this (when their length is known) go as they are.
    pub min_length: u64,
    /// Media types compressed, lowercase: `text/html`, `text/*`, `application/*+json`.
    pub types: Vec<String>,
}

/// A content coding the gateway can apply to a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    Zstd,
    Br,
    Gzip,
}

impl Coding {
    pub fn name(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }

    pub fn parse(s: &str) -> Option<Coding> {
        match s.to_ascii_lowercase().as_str() {
            "zstd" => Some(Coding::Zstd),
            "br" => Some(Coding::Br),
            "gzip" => Some(Coding::Gzip),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginMatch {
    Any,
    Exact(String),
    /// `https://*.example.com`: scheme `https://`, host ending in `.example.com`.
    Suffix {
        scheme: String,
        suffix: String,
    },
}

/// The policy of one route, with `[route_defaults]` already applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoutePolicy {
    pub rate_limits: Vec<usize>,
    pub cors: Option<usize>,
    /// Index into `Config::compression`; `None`: responses go as they are.
    pub compression: Option<usize>,
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    pub max_body_size: u64,
    pub request_buffer: u64,
    /// `[headers]` merged with the route's own `headers`.
    pub headers: HeaderPolicy,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub threads: usize,
    /// After SIGTERM: how long in-flight requests get to finish.
    pub shutdown_grace: Duration,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Unix socket over which `gateway run --upgrade` receives the listening sockets.
    pub upgrade_sock: PathBuf,
    /// Listening sockets with `SO_REUSEPORT`: a second gateway in the same network
    /// namespace can bind the same ports, so one can take over from the other.
    pub reuse_port: bool,
    /// Idle connections to replicas kept for reuse, per worker thread (one pool for
    /// every replica of every pool, least recently used out first).
    pub upstream_keepalive: usize,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub level: String,
    pub format: LogFormat,
    pub access_log: bool,
    /// Access lines go to this file (JSON, appended; reopened on SIGUSR1) instead of
    /// stdout.
    pub access_log_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub address: SocketAddr,
    pub tls: bool,
    /// TLS listeners: ALPN offers `h2` as well as `http/1.1`.
    pub http2: bool,
}

/// Where certificates live and how often renewals are considered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// `internal/` (the local CA) and `acme/` (account, certificates) live here.
    pub state_dir: PathBuf,

    /// Backoff after a failed order: from `retry_min`, doubling, at most `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Config {
    /// The site that issues certificates on demand (at most one: `gateway check`), by
    /// index, for names the file does not list.
    pub fn on_demand_site(&self) -> Option<(usize, &Site, &OnDemand)> {
        self.sites
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.on_demand.as_ref().map(|o| (i, s, o)))
    }
}

/// A set of names served over HTTPS with one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// Lowercase; may include one wildcard form `*.example.com`.
    pub names: Vec<String>,
    pub certificate: CertSource,
    /// Certificates also for names not listed, ordered at their first handshake when
    /// the app's ask endpoint allows them (ACME sites only).
    pub on_demand: Option<OnDemand>,
    /// Status of the HTTP->HTTPS redirect on plain listeners (`None`: no redirect).
    pub redirect: Option<u16>,
    /// The `Strict-Transport-Security` value (`None`: not sent).
    pub hsts: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    Internal,
    Files { cert: PathBuf, key: PathBuf },
    Acme(Acme),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acme {
    pub directory: String,
    pub email: Option<String>,
    /// A root to trust for the ACME server itself (private CAs, tests).
    pub ca_root: Option<PathBuf>,
    /// Renew this long before expiry (`None`: 30 days, or a third of a short lifetime).
    pub renew_before: Option<Duration>,
    /// How the CA checks we control the names.
    pub challenge: Challenge,
}

/// ACME validation method (RFC 8555 HTTP-01 on the plain listener, RFC 8737 TLS-ALPN-01
/// on the HTTPS listener, RFC 8555 DNS-01 through the `[dns]` server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Http01,
    TlsAlpn01,
    Dns01(Arc<Dns>),
}

/// `[sites.on_demand]`: who decides which names get a certificate, and how fast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnDemand {
    /// `GET <ask>?domain=<name>`: 2xx allows the name, anything else refuses it.
    pub ask: String,
    pub ask_timeout: Duration,
    /// How long a first handshake waits for its certificate before it fails.
    pub handshake_wait: Duration,
    /// New names ordered per minute, at most.
    pub orders_per_minute: u32,
    /// Names this gateway keeps certificates for on demand, at most.
    pub max_names: usize,
    /// How long a refused name is refused without asking again.
    pub refusal_ttl: Duration,
}

/// `[dns]`: the zone's primary server, which takes TSIG-signed RFC 2136 updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    /// `host:port` of the primary (port 53 when the file names none).
    pub server: String,
    /// Lowercase, without the final dot.
    pub zone: String,
    /// The TSIG key's name, as the server knows it.
    pub tsig_key: String,
    pub tsig_algorithm: TsigAlgorithm,
    /// The key itself (decoded from the base64 in the environment).
    pub tsig_secret: Secret,
    /// Where the record must be visible before the CA is told (`host:port` each).
    pub check_servers: Vec<String>,
    pub ttl: Duration,
    pub timeout: Duration,
    pub propagation_timeout: Duration,
}

/// The TSIG MACs every RFC 2136 server accepts that are still safe to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsigAlgorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: Arc<str>,
    /// `host:port` as written; resolved when the pool is built.
    pub replicas: Vec<String>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    /// How long an idle keep-alive connection to a replica is kept for reuse.
    pub idle_timeout: Duration,
    /// Idle timeout of an upgraded (WebSocket) connection.
    pub upgrade_idle_timeout: Duration,
    /// Further attempts on other replicas after the first one failed.
    pub max_retries: usize,
    /// How often replica names are resolved again (DNS discovery).
    pub resolve_interval: Duration,
    /// Active checks; without a `[pools.NAME.health]` table only failed connections count.
    pub health: Option<Health>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_after: usize,
    pub unhealthy_after: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub name: Arc<str>,
    pub host: Option<HostMatch>,
    /// Path prefix, always starting with `/`.
    pub path: String,
    pub strip_prefix: bool,
    /// Index into `Config::pools`.
    pub pool: usize,
    pub policy: RoutePolicy,
}

/// Which Host a route answers for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostMatch {
    /// `api.example.com` (stored lowercase).
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com` (stored as `.example.com`).
    Suffix(String),
}

impl std::fmt::Display for HostMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

/// Reads, expands, parses and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            position: None,
            key: String::new(),
            message: format!("cannot read file: {e}"),
        }])
    })?;
    load_str(path, &text, &|name| std::env::var(name).ok())
}

/// Validates `text` as if read from `path`, with `env` for `${VAR}` expansion.
pub fn load_str(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    validate::parse_and_validate(path, text, env)
}

impl Config {
    /// One line for `gateway check`.
    pub fn summary(&self) -> String {
        let replicas: usize = self.pools.iter().map(|p| p.replicas.len()).sum();
        format!(
            "{} listener(s) ({} TLS), {} site(s), {} pool(s) with {} replica(s), {} route(s)",
            self.listeners.len(),
            self.listeners.iter().filter(|l| l.tls).count(),
            self.sites.len(),
            self.pools.len(),
            replicas,
            self.routes.len()
        )
    }
}
