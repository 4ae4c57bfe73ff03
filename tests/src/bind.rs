//! BIND 9 (Debian package `bind9`) as the authoritative server of a test zone on a
//! loopback port, taking RFC 2136 updates signed with one TSIG key, as a user's primary
//! would; `dig` (package `bind9-dnsutils`) reads what it serves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_until};

pub const KEY_NAME: &str = "acme-update";

pub struct Bind {
    pub addr: SocketAddr,
    pub zone: String,
    /// The TSIG key's secret in base64, as `tsig-keygen` prints it.
    pub secret: String,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Bind {
    /// Starts `named` as the primary of `zone`, whose apex, `ns` and every name under
    /// it resolve to 127.0.0.1, and which takes updates signed with [`KEY_NAME`].
    pub fn start(zone: &str) -> Bind {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let keygen = Command::new("tsig-keygen")
            .args(["-a", "hmac-sha256", KEY_NAME])
            .output()
            .expect("tsig-keygen (Debian package bind9)");
        let text = String::from_utf8_lossy(&keygen.stdout).to_string();
        let secret = text
            .split('"')
            .nth(3)
            .unwrap_or_else(|| panic!("no secret in tsig-keygen's output: {text}"))
            .to_owned();
        let conf = format!(
            "options {{\n  directory \"{d}\";\n  pid-file \"{d}/named.pid\";\n  \
             session-keyfile \"{d}/session.key\";\n  managed-keys-directory \"{d}\";\n  \
             listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  \
             recursion no;\n  notify no;\n  dnssec-validation no;\n}};\n\
             controls {{ }};\n{text}\n\
             zone \"{zone}\" {{ type primary; file \"{d}/zone.db\"; \
             allow-update {{ key \"{KEY_NAME}\"; }}; }};\n",
            port = addr.port()
        );
        std::fs::write(dir.path().join("named.conf"), conf).unwrap();
        let db = format!(
            "$TTL 60\n@ IN SOA ns.{zone}. admin.{zone}. 1 60 60 600 60\n@ IN NS ns.{zone}.\n\
             ns IN A 127.0.0.1\n@ IN A 127.0.0.1\n* IN A 127.0.0.1\n"
        );
        std::fs::write(dir.path().join("zone.db"), db).unwrap();
        let log = dir.path().join("named.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("named")
            .arg("-g")
            .arg("-c")
            .arg(dir.path().join("named.conf"))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("named (Debian package bind9)");
        let b = Bind {
            addr,
            zone: zone.to_owned(),
            secret,
            child,
            log,
            _dir: dir,
        };
        let up = wait_until(Duration::from_secs(15), || {
            b.dig(&["SOA", zone]).contains(&format!("ns.{zone}."))
        });
        assert!(up, "named did not start:\n{}", b.log_text());
        b
    }

    /// `dig @bind +short ARGS`: what the server answers, one value per line.
    pub fn dig(&self, args: &[&str]) -> String {
        let out = Command::new("dig")
            .arg(format!("@{}", self.addr.ip()))
            .args([
                "-p",
                &self.addr.port().to_string(),
                "+tcp",
                "+short",
                "+time=2",
            ])
            .args(args)
            .output()
            .expect("dig (Debian package bind9-dnsutils)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The TXT values at `name`, without their quotes.
    pub fn txt(&self, name: &str) -> Vec<String> {
        self.dig(&["TXT", name])
            .lines()
            .map(|l| l.trim_matches('"').to_owned())
            .filter(|l| !l.is_empty())
            .collect()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `[dns]` section for this server, its secret read from `secret_env`.
    pub fn dns_section(&self, secret_env: &str) -> String {
        format!(
            "[dns]\nserver = \"{}\"\nzone = \"{}\"\ntsig_key = \"{KEY_NAME}\"\n\
             tsig_secret_env = \"{secret_env}\"\n",
            self.addr, self.zone
        )
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
