//! Edge policy seen from outside: security headers, rate limits, CORS and address
//! lists, against real upstream-api replicas (hostile requests: tests/hostile.rs).
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::*;
use reqwest::header::HeaderMap;

const SECURITY: [(&str, &str); 4] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "strict-origin-when-cross-origin"),
    (
        "permissions-policy",
        "camera=(), microphone=(), geolocation=()",
    ),
];

fn assert_security_headers(h: &HeaderMap, what: &str) {
    for (name, value) in SECURITY {
        assert_eq!(
            h.get(name).map(|v| v.to_str().unwrap()),
            Some(value),
            "{name} on {what}: {h:?}"
        );
    }
    assert!(h.get("server").is_none(), "Server header on {what}");
    assert!(h.get("x-powered-by").is_none(), "X-Powered-By on {what}");
    assert!(
        h.get("strict-transport-security").is_none(),
        "HSTS on plain HTTP ({what})"
    );
}

fn config(replicas: &[&Replica], extra: &str) -> String {
    format!(
        r#"
[server]
trusted_proxies = ["127.0.0.2/32"]

[[listeners]]
address = "{{listen}}"

[pools.api]
replicas = {list}
[pools.dead]
replicas = ["127.0.0.1:{dead}"]
[pools.down]
replicas = ["127.0.0.1:{dead}"]
[pools.down.health]
path = "/readyz"

[rate_limits.login]
rate = "5 per 15m"

[rate_limits.per_user]
rate = "3 per 1h"
key = "header"
header = "Authorization"

[rate_limits.fast]
rate = "20 per 1s"

[cors.app]
allow_origins = ["https://app.example.com", "https://*.example.org"]
allow_headers = ["Content-Type", "Authorization"]
expose_headers = ["X-Request-ID"]
allow_credentials = true
max_age = "10m"

[[routes]]
path = "/api"
pool = "api"
cors = "app"

[[routes]]
path = "/login"
strip_prefix = true
pool = "api"
rate_limits = ["login"]

[[routes]]
path = "/user"
strip_prefix = true
pool = "api"
rate_limits = ["per_user"]

[[routes]]
path = "/fast"
strip_prefix = true
pool = "api"
rate_limits = ["fast"]

[[routes]]
path = "/admin"
strip_prefix = true
pool = "api"
allow = ["10.0.0.0/8"]

[[routes]]
path = "/small"
strip_prefix = true
pool = "api"
max_body_size = "1KiB"
headers = {{ set = {{ "X-Frame-Options" = "SAMEORIGIN", "Cache-Control" = "no-store" }}, remove = ["Referrer-Policy"] }}

[[routes]]
path = "/dead"
pool = "dead"

[[routes]]
path = "/down"
pool = "down"

{extra}
"#,
        list = replica_list(replicas),
        dead = dead_port()
    )
}

async fn get(c: &reqwest::Client, url: &str) -> (u16, HeaderMap, String) {
    let r = c.get(url).send().await.unwrap();
    (
        r.status().as_u16(),
        r.headers().clone(),
        r.text().await.unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn security_headers_on_proxied_and_gateway_made_responses() {
    let r = Replica::start("r1");
    let gw = Gateway::start(&config(&[&r], "[limits]\nmax_header_size = \"2KiB\"\n"));
    let c = client();

    let (s, h, _) = get(&c, &gw.url("/api/whoami")).await;
    assert_eq!(s, 200);
    assert_security_headers(&h, "a proxied 200");
    for (path, status) in [
        ("/nope", 404),
        ("/dead/x", 502),
        ("/down/x", 503),
        ("/admin/api/whoami", 403),
    ] {
        let (s, h, body) = get(&c, &gw.url(path)).await;
        assert_error_contract(
            s,
            status,
            h.get("x-request-id").and_then(|v| v.to_str().ok()),
            &body,
        );
        assert_security_headers(&h, path);
    }
    // 429 and 503 carry them too.
    for _ in 0..5 {
        get(&c, &gw.url("/login/api/whoami")).await;
    }
    let (s, h, _) = get(&c, &gw.url("/login/api/whoami")).await;
    assert_eq!(s, 429);
    assert_security_headers(&h, "429");
    // 431: the head is over max_header_size.
    let (s, h, body) = {
        let r = c
            .get(gw.url("/api/whoami"))
            .header("X-Big", "a".repeat(4096))
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.headers().clone(),
            r.text().await.unwrap(),
        )
    };
    assert_error_contract(s, 431, None, &body);
    assert_security_headers(&h, "431");

    // A route's own rules: override one default, drop another, add one.
    let (_, h, _) = get(&c, &gw.url("/small/api/whoami")).await;
    assert_eq!(h["x-frame-options"], "SAMEORIGIN");
    assert!(h.get("referrer-policy").is_none());
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["x-content-type-options"], "nosniff");
}

#[tokio::test(flavor = "multi_thread")]
async fn five_per_fifteen_minutes_allows_exactly_five_then_429s_with_retry_after() {
    let r = Replica::start("r1");
    let gw = Gateway::start(&config(&[&r], ""));
    let c = client();
    let mut statuses = vec![];
    let mut remaining = vec![];
    for _ in 0..10 {
        let (s, h, body) = get(&c, &gw.url("/login/api/whoami")).await;
        statuses.push(s);
        assert_eq!(h["x-ratelimit-limit"], "5");
        remaining.push(
            h["x-ratelimit-remaining"]
                .to_str()
                .unwrap()
                .parse::<u32>()
                .unwrap(),
        );
        if s == 429 {
            let v = assert_error_contract(
                s,
                429,
                h.get("x-request-id").and_then(|v| v.to_str().ok()),
                &body,
            );
            assert_eq!(v["error"]["code"], "rate_limited");
            // One request costs 15m / 5 = 180 s.
            let after: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((179..=180).contains(&after), "Retry-After {after}");
            let reset: u64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
            assert!((899..=900).contains(&reset), "reset {reset}");
        } else {
            assert!(h.get("retry-after").is_none());
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429, 429, 429]);
    assert_eq!(&remaining[..5], &[4, 3, 2, 1, 0]);

    // Another route without that limit is unaffected, and health checks are never limited.
    assert_eq!(get(&c, &gw.url("/api/whoami")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn users_have_their_own_buckets_and_spoofed_xff_changes_nothing() {
    let r = Replica::start("r1");
    let gw = Gateway::start(&config(&[&r], ""));
    let c = client();
    let count = |user: Option<&'static str>, n: usize, spoof: bool| {
        let (c, url) = (c.clone(), gw.url("/user/api/whoami"));
        async move {
            let mut ok = 0;
            for i in 0..n {
                let mut req = c.get(&url);
                if let Some(u) = user {
                    req = req.header("Authorization", format!("Bearer {u}"));
                }
                if spoof {
                    req = req.header("X-Forwarded-For", format!("198.51.100.{i}"));
                }
                if req.send().await.unwrap().status() == 200 {
                    ok += 1;
                }
            }
            ok
        }
    };
    assert_eq!(count(Some("alice"), 6, false).await, 3);
    assert_eq!(
        count(Some("bob"), 6, false).await,
        3,
        "bob has his own bucket"
    );
    // No Authorization: keyed by address; an untrusted peer's X-Forwarded-For is ignored.
    assert_eq!(count(None, 6, true).await, 3);

    // The login limit is per address: spoofing X-Forwarded-For from 127.0.0.1 (not a
    // trusted proxy here) does not buy more attempts.
    let mut ok = 0;
    for i in 0..10 {
        let s = c
            .get(gw.url("/login/api/whoami"))
            .header("X-Forwarded-For", format!("203.0.113.{i}"))
            .send()
            .await
            .unwrap()
            .status();
        ok += usize::from(s == 200);
    }
    assert_eq!(ok, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn per_second_limit_holds_under_sixteen_concurrent_clients() {
    let r = Replica::start("r1");
    let gw = Gateway::start(&config(&[&r], ""));
    let c = client();
    let allowed = Arc::new(AtomicUsize::new(0));
    let limited = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (c, url, allowed, limited) = (
                c.clone(),
                gw.url("/fast/api/whoami"),
                allowed.clone(),
                limited.clone(),
            );
            tokio::spawn(async move {
                for _ in 0..25 {
                    match c.get(&url).send().await.unwrap().status().as_u16() {
                        200 => allowed.fetch_add(1, Ordering::Relaxed),
                        429 => limited.fetch_add(1, Ordering::Relaxed),
                        s => panic!("unexpected {s}"),
                    };
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    let allowed = allowed.load(Ordering::Relaxed);
    assert_eq!(allowed + limited.load(Ordering::Relaxed), 400);
    // GCRA: a burst of 20, then one every 50 ms. Nothing more can pass in `elapsed`.
    let ceiling = 20 + (elapsed.as_millis() as usize).div_ceil(50);
    assert!(
        allowed >= 20 && allowed <= ceiling,
        "allowed {allowed} in {elapsed:?} (ceiling {ceiling})"
    );
    eprintln!("allowed {allowed} of 400 in {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_preflight_and_actual_requests() {
    let r = Replica::start("r1");
    let gw = Gateway::start(&config(&[&r], ""));
    let c = client();
    let preflight = |origin: &'static str, method: &'static str, headers: &'static str| {
        c.request(reqwest::Method::OPTIONS, gw.url("/api/items"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", method)
            .header("Access-Control-Request-Headers", headers)
            .send()
    };
    let r1 = preflight(
        "https://app.example.com",
        "POST",
        "content-type, authorization",
    )
    .await
    .unwrap();
    assert_eq!(r1.status(), 204);
    let h = r1.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(
        h["access-control-allow-methods"],
        "GET, POST, PUT, DELETE, OPTIONS"
    );
    assert_eq!(h["access-control-max-age"], "600");
    assert!(h["vary"].to_str().unwrap().contains("Origin"));
    assert!(h.contains_key("x-request-id"));
    assert_eq!(
        r.log_text().matches("\"method\":\"OPTIONS\"").count(),
        0,
        "preflight answered at the edge"
    );

    let r2 = preflight("https://shop.example.org", "PUT", "content-type")
        .await
        .unwrap();
    assert_eq!(r2.status(), 204, "wildcard origin");
    for (origin, method, headers) in [
        ("https://evil.example.com", "POST", "content-type"),
        ("https://app.example.com", "PATCH", "content-type"),
        ("https://app.example.com", "POST", "x-secret"),
    ] {
        let resp = preflight(origin, method, headers).await.unwrap();
        assert_eq!(resp.status(), 403, "{origin} {method} {headers}");
        assert!(resp.headers().get("access-control-allow-origin").is_none());
    }

    let ok = c
        .get(gw.url("/api/whoami"))
        .header("Origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(
        ok.headers()["access-control-expose-headers"],
        "x-request-id"
    );
    assert!(ok.headers()["vary"].to_str().unwrap().contains("Origin"));
    let other = c
        .get(gw.url("/api/whoami"))
        .header("Origin", "https://evil.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        200,
        "the browser, not the edge, enforces CORS on simple requests"
    );
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_allowlist_trusts_xff_only_from_trusted_proxies() {
    let r = Replica::start("r1");
    let gw = Gateway::start(&config(&[&r], ""));
    // From 127.0.0.1 (not trusted): 403 even when claiming an allowed address.
    let out = raw_request(
        gw.addr,
        b"GET /admin/api/whoami HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.1.2.3\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(out.contains("\"code\":\"forbidden\""), "{out}");
    // From 127.0.0.2 (a trusted proxy): its X-Forwarded-For decides.
    let via_proxy = |xff: &'static str| {
        let req = format!("GET /admin/api/whoami HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {xff}\r\nConnection: close\r\n\r\n");
        let addr = gw.addr;
        async move { raw_request_from("127.0.0.2", addr, req.as_bytes()).await }
    };
    let allowed = via_proxy("10.1.2.3").await;
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
    let denied = via_proxy("192.0.2.1").await;
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
}
