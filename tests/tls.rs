//! TLS termination seen by real clients (openssl, curl, rustls): SNI selection, protocol
//! versions, HTTP/2, redirects and HSTS, the internal CA; and testssl.sh's verdict on the
//! HTTPS listener.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use e2e::pki::{https_client, served_cert, served_serial, TestCa};
use e2e::*;

fn static_config(dir: &std::path::Path, ca: &TestCa, r: &Replica) -> String {
    let (a_cert, a_key) = ca.leaf(dir, "a", &["a.test"]);
    let (b_cert, b_key) = ca.leaf(dir, "b", &["b.test"]);
    let (w_cert, w_key) = ca.leaf(dir, "wild", &["*.wild.test"]);
    format!(
        r#"
[[listeners]]
address = "{{listen}}"
[[listeners]]
address = "{{tls}}"
tls = true

[[sites]]
names = ["a.test"]
certificate = "files"
cert_file = "{a_cert}"
key_file = "{a_key}"
hsts_max_age = "2h"
hsts_include_subdomains = true

[[sites]]
names = ["b.test"]
certificate = "files"
cert_file = "{b_cert}"
key_file = "{b_key}"
redirect = "301"

[[sites]]
names = ["*.wild.test"]
certificate = "files"
cert_file = "{w_cert}"
key_file = "{w_key}"
redirect = "off"
hsts = false

[pools.api]
replicas = ["{r}"]

[[routes]]
path = "/api"
pool = "api"
"#,
        a_cert = a_cert.display(),
        a_key = a_key.display(),
        b_cert = b_cert.display(),
        b_key = b_key.display(),
        w_cert = w_cert.display(),
        w_key = w_key.display(),
        r = r.addr
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_picks_exact_then_wildcard_then_default_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "static");
    let r = Replica::start("r1");
    let gw = Gateway::start(&static_config(dir.path(), &ca, &r));
    assert!(served_cert(gw.tls, "a.test").contains("DNS:a.test"));
    assert!(served_cert(gw.tls, "b.test").contains("DNS:b.test"));
    assert!(served_cert(gw.tls, "x.wild.test").contains("DNS:*.wild.test"));
    assert!(
        served_cert(gw.tls, "unknown.example").contains("DNS:a.test"),
        "the first site is the default"
    );

    // A real HTTPS request per name verifies the chain and the hostname.
    for name in ["a.test", "b.test", "x.wild.test"] {
        let c = https_client(&ca.cert_pem, name, gw.tls);
        let resp = c
            .get(format!("https://{name}:{}/api/whoami", gw.tls.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{name}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["x_forwarded_proto"], "https");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_tls_12_and_13_and_h2_is_negotiated() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "static");
    let r = Replica::start("r1");
    let gw = Gateway::start(&static_config(dir.path(), &ca, &r));
    let s_client = |args: &[&str]| {
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &gw.tls.to_string(),
                "-servername",
                "a.test",
            ])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let old = s_client(&["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]);
    // rustls answers a TLS 1.1 ClientHello with a fatal alert (handshake_failure, 40):
    // nothing is negotiated.
    assert!(
        old.contains("Cipher is (NONE)") && old.contains("SSL alert number"),
        "{old}"
    );
    // "New, TLSvX, Cipher is ..." is printed as soon as the handshake completes.
    let v12 = s_client(&["-tls1_2"]);
    assert!(
        v12.contains("New, TLSv1.2, Cipher is ECDHE"),
        "forward secrecy on 1.2: {v12}"
    );
    let v13 = s_client(&["-tls1_3"]);
    assert!(v13.contains("New, TLSv1.3, Cipher is TLS_"), "{v13}");

    let ca_file = ca.cert_path.display().to_string();
    let out = Command::new("curl")
        .args([
            "-s",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            "--cacert",
            &ca_file,
        ])
        .args(["--resolve", &format!("a.test:{}:127.0.0.1", gw.tls.port())])
        .arg(format!("https://a.test:{}/api/whoami", gw.tls.port()))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2",
        "HTTP/2 over ALPN"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_and_hsts_follow_the_site() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "static");
    let r = Replica::start("r1");
    let gw = Gateway::start(&static_config(dir.path(), &ca, &r));
    let plain = |host: &str, path: &str| {
        raw_request(
            gw.addr,
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(5),
        )
    };
    let out = plain("a.test", "/api/items?page=2&x=%20y");
    assert!(out.starts_with("HTTP/1.1 308"), "{out}");
    let location = format!(
        "location: https://a.test:{}/api/items?page=2&x=%20y",
        gw.tls.port()
    );
    assert!(
        out.to_lowercase().contains(&location.to_lowercase()),
        "{out}"
    );
    assert!(
        !out.to_lowercase().contains("strict-transport-security"),
        "no HSTS on plain HTTP: {out}"
    );
    assert!(plain("b.test", "/x").starts_with("HTTP/1.1 301"));
    // A site with redirect = "off" is served over plain HTTP, without HSTS.
    let out = plain("api.wild.test", "/api/whoami");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(!out.to_lowercase().contains("strict-transport-security"));
    // ACME challenge paths are never redirected (an unknown token is a JSON 404).
    let out = plain("a.test", "/.well-known/acme-challenge/unknown-token");
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");

    // HSTS on every HTTPS response of a site, gateway-made errors included.
    let c = https_client(&ca.cert_pem, "a.test", gw.tls);
    for (path, status) in [("/api/whoami", 200), ("/nope", 404)] {
        let resp = c
            .get(format!("https://a.test:{}{path}", gw.tls.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status);
        assert_eq!(
            resp.headers()["strict-transport-security"],
            "max-age=7200; includeSubDomains"
        );
    }
    let b = https_client(&ca.cert_pem, "b.test", gw.tls);
    let resp = b
        .get(format!("https://b.test:{}/api/whoami", gw.tls.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=31536000",
        "default: one year"
    );
    let w = https_client(&ca.cert_pem, "x.wild.test", gw.tls);
    let resp = w
        .get(format!("https://x.wild.test:{}/api/whoami", gw.tls.port()))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers().get("strict-transport-security").is_none(),
        "hsts = false"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn internal_ca_serves_localhost_and_survives_restarts() {
    let r = Replica::start("r1");
    let state = tempfile::tempdir().unwrap();
    let config = format!(
        "[[listeners]]\naddress = \"{{listen}}\"\n[[listeners]]\naddress = \"{{tls}}\"\ntls = true\n[tls]\nstate_dir = \"{}\"\n\
         [[sites]]\nnames = [\"localhost\", \"127.0.0.1\"]\ncertificate = \"internal\"\n[pools.api]\nreplicas = [\"{}\"]\n[[routes]]\npath = \"/api\"\npool = \"api\"\n",
        state.path().display(),
        r.addr
    );
    let gw = Gateway::start(&config);
    let ca_path = state.path().join("internal/ca.pem");
    let ca_pem = std::fs::read_to_string(&ca_path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.path().join("internal/ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the CA key is private");
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            &ca_path.display().to_string(),
        ])
        .arg(format!("https://localhost:{}/api/whoami", gw.tls.port()))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "curl trusts the internal CA for localhost"
    );
    let by_ip = https_client(&ca_pem, "127.0.0.1", gw.tls);
    assert_eq!(
        by_ip
            .get(format!("https://127.0.0.1:{}/api/whoami", gw.tls.port()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let serial = served_serial(gw.tls, "localhost").expect("a certificate is served");
    drop(gw);
    // A restart keeps the CA and the leaf: nothing is issued again, clients that trust
    // the CA keep working.
    let gw = Gateway::start(&config);
    assert_eq!(std::fs::read_to_string(&ca_path).unwrap(), ca_pem);
    assert_eq!(
        served_serial(gw.tls, "localhost").as_deref(),
        Some(serial.as_str()),
        "the same leaf is served after a restart"
    );
    let c = https_client(&ca_pem, "localhost", gw.tls);
    assert_eq!(
        c.get(format!("https://localhost:{}/api/whoami", gw.tls.port()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// testssl.sh (Debian package `testssl.sh`) against the HTTPS listener with the
/// certificate kinds the gateway makes itself (internal CA and ACME: ECDSA P-256):
/// protocols, cipher categories, forward secrecy and the known vulnerabilities.
#[tokio::test(flavor = "multi_thread")]
async fn testssl_finds_no_weak_protocol_cipher_or_vulnerability() {
    let r = Replica::start("r1");
    let state = tempfile::tempdir().unwrap();
    let config = format!(
        "[[listeners]]\naddress = \"{{listen}}\"\ntls = true\n[tls]\nstate_dir = \"{}\"\n\
         [[sites]]\nnames = [\"localhost\"]\ncertificate = \"internal\"\n[pools.api]\nreplicas = [\"{}\"]\n[[routes]]\npath = \"/api\"\npool = \"api\"\n",
        state.path().display(),
        r.addr
    );
    let gw = Gateway::start(&config);
    let report = state.path().join("testssl.json");
    let out = Command::new("testssl")
        .args([
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "batch",
            "--ip",
            "one",
        ])
        .args(["-p", "-s", "-f", "-U", "--jsonfile"])
        .arg(&report)
        .arg(format!("https://localhost:{}/api/whoami", gw.addr.port()))
        .output()
        .expect("testssl (Debian package testssl.sh; tests/deps.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let findings: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let get = |id: &str| {
        findings
            .iter()
            .find(|f| f["id"] == id)
            .unwrap_or_else(|| panic!("no {id} in the report:\n{text}"))
    };
    for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        assert_eq!(get(old)["finding"], "not offered", "{old}");
    }
    assert_eq!(get("TLS1_2")["finding"], "offered");
    assert!(get("TLS1_3")["finding"]
        .as_str()
        .unwrap()
        .starts_with("offered"));
    for weak in [
        "cipherlist_NULL",
        "cipherlist_aNULL",
        "cipherlist_EXPORT",
        "cipherlist_LOW",
        "cipherlist_3DES_IDEA",
        "cipherlist_AVERAGE",
    ] {
        assert_eq!(get(weak)["finding"], "not offered", "{weak}");
    }
    assert_eq!(get("PFS")["severity"], "OK");
    let bad: Vec<_> = findings
        .iter()
        .filter(|f| {
            !matches!(
                f["severity"].as_str(),
                Some("OK") | Some("INFO") | Some("LOW")
            )
        })
        .collect();
    assert!(bad.is_empty(), "findings above LOW: {bad:#?}\n{text}");
    assert!(findings.len() > 30, "the scan ran: {text}");
}

/// Over HTTP/2 the host comes in `:authority`, not `Host`: the replica must be told the
/// same `X-Forwarded-Host` (and get a `Host`) either way, and the access line must name
/// the same host. Routing and site matching read it the same way: the request reaches
/// the route for its host (another replica than the host-less route's), with its
/// site's HSTS. (Redirects happen on plain listeners, which speak HTTP/1 only; CORS
/// reads `Origin`, not the host.)
#[tokio::test(flavor = "multi_thread")]
async fn the_host_is_the_same_over_http2_and_http1() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "h2host");
    let r = Replica::start("r1");
    // a.test has a route of its own, to another replica: routing must see the host.
    let only_a = Replica::start("only-a");
    let cfg = format!(
        "{}\n[pools.only_a]\nreplicas = [\"{}\"]\n\n[[routes]]\nhost = \"a.test\"\npath = \"/api\"\npool = \"only_a\"\n",
        static_config(dir.path(), &ca, &r),
        only_a.addr
    );
    let gw = Gateway::start(&cfg);
    let authority = format!("a.test:{}", gw.tls.port());
    for (version, flag) in [("2", "--http2"), ("1.1", "--http1.1")] {
        let rid = format!("h2-host-{}", version.replace('.', "-"));
        let out = Command::new("curl")
            .args(["-s", flag, "-D", "-", "--cacert"])
            .arg(&ca.cert_path)
            .arg("--resolve")
            .arg(format!("a.test:{}:127.0.0.1", gw.tls.port()))
            .args(["-H", &format!("X-Request-ID: {rid}")])
            .arg(format!("https://{authority}/api/whoami"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with(&format!("HTTP/{version} 200")), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("strict-transport-security: max-age=7200"),
            "the site's HSTS over HTTP/{version}: {head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            v["x_forwarded_host"],
            authority.as_str(),
            "HTTP/{version}: {v}"
        );
        assert_eq!(v["host"], authority.as_str(), "HTTP/{version}: {v}");
        assert_eq!(v["replica"], "only-a", "a.test's own route: {v}");
        assert_eq!(gw.access_line(&rid)["host"], "a.test", "HTTP/{version}");

        // Another name on the same connection kind takes the route without a host.
        let out = Command::new("curl")
            .args(["-s", flag, "--cacert"])
            .arg(&ca.cert_path)
            .arg("--resolve")
            .arg(format!("x.wild.test:{}:127.0.0.1", gw.tls.port()))
            .arg(format!("https://x.wild.test:{}/api/whoami", gw.tls.port()))
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["replica"], "r1", "HTTP/{version}: {v}");
    }
}

/// `http2 = false` on a TLS listener: ALPN offers HTTP/1.1 only, so a client that asks
/// for HTTP/2 gets HTTP/1.1, while the other TLS listener still speaks HTTP/2.
#[tokio::test(flavor = "multi_thread")]
async fn a_listener_can_offer_http1_only() {
    let state = tempfile::tempdir().unwrap();
    let r = Replica::start("r1");
    let h1_only = e2e::free_port();
    let cfg = TestConfig::plain_and_tls(state.path())
        .with(&format!(
            "[[listeners]]\naddress = \"127.0.0.1:{h1_only}\"\ntls = true\nhttp2 = false"
        ))
        .internal_site(&["localhost"], "")
        .pool("api", &[&r])
        .route("/api", "api", "")
        .build();
    let gw = Gateway::start(&cfg);
    let ca = state.path().join("internal/ca.pem");
    let version = |port: u16| {
        let out = Command::new("curl")
            .args([
                "-s",
                "--http2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version}",
                "--cacert",
            ])
            .arg(&ca)
            .arg(format!("https://localhost:{port}/api/whoami"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(version(h1_only), "1.1");
    assert_eq!(version(gw.tls.port()), "2");
}
