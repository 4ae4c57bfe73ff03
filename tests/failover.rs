//! Health checks, passive failover and gateway-made 502/503/504, with real processes.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::*;
use serde_json::Value;

const HEALTH_1S: &str = "[pools.api.health]\npath = \"/readyz\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nhealthy_after = 2\nunhealthy_after = 2\n";

/// The replica that answered, or `status N` when the gateway answered itself.
async fn replica_of(c: &reqwest::Client, url: &str) -> String {
    let resp = c.get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap();
    match v["replica"].as_str() {
        Some(r) if status == 200 => r.to_owned(),
        _ => format!("status {status}"),
    }
}

/// Polls until `n` consecutive answers satisfy `pred`; returns how long that took.
async fn until_consecutive(
    c: &reqwest::Client,
    url: &str,
    n: usize,
    limit: Duration,
    pred: impl Fn(&str) -> bool,
) -> Duration {
    let start = Instant::now();
    let mut run = 0;
    while start.elapsed() < limit {
        if pred(&replica_of(c, url).await) {
            run += 1;
            if run >= n {
                return start.elapsed();
            }
        } else {
            run = 0;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("condition not met within {limit:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_health_checks_take_a_replica_out_and_recovery_brings_it_back() {
    let rs = replicas(3);
    let gw = Gateway::start(&simple_config(
        &rs.iter().collect::<Vec<_>>(),
        "",
        HEALTH_1S,
    ));
    let c = client();
    let url = gw.url("/api/whoami");

    rs[1].set_maintenance(true);
    // 3 intervals, plus 0.5 s for process scheduling on a loaded 2-core machine.
    let limit = Duration::from_millis(3500);
    let out_after = until_consecutive(&c, &url, 12, limit, |r| r != "r2").await;
    let log = gw.log_text();
    assert!(
        log.contains("\"event\":\"replica_unhealthy\"") && log.contains(&rs[1].addr.to_string()),
        "{log}"
    );
    // The replicas left share the load evenly: rotating over all three and skipping
    // the one out would send r1 two requests in three (r2's share to its successor).
    let mut counts = HashMap::new();
    for _ in 0..40 {
        *counts.entry(replica_of(&c, &url).await).or_insert(0) += 1;
    }
    assert_eq!(counts.get("r1"), Some(&20), "{counts:?}");
    assert_eq!(counts.get("r3"), Some(&20), "{counts:?}");

    rs[1].set_maintenance(false);
    let back_after = until_consecutive(&c, &url, 1, limit, |r| r == "r2").await;
    assert!(gw.log_text().contains("\"event\":\"replica_healthy\""));
    eprintln!("taken out after {out_after:?}, back after {back_after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_one_replica_under_load_fails_no_get() {
    let mut rs = replicas(3);
    let gw = Gateway::start(&simple_config(
        &rs.iter().collect::<Vec<_>>(),
        "",
        HEALTH_1S,
    ));
    let c = client();
    let url = gw.url("/api/whoami");
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let per_worker = 250; // 8 workers x 250 = 2,000 GETs
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, url, done, failures) = (c.clone(), url.clone(), done.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..per_worker {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.unwrap();
                        seen.push(v["replica"].as_str().unwrap().to_owned());
                    }
                    Ok(r) => {
                        eprintln!(
                            "failed: {} {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        );
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("failed: {e}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            seen
        }));
    }
    assert!(wait_until(Duration::from_secs(60), || done
        .load(Ordering::Relaxed)
        >= 400));
    rs[1].kill9();
    let killed_at = done.load(Ordering::Relaxed);
    let mut per_replica: std::collections::HashMap<String, usize> = Default::default();
    for t in tasks {
        for r in t.await.unwrap() {
            *per_replica.entry(r).or_default() += 1;
        }
    }
    assert_eq!(done.load(Ordering::Relaxed), 2000);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "GETs failed after kill -9 at request {killed_at}"
    );
    assert!(
        per_replica.get("r2").copied().unwrap_or(0) > 0,
        "r2 served before it was killed: {per_replica:?}"
    );
    assert!(
        per_replica["r1"] + per_replica["r3"] > 1500,
        "{per_replica:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn all_replicas_down_gives_a_fast_json_503_and_traffic_resumes() {
    let mut rs = replicas(2);
    let gw = Gateway::start(&simple_config(
        &rs.iter().collect::<Vec<_>>(),
        "",
        HEALTH_1S,
    ));
    let c = client();
    let port = rs[0].addr.port();
    for r in rs.iter_mut() {
        r.kill9();
    }
    // Until the checks notice, connections are refused (502); then the pool is empty (503).
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline {
        last = c
            .get(gw.url("/api/whoami"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert!(last == 502 || last == 503, "{last}");
        if last == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last, 503);
    let t = Instant::now();
    let resp = c.get(gw.url("/api/whoami")).send().await.unwrap();
    let took = t.elapsed();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let status = resp.status().as_u16();
    let v = assert_error_contract(status, 503, Some(&id), &resp.text().await.unwrap());
    assert_eq!(v["error"]["code"], "no_healthy_upstream");
    assert!(took < Duration::from_millis(500), "503 took {took:?}");

    let _back = Replica::start_on("r1-again", port, &[]);
    let resumed = until_consecutive(&c, &gw.url("/api/whoami"), 1, Duration::from_secs(5), |r| {
        r == "r1-again"
    })
    .await;
    eprintln!("traffic resumed {resumed:?} after the replica came back");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_connection_is_a_json_502_and_post_fails_over_before_sending() {
    let live = Replica::start("live");
    let dead = format!("127.0.0.1:{}", dead_port());
    // Only a dead replica: 502, after trying it once.
    let config = format!(
        "[[listeners]]\naddress = \"{{listen}}\"\n[pools.dead]\nreplicas = [\"{dead}\"]\n[pools.mixed]\nreplicas = [\"{dead}\", \"{}\"]\n\
         [[routes]]\npath = \"/dead\"\nstrip_prefix = true\npool = \"dead\"\n[[routes]]\npath = \"/api\"\npool = \"mixed\"\n",
        live.addr
    );
    let gw = Gateway::start(&config);
    let c = client();
    let resp = c.get(gw.url("/dead/api/whoami")).send().await.unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    let v = assert_error_contract(status, 502, Some(&id), &body);
    assert_eq!(v["error"]["code"], "bad_gateway");
    assert!(
        !body.contains("127.0.0.1") && !body.to_lowercase().contains("refused"),
        "internal detail leaked: {body}"
    );
    let line = gw.access_line(&id);
    assert_eq!(line["status"], 502);
    assert_eq!(line["attempts"], 1);

    // Mixed pool, no health checks: every POST lands, the refused connect is retried.
    let mut ids = HashSet::new();
    for i in 0..10 {
        let resp = c
            .post(gw.url("/api/items"))
            .json(&serde_json::json!({"name": format!("n{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let item: Value = resp.json().await.unwrap();
        assert!(
            ids.insert(item["id"].as_u64().unwrap()),
            "no POST was duplicated"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_replica_gives_a_json_504_after_the_read_timeout() {
    let r = Replica::start("slow");
    let gw = Gateway::start(&simple_config(&[&r], "read_timeout = \"300ms\"", ""));
    let c = client();
    let t = Instant::now();
    let resp = c.get(gw.url("/api/slow?ms=3000")).send().await.unwrap();
    let took = t.elapsed();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let status = resp.status().as_u16();
    let v = assert_error_contract(status, 504, Some(&id), &resp.text().await.unwrap());
    assert_eq!(v["error"]["code"], "upstream_timeout");
    assert!(took < Duration::from_millis(2500), "504 took {took:?}");
    // The replica itself stays fine for fast requests.
    assert_eq!(
        c.get(gw.url("/api/slow?ms=10"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// Runs `workers` clients, each sending `per_worker` requests built by `send`, until done;
/// returns (answered 200, the failures as "status body" strings).
async fn load<F, Fut>(workers: usize, per_worker: usize, send: F) -> (usize, Vec<String>)
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<reqwest::Response, reqwest::Error>> + Send,
{
    let mut tasks = Vec::new();
    for w in 0..workers {
        let send = send.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            for i in 0..per_worker {
                match send(w, i).await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(format!(
                        "{} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => failed.push(format!("transport: {e}")),
                }
            }
            (ok, failed)
        }));
    }
    let (mut ok, mut failed) = (0, Vec::new());
    for t in tasks {
        let (o, f) = t.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    (ok, failed)
}

/// Each replica in turn gets SIGTERM (upstream-api reports not-ready for its drain
/// delay, finishes in-flight requests, exits), then starts again on the same port and
/// is back in rotation before the next one goes: no client request fails.
#[tokio::test(flavor = "multi_thread")]
async fn rolling_restart_of_every_replica_fails_no_request() {
    let health = "[pools.api.health]\npath = \"/readyz\"\ninterval = \"300ms\"\ntimeout = \"300ms\"\nhealthy_after = 2\nunhealthy_after = 1\n";
    let drain = ["--drain-delay", "1500ms"];
    let mut rs: Vec<Replica> = (1..=3)
        .map(|i| Replica::start_on(&format!("r{i}"), free_port(), &drain))
        .collect();
    let gw = Gateway::start(&simple_config(&rs.iter().collect::<Vec<_>>(), "", health));
    let c = client();
    let url = gw.url("/api/whoami");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (stop, c, url) = (stop.clone(), c.clone(), url.clone());
        tokio::spawn(async move {
            let mut total = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let (c, url) = (c.clone(), url.clone());
                let (ok, failed) = load(4, 25, move |_, _| {
                    let (c, url) = (c.clone(), url.clone());
                    async move { c.get(&url).send().await }
                })
                .await;
                total.0 += ok;
                total.1.extend(failed);
            }
            total
        })
    };
    for replica in rs.iter_mut() {
        let (id, port) = (replica.id.clone(), replica.addr.port());
        signal(replica.child.id(), "TERM");
        assert!(
            wait_until(Duration::from_secs(15), || replica
                .child
                .try_wait()
                .unwrap()
                .is_some()),
            "{id} did not exit after draining"
        );
        *replica = Replica::start_on(&id, port, &drain);
        until_consecutive(&c, &url, 1, Duration::from_secs(10), |r| r == id).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = traffic.await.unwrap();
    assert!(ok > 300, "only {ok} requests during the restarts");
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    eprintln!("rolling restart: {ok} requests, 0 failed");
}

/// POSTs are not idempotent: when a replica dies with POSTs in flight, those may fail
/// (502 in the JSON contract), but none is sent to a second replica behind the client's
/// back: every request id reaches at most one replica.
#[tokio::test(flavor = "multi_thread")]
async fn posts_on_a_dying_replica_fail_visibly_and_are_never_duplicated() {
    let mut rs = replicas(3);
    let gw = Gateway::start(&simple_config(
        &rs.iter().collect::<Vec<_>>(),
        "",
        HEALTH_1S,
    ));
    let c = client();
    let url = gw.url("/api/echo");
    let sent = Arc::new(AtomicUsize::new(0));
    let run = {
        let (c, url, sent) = (c.clone(), url.clone(), sent.clone());
        tokio::spawn(load(8, 150, move |w, i| {
            let (c, url, sent) = (c.clone(), url.clone(), sent.clone());
            async move {
                sent.fetch_add(1, Ordering::Relaxed);
                c.post(&url)
                    .header("x-request-id", format!("post-{w}-{i}"))
                    .body(format!("{{\"n\":{i}}}"))
                    .send()
                    .await
            }
        }))
    };
    assert!(wait_until(Duration::from_secs(60), || sent
        .load(Ordering::Relaxed)
        >= 300));
    rs[1].kill9();
    let (ok, failed) = run.await.unwrap();
    assert_eq!(ok + failed.len(), 1200);
    // Only requests in flight to the dying replica (at most one per client, plus one
    // per client on a kept-alive connection the kill closed) may fail.
    assert!(failed.len() <= 16, "{} failed: {failed:?}", failed.len());
    for f in &failed {
        assert!(
            f.starts_with("502 ") && f.contains("\"bad_gateway\""),
            "{f}"
        );
    }
    // Nothing answered twice: count each id across the three replicas' logs.
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    for r in &rs {
        for line in r.log_text().lines() {
            if let Some(id) = line
                .split("\"request_id\":\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
            {
                if id.starts_with("post-") && line.contains("\"message\":\"request\"") {
                    *seen.entry(id.to_owned()).or_default() += 1;
                }
            }
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "POSTs handled twice: {twice:?}");
    assert!(
        seen.len() >= ok,
        "every answered POST was logged by a replica"
    );
    eprintln!(
        "POSTs: {ok} ok, {} failed visibly, 0 duplicated",
        failed.len()
    );
}
