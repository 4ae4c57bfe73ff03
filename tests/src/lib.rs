//! The end-to-end harness: starts real `upstream-api` replicas and a real `gateway` as
//! processes on 127.0.0.1 with free ports (`ports.rs`), waits for them by polling, and stops
//! them (SIGKILL) when dropped. The binaries must be built first
//! (`cargo build --workspace --bins`, which `tests/run.sh` does).
#![allow(clippy::unwrap_used)]

pub mod bind;
pub mod browser;
pub mod compose;
pub mod config;
pub mod pebble;
pub mod pki;
mod ports;
pub mod redis;

pub use config::{two_pools, TestConfig};
pub use ports::{dead_port, free_port, Ports};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of a workspace binary next to the test executable's target dir.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/<test> -> target/debug/<name>
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// One upstream-api process.
pub struct Replica {
    pub id: String,
    pub addr: SocketAddr,
    pub child: Child,
    pub maintenance_file: PathBuf,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Replica {
    pub fn start(id: &str) -> Replica {
        Self::start_on(id, free_port(), &[])
    }

    pub fn start_on(id: &str, port: u16, extra: &[&str]) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let maintenance_file = dir.path().join("maintenance");
        let log = dir.path().join("replica.log");
        let child = Command::new(bin("upstream-api"))
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--replica-id")
            .arg(id)
            .arg("--maintenance-file")
            .arg(&maintenance_file)
            .args(extra)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || accepts(addr)),
            "replica {id} did not start on {addr}"
        );
        Replica {
            id: id.to_owned(),
            addr,
            child,
            maintenance_file,
            log,
            _dir: dir,
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Makes /readyz answer 503 (or 200 again) without stopping the replica.
    pub fn set_maintenance(&self, on: bool) {
        if on {
            std::fs::write(&self.maintenance_file, b"").unwrap();
        } else {
            let _ = std::fs::remove_file(&self.maintenance_file);
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Three replicas `r1`..`r3`.
pub fn replicas(n: usize) -> Vec<Replica> {
    (1..=n).map(|i| Replica::start(&format!("r{i}"))).collect()
}

/// A TOML array of the replicas' addresses.
pub fn replica_list(rs: &[&Replica]) -> String {
    let items: Vec<String> = rs.iter().map(|r| format!("\"{}\"", r.addr)).collect();
    format!("[{}]", items.join(", "))
}

/// One gateway process on fresh ports, running `config` (with `{listen}` substituted).
pub struct Gateway {
    pub addr: SocketAddr,
    /// The HTTPS listener, when the config has `{tls}`.
    pub tls: SocketAddr,
    /// The admin listener (a fresh port per gateway, so tests can run in parallel).
    pub admin: SocketAddr,
    pub child: Child,
    pub config: PathBuf,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gateway {
    pub fn start(config: &str) -> Gateway {
        Self::start_at(config, Ports::fresh())
    }

    /// Starts on chosen ports (`{listen}`, `{tls}`, `{admin}` in the config).
    pub fn start_at(config: &str, ports: Ports) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let Ports {
            listen: addr,
            tls,
            admin,
        } = ports;
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, Self::render(config, ports)).unwrap();
        let log = dir.path().join("gateway.log");
        let child = Command::new(bin("gateway"))
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let mut gw = Gateway {
            addr,
            tls,
            admin,
            child,
            config: config_path,
            log,
            _dir: dir,
        };
        // Each listener is bound by its own service start, so one may accept a moment
        // before another; every listener the test will talk to must accept before the
        // gateway counts as up (a CI run once lost that race on the admin port).
        let has_tls = config.contains("{tls}");
        let up = wait_until(Duration::from_secs(15), || {
            (accepts(addr) && accepts(admin) && (!has_tls || accepts(tls)))
                || gw.child.try_wait().unwrap().is_some()
        });
        assert!(
            up && gw.child.try_wait().unwrap().is_none(),
            "gateway did not start:\n{}",
            gw.stderr_text()
        );
        gw
    }

    /// `{listen}`, `{tls}` and `{admin}` substituted; an `[admin]` table added when missing.
    pub fn render(config: &str, ports: Ports) -> String {
        let admin = ports.admin;
        let mut text = config
            .replace("{listen}", &ports.listen.to_string())
            .replace("{tls}", &ports.tls.to_string())
            .replace("{admin}", &admin.to_string());
        if !text.contains("[admin]") {
            text.push_str(&format!("\n[admin]\naddress = \"{admin}\"\n"));
        }
        text
    }

    /// Replaces the config file (for reload tests), with the same substitutions.
    pub fn write_config(&self, config: &str) {
        let ports = Ports {
            listen: self.addr,
            tls: self.tls,
            admin: self.admin,
        };
        std::fs::write(&self.config, Self::render(config, ports)).unwrap();
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The access-log entry of the request with this id, once it is written.
    pub fn access_line(&self, request_id: &str) -> serde_json::Value {
        let mut found = None;
        wait_until(Duration::from_secs(5), || {
            found = self
                .log_text()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["target"] == "access" && v["request_id"] == request_id);
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("no access-log line for {request_id}:\n{}", self.log_text()))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal gateway config: one listener, one pool `api` over `replicas`, route `/api`.
/// `pool_extra` and `extra` are appended to the pool table and the file.
pub fn simple_config(replicas: &[&Replica], pool_extra: &str, extra: &str) -> String {
    format!(
        r#"
[log]
level = "info"

[[listeners]]
address = "{{listen}}"

[pools.api]
replicas = {list}
{pool_extra}

[[routes]]
path = "/api"
pool = "api"

{extra}
"#,
        list = replica_list(replicas)
    )
}

/// An HTTP client that never uses a proxy and shows redirects instead of following them.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Sends raw bytes and reads until the peer closes or `timeout`: for requests HTTP
/// client libraries refuse to send.
pub fn raw_request(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one response whose body is `Content-Length` long from a raw connection (which
/// stays open for the next); interim `1xx` answers before it stay in the text.
pub fn read_response(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        let mut rest = text.as_str();
        while rest.starts_with("HTTP/1.1 1") {
            match rest.split_once("\r\n\r\n") {
                Some((_, after)) => rest = after,
                None => break,
            }
        }
        if let Some((head, body)) = rest.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if !head.starts_with("HTTP/1.1 1") && body.len() >= len {
                return text;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return text,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// The JSON body of a gateway or API error, checked against the contract.
pub fn assert_error_contract(
    status: u16,
    expected: u16,
    headers_id: Option<&str>,
    body: &str,
) -> serde_json::Value {
    assert_eq!(status, expected, "body: {body}");
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    let err = &v["error"];
    assert!(err["code"].is_string() && err["message"].is_string(), "{v}");
    let id = err["request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no request_id: {v}"));
    assert!(!id.is_empty());
    if let Some(h) = headers_id {
        assert_eq!(id, h, "body and X-Request-ID header disagree");
    }
    v
}

/// A raw HTTP/1.1 error response (from `raw_request`) checked against the JSON error
/// contract: its status, a body with a request id, and an `X-Request-ID` header that
/// agrees. Returns the request id and the body.
pub fn assert_raw_error(response: &str, expected: u16) -> (String, serde_json::Value) {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response: {response:?}"));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"));
    let header_id = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-request-id")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no X-Request-ID: {head}"));
    let v = assert_error_contract(status, expected, Some(&header_id), body);
    (header_id, v)
}

/// Like `raw_request`, but from a chosen loopback source address (e.g. `127.0.0.2`),
/// acting as a second host such as a trusted proxy in front of the gateway.
pub async fn raw_request_from(source: &str, addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A JSON document from the gateway's admin listener (`/status`, `/reload` answers).
pub async fn admin_json(gw: &Gateway, path: &str) -> serde_json::Value {
    client()
        .get(gw.admin_url(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Scrapes the gateway's `/metrics`, parsed by a real Prometheus text parser (so a
/// format error fails the test).
pub async fn scrape(gw: &Gateway) -> prometheus_parse::Scrape {
    let text = client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of the sample `name` whose labels include `labels` (0 when absent);
/// for a histogram, its total count.
pub fn sample(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus_parse::Value;
    s.samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

/// `gateway check --config path` with `env` added to this process's environment:
/// whether it passed, its stdout and its stderr.
pub fn gateway_check(path: &std::path::Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(bin("gateway"))
        .args(["check", "--config"])
        .arg(path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
