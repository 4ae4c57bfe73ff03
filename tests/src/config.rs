//! Test configs assembled from the parts a test is about. The listener preamble, the
//! `[tls]` section, health-checked pools and ACME sites were copied from test to test;
//! here each is one call, and whatever else a test needs goes in verbatim with
//! [`TestConfig::with`]. `{listen}` and `{tls}` are filled in by `Gateway::start`.

use std::fmt::Write;
use std::path::Path;

use crate::pebble::Pebble;
use crate::Replica;

#[derive(Debug, Clone, Default)]
pub struct TestConfig {
    head: String,
    tls: Vec<String>,
    body: String,
}

impl TestConfig {
    /// One plain HTTP listener.
    pub fn plain() -> Self {
        TestConfig {
            head: "[[listeners]]\naddress = \"{listen}\"\n".into(),
            ..Default::default()
        }
    }

    /// A plain listener and an HTTPS one, certificates kept under `state`.
    pub fn plain_and_tls(state: &Path) -> Self {
        let mut c = Self::plain();
        c.head += "[[listeners]]\naddress = \"{tls}\"\ntls = true\n";
        c.tls.push(format!("state_dir = \"{}\"", state.display()));
        c
    }

    /// Only an HTTPS listener (at `{listen}`), certificates kept under `state`.
    pub fn tls_only(state: &Path) -> Self {
        TestConfig {
            head: "[[listeners]]\naddress = \"{listen}\"\ntls = true\n".into(),
            tls: vec![format!("state_dir = \"{}\"", state.display())],
            ..Default::default()
        }
    }

    /// Retries of failed ACME orders within `min`..`max` (tests cannot wait minutes).
    pub fn acme_retry(mut self, min: &str, max: &str) -> Self {
        self.tls.push(format!("retry_min = \"{min}\""));
        self.tls.push(format!("retry_max = \"{max}\""));
        self
    }

    /// A site with a certificate from the gateway's local CA.
    pub fn internal_site(self, names: &[&str], extra: &str) -> Self {
        self.with(&format!(
            "[[sites]]\nnames = {}\ncertificate = \"internal\"\n{extra}",
            list(names)
        ))
    }

    /// A site whose certificate comes from `pebble` over ACME (`extra`: more keys of
    /// `[sites.acme]`, e.g. the challenge).
    pub fn acme_site(self, names: &[&str], pebble: &Pebble, extra: &str) -> Self {
        self.with(&format!(
            "[[sites]]\nnames = {}\ncertificate = \"acme\"\n[sites.acme]\ndirectory = \"{}\"\n\
             ca_root = \"{}\"\n{extra}",
            list(names),
            pebble.directory(),
            pebble.api_ca.cert_path.display()
        ))
    }

    /// A pool over `replicas`, without active health checks.
    pub fn pool(self, name: &str, replicas: &[&Replica]) -> Self {
        self.with(&format!(
            "[pools.{name}]\nreplicas = {}\n",
            crate::replica_list(replicas)
        ))
    }

    /// A pool whose replicas are checked on `/readyz` every `interval`, flipping after
    /// one result (tests watch flips happen).
    pub fn checked_pool(self, name: &str, replicas: &[&Replica], interval: &str) -> Self {
        self.pool(name, replicas).with(&format!(
            "[pools.{name}.health]\npath = \"/readyz\"\ninterval = \"{interval}\"\n\
             timeout = \"300ms\"\nunhealthy_after = 1\nhealthy_after = 1\n"
        ))
    }

    /// A route of `path` to `pool` (`extra`: more route keys).
    pub fn route(self, path: &str, pool: &str, extra: &str) -> Self {
        self.with(&format!(
            "[[routes]]\npath = \"{path}\"\npool = \"{pool}\"\n{extra}"
        ))
    }

    /// Any other section, as written.
    pub fn with(mut self, toml: &str) -> Self {
        self.body.push('\n');
        self.body.push_str(toml);
        if !toml.ends_with('\n') {
            self.body.push('\n');
        }
        self
    }

    pub fn build(&self) -> String {
        let mut out = self.head.clone();
        if !self.tls.is_empty() {
            out.push_str("\n[tls]\n");
            for line in &self.tls {
                let _ = writeln!(out, "{line}");
            }
        }
        out.push_str(&self.body);
        out
    }
}

/// Two health-checked pools; `/api` goes to `api_pool` and says which config `version`
/// served it (`X-Config-Version`), `/login` is rate-limited.
pub fn two_pools(a: &Replica, b: &Replica, api_pool: &str, version: &str) -> String {
    TestConfig::plain()
        .checked_pool("a", &[a], "500ms")
        .checked_pool("b", &[b], "500ms")
        .with("[rate_limits.login]\nrate = \"5 per 15m\"")
        .route(
            "/api",
            api_pool,
            &format!(
                "name = \"api\"\nheaders = {{ set = {{ \"X-Config-Version\" = \"{version}\" }} }}"
            ),
        )
        .route(
            "/login",
            "a",
            "name = \"login\"\nstrip_prefix = true\nrate_limits = [\"login\"]",
        )
        .build()
}

fn list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!("[{}]", quoted.join(", "))
}
