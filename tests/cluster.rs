//! Several gateways, one state: rate limits counted together in a real redis-server,
//! exact across three gateway processes, and the edge still serving, with the
//! configured fallback, while the store hangs, dies and comes back.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::redis::Redis;
use e2e::*;
use serde_json::Value;

fn config(redis: &Redis, r: &Replica, extra_store: &str) -> String {
    TestConfig::plain()
        .with(&format!("[store]\nredis = \"{}\"\n{extra_store}", redis.url()))
        .with(
            "[rate_limits.shared]\nrate = \"100 per 1h\"\nscope = \"cluster\"\n\
             [rate_limits.local]\nrate = \"100 per 1h\"\n\
             [rate_limits.flow]\nrate = \"200 per 1s\"\nburst = 50\nscope = \"cluster\"\n\
             [rate_limits.huge]\nrate = \"100000 per 1s\"\nscope = \"cluster\"\n\
             [rate_limits.strict]\nrate = \"100000 per 1s\"\nscope = \"cluster\"\nfallback = \"deny\"\n\
             [rate_limits.open]\nrate = \"1 per 1h\"\nscope = \"cluster\"\nfallback = \"allow\"\n",
        )
        .pool("api", &[r])
        .route("/shared", "api", "strip_prefix = true\nrate_limits = [\"shared\"]")
        .route("/local", "api", "strip_prefix = true\nrate_limits = [\"local\"]")
        .route("/flow", "api", "strip_prefix = true\nrate_limits = [\"flow\"]")
        .route("/huge", "api", "strip_prefix = true\nrate_limits = [\"huge\"]")
        .route("/strict", "api", "strip_prefix = true\nrate_limits = [\"strict\"]")
        .route("/open", "api", "strip_prefix = true\nrate_limits = [\"open\"]")
        .build()
}

/// Sends `n` GETs of `path`, spread round-robin over `gateways` from 24 concurrent
/// clients; returns the statuses.
async fn spread(gateways: &[&Gateway], path: &str, n: usize) -> Vec<u16> {
    let c = client();
    let next = Arc::new(AtomicUsize::new(0));
    let urls: Arc<Vec<String>> = Arc::new(gateways.iter().map(|g| g.url(path)).collect());
    let tasks: Vec<_> = (0..24)
        .map(|_| {
            let (c, next, urls) = (c.clone(), next.clone(), urls.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return got;
                    }
                    let r = c.get(&urls[i % urls.len()]).send().await.unwrap();
                    got.push(r.status().as_u16());
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_limit_admits_its_burst_once_across_three_gateways() {
    let redis = Redis::start();
    let r = Replica::start("r1");
    // A generous budget: this test is about exact counting, and three debug builds under
    // 24 clients on two cores can be slower than the default 20 ms now and then (a call
    // over budget would fall back to local counting, as it should in production).
    let cfg = config(&redis, &r, "timeout = \"500ms\"\n");
    let gws = [
        Gateway::start(&cfg),
        Gateway::start(&cfg),
        Gateway::start(&cfg),
    ];
    let all: Vec<&Gateway> = gws.iter().collect();

    // 100 an hour with a burst of 100: nothing refills during the test, so exactly 100
    // of 450 requests pass, whichever gateway each reached.
    let statuses = spread(&all, "/shared/api/whoami", 450).await;
    assert_eq!(count(&statuses, 200), 100, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 350);

    // The same limit counted locally admits 100 per gateway.
    let statuses = spread(&all, "/local/api/whoami", 450).await;
    assert_eq!(count(&statuses, 200), 300);

    // A refused request looks the same as a local refusal: JSON, Retry-After, headers.
    let resp = client()
        .get(gws[1].url("/shared/api/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let h = resp.headers().clone();
    assert_eq!(h["x-ratelimit-limit"], "100");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=36).contains(&retry), "one emission interval: {retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");

    // Under a steady flow (200 a second, burst 50), the three together never admit
    // more than the burst plus what the rate allows in the time that passed.
    let started = Instant::now();
    let statuses = spread(&all, "/flow/api/whoami", 3000).await;
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = count(&statuses, 200) as f64;
    let bound = 50.0 + 200.0 * elapsed;
    eprintln!("flow: {admitted} admitted of 3000 in {elapsed:.2}s; bound {bound:.0}");
    assert!(
        admitted <= bound * 1.01 + 1.0,
        "{admitted} admitted in {elapsed:.2}s: more than {bound:.0}"
    );
    assert!(
        admitted >= (50.0 + 200.0 * elapsed) * 0.5,
        "{admitted} admitted in {elapsed:.2}s (clients too slow to test the rate?)"
    );

    // Each gateway says where it counts.
    let status: Value = admin_json(&gws[0], "/status").await;
    assert_eq!(status["store"]["up"], true, "{status}");
    assert_eq!(status["store"]["address"], redis.url().as_str());
    let s = scrape(&gws[0]).await;
    assert_eq!(sample(&s, "gateway_store_up", &[]), 1.0);
}

/// Every answer while the store hangs (SIGSTOP), is killed and comes back: no 5xx, no
/// request held much past the store's time budget, one log line per change of state,
/// the fallbacks as configured, and shared counting again once the store is back.
#[tokio::test(flavor = "multi_thread")]
async fn the_edge_keeps_serving_while_the_store_hangs_dies_and_returns() {
    let mut redis = Redis::start();
    let r = Replica::start("r1");
    let cfg = config(&redis, &r, "timeout = \"50ms\"\n");
    let (a, b) = (Gateway::start(&cfg), Gateway::start(&cfg));
    let c = client();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worst = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<u16>::new()));
    let load: Vec<_> = (0..4)
        .map(|i| {
            let url = if i % 2 == 0 { &a } else { &b }.url("/huge/api/whoami");
            let (c, stop, worst, seen) = (c.clone(), stop.clone(), worst.clone(), seen.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let status = match c.get(&url).send().await {
                        Ok(r) => r.status().as_u16(),
                        Err(_) => 0,
                    };
                    let took = t.elapsed();
                    {
                        let mut w = worst.lock().unwrap();
                        *w = (*w).max(took);
                    }
                    seen.lock().unwrap().push(status);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.hang();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // While it hangs: a deny fallback refuses (429, not a 5xx), an allow one admits.
    let strict = c.get(a.url("/strict/api/whoami")).send().await.unwrap();
    assert_eq!(strict.status(), 429);
    assert!(strict.headers().contains_key("retry-after"));
    for _ in 0..3 {
        assert_eq!(
            c.get(a.url("/open/api/whoami"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    redis.resume();
    let back = wait_until(Duration::from_secs(10), || {
        a.log_text().matches("\"store_up\"").count() >= 2
            && b.log_text().matches("\"store_up\"").count() >= 2
    });
    assert!(back, "both gateways see the store again after SIGCONT");
    redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart();
    let back = wait_until(Duration::from_secs(15), || {
        a.log_text().matches("\"store_up\"").count() >= 3
            && b.log_text().matches("\"store_up\"").count() >= 3
    });
    assert!(back, "both gateways see the restarted store");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }

    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() > 200, "only {} requests", seen.len());
    assert!(
        seen.iter().all(|s| *s == 200),
        "every request answered 200: {:?}",
        seen.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );
    let worst = *worst.lock().unwrap();
    assert!(
        worst < Duration::from_secs(1),
        "no request held by the store: worst {worst:?}"
    );
    for gw in [&a, &b] {
        let log = gw.log_text();
        // Up at start, down twice, up twice: a line per change, never per request.
        assert_eq!(log.matches("\"store_down\"").count(), 2, "{log}");
        assert_eq!(log.matches("\"store_up\"").count(), 3);
    }
    let s = scrape(&a).await;
    assert_eq!(sample(&s, "gateway_store_up", &[]), 1.0);
    assert!(sample(&s, "gateway_store_errors_total", &[("op", "ratelimit")]) >= 1.0);
    assert!(
        sample(
            &s,
            "gateway_ratelimit_fallbacks_total",
            &[("limit", "huge"), ("mode", "local")]
        ) >= 1.0
    );
    assert!(
        sample(
            &s,
            "gateway_ratelimit_fallbacks_total",
            &[("limit", "strict"), ("mode", "deny")]
        ) >= 1.0
    );

    // Counted together again: the restarted store is empty, 100 pass across both.
    let statuses = spread(&[&a, &b], "/shared/api/whoami", 300).await;
    assert_eq!(count(&statuses, 200), 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_store_at_start_degrades_unless_required() {
    let r = Replica::start("r1");
    let dead = format!("redis://127.0.0.1:{}/0", dead_port());
    let cfg = TestConfig::plain()
        .with(&format!(
            "[store]\nredis = \"{dead}\"\nconnect_timeout = \"300ms\""
        ))
        .with("[rate_limits.shared]\nrate = \"2 per 1h\"\nscope = \"cluster\"")
        .pool("api", &[&r])
        .route("/api", "api", "rate_limits = [\"shared\"]")
        .build();
    let gw = Gateway::start(&cfg);
    // Serves, counting in this process meanwhile, and says so.
    let statuses: Vec<u16> = {
        let c = client();
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(
                c.get(gw.url("/api/whoami"))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
            );
        }
        v
    };
    assert_eq!(statuses, [200, 200, 429, 429]);
    assert!(gw.log_text().contains("\"store_unreachable\""));
    let status: Value = admin_json(&gw, "/status").await;
    assert_eq!(status["store"]["up"], false, "{status}");
    assert!(status["store"]["last_error"].is_string(), "{status}");
    let s = scrape(&gw).await;
    assert_eq!(sample(&s, "gateway_store_up", &[]), 0.0);

    // With `required`, it does not start, and says why.
    let required = cfg.replace("connect_timeout", "required = true\nconnect_timeout");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g.toml");
    std::fs::write(&file, Gateway::render(&required, Ports::fresh())).unwrap();
    let out = std::process::Command::new(bin("gateway"))
        .args(["run", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("required = true"), "{said}");
}

#[test]
fn check_names_store_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g.toml");
    let run = |toml: &str, env: &[(&str, &str)]| {
        std::fs::write(&file, toml).unwrap();
        let out = std::process::Command::new(bin("gateway"))
            .args(["check", "--config"])
            .arg(&file)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let base = "[[listeners]]\naddress = \"127.0.0.1:1\"\n[pools.p]\nreplicas = [\"127.0.0.1:9\"]\n[[routes]]\npool = \"p\"\n";
    let (ok, said) = run(
        &format!("{base}[rate_limits.x]\nrate = \"1 per 1s\"\nscope = \"cluster\"\n"),
        &[],
    );
    assert!(
        !ok && said.contains("rate_limits.x.scope") && said.contains("[store]"),
        "{said}"
    );
    let (ok, said) = run(
        &format!("{base}[store]\nredis = \"redis://:hunter2@127.0.0.1:6379/0\"\n"),
        &[],
    );
    assert!(
        !ok && said.contains("store.redis") && said.contains("password_env"),
        "{said}"
    );
    assert!(
        !said.contains("hunter2"),
        "the password is never echoed: {said}"
    );
    let (ok, said) = run(&format!("{base}[store]\nredis = \"http://x\"\n"), &[]);
    assert!(!ok && said.contains("redis://"), "{said}");
    let (ok, said) = run(
        &format!("{base}[store]\nredis = \"redis://127.0.0.1:6379/0\"\npassword_env = \"E2E_NO_SUCH_VAR\"\n"),
        &[],
    );
    assert!(!ok && said.contains("E2E_NO_SUCH_VAR is not set"), "{said}");
    let (ok, said) = run(
        &format!("{base}[store]\nredis = \"redis://127.0.0.1:6379/0\"\nencryption_key_env = \"E2E_KEY\"\n"),
        &[("E2E_KEY", "c2hvcnQ=")],
    );
    assert!(!ok && said.contains("32 random bytes"), "{said}");
    let (ok, said) = run(
        &format!(
            "{base}[store]\nredis = \"redis://127.0.0.1:6379/0\"\npassword_env = \"E2E_PW\"\n"
        ),
        &[("E2E_PW", "s3cret-value")],
    );
    assert!(ok, "{said}");
    assert!(!said.contains("s3cret-value"), "{said}");
}
