//! One request phase at a time, without processes: a real pingora `Session` over an
//! in-memory stream, the real `Gateway` with a snapshot built from a config string,
//! and the phase under test called directly (pingap tests its filters the same way).
//! The end-to-end suites in tests/ prove the whole path; these pin one decision each
//! and run in milliseconds.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use gateway::config;
use gateway::lifecycle::Lifecycle;
use gateway::metrics::Metrics;
use gateway::proxy::ctx::Ctx;
use gateway::proxy::Gateway;
use gateway::state::Snapshot;
use gateway::tls::TlsState;
use pingora_http::RequestHeader;
use pingora_proxy::{ProxyHttp, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

async fn gateway(toml: &str) -> Gateway {
    let config = config::load_str(Path::new("phases.toml"), toml, &|_| None).unwrap();
    let snapshot = Snapshot::build(config, None).await.unwrap();
    Gateway::new(
        Arc::new(ArcSwap::from_pointee(snapshot)),
        Arc::new(Lifecycle::default()),
        Arc::new(Metrics::new().unwrap()),
        Arc::new(TlsState::default()),
        None,
    )
}

/// A session that has read `raw` as its request head, and the client's end.
async fn session(raw: &str) -> (Session, DuplexStream) {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    client.write_all(raw.as_bytes()).await.unwrap();
    let mut session = Session::new_h1(Box::new(server));
    assert!(session.read_request().await.unwrap(), "head not parsed");
    (session, client)
}

/// What the client received: a whole response (head and `Content-Length` body).
async fn response(client: &mut DuplexStream) -> (u16, String, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                let status = head[9..12].parse().unwrap();
                return (status, head.to_ascii_lowercase(), body.to_owned());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("no response")
            .unwrap();
        assert!(n > 0, "closed before a whole response: {text:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// Runs `request_filter` on `raw`; returns whether it answered, and the context.
async fn request_filter(gw: &Gateway, raw: &str) -> (bool, Ctx, Session, DuplexStream) {
    let (mut session, client) = session(raw).await;
    let mut ctx = gw.new_ctx();
    let answered = gw.request_filter(&mut session, &mut ctx).await.unwrap();
    (answered, ctx, session, client)
}

const BASE: &str = "[[listeners]]\naddress = \"127.0.0.1:1\"\n\
    [pools.api]\nreplicas = [\"127.0.0.1:9\"]\n\
    [[routes]]\npath = \"/api\"\npool = \"api\"\nstrip_prefix = true\n";

#[tokio::test]
async fn no_route_is_answered_with_the_json_contract_and_the_clients_id() {
    let gw = gateway(BASE).await;
    let (answered, ctx, _s, mut client) = request_filter(
        &gw,
        "GET /nothing HTTP/1.1\r\nHost: a.test\r\nX-Request-ID: phase-1\r\n\r\n",
    )
    .await;
    assert!(answered);
    assert!(ctx.route.is_none());
    let (status, head, body) = response(&mut client).await;
    assert_eq!(status, 404);
    assert!(head.contains("\r\nx-request-id: phase-1"), "{head}");
    assert!(
        head.contains("\r\nx-content-type-options: nosniff"),
        "{head}"
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "no_route");
    assert_eq!(v["error"]["request_id"], "phase-1");
}

#[tokio::test]
async fn a_routed_request_is_let_through_with_its_rate_limit_state() {
    let toml = format!(
        "{BASE}[rate_limits.two]\nrate = \"2 per 1m\"\nkey = \"global\"\n\
         [route_defaults]\nrate_limits = [\"two\"]\n"
    );
    let gw = gateway(&toml).await;
    let raw = "GET /api/items HTTP/1.1\r\nHost: a.test\r\n\r\n";
    for remaining in [1, 0] {
        let (answered, ctx, _s, _c) = request_filter(&gw, raw).await;
        assert!(!answered, "the request goes on to a replica");
        assert_eq!(ctx.route().map(|r| &*r.name), Some("/api"));
        assert_eq!(ctx.rate.map(|r| r.remaining), Some(remaining));
    }
    let (answered, ctx, _s, mut client) = request_filter(&gw, raw).await;
    assert!(answered);
    assert_eq!(ctx.rate_limited_by.as_deref(), Some("two"));
    let (status, head, body) = response(&mut client).await;
    assert_eq!(status, 429);
    assert!(head.contains("\r\nretry-after: 30"), "{head}");
    assert!(head.contains("\r\nx-ratelimit-remaining: 0"), "{head}");
    assert!(body.contains("\"rate_limited\""), "{body}");
}

#[tokio::test]
async fn plain_http_for_a_tls_site_is_redirected_before_any_policy() {
    let state = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[listeners]]\naddress = \"127.0.0.1:8443\"\ntls = true\n\
         [tls]\nstate_dir = \"{}\"\n[[sites]]\nnames = [\"a.test\"]\ncertificate = \"internal\"\n\
         [pools.api]\nreplicas = [\"127.0.0.1:9\"]\n[[routes]]\npool = \"api\"\n",
        state.path().display()
    );
    let gw = gateway(&toml).await;
    let (answered, _ctx, _s, mut client) =
        request_filter(&gw, "GET /x?y=1 HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert!(answered);
    let (status, head, _) = response(&mut client).await;
    assert_eq!(status, 308);
    assert!(
        head.contains("\r\nlocation: https://a.test:8443/x?y=1"),
        "{head}"
    );
    assert!(
        !head.contains("strict-transport-security"),
        "no HSTS over plain HTTP: {head}"
    );
}

#[tokio::test]
async fn the_upstream_request_carries_the_id_and_forwarding_headers_without_the_prefix() {
    let gw = gateway(BASE).await;
    let (answered, mut ctx, mut session, _c) = request_filter(
        &gw,
        "GET /api/items?x=1 HTTP/1.1\r\nHost: shop.test\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
    )
    .await;
    assert!(!answered);
    let mut up: RequestHeader = session.req_header().clone();
    gw.upstream_request_filter(&mut session, &mut up, &mut ctx)
        .await
        .unwrap();
    assert_eq!(up.uri.to_string(), "/items?x=1");
    assert_eq!(up.headers["x-forwarded-host"], "shop.test");
    assert_eq!(up.headers["x-forwarded-proto"], "http");
    assert_eq!(up.headers["x-request-id"], ctx.request_id.as_str());
    // The in-memory stream has no peer address to vouch for: the client's claim goes.
    assert!(up.headers.get("x-forwarded-for").is_none());
}
