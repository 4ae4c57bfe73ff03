//! Operating the gateway: the admin listener, metrics that move, readiness, status and
//! alert rules (reloads: `reload.rs`).
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use e2e::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn metrics_move_with_requests_rejections_health_flips_and_reloads() {
    let (a, mut b) = (Replica::start("a"), Replica::start("b"));
    let gw = Gateway::start(&two_pools(&a, &b, "a", "1"));
    let c = client();
    for _ in 0..10 {
        assert_eq!(
            c.get(gw.url("/api/whoami")).send().await.unwrap().status(),
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(c.get(gw.url("/nope")).send().await.unwrap().status(), 404);
    }
    for _ in 0..6 {
        c.get(gw.url("/login/api/whoami")).send().await.unwrap();
    }
    let s = scrape(&gw).await;
    assert_eq!(
        sample(
            &s,
            "gateway_requests_total",
            &[("route", "api"), ("method", "GET"), ("status", "200")]
        ),
        10.0
    );
    assert_eq!(
        sample(
            &s,
            "gateway_requests_total",
            &[("route", "-"), ("status", "404")]
        ),
        2.0
    );
    assert_eq!(
        sample(
            &s,
            "gateway_requests_total",
            &[("route", "login"), ("status", "429")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &s,
            "gateway_ratelimit_rejected_total",
            &[("route", "login"), ("limit", "login")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &s,
            "gateway_request_duration_seconds_count",
            &[("route", "api")]
        ),
        10.0
    );
    assert_eq!(
        sample(
            &s,
            "gateway_upstream_requests_total",
            &[("pool", "a"), ("outcome", "ok")]
        ),
        15.0
    );
    assert_eq!(
        sample(&s, "gateway_pool_healthy_replicas", &[("pool", "b")]),
        1.0
    );
    assert_eq!(
        sample(
            &s,
            "gateway_upstream_healthy",
            &[("pool", "b"), ("replica", &b.addr.to_string())]
        ),
        1.0
    );
    assert_eq!(
        sample(&s, "gateway_ratelimit_tracked_keys", &[("limit", "login")]),
        1.0
    );
    assert!(
        sample(
            &s,
            "gateway_config_last_reload_success_timestamp_seconds",
            &[]
        ) > 1.7e9
    );
    assert!(sample(&s, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(sample(&s, "process_open_fds", &[]) > 0.0);
    assert!(sample(&s, "gateway_connections_accepted_total", &[]) >= 1.0);
    assert!(
        sample(
            &s,
            "gateway_connections_open",
            &[("listener", &gw.addr.to_string())]
        ) >= 1.0,
        "reqwest keeps its connection open"
    );

    // A health flip shows in the gauges.
    b.kill9();
    let b_addr = b.addr.to_string();
    let mut flipped = false;
    for _ in 0..50 {
        let s = scrape(&gw).await;
        if sample(
            &s,
            "gateway_upstream_healthy",
            &[("pool", "b"), ("replica", &b_addr)],
        ) == 0.0
        {
            assert_eq!(
                sample(&s, "gateway_pool_healthy_replicas", &[("pool", "b")]),
                0.0
            );
            flipped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(flipped, "gateway_upstream_healthy never went to 0");

    // Reloads are counted by result.
    let ok = c.post(gw.admin_url("/reload")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    std::fs::write(&gw.config, "[[listeners]]\naddress = 5\n").unwrap();
    let bad = c.post(gw.admin_url("/reload")).send().await.unwrap();
    assert_eq!(bad.status(), 422);
    let v: Value = bad.json().await.unwrap();
    assert!(
        v["errors"][0]
            .as_str()
            .unwrap()
            .contains(":2:11: listeners[0].address"),
        "{v}"
    );
    let s = scrape(&gw).await;
    assert_eq!(
        sample(&s, "gateway_config_reloads_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        sample(&s, "gateway_config_reloads_total", &[("result", "error")]),
        1.0
    );
    assert!(gw.log_text().contains("\"event\":\"config_reload_failed\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_status_and_the_admin_listener_boundaries() {
    let (mut a, b) = (Replica::start("a"), Replica::start("b"));
    let gw = Gateway::start(&two_pools(&a, &b, "a", "1"));
    let c = client();
    assert_eq!(
        c.get(gw.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(gw.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let status: Value = admin_json(&gw, "/status").await;
    let pool_a = status["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "a")
        .unwrap();
    assert_eq!(pool_a["replicas"][0]["healthy"], true);
    assert_eq!(pool_a["replicas"][0]["last_check"]["ok"], true);
    assert_eq!(status["config"]["routes"][0]["name"], "api");
    assert_eq!(status["config"]["rate_limits"][0]["rate"], "5 per 15m");

    // Metrics and status are not on the public listener.
    assert_eq!(
        c.get(gw.url("/metrics")).send().await.unwrap().status(),
        404
    );
    assert_eq!(c.get(gw.url("/status")).send().await.unwrap().status(), 404);
    // Unknown admin path and wrong method.
    assert_eq!(
        c.get(gw.admin_url("/nope")).send().await.unwrap().status(),
        404
    );
    assert_eq!(
        c.get(gw.admin_url("/reload"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );

    // Pool `a` (used by routes) loses its only replica: not ready, and says which pool.
    a.kill9();
    let mut body = Value::Null;
    let ready = wait_until(Duration::from_secs(5), || {
        let out = std::process::Command::new("curl")
            .args(["-s", &gw.admin_url("/readyz")])
            .output()
            .unwrap();
        body = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        body["status"] == "not_ready"
    });
    assert!(ready, "{body}");
    assert_eq!(
        body["pools_without_healthy_replicas"],
        serde_json::json!(["a"])
    );
    let resp = c.get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    // The process itself is alive.
    assert_eq!(
        c.get(gw.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let hc = Command::new(bin("gateway"))
        .args(["healthcheck", "--admin", &gw.admin.to_string()])
        .status()
        .unwrap();
    assert!(hc.success());
    // `gateway status` prints what /status says (for `docker compose exec`).
    let out = Command::new(bin("gateway"))
        .args(["status", "--admin", &gw.admin.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["config"], status["config"], "{printed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_allow_list_refuses_other_addresses() {
    let a = Replica::start("a");
    let cfg = format!(
        "[[listeners]]\naddress = \"{{listen}}\"\n[admin]\naddress = \"{{admin}}\"\nallow = [\"127.0.0.1/32\"]\n[pools.p]\nreplicas = [\"{}\"]\n[[routes]]\npool = \"p\"\n",
        a.addr
    );
    let gw = Gateway::start(&cfg);
    let from_1 = raw_request_from(
        "127.0.0.1",
        gw.admin,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(from_1.starts_with("HTTP/1.1 200"), "{from_1}");
    let from_2 = raw_request_from(
        "127.0.0.2",
        gw.admin,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(from_2.starts_with("HTTP/1.1 403"), "{from_2}");
}

#[test]
fn a_public_admin_address_needs_an_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("g.toml");
    std::fs::write(&f, "[[listeners]]\naddress = \"0.0.0.0:80\"\n[admin]\naddress = \"0.0.0.0:9901\"\n[pools.p]\nreplicas = [\"x:1\"]\n[[routes]]\npool = \"p\"\n").unwrap();
    let out = Command::new(bin("gateway"))
        .args(["check", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            ":4:11: admin.address: admin on 0.0.0.0:9901 would be reachable from other hosts"
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn alert_rules_pass_promtool_and_use_exported_metrics() {
    let rules =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/prometheus-alerts.yml");
    let out = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .expect("promtool (Debian package prometheus; tests/deps.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Exercise what the rules watch, so every family has a sample to show.
    let (a, b) = (Replica::start("a"), Replica::start("b"));
    let gw = Gateway::start(&two_pools(&a, &b, "a", "1"));
    let c = client();
    c.get(gw.url("/api/whoami")).send().await.unwrap();
    std::fs::write(&gw.config, "not toml [").unwrap();
    c.post(gw.admin_url("/reload")).send().await.unwrap();
    let s = scrape(&gw).await;
    let exported: std::collections::HashSet<&str> =
        s.samples.iter().map(|x| x.metric.as_str()).collect();

    // Exported once a certificate is served, or a store call failed (this config has
    // neither; tests/acme.rs and tests/cluster.rs see them).
    let pending = [
        "gateway_tls_certificate_expiry_timestamp_seconds",
        "gateway_store_errors_total",
    ];
    let text = std::fs::read_to_string(&rules).unwrap();
    let mut used: Vec<&str> = text
        .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
        .filter(|w| w.starts_with("gateway_"))
        .collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() >= 5, "{used:?}");
    for name in used {
        if pending.contains(&name) {
            continue;
        }
        // The parser folds a histogram's `_bucket` lines into one sample.
        let family = name.strip_suffix("_bucket").unwrap_or(name);
        assert!(
            exported.contains(family),
            "alert rules use {name}, which /metrics does not export"
        );
    }
}
