//! Clients that cost little must not cost the edge (or the app) much: a request the
//! client abandons reaches one replica once and is never retried or charged to it; an
//! HTTP/2 connection that sits idle is closed with a GOAWAY; the total of open
//! connections is bounded; and the HTTP/2 defences (rapid reset, CONTINUATION and
//! SETTINGS/PING floods, HPACK bombs, streams over the limit) hold, each with a
//! bystander client that must keep being served. HTTP/2 frames come from
//! tests/h2/h2probe.py (Debian's python3-h2): client libraries never send these.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::pki::https_client;
use e2e::*;
use serde_json::Value;

fn config(state: &std::path::Path, replicas: &[&Replica], extra: &str) -> String {
    TestConfig::plain_and_tls(state)
        .internal_site(&["localhost"], "redirect = \"off\"")
        .with(extra)
        .pool("api", replicas)
        .route("/api", "api", "")
        .build()
}

/// Runs tests/h2/h2probe.py against the gateway's TLS listener.
fn probe(gw: &Gateway, state: &std::path::Path, args: &[&str]) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("h2/h2probe.py");
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(script)
        .arg(gw.tls.port().to_string())
        .arg("localhost")
        .arg(state.join("internal/ca.pem"))
        .args(args)
        .output()
        .expect("/usr/bin/python3 with python3-h2 (tests/deps.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|_| {
        panic!(
            "h2probe {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn slow_started(replicas: &[&Replica]) -> usize {
    replicas
        .iter()
        .map(|r| r.log_text().matches("slow request started").count())
        .sum()
}

async fn counter(gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    let s = scrape(gw).await;
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// Over HTTP/1.1 and HTTP/2, a GET the client abandons (closes the connection, or
/// cancels the stream) 200 ms in reaches exactly one replica, is logged as 499, counted
/// as a client abort, and is neither retried nor a replica error.
#[tokio::test(flavor = "multi_thread")]
async fn an_abandoned_request_reaches_one_replica_once() {
    let rs = [
        Replica::start("r1"),
        Replica::start("r2"),
        Replica::start("r3"),
    ];
    let all: Vec<&Replica> = rs.iter().collect();
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&config(state.path(), &all, ""));

    for i in 0..5 {
        let mut s = TcpStream::connect(gw.addr).unwrap();
        write!(
            s,
            "GET /api/slow?ms=3000 HTTP/1.1\r\nHost: localhost\r\nX-Request-ID: h1-abort-{i}\r\n\r\n"
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        drop(s);
    }
    let answered = probe(&gw, state.path(), &["cancel", "/api/slow?ms=3000", "5"]);
    assert_eq!(answered["sent"], 5, "{answered}");
    // Every abandoned request reached a replica once; give a retry the time it took.
    assert!(wait_until(Duration::from_secs(5), || slow_started(&all) >= 10));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        slow_started(&all),
        10,
        "one upstream request per abandoned request"
    );

    assert_eq!(counter(&gw, "gateway_client_aborts_total", &[]).await, 10.0);
    assert_eq!(
        counter(
            &gw,
            "gateway_upstream_requests_total",
            &[("outcome", "error")]
        )
        .await,
        0.0,
        "no replica error"
    );
    assert_eq!(
        counter(&gw, "gateway_upstream_retries_total", &[]).await,
        0.0
    );
    assert_eq!(
        counter(&gw, "gateway_requests_total", &[("status", "499")]).await,
        10.0
    );
    for i in 0..5 {
        assert_eq!(gw.access_line(&format!("h1-abort-{i}"))["status"], 499);
        assert_eq!(gw.access_line(&format!("h2-cancel-{i}"))["status"], 499);
    }
    // The replicas stay in service.
    let c = client();
    for _ in 0..3 {
        let r = c.get(gw.url("/api/whoami")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
}

/// An HTTP/2 connection with nothing moving (here: one that never sent a request) is
/// ended with a GOAWAY after `keepalive_timeout`, and counted.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_http2_connection_gets_a_goaway() {
    let r = Replica::start("r1");
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&config(
        state.path(),
        &[&r],
        "[limits]\nkeepalive_timeout = \"2s\"",
    ));
    let started = Instant::now();
    let seen = probe(&gw, state.path(), &["idle", "10"]);
    assert_eq!(seen["goaway"], "NO_ERROR", "{seen}");
    assert_eq!(seen["closed"], true, "{seen}");
    let goaway = seen["goaway_after"].as_f64().unwrap();
    assert!(
        (1.5..3.5).contains(&goaway),
        "GOAWAY after {goaway} s: {seen}"
    );
    let closed = seen["after"].as_f64().unwrap();
    assert!(
        closed - goaway < 1.0,
        "closed once the client acknowledged: {seen}"
    );
    // A client that does not even answer the GOAWAY's PING is not waited for long.
    let silent = probe(&gw, state.path(), &["idle", "15", "silent"]);
    assert_eq!(silent["goaway"], "NO_ERROR", "{silent}");
    assert_eq!(silent["closed"], true, "{silent}");
    let closed = silent["after"].as_f64().unwrap();
    assert!(
        (5.0..9.5).contains(&closed),
        "closed {closed} s after it went silent: {silent}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        counter(&gw, "gateway_client_h2_idle_closed_total", &[]).await,
        2.0
    );
}

/// With `max_connections`, a connection past the cap is closed at accept, the ones
/// open are still served, and a place freed is taken again.
#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_cap_are_closed_and_the_others_served() {
    let r = Replica::start("r1");
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&config(
        state.path(),
        &[&r],
        "[limits]\nmax_connections = 4",
    ));
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(gw.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let over = raw_request(
        gw.addr,
        b"GET /api/whoami HTTP/1.1\r\nHost: localhost\r\n\r\n",
        Duration::from_secs(2),
    );
    assert!(over.is_empty(), "closed without an answer: {over:?}");
    // One of the four open connections is still served.
    held[0]
        .write_all(b"GET /api/whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let answer = read_response(&mut held[0]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
    let freed = wait_until(Duration::from_secs(5), || {
        raw_request(
            gw.addr,
            b"GET /api/whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
        .starts_with("HTTP/1.1 200")
    });
    assert!(freed, "places freed are taken again");
    assert!(counter(&gw, "gateway_connections_refused_total", &[]).await >= 1.0);
    assert!(gw.log_text().contains("\"connection_limit_reached\""));
}

/// Each HTTP/2 attack against the gateway, with a bystander on its own connection that
/// must keep being served throughout. What the gateway answers comes from the `h2` crate
/// Pingora uses: these keep a dependency update from losing it unnoticed.
#[tokio::test(flavor = "multi_thread")]
async fn http2_attacks_are_contained_and_bystanders_served() {
    let r = Replica::start("r1");
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&config(state.path(), &[&r], ""));
    let ca = std::fs::read_to_string(state.path().join("internal/ca.pem")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let bystander = {
        let c = https_client(&ca, "localhost", gw.tls);
        let url = format!("https://localhost:{}/api/whoami", gw.tls.port());
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // What the gateway (the h2 crate under Pingora) does with each: docs/reliability.md.
    let rapid = probe(&gw, state.path(), &["rapid-reset", "5000"]);
    assert_eq!(rapid["goaway"], "ENHANCE_YOUR_CALM", "rapid reset: {rapid}");
    let cont = probe(&gw, state.path(), &["continuation", "20000"]);
    assert_eq!(
        cont["goaway"], "ENHANCE_YOUR_CALM",
        "CONTINUATION flood: {cont}"
    );
    assert!(
        cont["sent"].as_u64().unwrap() < 20000,
        "cut off early: {cont}"
    );
    let bomb = probe(&gw, state.path(), &["hpack-bomb", "5000"]);
    assert_eq!(bomb["goaway"], "ENHANCE_YOUR_CALM", "HPACK bomb: {bomb}");
    assert_eq!(bomb["responses"], 0, "{bomb}");
    let streams = probe(&gw, state.path(), &["streams-over-limit", "300"]);
    let limit = streams["max_concurrent_streams"].as_u64().unwrap();
    assert!(limit < 300, "{streams}");
    assert_eq!(
        streams["refused"].as_u64().unwrap(),
        300 - limit,
        "every stream past MAX_CONCURRENT_STREAMS refused: {streams}"
    );
    // Floods of frames the server must answer: answered, and nobody else waits.
    for flood in ["settings-flood", "ping-flood"] {
        let seen = probe(&gw, state.path(), &[flood, "20000"]);
        assert_eq!(seen["sent"], 20000, "{flood}: {seen}");
    }

    stop.store(true, Ordering::Relaxed);
    bystander.await.unwrap();
    assert!(ok.load(Ordering::Relaxed) > 20, "the bystander ran");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "the bystander was always served"
    );
    // And the gateway still answers a fresh client.
    let c = https_client(&ca, "localhost", gw.tls);
    let r = c
        .get(format!("https://localhost:{}/api/whoami", gw.tls.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
