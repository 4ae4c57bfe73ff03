//! The access log seen from outside: every request gets exactly one JSON access line,
//! whoever answers it (a replica, a refusal, a redirect, a preflight, a failed upstream),
//! found by the request id the client sent.
#![allow(clippy::unwrap_used)]

use e2e::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn every_request_gets_exactly_one_access_log_line() {
    let a = Replica::start("a");
    let dead = dead_port();
    let state = tempfile::tempdir().unwrap();
    let cfg = TestConfig::plain_and_tls(state.path())
        .internal_site(&["secure.test"], "")
        .with("[rate_limits.one]\nrate = \"1 per 1h\"")
        .with("[cors.app]\nallow_origins = [\"https://app.test\"]")
        .pool("a", &[&a])
        .with(&format!("[pools.dead]\nreplicas = [\"127.0.0.1:{dead}\"]"))
        .route("/api", "a", "max_body_size = \"10\"\ncors = \"app\"")
        .route("/once", "a", "strip_prefix = true\nrate_limits = [\"one\"]")
        .route("/private", "a", "allow = [\"10.0.0.0/8\"]")
        .route("/dead", "dead", "")
        .build();
    let gw = Gateway::start(&cfg);
    let c = client();
    use reqwest::Method;
    // (method, path, Host, body, extra header, expected status; None: whatever the
    // replica answers, since an OPTIONS without Origin is no preflight and is proxied).
    type Case<'a> = (
        Method,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Option<(&'a str, &'a str)>,
        Option<u16>,
    );
    let cases: [Case; 9] = [
        (Method::GET, "/api/whoami", None, None, None, Some(200)),
        (Method::GET, "/nowhere", None, None, None, Some(404)),
        (Method::GET, "/once/api/whoami", None, None, None, Some(200)),
        (Method::GET, "/once/api/whoami", None, None, None, Some(429)),
        (
            Method::POST,
            "/api/echo",
            None,
            Some("far more than ten bytes"),
            None,
            Some(413),
        ),
        (Method::GET, "/private", None, None, None, Some(403)),
        (Method::GET, "/dead", None, None, None, Some(502)),
        (
            Method::GET,
            "/api/whoami",
            Some("secure.test"),
            None,
            None,
            Some(308),
        ),
        (
            Method::OPTIONS,
            "/api/items",
            None,
            None,
            Some(("Access-Control-Request-Method", "POST")),
            None,
        ),
    ];
    let mut sent = Vec::new();
    for (i, (method, path, host, body, extra, want)) in cases.into_iter().enumerate() {
        let id = format!("id-{i}");
        let mut req = c.request(method, gw.url(path)).header("X-Request-ID", &id);
        if let Some(h) = host {
            req = req.header("Host", h);
        }
        if let Some(b) = body {
            req = req.body(b.to_owned());
        }
        if let Some((k, v)) = extra {
            req = req.header(k, v);
        }
        let got = req.send().await.unwrap().status().as_u16();
        if let Some(want) = want {
            assert_eq!(got, want, "request {i}");
        }
        sent.push(id);
    }
    for id in &sent {
        let line = gw.access_line(id);
        assert!(line["status"].as_u64().is_some(), "{line}");
        let count = gw
            .log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "access" && v["request_id"] == id.as_str())
            .count();
        assert_eq!(count, 1, "request {id} has {count} access lines");
    }
}

/// `access_log_file`: access lines go to the file, not stdout; after logrotate moves the
/// file away, SIGUSR1 makes the gateway write to a new file of the same name.
#[tokio::test(flavor = "multi_thread")]
async fn access_lines_go_to_a_file_reopened_on_sigusr1() {
    let a = Replica::start("a");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let cfg = TestConfig::plain()
        .with(&format!("[log]\naccess_log_file = \"{}\"", file.display()))
        .pool("a", &[&a])
        .route("/api", "a", "")
        .build();
    let gw = Gateway::start(&cfg);
    let c = client();
    let get = |rid: &'static str| {
        let c = c.clone();
        let url = gw.url("/api/whoami");
        async move {
            let r = c.get(url).header("x-request-id", rid).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    let has = |path: &std::path::Path, rid: &str| {
        std::fs::read_to_string(path).is_ok_and(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|v| v["request_id"] == rid && v["status"] == 200)
        })
    };
    get("to-file-1").await;
    assert!(wait_until(std::time::Duration::from_secs(5), || has(
        &file,
        "to-file-1"
    )));
    assert!(!gw.log_text().contains("to-file-1"), "not on stdout");

    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&file, &rotated).unwrap();
    signal(gw.pid(), "USR1");
    assert!(wait_until(std::time::Duration::from_secs(5), || gw
        .log_text()
        .contains("\"access_log_reopened\"")));
    get("to-file-2").await;
    assert!(wait_until(std::time::Duration::from_secs(5), || has(
        &file,
        "to-file-2"
    )));
    assert!(has(&rotated, "to-file-1") && !has(&rotated, "to-file-2"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o007, 0, "not world-readable: {mode:o}");
}
