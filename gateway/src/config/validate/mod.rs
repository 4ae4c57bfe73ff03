//! From text to a checked runtime `Config`: parse, expand `${VAR}`, deserialise, then
//! check every value and cross-reference, collecting all problems with their places.
//! One file per part of the file: `policy` (limits, headers, rate limits, route
//! policy), `compress`, `cors`, `pools`, `routes`, `server` (`[server]`, `[log]`,
//! `[admin]`, `[[listeners]]`), `store`, `tls` (the `[tls]` section and `[[sites]]`).

mod compress;
mod cors;
mod dns;
mod on_demand;
mod policy;
mod pools;
mod routes;
mod server;
mod store;
mod tls;

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml_edit::ImDocument;

use crate::config::doc::{self, Seg};
use crate::config::error::{ConfigError, ConfigErrors, Locator};
use crate::config::schema::{self, Dur};
use crate::config::{defaults, Config};

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
        env,
        errors: Vec::new(),
    };
    let mut config = v.config(path, file);
    config.digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
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
    /// The environment, for secrets a section names by variable (`[store]`).
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
}

pub(super) fn key(k: &str) -> Seg {
    Seg::Key(k.to_owned())
}

/// `base` with one more key: the path of a value inside a section.
pub(super) fn at(base: &[Seg], k: &str) -> Vec<Seg> {
    let mut p = base.to_vec();
    p.push(key(k));
    p
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
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let log = self.log(file.log, &base);
        let listeners = self.listeners(&file.listeners);
        let pool_names: Vec<String> = file.pools.keys().cloned().collect();
        let pools = self.pools(file.pools, &listeners);
        let headers = self.header_policy(file.headers);
        let limits = self.limits(&file.limits);
        let admin = self.admin(file.admin, &listeners);
        let mut server = server;
        if server.upgrade_sock.as_os_str().is_empty() {
            server.upgrade_sock = PathBuf::from(format!(
                "{}.{}.sock",
                defaults::UPGRADE_SOCK,
                admin.address.port()
            ));
        }
        let tls = self.tls(&file.tls, &base);
        let mut warnings = Vec::new();
        let dns = self.dns(file.dns);
        let sites = self.sites(file.sites, &base, &listeners, dns.as_ref(), &mut warnings);
        let dns01 = |s: &crate::config::Site| matches!(&s.certificate, crate::config::CertSource::Acme(a) if matches!(a.challenge, crate::config::Challenge::Dns01(_)));
        if dns.is_some() && !sites.iter().any(dns01) {
            warnings.push(
                "[dns] is configured but no site has challenge = \"dns-01\": it is not used".into(),
            );
        }
        // `compression = "default"` works without a section of its own: the built-in
        // policy, unless the file defines `[compression.default]`.
        let mut compression = file.compression;
        compression
            .entry(defaults::COMPRESSION_POLICY.to_owned())
            .or_default();
        let names = policy::Names {
            rate_limits: file.rate_limits.keys().cloned().collect(),
            cors: file.cors.keys().cloned().collect(),
            compression: compression.keys().cloned().collect(),
        };
        let acme_sites = sites
            .iter()
            .any(|s| matches!(s.certificate, crate::config::CertSource::Acme(_)));
        let store = self.store(file.store, &base, acme_sites, &mut warnings);
        let rate_limits = self.rate_limits(file.rate_limits, store.is_some());
        let cors = self.cors_policies(file.cors);
        let compression = self.compression_policies(compression);
        let defaults = self.resolve_policy(&[key("route_defaults")], &file.route_defaults, &names);
        let policy_of = |v: &mut Self, i: usize, r: &schema::RouteSection| {
            let own = v.resolve_policy(&[key("routes"), Seg::Index(i)], &r.own_policy(), &names);
            policy::merge(own, &defaults, &headers, &limits)
        };
        let routes = self.routes(file.routes, &pool_names, policy_of);
        Config {
            source: path.to_path_buf(),
            digest: String::new(),
            server,
            log,
            listeners,
            pools,
            routes,
            headers,
            rate_limits,
            cors,
            compression,
            limits,
            admin,
            tls,
            sites,
            store,
            warnings,
        }
    }
}

pub(super) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
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
    fn a_wrong_rate_is_answered_with_the_forms_that_parse() {
        let base = "[[listeners]]\naddress = \"127.0.0.1:1\"\n[pools.p]\nreplicas = [\"127.0.0.1:9\"]\n[[routes]]\npool = \"p\"\n";
        for bad in [
            "5/15m",
            "5 per",
            "0 per 1m",
            "five per minute",
            "5 per fortnight",
        ] {
            let errs = check(&format!("{base}[rate_limits.l]\nrate = \"{bad}\"\n")).unwrap_err();
            assert!(
                errs[0].contains("rate_limits.l.rate")
                    && errs[0].contains("COUNT per PERIOD")
                    && errs[0].contains("`minute`")
                    && errs[0].contains("`15m`"),
                "{bad}: {errs:?}"
            );
        }
        for good in [
            "5 per 15m",
            "100 per minute",
            "10 per hour",
            "10 per 1h",
            "3 per 1h30m",
            "1 per 2d",
        ] {
            assert!(
                check(&format!("{base}[rate_limits.l]\nrate = \"{good}\"\n")).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn good_config_is_typed() {
        let c = check(GOOD).unwrap();
        assert_eq!(
            c.pools[0].health.as_ref().unwrap().interval,
            std::time::Duration::from_secs(2)
        );
        assert_eq!(
            c.routes[0].host,
            Some(crate::config::HostMatch::Exact("example.com".into()))
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
