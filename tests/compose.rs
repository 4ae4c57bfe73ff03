//! The stack as users deploy it: both images built from the repository's Dockerfiles
//! on this machine's Docker engine (base images made here, no registry), compose.yml
//! run with `docker-compose`, and what a user would see checked step by step, in the
//! order docs/deploy.md tells them to do things. One test, so the stack is built once.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::compose::{build_images, preflight, Stack, ACME_NAME};
use e2e::pki::{https_client, served_serial};
use serde_json::Value;

const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// A few clients sending GETs in a loop until stopped, counting every answer.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<Mutex<Vec<String>>>,
    /// When the first and the last failure happened.
    failures_at: Arc<Mutex<Option<(Instant, Instant)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(client: &reqwest::Client, url: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let failures_at = Arc::new(Mutex::new(None::<(Instant, Instant)>));
        let tasks = (0..clients)
            .map(|_| {
                let (c, url) = (client.clone(), url.to_owned());
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                let failures_at = failures_at.clone();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let outcome = match c.get(&url).send().await {
                            Ok(r) if r.status() == 200 => r
                                .bytes()
                                .await
                                .map(drop)
                                .map_err(|e| format!("body: {e:?}")),
                            Ok(r) => Err(format!("status {}", r.status())),
                            Err(e) => Err(format!("{e:?}")),
                        };
                        match outcome {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                failed.lock().unwrap().push(e);
                                let now = Instant::now();
                                let mut at = failures_at.lock().unwrap();
                                *at = Some(at.map_or((now, now), |(first, _)| (first, now)));
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            failures_at,
            tasks,
        }
    }

    fn failure_window(&self) -> Duration {
        self.failures_at
            .lock()
            .unwrap()
            .map_or(Duration::ZERO, |(first, last)| last - first)
    }

    /// Stops the clients; returns (answered, failures).
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failed = self.failed.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failed)
    }
}

/// What a step cost the clients: requests answered and failed, and for how long
/// requests failed (first to last failure).
struct Cost {
    answered: usize,
    failed: Vec<String>,
    window: Duration,
    took: Duration,
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed of {} requests, failing for {:.1} s of a {:.1} s step (4 clients)",
            self.failed.len(),
            self.answered + self.failed.len(),
            self.window.as_secs_f64(),
            self.took.as_secs_f64()
        )
    }
}

/// Runs `step` while four clients send GETs; what it cost them.
async fn under_load(client: &reqwest::Client, url: &str, step: impl FnOnce()) -> Cost {
    let load = Load::start(client, url, 4);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    tokio::task::block_in_place(step);
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first_last = load.failure_window();
    let (answered, failed) = load.finish().await;
    Cost {
        answered,
        failed,
        window: first_last,
        took,
    }
}

/// Tags a new gateway image (the same build, a new label): what `docker compose
/// build` does after `git pull`, without a ten-minute release build in the test.
fn new_gateway_image(version: &str) {
    let root = e2e::compose::root();
    let ok = std::process::Command::new("docker")
        .args(["build", "-q", "-f", "Dockerfile.gateway", "--label"])
        .arg(format!("upgrade={version}"))
        .args(["-t", "edge-gateway:0.1.0", "."])
        .current_dir(root)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "docker build of the new gateway image");
}

/// docs/deploy.md, "Upgrade the gateway with no failed request": a second gateway
/// container from the new image joins the edge's network namespace and binds the same
/// ports (SO_REUSEPORT); once it is healthy the old one drains and goes.
fn zero_downtime_upgrade(stack: &Stack) {
    let old = stack.gateway();
    stack.compose_ok(&[
        "up",
        "-d",
        "--no-deps",
        "--no-recreate",
        "--scale",
        "gateway=2",
        "gateway",
    ]);
    assert!(
        stack.wait_healthy("gateway", 2, Duration::from_secs(60)),
        "the new gateway is healthy beside the old one"
    );
    let stopped = std::process::Command::new("docker")
        .args(["stop", "-t", "35", &old])
        .status()
        .unwrap()
        .success();
    assert!(stopped);
    let removed = std::process::Command::new("docker")
        .args(["rm", &old])
        .status()
        .unwrap()
        .success();
    assert!(removed);
    stack.compose_ok(&[
        "up",
        "-d",
        "--no-deps",
        "--no-recreate",
        "--scale",
        "gateway=1",
        "gateway",
    ]);
}

fn assert_no_failure(what: &str, answered: usize, failed: &[String]) {
    assert!(answered > 50, "{what}: only {answered} requests answered");
    assert!(
        failed.is_empty(),
        "{what}: {} of {} requests failed: {:?}",
        failed.len(),
        answered + failed.len(),
        &failed[..failed.len().min(5)]
    );
}

/// The replicas `gateway status` lists as healthy in pool `api`.
fn healthy_replicas(status: &Value) -> usize {
    status["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == "api")
        .flat_map(|p| p["replicas"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["healthy"] == true)
        .count()
}

/// Polls `gateway status` until pool `api` has exactly `n` replicas, all healthy.
fn wait_for_replica_set(stack: &Stack, n: usize, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        let s = stack.status();
        let listed = s["pools"][0]["replicas"].as_array().map_or(0, Vec::len);
        if listed == n && healthy_replicas(&s) == n {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compose_stack_as_users_run_it() {
    preflight();
    build_images();
    let mut stack = Stack::create();
    // The shipped per-address limit (60 a minute) would refuse the test's own load.
    stack.set_env("RATE_LIMIT", "100000 per 1m");

    // 1. `docker compose up -d`: every service healthy.
    stack.compose_ok(&["up", "-d"]);
    assert!(
        stack.wait_healthy("api", 3, Duration::from_secs(90)),
        "three healthy api replicas"
    );
    assert!(
        stack.wait_healthy("gateway", 1, Duration::from_secs(60)),
        "a healthy gateway: {}",
        stack.compose_ok(&["logs", "--no-color", "gateway"])
    );
    let gw = stack.gateway();

    // 2. The gateway runs as uid 10001 with no capabilities on a read-only root; its
    // admin listener is not published on the host.
    assert_eq!(stack.inspect(&gw, "{{.HostConfig.ReadonlyRootfs}}"), "true");
    let pid = stack.inspect(&gw, "{{.State.Pid}}");
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        proc_status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(field("Uid:"), ["10001"; 4], "non-root");
    assert_eq!(field("CapEff:"), ["0000000000000000"], "no capabilities");
    let edge = stack.containers("edge")[0].clone();
    let published = stack.inspect(&edge, "{{json .NetworkSettings.Ports}}");
    assert!(
        !published.contains("9901/tcp\":[") && published.contains("443/tcp"),
        "only 80 and 443 are published: {published}"
    );
    assert!(
        std::net::TcpStream::connect_timeout(
            &"127.0.0.1:9901".parse().unwrap(),
            Duration::from_millis(300)
        )
        .is_err(),
        "the admin listener is not reachable from the host"
    );

    // 3. HTTPS on the internal CA, with HSTS and the security headers, round robin over
    // the three replicas the gateway found through Compose's DNS.
    let ca = stack.read_file(&gw, "/data/certs/internal/ca.pem");
    let https = https_client(&ca, "localhost", stack.https);
    let url = format!("https://localhost:{}/api/whoami", stack.https.port());
    let mut seen = HashSet::new();
    for _ in 0..9 {
        let r = https.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let h = r.headers().clone();
        assert!(
            h["strict-transport-security"]
                .to_str()
                .unwrap()
                .starts_with("max-age="),
            "{h:?}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert!(h.contains_key("x-request-id"));
        let v: Value = r.json().await.unwrap();
        seen.insert(v["replica"].as_str().unwrap().to_owned());
    }
    let hostnames: HashSet<String> = stack
        .containers("api")
        .iter()
        .map(|id| stack.inspect(id, "{{.Config.Hostname}}"))
        .collect();
    assert_eq!(
        seen, hostnames,
        "every api replica answered, and only those"
    );
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = plain
        .get(format!("http://{}/x?y=1", stack.http))
        .header("host", "localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert!(r.headers().get("strict-transport-security").is_none());

    // 4. `--scale api=5`, then `--scale api=2`, under load: no failed request, and the
    // gateway's status shows the new replica set within two health intervals.
    let load = Load::start(&https, &url, 4);
    stack.compose_ok(&["up", "-d", "--no-recreate", "--scale", "api=5"]);
    let grew = wait_for_replica_set(&stack, 5, 4 * HEALTH_INTERVAL);
    let shrink_started = Instant::now();
    stack.compose_ok(&["up", "-d", "--no-recreate", "--scale", "api=2"]);
    let scaled_down_in = shrink_started.elapsed();
    let shrank = wait_for_replica_set(&stack, 2, 4 * HEALTH_INTERVAL);
    let (answered, failed) = load.finish().await;
    eprintln!(
        "scale: 3 -> 5 seen in {grew:?}; 5 -> 2 took {scaled_down_in:?}, then seen in {shrank:?}; {answered} requests"
    );
    assert_no_failure("scaling", answered, &failed);
    assert!(
        grew.is_some_and(|d| d <= 2 * HEALTH_INTERVAL),
        "5 replicas in status within two health intervals: {grew:?}"
    );
    assert!(
        shrank.is_some_and(|d| d <= 2 * HEALTH_INTERVAL),
        "2 replicas in status within two health intervals: {shrank:?}"
    );

    // 5. SIGKILL of an api container under load: no failed GET.
    let load = Load::start(&https, &url, 4);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim = stack.containers("api")[0].clone();
    let killed = std::process::Command::new("docker")
        .args(["kill", "-s", "KILL", &victim])
        .status()
        .unwrap();
    assert!(killed.success());
    tokio::time::sleep(3 * HEALTH_INTERVAL).await;
    let (answered, failed) = load.finish().await;
    assert_no_failure("SIGKILL of a replica", answered, &failed);

    // 6. A reload inside the running container under load: applied with no failed
    // request; a bad config is refused and the old one keeps serving.
    let config = stack.config_file("gateway.compose.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    let load = Load::start(&https, &url, 4);
    std::fs::write(
        &config,
        good.replace(
            "[headers]\n",
            "[headers]\nset = { \"X-Reloaded\" = \"yes\" }\n",
        ),
    )
    .unwrap();
    let out = stack.exec(&gw, &["gateway", "reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::write(&config, format!("{good}\n[pools.api]\nbogus = 1\n")).unwrap();
    let out = stack.exec(&gw, &["gateway", "reload"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad config is refused");
    assert!(said.contains("gateway.compose.toml"), "{said}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (answered, failed) = load.finish().await;
    assert_no_failure("reloads", answered, &failed);
    let r = https.get(&url).send().await.unwrap();
    assert_eq!(
        r.headers()["x-reloaded"],
        "yes",
        "the good reload still serves"
    );
    std::fs::write(&config, &good).unwrap();
    assert!(stack.exec(&gw, &["gateway", "reload"]).status.success());

    // 7. The logs: one JSON access line per request, with the id the client saw.
    let rid = format!("compose-e2e-{}", std::process::id());
    let r = https
        .get(&url)
        .header("x-request-id", &rid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], rid.as_str());
    let mut line = None;
    e2e::wait_until(Duration::from_secs(10), || {
        let logs = stack.compose_ok(&["logs", "--no-color", "gateway"]);
        line = logs
            .lines()
            .filter_map(|l| l.split_once("| ").map(|(_, json)| json))
            .filter_map(|json| serde_json::from_str::<Value>(json).ok())
            .find(|v| v["request_id"] == rid.as_str());
        line.is_some()
    });
    let line = line.expect("an access line with the client's request id");
    assert_eq!(line["status"], 200);
    assert_eq!(line["path"], "/api/whoami");

    // 8. `down`, then `up -d`: the volume keeps the CA and the certificate.
    let serial = served_serial(stack.https, "localhost").unwrap();
    stack.compose_ok(&["down"]);
    stack.compose_ok(&["up", "-d"]);
    assert!(stack.wait_healthy("gateway", 1, Duration::from_secs(90)));
    let gw = stack.gateway();
    assert_eq!(
        stack.read_file(&gw, "/data/certs/internal/ca.pem"),
        ca,
        "same CA"
    );
    assert_eq!(
        served_serial(stack.https, "localhost").as_deref(),
        Some(serial.as_str()),
        "same certificate: nothing was issued again"
    );

    // 9. What a gateway restart and an image upgrade cost under load (measured and
    // printed for docs/deploy.md), and the upgrade that costs nothing (asserted).
    let restart = under_load(&https, &url, || {
        stack.compose_ok(&["restart", "gateway"]);
        assert!(stack.wait_healthy("gateway", 1, Duration::from_secs(60)));
    })
    .await;
    eprintln!("figure: `docker compose restart gateway` under load: {restart}");
    new_gateway_image("1");
    let recreate = under_load(&https, &url, || {
        stack.compose_ok(&["up", "-d", "gateway"]);
        assert!(stack.wait_healthy("gateway", 1, Duration::from_secs(60)));
    })
    .await;
    eprintln!("figure: `docker compose up -d` with a new gateway image under load: {recreate}");
    new_gateway_image("2");
    let handover = under_load(&https, &url, || zero_downtime_upgrade(&stack)).await;
    eprintln!("figure: the documented zero-downtime upgrade under load: {handover}");
    assert_no_failure("zero-downtime upgrade", handover.answered, &handover.failed);
    let gw = stack.gateway();
    assert_eq!(
        stack.inspect(&gw, "{{.Config.Labels.upgrade}}"),
        "2",
        "the new image serves"
    );

    // 9. ACME inside Compose: Pebble on the Compose network issues the gateway a
    // certificate over HTTP-01 (its validator reaches the gateway's port 80 by name),
    // and HTTPS serves it.
    std::fs::write(
        &config,
        good.replace(
            "[sites.acme]\n",
            "[sites.acme]\nca_root = \"/etc/gateway/pebble-ca.pem\"\n",
        ),
    )
    .unwrap();
    stack.set_env("DOMAIN", ACME_NAME);
    stack.set_env("CERTIFICATE", "acme");
    stack.set_env("ACME_DIRECTORY", "https://pebble:14000/dir");
    stack.compose_ok(&["--profile", "acme", "up", "-d", "pebble"]);
    stack.compose_ok(&["up", "-d", "gateway"]);
    let roots_url = format!("https://{}/roots/0", stack.pebble_mgmt);
    let insecure = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let mut root = String::new();
    let got_root = e2e::wait_until(Duration::from_secs(30), || {
        root = std::process::Command::new("curl")
            .args(["-sk", &roots_url])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        root.contains("BEGIN CERTIFICATE")
    });
    assert!(got_root, "Pebble's root from {roots_url}");
    drop(insecure);
    let acme = https_client(&root, ACME_NAME, stack.https);
    let acme_url = format!("https://{ACME_NAME}:{}/api/whoami", stack.https.port());
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last;
    loop {
        match acme.get(&acme_url).send().await {
            Ok(r) if r.status() == 200 => break,
            Ok(r) => last = format!("status {}", r.status()),
            Err(e) => last = format!("{e:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "no certificate from Pebble: {last}\n{}",
            stack.compose_ok(&["logs", "--no-color", "gateway", "pebble"])
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// compose.cluster.yml on top of compose.yml: two gateways, each behind its own edge,
/// sharing one Redis (from Debian's package here, REDIS_IMAGE): the login limit (5 in
/// 15 minutes) holds across both, and each says its store is up.
#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_example_shares_limits_between_two_gateways() {
    preflight();
    build_images();
    let mut stack = Stack::create_with(&["compose.yml", "compose.cluster.yml"]);
    stack.set_env("REDIS_IMAGE", "edge-test-redis:local");
    stack.set_env("STORE_PASSWORD", "e2e-cluster-password");
    stack.set_env("STORE_KEY", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
    // The local CA: each gateway makes its own (docs/cluster.md); plain HTTP is
    // enough to count requests.
    stack.set_env("CERTIFICATE", "internal");
    stack.compose_ok(&["up", "-d"]);
    for service in ["gateway", "gateway-b"] {
        assert!(
            stack.wait_healthy(service, 1, Duration::from_secs(120)),
            "{service} healthy: {}",
            stack.compose_ok(&["logs", "--no-color", service])
        );
    }
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut statuses = Vec::new();
    for i in 0..12 {
        let edge = if i % 2 == 0 { stack.http } else { stack.http_b };
        // Not the site's name, so plain HTTP is served rather than redirected.
        let r = c
            .get(format!("http://{edge}/api/auth/login"))
            .header("host", "cluster.test")
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        limited, 7,
        "5 of 12 pass across both gateways: {statuses:?}"
    );
    for service in ["gateway", "gateway-b"] {
        let id = stack.containers(service)[0].clone();
        let out = stack.exec(&id, &["gateway", "status"]);
        let status: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(status["store"]["up"], true, "{service}: {status}");
        assert_eq!(status["store"]["address"], "redis://redis:6379/0");
    }
}
