//! From text to a checked runtime `Config`: parse, expand `${VAR}`, deserialise, then
//! check every value and cross-reference, collecting all problems with their places.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml_edit::ImDocument;

use super::doc::{self, Seg};
use super::error::{ConfigError, ConfigErrors, Locator};
use super::schema::{self, Dur};
use super::{Config, Health, HostMatch, Listener, Log, Pool, Route, Server};

/// Defaults, in one place so docs/configuration.md can quote them.
pub mod defaults {
    use std::time::Duration;
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
    pub const UPGRADE_SOCK: &str = "/tmp/gateway_upgrade.sock";
    pub const ADMIN_ADDRESS: std::net::SocketAddr =
        std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9901);
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
}

pub fn parse_and_validate(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let raw = Locator { file: path, text };
    let document = ImDocument::parse(text.to_owned()).map_err(|e| {
        ConfigErrors(vec![raw.error(
            e.span(),
            "",
            format!("invalid TOML: {}", e.message().trim()),
        )])
    })?;
    let expanded = doc::expand_env(&document, env).map_err(|errs| {
        ConfigErrors(
            errs.into_iter()
                .map(|e| raw.error(e.span, doc::render(&e.path), e.message))
                .collect(),
        )
    })?;
    let loc = Locator {
        file: path,
        text: &expanded,
    };
    let document = ImDocument::parse(expanded.clone()).map_err(|e| {
        ConfigErrors(vec![loc.error(
            e.span(),
            "",
            format!(
                "invalid TOML after ${{VAR}} expansion: {}",
                e.message().trim()
            ),
        )])
    })?;
    let file: schema::File = serde_path_to_error::deserialize(toml::Deserializer::new(&expanded))
        .map_err(|e| {
        let key = serde_path(e.path());
        let inner = e.inner();
        ConfigErrors(vec![loc.error(
            inner.span(),
            key,
            inner.message().trim().to_owned(),
        )])
    })?;
    let mut v = Validator {
        loc,
        doc: &document,
        errors: Vec::new(),
    };
    let config = v.config(path, file);
    if v.errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(v.errors))
    }
}

fn serde_path(p: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let segs: Vec<Seg> = p
        .iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
            Segment::Unknown => None,
        })
        .collect();
    doc::render(&segs)
}

pub(super) struct Validator<'a> {
    loc: Locator<'a>,
    doc: &'a ImDocument<String>,
    errors: Vec<ConfigError>,
}

pub(super) fn key(k: &str) -> Seg {
    Seg::Key(k.to_owned())
}

impl Validator<'_> {
    pub(super) fn err(&mut self, path: &[Seg], message: impl Into<String>) {
        let span = doc::span_of(self.doc, path);
        self.errors
            .push(self.loc.error(span, doc::render(path), message));
    }

    pub(super) fn positive(&mut self, path: &[Seg], d: Option<Dur>, default: Duration) -> Duration {
        match d {
            Some(Dur(d)) if d.is_zero() => {
                self.err(path, "must be greater than zero");
                default
            }
            Some(Dur(d)) => d,
            None => default,
        }
    }

    /// An optional duration that, when given, must be greater than zero.
    pub(super) fn positive_opt(&mut self, path: &[Seg], d: Option<Dur>) -> Option<Duration> {
        match d {
            Some(Dur(d)) if d.is_zero() => {
                self.err(path, "must be greater than zero");
                None
            }
            other => other.map(|Dur(d)| d),
        }
    }

    fn config(&mut self, path: &Path, file: schema::File) -> Config {
        let server = self.server(file.server);
        let log = self.log(file.log);
        let listeners = self.listeners(&file.listeners);
        let pool_names: Vec<String> = file.pools.keys().cloned().collect();
        let pools = self.pools(file.pools, &listeners);
        let headers = self.header_policy(file.headers);
        let limits = self.limits(&file.limits);
        let admin = self.admin(file.admin, &listeners);
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let tls = self.tls(&file.tls, &base);
        let mut warnings = Vec::new();
        let sites = self.sites(file.sites, &base, &listeners, &mut warnings);
        let names = super::policy::Names {
            rate_limits: file.rate_limits.keys().cloned().collect(),
            cors: file.cors.keys().cloned().collect(),
        };
        let rate_limits = self.rate_limits(file.rate_limits);
        let cors = self.cors_policies(file.cors);
        let defaults = self.resolve_policy(&[key("route_defaults")], &file.route_defaults, &names);
        let policy_of = |v: &mut Self, i: usize, r: &schema::RouteSection| {
            let own = v.resolve_policy(&[key("routes"), Seg::Index(i)], &r.own_policy(), &names);
            super::policy::merge(own, &defaults, &headers, &limits)
        };
        let routes = self.routes(file.routes, &pool_names, policy_of);
        Config {
            source: path.to_path_buf(),
            server,
            log,
            listeners,
            pools,
            routes,
            headers,
            rate_limits,
            cors,
            limits,
            admin,
            tls,
            sites,
            warnings,
        }
    }

    fn server(&mut self, s: schema::ServerSection) -> Server {
        let threads = match s.threads {
            Some(0) => {
                self.err(&[key("server"), key("threads")], "must be at least 1");
                1
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let shutdown_grace = s.shutdown_grace.map_or(defaults::SHUTDOWN_GRACE, |d| d.0);
        Server {
            threads,
            shutdown_grace,
            trusted_proxies: s.trusted_proxies.into_iter().map(|c| c.0).collect(),
            upgrade_sock: s
                .upgrade_sock
                .map_or_else(|| PathBuf::from(defaults::UPGRADE_SOCK), PathBuf::from),
        }
    }

    fn log(&mut self, l: schema::LogSection) -> Log {
        let level = l.level.unwrap_or_else(|| "info".to_owned());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.err(
                &[key("log"), key("level")],
                format!(
                    "invalid log level {level:?}; write e.g. \"info\" or \"warn,gateway=debug\""
                ),
            );
        }
        Log {
            level,
            format: l.format.unwrap_or_default(),
            access_log: l.access_log.unwrap_or(true),
        }
    }

    fn admin(&mut self, a: schema::AdminSection, listeners: &[Listener]) -> super::Admin {
        let address = a.address.unwrap_or(defaults::ADMIN_ADDRESS);
        let path = [key("admin"), key("address")];
        if !address.ip().is_loopback() && a.allow.is_empty() {
            self.err(
                &path,
                format!("admin on {address} would be reachable from other hosts: add `allow = [\"10.0.0.0/8\"]` (the networks of your Prometheus and operators) or bind it to 127.0.0.1"),
            );
        }
        if listeners.iter().any(|l| {
            l.address.port() == address.port()
                && (l.address.ip() == address.ip()
                    || l.address.ip().is_unspecified()
                    || address.ip().is_unspecified())
        }) {
            self.err(
                &path,
                format!("admin address {address} overlaps a public listener; use its own port"),
            );
        }
        super::Admin {
            address,
            allow: a.allow.into_iter().map(|c| c.0).collect(),
        }
    }

    fn listeners(&mut self, ls: &[schema::ListenerSection]) -> Vec<Listener> {
        if ls.is_empty() {
            self.err(
                &[key("listeners")],
                "at least one [[listeners]] entry with an address is required",
            );
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, l) in ls.iter().enumerate() {
            if !seen.insert(l.address) {
                self.err(
                    &[key("listeners"), Seg::Index(i), key("address")],
                    format!("address {} is listed twice", l.address),
                );
            }
            out.push(Listener {
                address: l.address,
                tls: l.tls,
            });
        }
        out
    }

    fn pools(
        &mut self,
        pools: BTreeMap<String, schema::PoolSection>,
        listeners: &[Listener],
    ) -> Vec<Pool> {
        let mut out = Vec::new();
        for (name, p) in pools {
            let base = [key("pools"), key(&name)];
            let at = |k: &str| [base[0].clone(), base[1].clone(), key(k)];
            if !valid_name(&name) {
                self.err(
                    &base,
                    "pool names may use letters, digits, '-' and '_' only",
                );
            }
            if p.replicas.is_empty() {
                self.err(
                    &at("replicas"),
                    "a pool needs at least one replica (\"host:port\")",
                );
            }
            let mut seen = HashSet::new();
            for (i, r) in p.replicas.iter().enumerate() {
                let mut rp = at("replicas").to_vec();
                rp.push(Seg::Index(i));
                if let Err(m) = check_replica(r) {
                    self.err(&rp, m);
                } else if !seen.insert(r.as_str()) {
                    self.err(&rp, format!("replica {r:?} is listed twice"));
                } else if let Some(l) = own_listener(r, listeners) {
                    self.err(
                        &rp,
                        format!("replica {r:?} is this gateway's own listener {l}: every request would loop back into the gateway"),
                    );
                }
            }
            let connect_timeout = self.positive(
                &at("connect_timeout"),
                p.connect_timeout,
                defaults::CONNECT_TIMEOUT,
            );
            let read_timeout =
                self.positive(&at("read_timeout"), p.read_timeout, defaults::READ_TIMEOUT);
            let write_timeout = self.positive(
                &at("write_timeout"),
                p.write_timeout,
                defaults::WRITE_TIMEOUT,
            );
            let idle_timeout =
                self.positive(&at("idle_timeout"), p.idle_timeout, defaults::IDLE_TIMEOUT);
            let upgrade_idle_timeout = self.positive(
                &at("upgrade_idle_timeout"),
                p.upgrade_idle_timeout,
                defaults::UPGRADE_IDLE_TIMEOUT,
            );
            let health = p.health.map(|h| self.health(&at("health"), h));
            out.push(Pool {
                name: Arc::from(name.as_str()),
                replicas: p.replicas,
                connect_timeout,
                read_timeout,
                write_timeout,
                idle_timeout,
                upgrade_idle_timeout,
                max_retries: p.max_retries.unwrap_or(defaults::MAX_RETRIES),
                resolve_interval: self.positive(
                    &at("resolve_interval"),
                    p.resolve_interval,
                    defaults::RESOLVE_INTERVAL,
                ),
                health,
            });
        }
        out
    }

    fn health(&mut self, base: &[Seg], h: schema::HealthSection) -> Health {
        let at = |k: &str| {
            let mut p = base.to_vec();
            p.push(key(k));
            p
        };
        let path = h.path.unwrap_or_else(|| defaults::HEALTH_PATH.to_owned());
        if !path.starts_with('/') || path.bytes().any(|b| !b.is_ascii_graphic()) {
            self.err(
                &at("path"),
                format!("health check path {path:?} must start with '/' and contain no spaces"),
            );
        }
        let interval = self.positive(&at("interval"), h.interval, defaults::HEALTH_INTERVAL);
        let timeout = self.positive(&at("timeout"), h.timeout, defaults::HEALTH_TIMEOUT);
        let mut count = |k: &str, v: Option<usize>, d: usize| match v {
            Some(0) => {
                self.err(&at(k), "must be at least 1");
                d
            }
            Some(n) => n,
            None => d,
        };
        let healthy_after = count("healthy_after", h.healthy_after, defaults::HEALTHY_AFTER);
        let unhealthy_after = count(
            "unhealthy_after",
            h.unhealthy_after,
            defaults::UNHEALTHY_AFTER,
        );
        Health {
            path,
            interval,
            timeout,
            healthy_after,
            unhealthy_after,
        }
    }

    fn routes(
        &mut self,
        routes: Vec<schema::RouteSection>,
        pool_names: &[String],
        policy_of: impl Fn(&mut Self, usize, &schema::RouteSection) -> super::RoutePolicy,
    ) -> Vec<Route> {
        let mut out: Vec<Route> = Vec::new();
        let mut names = HashSet::new();
        let mut places = HashSet::new();
        for (i, r) in routes.into_iter().enumerate() {
            let at = |k: &str| vec![key("routes"), Seg::Index(i), key(k)];
            let host = match r.host.as_deref().map(parse_host) {
                Some(Err(m)) => {
                    self.err(&at("host"), m);
                    None
                }
                Some(Ok(h)) => Some(h),
                None => None,
            };
            let path = r.path.clone().unwrap_or_else(|| "/".to_owned());
            if !path.starts_with('/') || path.bytes().any(|b| !b.is_ascii_graphic()) {
                self.err(
                    &at("path"),
                    format!("path prefix {path:?} must start with '/' and contain no spaces"),
                );
            }
            let pool = match pool_names.iter().position(|p| *p == r.pool) {
                Some(i) => i,
                None => {
                    let known = if pool_names.is_empty() {
                        "none are defined".to_owned()
                    } else {
                        pool_names.join(", ")
                    };
                    self.err(
                        &at("pool"),
                        format!("no pool named {:?} (pools: {known})", r.pool),
                    );
                    0
                }
            };
            let name = r.name.clone().unwrap_or_else(|| match &r.host {
                Some(h) => format!("{h}{path}"),
                None => path.clone(),
            });
            if !places.insert((host.clone(), path.clone())) {
                let h = r.host.as_deref().unwrap_or("any host");
                self.err(
                    &at("path"),
                    format!("duplicate route: {h} with path {path:?} is already routed"),
                );
            } else if !names.insert(name.clone()) {
                self.err(&at("name"), format!("route name {name:?} is used twice"));
            }
            let policy = policy_of(self, i, &r);
            out.push(Route {
                name: Arc::from(name.as_str()),
                host,
                path,
                strip_prefix: r.strip_prefix,
                pool,
                policy,
            });
        }
        if out.is_empty() {
            self.err(
                &[key("routes")],
                "at least one [[routes]] entry is required",
            );
        }
        out
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `host:port`, with a DNS name, IPv4, or `[IPv6]` host and a non-zero port.
/// The listener a replica address names, when it is one of ours (a literal address or
/// `localhost`; names that resolve elsewhere cannot be told apart here).
fn own_listener(r: &str, listeners: &[Listener]) -> Option<std::net::SocketAddr> {
    let (host, port) = r.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = match host {
        "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
        h => h.parse().ok()?,
    };
    listeners.iter().map(|l| l.address).find(|l| {
        l.port() == port
            && (l.ip() == ip
                || (l.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified())))
    })
}

fn check_replica(r: &str) -> Result<(), String> {
    let bad =
        || format!("replica {r:?} must be \"host:port\" (e.g. \"api:8000\" or \"127.0.0.1:8001\")");
    let (host, port) = r.rsplit_once(':').ok_or_else(bad)?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(bad()),
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| bad());
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() || valid_dns_name(host) {
        Ok(())
    } else {
        Err(bad())
    }
}

pub(super) fn valid_dns_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn parse_host(h: &str) -> Result<HostMatch, String> {
    let lower = h.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("*.") {
        if valid_dns_name(rest) {
            return Ok(HostMatch::Suffix(format!(".{rest}")));
        }
    } else if valid_dns_name(&lower) || lower.parse::<std::net::IpAddr>().is_ok() {
        return Ok(HostMatch::Exact(lower));
    }
    Err(format!("invalid host {h:?}: write a name like \"api.example.com\" or a wildcard like \"*.example.com\" (no port)"))
}

#[cfg(test)]
mod tests {
    use super::super::load_str;
    use std::path::Path;

    fn check(src: &str) -> Result<super::Config, Vec<String>> {
        load_str(Path::new("t.toml"), src, &|n| {
            (n == "DOMAIN").then(|| "example.com".to_owned())
        })
        .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
    }

    const GOOD: &str = r#"
[[listeners]]
address = "127.0.0.1:8080"

[pools.api]
replicas = ["127.0.0.1:8001", "api:8000"]
[pools.api.health]
path = "/readyz"
interval = "2s"

[[routes]]
host = "${DOMAIN}"
path = "/api"
pool = "api"
"#;

    #[test]
    fn good_config_is_typed() {
        let c = check(GOOD).unwrap();
        assert_eq!(
            c.pools[0].health.as_ref().unwrap().interval,
            std::time::Duration::from_secs(2)
        );
        assert_eq!(
            c.routes[0].host,
            Some(super::HostMatch::Exact("example.com".into()))
        );
        assert_eq!(&*c.routes[0].name, "example.com/api");
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let errs = check(&GOOD.replace("interval = \"2s\"", "intervall = \"2s\"")).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("t.toml:9:1: pools.api.health.intervall: "),
            "{}",
            errs[0]
        );
        assert!(errs[0].contains("unknown field `intervall`"), "{}", errs[0]);
    }

    #[test]
    fn bad_duration_names_line_and_key() {
        let errs = check(&GOOD.replace("\"2s\"", "\"2 parsecs\"")).unwrap_err();
        assert!(
            errs[0].starts_with("t.toml:9:12: pools.api.health.interval: invalid duration"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn missing_pool_and_empty_pool_are_both_reported() {
        let src = GOOD.replace("pool = \"api\"", "pool = \"web\"").replace(
            "replicas = [\"127.0.0.1:8001\", \"api:8000\"]",
            "replicas = []",
        );
        let errs = check(&src).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs.iter()
                .any(|e| e.starts_with("t.toml:6:12: pools.api.replicas: a pool needs")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("t.toml:14:8: routes[0].pool: no pool named \"web\"")),
            "{errs:?}"
        );
    }

    #[test]
    fn duplicate_route_is_an_error() {
        let src = format!("{GOOD}\n[[routes]]\nhost = \"example.com\"\npath = \"/api\"\npool = \"api\"\nname = \"again\"\n");
        let errs = check(&src).unwrap_err();
        assert!(
            errs[0].contains("routes[1].path: duplicate route"),
            "{errs:?}"
        );
    }

    #[test]
    fn unset_variable_is_an_error_with_place() {
        let errs = check(&GOOD.replace("${DOMAIN}", "${NOPE}")).unwrap_err();
        assert!(
            errs[0]
                .starts_with("t.toml:12:8: routes[0].host: environment variable NOPE is not set"),
            "{errs:?}"
        );
    }

    #[test]
    fn a_replica_on_our_own_listener_is_refused() {
        let src = "[[listeners]]\naddress = \"0.0.0.0:8080\"\n[pools.p]\nreplicas = [\"127.0.0.1:8080\", \"127.0.0.1:8081\"]\n[[routes]]\npool = \"p\"\n";
        let errs = check(src).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("pools.p.replicas[0]: replica \"127.0.0.1:8080\" is this gateway's own listener 0.0.0.0:8080"),
            "{errs:?}"
        );
    }

    #[test]
    fn bad_replica_and_host() {
        let src = GOOD
            .replace("api:8000", "api")
            .replace("${DOMAIN}", "exa mple.com");
        let errs = check(&src).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.contains("pools.api.replicas[1]: replica \"api\" must be")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("routes[0].host: invalid host")),
            "{errs:?}"
        );
    }

    #[test]
    fn request_buffer_is_off_or_at_least_64kib_and_a_route_may_override_it() {
        let c = check(&format!("{GOOD}\n[limits]\nrequest_buffer = \"0\"\n")).unwrap();
        assert_eq!(c.limits.request_buffer, 0);
        assert_eq!(c.routes[0].policy.request_buffer, 0);
        let c = check(&GOOD.replace(
            "pool = \"api\"",
            "pool = \"api\"\nrequest_buffer = \"8MiB\"",
        ))
        .unwrap();
        assert_eq!(c.limits.request_buffer, 1024 * 1024, "the default");
        assert_eq!(c.routes[0].policy.request_buffer, 8 * 1024 * 1024);
        let errs = check(&GOOD.replace(
            "pool = \"api\"",
            "pool = \"api\"\nrequest_buffer = \"16KiB\"",
        ))
        .unwrap_err();
        assert!(
            errs[0].contains("routes[0].request_buffer: must be \"0\" (off) or at least 64KiB"),
            "{errs:?}"
        );
    }

    #[test]
    fn invalid_toml_is_located() {
        let errs = check("[[listeners]\naddress = 1").unwrap_err();
        assert!(errs[0].starts_with("t.toml:1:"), "{errs:?}");
    }
}
