//! The process-wide sections: `[server]`, `[log]`, `[admin]` and `[[listeners]]`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{key, tls, Validator};
use crate::config::doc::Seg;
use crate::config::schema;
use crate::config::{defaults, Admin, Listener, Log, Server};

impl Validator<'_> {
    pub(super) fn server(&mut self, s: schema::ServerSection) -> Server {
        let threads = match s.threads {
            Some(0) => {
                self.err(&[key("server"), key("threads")], "must be at least 1");
                1
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let shutdown_grace = s.shutdown_grace.map_or(defaults::SHUTDOWN_GRACE, |d| d.0);
        if s.upstream_keepalive == Some(0) {
            self.err(
                &[key("server"), key("upstream_keepalive")],
                "must be at least 1 (Pingora reuses a connection it was just told to close); \
                 to close replica connections sooner, lower the pool's idle_timeout",
            );
        }
        Server {
            threads,
            shutdown_grace,
            trusted_proxies: s.trusted_proxies.into_iter().map(|c| c.0).collect(),
            // Without one in the file: set once the admin port is known.
            upgrade_sock: s.upgrade_sock.map(PathBuf::from).unwrap_or_default(),
            reuse_port: s.reuse_port.unwrap_or(false),
            upstream_keepalive: s.upstream_keepalive.unwrap_or(defaults::UPSTREAM_KEEPALIVE),
        }
    }

    pub(super) fn log(&mut self, l: schema::LogSection, base: &Path) -> Log {
        let level = l.level.unwrap_or_else(|| "info".to_owned());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.err(
                &[key("log"), key("level")],
                format!(
                    "invalid log level {level:?}; write e.g. \"info\" or \"warn,gateway=debug\""
                ),
            );
        }
        let access_log_file = l.access_log_file.as_deref().map(|f| tls::resolve(base, f));
        if let Some(dir) = access_log_file.as_deref().and_then(Path::parent) {
            if !dir.as_os_str().is_empty() && !dir.is_dir() {
                self.err(
                    &[key("log"), key("access_log_file")],
                    format!("the directory {} does not exist", dir.display()),
                );
            }
        }
        Log {
            level,
            format: l.format.unwrap_or_default(),
            access_log: l.access_log.unwrap_or(true),
            access_log_file,
        }
    }

    pub(super) fn admin(&mut self, a: schema::AdminSection, listeners: &[Listener]) -> Admin {
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
        Admin {
            address,
            allow: a.allow.into_iter().map(|c| c.0).collect(),
        }
    }

    pub(super) fn listeners(&mut self, ls: &[schema::ListenerSection]) -> Vec<Listener> {
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
            if l.http2 == Some(true) && !l.tls {
                self.err(
                    &[key("listeners"), Seg::Index(i), key("http2")],
                    "HTTP/2 is offered on TLS listeners only (ALPN); a plain listener speaks HTTP/1.1",
                );
            }
            out.push(Listener {
                address: l.address,
                tls: l.tls,
                http2: l.tls && l.http2.unwrap_or(true),
            });
        }
        out
    }
}
