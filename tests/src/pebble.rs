//! Let's Encrypt's test ACME server, Pebble (Debian package `pebble`), for real ACME
//! tests on loopback: a throwaway CA for Pebble's own HTTPS listener, and
//! `pebble-challtestsrv` as its DNS server so every name resolves to 127.0.0.1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::pki::TestCa;
use crate::{free_port, wait_until};

pub struct Pebble {
    pub listen: SocketAddr,
    pub mgmt: SocketAddr,
    /// The CA of Pebble's own HTTPS listener (give it to the gateway as `ca_root`).
    pub api_ca: TestCa,
    config: PathBuf,
    dns: SocketAddr,
    env: Vec<(String, String)>,
    pebble: Option<Child>,
    challtestsrv: Child,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Pebble {
    /// Starts Pebble validating HTTP-01 on `http_port` (the gateway's plain listener),
    /// issuing certificates valid `validity_secs` (Pebble's default: 5 years).
    pub fn start(http_port: u16, validity_secs: Option<u64>, env: &[(&str, &str)]) -> Pebble {
        Self::start_on(http_port, free_port(), validity_secs, env)
    }

    /// Like [`Pebble::start`], validating TLS-ALPN-01 on `tls_port` (the gateway's HTTPS
    /// listener) as well.
    pub fn start_on(
        http_port: u16,
        tls_port: u16,
        validity_secs: Option<u64>,
        env: &[(&str, &str)],
    ) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let api_ca = TestCa::new(dir.path(), "pebble-api");
        let (cert, key) = api_ca.leaf(dir.path(), "pebble-api", &["localhost", "127.0.0.1"]);
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mgmt: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut pebble = serde_json::json!({
            "listenAddress": listen.to_string(),
            "managementListenAddress": mgmt.to_string(),
            "certificate": cert,
            "privateKey": key,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        });
        if let Some(v) = validity_secs {
            pebble["certificateValidityPeriod"] = v.into();
        }
        let config = dir.path().join("pebble.json");
        std::fs::write(&config, serde_json::json!({ "pebble": pebble }).to_string()).unwrap();
        let challtestsrv = Command::new("pebble-challtestsrv")
            .args([
                "-dns01",
                &dns.to_string(),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .args([
                "-management",
                &format!("127.0.0.1:{}", free_port()),
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv (Debian package pebble; tests/deps.sh installs it)");
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push(("PEBBLE_VA_NOSLEEP".into(), "1".into()));
        let log = dir.path().join("pebble.log");
        let mut p = Pebble {
            listen,
            mgmt,
            api_ca,
            config,
            dns,
            env,
            pebble: None,
            challtestsrv,
            log,
            _dir: dir,
        };
        p.restart();
        p
    }

    pub fn directory(&self) -> String {
        format!("https://{}/dir", self.listen)
    }

    /// (Re)starts the Pebble process (its CA changes at every start).
    pub fn restart(&mut self) {
        self.stop();
        let mut cmd = Command::new("pebble");
        cmd.arg("-config")
            .arg(&self.config)
            .arg("-dnsserver")
            .arg(self.dns.to_string());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = cmd
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("pebble (Debian package pebble)");
        self.pebble = Some(child);
        let (listen, mgmt) = (self.listen, self.mgmt);
        let up = wait_until(Duration::from_secs(15), || {
            std::net::TcpStream::connect(listen).is_ok()
                && std::net::TcpStream::connect(mgmt).is_ok()
        });
        assert!(
            up,
            "pebble did not start:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Restarts resolving every name through `dns` (a BIND serving the test zone)
    /// instead of pebble-challtestsrv: DNS-01 TXT records are read from there.
    pub fn resolve_with(&mut self, dns: SocketAddr) {
        self.dns = dns;
        self.restart();
    }

    /// Restarts with extra environment (e.g. `PEBBLE_WFE_NONCEREJECT`).
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.restart();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.pebble.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Orders Pebble has received so far (`POST /order-plz` in its log). Counts each
    /// order once only when Pebble takes every nonce (`PEBBLE_WFE_NONCEREJECT=0`): a
    /// refused one is sent again.
    pub fn orders(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .matches("POST /order-plz")
            .count()
    }

    /// The root Pebble issues under right now (for verifying served chains).
    pub async fn root_pem(&self) -> String {
        let c = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.api_ca.cert_pem.as_bytes()).unwrap(),
            )
            .build()
            .unwrap();
        c.get(format!("https://{}/roots/0", self.mgmt))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        let _ = self.challtestsrv.kill();
        let _ = self.challtestsrv.wait();
    }
}
