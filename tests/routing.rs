//! Routing, round robin, request ids and forwarding headers, seen from outside.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use e2e::*;
use serde_json::Value;

async fn whoami(c: &reqwest::Client, url: &str, host: Option<&str>) -> (u16, Value) {
    let mut req = c.get(url);
    if let Some(h) = host {
        req = req.header("Host", h);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_spreads_evenly_over_three_replicas() {
    let rs = replicas(3);
    let gw = Gateway::start(&simple_config(&rs.iter().collect::<Vec<_>>(), "", ""));
    let c = client();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        let (status, v) = whoami(&c, &gw.url("/api/whoami"), None).await;
        assert_eq!(status, 200, "{v}");
        *counts
            .entry(v["replica"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (id, n) in &counts {
        assert!(
            (90..=110).contains(n),
            "replica {id} got {n} of 300: {counts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn host_and_longest_prefix_routing_with_prefix_strip() {
    let rs = replicas(3);
    let (a, b, cc) = (&rs[0], &rs[1], &rs[2]);
    let config = format!(
        r#"
[[listeners]]
address = "{{listen}}"

[pools.a]
replicas = ["{a}"]
[pools.b]
replicas = ["{b}"]
[pools.c]
replicas = ["{c}"]

[[routes]]
path = "/api"
pool = "b"

[[routes]]
name = "admin-strip"
path = "/api/admin"
strip_prefix = true
pool = "c"

[[routes]]
host = "admin.example.com"
path = "/api"
pool = "a"

[[routes]]
host = "*.example.com"
path = "/api"
pool = "c"
"#,
        a = a.addr,
        b = b.addr,
        c = cc.addr
    );
    let gw = Gateway::start(&config);
    let c = client();

    let (_, v) = whoami(&c, &gw.url("/api/whoami"), None).await;
    assert_eq!(v["replica"], "r2");
    assert_eq!(v["uri"], "/api/whoami");

    let (_, v) = whoami(&c, &gw.url("/api/admin/api/whoami?x=1&y=2"), None).await;
    assert_eq!(v["replica"], "r3", "longest prefix wins");
    assert_eq!(
        v["uri"], "/api/whoami?x=1&y=2",
        "prefix stripped, query kept"
    );

    let (_, v) = whoami(&c, &gw.url("/api/whoami"), Some("admin.example.com")).await;
    assert_eq!(v["replica"], "r1", "exact host first");
    let (_, v) = whoami(&c, &gw.url("/api/whoami"), Some("Admin.Example.com:8443")).await;
    assert_eq!(v["replica"], "r1", "host match ignores case and port");
    let (_, v) = whoami(&c, &gw.url("/api/whoami"), Some("shop.example.com")).await;
    assert_eq!(v["replica"], "r3", "wildcard host");
    let (_, v) = whoami(&c, &gw.url("/api/whoami"), Some("example.com")).await;
    assert_eq!(
        v["replica"], "r2",
        "a wildcard does not match its bare domain"
    );

    let resp = c.get(gw.url("/apix/whoami")).send().await.unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let status = resp.status().as_u16();
    let v = assert_error_contract(status, 404, Some(&id), &resp.text().await.unwrap());
    assert_eq!(v["error"]["code"], "no_route");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_id_is_kept_generated_or_replaced() {
    let rs = replicas(1);
    let gw = Gateway::start(&simple_config(&[&rs[0]], "", ""));
    let c = client();

    // A sane id is kept end to end and logged.
    let resp = c
        .get(gw.url("/api/whoami"))
        .header("X-Request-ID", "client-id-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "client-id-42");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["request_id"], "client-id-42",
        "the replica got the same id"
    );
    assert_eq!(gw.access_line("client-id-42")["status"], 200);

    // Missing: the gateway makes a UUID and the replica sees that one.
    let resp = c.get(gw.url("/api/whoami")).send().await.unwrap();
    let made = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(made.len(), 36, "{made}");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["request_id"], made.as_str());

    // Too long (400 chars): replaced.
    let long = "a".repeat(400);
    let resp = c
        .get(gw.url("/api/whoami"))
        .header("X-Request-ID", &long)
        .send()
        .await
        .unwrap();
    let got = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(got.len(), 36);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["request_id"], got.as_str());

    // Control bytes (raw socket: clients refuse to send them) are refused by the HTTP
    // parser itself with a 400; either way the id is never echoed or forwarded.
    for bad in [&b"ab\x01cd"[..], &b"ab\x7fcd"[..]] {
        let mut req =
            b"GET /api/whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Request-ID: "
                .to_vec();
        req.extend_from_slice(bad);
        req.extend_from_slice(b"\r\n\r\n");
        let out = raw_request(gw.addr, &req, Duration::from_secs(5));
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        assert!(
            !out.contains("abcd") && !out.contains("ab\u{1}cd") && !out.contains("ab\u{7f}cd"),
            "{out}"
        );
    }
    // Non-ASCII bytes and spaces pass the parser: replaced with a fresh UUID.
    for bad in [&b"ab\xffcd"[..], &b"has space"[..]] {
        let mut req =
            b"GET /api/whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Request-ID: "
                .to_vec();
        req.extend_from_slice(bad);
        req.extend_from_slice(b"\r\n\r\n");
        let out = raw_request(gw.addr, &req, Duration::from_secs(5));
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        let id_line = out
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("x-request-id:"))
            .unwrap();
        let id = id_line.split_once(':').unwrap().1.trim();
        assert_eq!(id.len(), 36, "replaced with a UUID: {out}");
        assert!(out.contains(&format!("\"request_id\":\"{id}\"")), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_for_is_trusted_only_from_configured_proxies() {
    let rs = replicas(1);
    let c = client();

    // Untrusted peer (default): its X-Forwarded-For is replaced, not appended.
    let gw = Gateway::start(&simple_config(&[&rs[0]], "", ""));
    let resp = c
        .get(gw.url("/api/whoami"))
        .header("X-Forwarded-For", "6.6.6.6")
        .header("X-Forwarded-Proto", "https")
        .header("X-Request-ID", "untrusted-1")
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["x_forwarded_for"], "127.0.0.1");
    assert_eq!(
        v["x_forwarded_proto"], "http",
        "a client cannot claim https"
    );
    assert_eq!(v["x_forwarded_host"], gw.addr.to_string());
    assert_eq!(gw.access_line("untrusted-1")["client_ip"], "127.0.0.1");
    drop(gw);

    // Trusted loopback proxy: the chain is kept and the client is the first untrusted hop.
    let gw = Gateway::start(&simple_config(
        &[&rs[0]],
        "",
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n",
    ));
    let resp = c
        .get(gw.url("/api/whoami"))
        .header("X-Forwarded-For", "203.0.113.7")
        .header("X-Forwarded-Proto", "https")
        .header("X-Request-ID", "trusted-1")
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["x_forwarded_for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(v["x_forwarded_proto"], "https");
    assert_eq!(gw.access_line("trusted-1")["client_ip"], "203.0.113.7");
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_headers_are_not_forwarded_and_dot_segments_refused() {
    let rs = replicas(1);
    let gw = Gateway::start(&simple_config(&[&rs[0]], "", ""));
    let out = raw_request(
        gw.addr,
        b"GET /api/whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nProxy-Authorization: Basic eDp5\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nX-Kept: yes\r\n\r\n",
        Duration::from_secs(5),
    );
    let body = out.split("\r\n\r\n").nth(1).unwrap();
    let v: Value = serde_json::from_str(body).unwrap();
    let h = &v["headers"];
    assert_eq!(h["x-kept"], "yes");
    for gone in [
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "proxy-authorization",
        "http2-settings",
        "connection",
    ] {
        assert!(h[gone].is_null(), "{gone} was forwarded: {h}");
    }

    // Naming a header the gateway sets as hop-by-hop would let a client strip it from
    // what the replica sees: refused, as is a nomination that is not a plain token (a
    // quoted name could slip past the check) and a list of ten or more.
    for connection in [
        "close, X-Forwarded-For",
        "close, \"x-forwarded-for\"",
        "a, b, c, d, e, f, g, h, i, close",
    ] {
        let out = raw_request(
            gw.addr,
            format!(
                "GET /api/whoami HTTP/1.1\r\nHost: localhost\r\nConnection: {connection}\r\n\r\n"
            )
            .as_bytes(),
            Duration::from_secs(5),
        );
        assert!(out.starts_with("HTTP/1.1 400"), "{connection}: {out}");
        assert!(out.contains("\"request_id\""), "{out}");
    }

    let out = raw_request(
        gw.addr,
        b"GET /api/../admin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("\"code\":\"invalid_path\""), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_sent_events_pass_through_as_each_is_sent() {
    let r = Replica::start("r1");
    let gw = Gateway::start(&simple_config(&[&r], "", ""));
    // Five events 400 ms apart: the whole feed takes at least 1.6 s upstream.
    let started = std::time::Instant::now();
    let mut resp = client()
        .get(gw.url("/api/events?count=5&interval_ms=400"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert!(resp.headers().contains_key("x-request-id"));
    let first = resp.chunk().await.unwrap().unwrap();
    let first_after = started.elapsed();
    assert!(
        String::from_utf8_lossy(&first).contains("data: event 0"),
        "{first:?}"
    );
    assert!(
        first_after < Duration::from_millis(1000),
        "the first event arrived while the feed was still running, not at its end: {first_after:?}"
    );
    let mut rest = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    let rest = String::from_utf8_lossy(&rest).into_owned();
    for i in 1..5 {
        assert!(rest.contains(&format!("data: event {i}")), "{rest}");
    }
    assert!(started.elapsed() >= Duration::from_millis(1600));
}

/// `[server] upstream_keepalive`: how many idle connections to replicas are kept per
/// worker thread. Rounds of 12 concurrent requests: with the default (128) the second
/// and third rounds reuse the first round's connections; with 1 (per thread, two
/// threads) most are closed after each round and opened again.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_keepalive_bounds_the_idle_connections_kept() {
    let r = Replica::start("r1");
    let mut opened = Vec::new();
    for setting in [
        "[server]\nthreads = 2\n",
        "[server]\nthreads = 2\nupstream_keepalive = 1\n",
    ] {
        let cfg = TestConfig::plain()
            .with(setting)
            .pool("api", &[&r])
            .route("/api", "api", "")
            .build();
        let gw = Gateway::start(&cfg);
        let c = client();
        for _ in 0..3 {
            let round: Vec<_> = (0..12)
                .map(|_| {
                    let (c, url) = (c.clone(), gw.url("/api/slow?ms=50"));
                    tokio::spawn(async move { c.get(url).send().await.unwrap().status() })
                })
                .collect();
            for t in round {
                assert_eq!(t.await.unwrap(), 200);
            }
        }
        let s = scrape(&gw).await;
        opened.push(
            s.samples
                .iter()
                .find(|x| x.metric == "gateway_upstream_connect_duration_seconds")
                .and_then(|x| match &x.value {
                    prometheus_parse::Value::Histogram(h) => h.last().map(|b| b.count),
                    _ => None,
                })
                .unwrap_or(0.0),
        );
    }
    assert!(
        opened[0] <= 14.0,
        "the default keeps a round's connections: {opened:?}"
    );
    assert!(
        opened[1] >= 24.0,
        "1 per thread keeps at most 2: {opened:?}"
    );
}
