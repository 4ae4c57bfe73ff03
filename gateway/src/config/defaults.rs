//! Every default value of the config, in one place: what a key is when the file
//! does not set it (docs/configuration.md quotes these), and the limits a value must
//! respect.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

// [server], [admin]
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// The upgrade socket is `UPGRADE_SOCK.ADMINPORT.sock`: two gateways on one host never
/// share an admin port, so they never share an upgrade socket.
pub const UPGRADE_SOCK: &str = "/tmp/gateway_upgrade";
/// Pingora's default: idle upstream connections per worker thread.
pub const UPSTREAM_KEEPALIVE: usize = 128;
pub const ADMIN_ADDRESS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9901);

// [pools.NAME] and [pools.NAME.health]
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const UPGRADE_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
pub const MAX_RETRIES: usize = 2;
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(10);
pub const HEALTH_PATH: &str = "/healthz";
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(10);
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
pub const HEALTHY_AFTER: usize = 2;
pub const UNHEALTHY_AFTER: usize = 2;

// [limits], [route_defaults], [rate_limits.NAME], [cors.NAME], [headers]
pub const MAX_BODY_SIZE: u64 = 10 * 1024 * 1024;
/// Covers the bodies an API sees (JSON, forms, small files) without letting a
/// client make the gateway hold more than this per request in memory.
pub const REQUEST_BUFFER: u64 = 1024 * 1024;
pub const MAX_HEADER_SIZE: u64 = 32 * 1024;
/// A browser sends its whole head at once; 15 s leaves room for a slow mobile link.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(15);
/// nginx's `client_body_timeout` default (and pingora's own read timeout).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// What pingora sets on every HTTP/1 connection (nginx: 75 s, Caddy: 5 min).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's is worker_connections (often 1,024 a worker); this many idle connections
/// cost the gateway about 100 MiB (docs/performance.md), within a container's limits.
pub const MAX_CONNECTIONS: usize = 16_384;
pub const IPV6_PREFIX: u8 = 64;
pub const MAX_KEYS: usize = 100_000;
pub const EXEMPT_PATHS: [&str; 2] = ["/healthz", "/readyz"];
pub const CORS_METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "OPTIONS"];
pub const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "strict-origin-when-cross-origin"),
    (
        "permissions-policy",
        "camera=(), microphone=(), geolocation=()",
    ),
];
pub const REMOVE: [&str; 2] = ["server", "x-powered-by"];

/// Pingora's retry buffer (`BODY_BUF_LIMIT`): a chunked body is read ahead through it
/// (proxy/body.rs), so a non-zero `request_buffer` smaller than this could not be
/// honoured for one.
pub const MIN_REQUEST_BUFFER: u64 = 64 * 1024;

// [tls] and [[sites]]
pub const STATE_DIR: &str = "certs";

pub const RETRY_MIN: Duration = Duration::from_secs(60);
pub const RETRY_MAX: Duration = Duration::from_secs(3600);
pub const HSTS_MAX_AGE: Duration = Duration::from_secs(365 * 86400);

// [sites.on_demand]
/// The app answers from memory or one query; a slow ask holds a handshake.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// An ACME order takes a few seconds; browsers wait well beyond this for a handshake.
pub const HANDSHAKE_WAIT: Duration = Duration::from_secs(30);
/// Let's Encrypt allows 300 new orders per account per 3 hours; bursts above this are
/// more likely a scan than customers arriving.
pub const ORDERS_PER_MINUTE: u32 = 10;
pub const MAX_NAMES: usize = 1000;
pub const REFUSAL_TTL: Duration = Duration::from_secs(60);

// [dns]
pub const DNS_TSIG_ALGORITHM: &str = "hmac-sha256";
/// Short, so a record left behind by a crash is not cached for long; the CA reads it
/// from the authoritative server anyway.
pub const DNS_TTL: Duration = Duration::from_secs(60);
/// One DNS exchange (an update or a query) with the zone's servers.
pub const DNS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the new TXT record may take to reach every server in `check_servers`
/// (secondaries follow the primary's NOTIFY within seconds; a hosted provider's
/// anycast network within a minute or two).
pub const DNS_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(180);

// [store]
pub const STORE_KEY_PREFIX: &str = "gateway:";
/// A store call on loopback or a LAN takes well under a millisecond; 20 ms leaves room
/// for a busy server and bounds what an outage adds to a request.
pub const STORE_TIMEOUT: Duration = Duration::from_millis(20);
pub const STORE_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

// [compression.NAME]
/// The policy a route may name without defining it.
pub const COMPRESSION_POLICY: &str = "default";
/// brotli last: at the levels a proxy can afford per response it makes bodies no
/// smaller than gzip's for more CPU (docs/performance.md, "Compression"); it is there
/// for clients that prefer it by q-value.
pub const COMPRESSION_ENCODINGS: [&str; 3] = ["zstd", "gzip", "br"];
/// Levels that cost little CPU for most of the gain on dynamic responses (Caddy's
/// defaults are of the same order; nginx's gzip_comp_level is 1).
pub const ZSTD_LEVEL: u32 = 3;
pub const BR_LEVEL: u32 = 4;
pub const GZIP_LEVEL: u32 = 5;
/// Smaller bodies gain little and may grow (Caddy's minimum_length).
pub const COMPRESSION_MIN_LENGTH: u64 = 512;
/// Text and the structured types built on it; images, video, archives and fonts other
/// than SVG are compressed already.
pub const COMPRESSION_TYPES: [&str; 10] = [
    "text/*",
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/xml",
    "application/*+xml",
    "application/x-ndjson",
    "application/wasm",
    "image/svg+xml",
    "image/x-icon",
];
