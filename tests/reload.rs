//! Zero-downtime reloads (admin `POST /reload`, `gateway reload`, SIGHUP) under load: a
//! good config applies without a failed request, a bad one changes nothing, listener
//! changes wait for a restart.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e::*;
use serde_json::Value;

async fn api_replica(c: &reqwest::Client, gw: &Gateway) -> (String, String) {
    let r = c.get(gw.url("/api/whoami")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let version = r.headers()["x-config-version"].to_str().unwrap().to_owned();
    let v: Value = r.json().await.unwrap();
    (v["replica"].as_str().unwrap().to_owned(), version)
}

#[tokio::test(flavor = "multi_thread")]
async fn reloads_under_load_drop_nothing_and_a_bad_config_changes_nothing() {
    let (a, b) = (Replica::start("a"), Replica::start("b"));
    let gw = Gateway::start(&two_pools(&a, &b, "a", "0"));
    let c = client();
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (c, url, done, failures) = (
                c.clone(),
                gw.url("/api/whoami"),
                done.clone(),
                failures.clone(),
            );
            tokio::spawn(async move {
                for _ in 0..313 {
                    match c.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {}
                        Ok(r) => {
                            eprintln!("failed: {}", r.status());
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            eprintln!("failed: {e}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    for i in 1..=10 {
        let pool = if i % 2 == 0 { "a" } else { "b" };
        gw.write_config(&two_pools(&a, &b, pool, &i.to_string()));
        if i % 3 == 0 {
            signal(gw.pid(), "HUP");
        } else {
            let out = Command::new(bin("gateway"))
                .args(["reload", "--admin", &gw.admin.to_string()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The new routes take effect (SIGHUP is asynchronous: poll).
        let mut seen = (String::new(), String::new());
        for _ in 0..100 {
            seen = api_replica(&c, &gw).await;
            if seen.1 == i.to_string() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen, (pool.to_owned(), i.to_string()), "after reload {i}");
    }

    // A broken file during the load: refused, reported with its place, nothing changes.
    std::fs::write(&gw.config, "[[routes]]\npath = \"/api\"\npool = \"nope\"\n").unwrap();
    let out = Command::new(bin("gateway"))
        .args(["reload", "--admin", &gw.admin.to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":3:8: routes[0].pool: no pool named \"nope\""),
        "{err}"
    );
    assert!(err.contains("the running config is unchanged"), "{err}");
    assert_eq!(
        api_replica(&c, &gw).await,
        ("a".to_owned(), "10".to_owned())
    );

    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(done.load(Ordering::Relaxed), 16 * 313);
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    let s = scrape(&gw).await;
    assert_eq!(
        sample(&s, "gateway_config_reloads_total", &[("result", "ok")]),
        10.0
    );
    assert_eq!(
        sample(&s, "gateway_config_reloads_total", &[("result", "error")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn listener_changes_need_a_restart_and_the_rest_applies() {
    let (a, b) = (Replica::start("a"), Replica::start("b"));
    let gw = Gateway::start(&two_pools(&a, &b, "a", "1"));
    let c = client();
    let moved =
        two_pools(&a, &b, "b", "2").replace("{listen}", &format!("127.0.0.1:{}", free_port()));
    gw.write_config(&moved);
    let resp: Value = c
        .post(gw.admin_url("/reload"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["result"], "ok");
    assert_eq!(resp["needs_restart"], serde_json::json!(["listeners"]));
    assert_eq!(
        api_replica(&c, &gw).await,
        ("b".to_owned(), "2".to_owned()),
        "served on the old listener"
    );
    let status: Value = admin_json(&gw, "/status").await;
    assert_eq!(
        status["config"]["listeners"][0],
        gw.addr.to_string(),
        "status shows what runs"
    );
    assert_eq!(status["reloads"][0]["needs_restart"][0], "listeners");
}
