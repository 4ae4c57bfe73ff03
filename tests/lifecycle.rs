//! `gateway check`, WebSocket pass-through and graceful shutdown of both processes.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn check(path: &std::path::Path) -> (bool, String, String) {
    // The secrets gateway.cluster.toml and examples/saas.toml name; any well-formed
    // value will do.
    gateway_check(
        path,
        &[
            ("STORE_PASSWORD", "check-only"),
            ("STORE_KEY", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="),
            ("DNS_TSIG_SECRET", "Y2hlY2stb25seQ=="),
        ],
    )
}

#[test]
fn every_shipped_config_passes_check() {
    let mut files = vec![];
    let mut dirs = vec![repo_root().join("config")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "toml") {
                files.push(p);
            }
        }
    }
    assert!(!files.is_empty());
    for f in files {
        let (ok, out, err) = check(&f);
        assert!(ok, "{}: {err}", f.display());
        // Warnings (if any) come first; the verdict is the last line.
        assert!(
            out.lines().last().is_some_and(|l| l.starts_with("ok: ")),
            "{out}"
        );
    }
}

#[test]
fn check_names_file_line_column_and_key_for_each_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[listeners]]\naddress = \"127.0.0.1:8080\"\n\n[pools.api]\nreplicas = []\n\n[[routes]]\npath = \"/api\"\npool = \"web\"\n\n[[routes]]\npath = \"/api\"\npool = \"api\"\n",
    )
    .unwrap();
    let (ok, _, err) = check(&bad);
    assert!(!ok);
    let f = bad.display().to_string();
    assert!(
        err.contains(&format!(
            "{f}:5:12: pools.api.replicas: a pool needs at least one replica"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{f}:9:8: routes[0].pool: no pool named \"web\"")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{f}:12:8: routes[1].path: duplicate route: any host with path \"/api\""
        )),
        "{err}"
    );
    assert!(err.contains("3 problem(s) found"), "{err}");

    std::fs::write(
        &bad,
        "[[listeners]]\naddress = \"127.0.0.1:8080\"\ntimeout = \"5s\"\n",
    )
    .unwrap();
    let (ok, _, err) = check(&bad);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{f}:3:1: listeners[0].timeout: unknown field `timeout`"
        )),
        "{err}"
    );

    std::fs::write(&bad, "[[listeners]]\naddress = \"localhost\"\n").unwrap();
    let (ok, _, err) = check(&bad);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{f}:2:11: listeners[0].address: invalid socket address"
        )),
        "{err}"
    );

    // `run` refuses the same file and says why.
    let out = Command::new(bin("gateway"))
        .arg("run")
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listeners[0].address"));
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_echo_passes_through_the_gateway() {
    let r = Replica::start("ws");
    // A 1 KiB body limit must not apply to the tunnel: 8 KiB go through below. Nor must
    // compression, though the client accepts gzip: the tunnel's bytes are not a body.
    let cfg = simple_config(
        &[&r],
        "read_timeout = \"1s\"\nupgrade_idle_timeout = \"30s\"",
        "[limits]\nmax_body_size = \"1KiB\"\n[route_defaults]\ncompression = \"default\"\n",
    );
    let gw = Gateway::start(&cfg);
    // Pingora 0.9.1 can end an upgraded tunnel right after the 101 when the server
    // speaks first (a race between the empty pre-upgrade request body and the 101,
    // `maybe_force_close_body_reader` in pingora-core's HTTP/1 client; see
    // docs/architecture.md). Seen in ~3% of runs under load: retry only that case, at
    // most twice, so the test still fails if WebSockets do not work.
    let mut attempt = 0;
    let (mut ws, hello) = loop {
        attempt += 1;
        let mut req = format!("ws://{}/api/ws", gw.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("accept-encoding", "gzip, zstd".parse().unwrap());
        let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.status(), 101);
        assert!(!resp.headers().contains_key("content-encoding"));
        assert!(resp.headers().contains_key("x-request-id"));
        match ws.next().await {
            Some(Ok(m)) => break (ws, m),
            Some(Err(tokio_tungstenite::tungstenite::Error::Protocol(p))) if attempt < 3 => {
                eprintln!("attempt {attempt}: tunnel closed before the first frame ({p:?}): known pingora race, retrying");
            }
            other => panic!("no hello: {other:?}\ngateway log:\n{}", gw.log_text()),
        }
    };
    assert_eq!(hello, Message::Text("hello from ws".into()));
    // Idle for longer than the normal read timeout: the upgraded tunnel stays open.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..5 {
        ws.send(Message::Text(format!("ping {i}").into()))
            .await
            .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Text(format!("ping {i}").into())
        );
    }
    for i in 0..8u8 {
        let payload = vec![i; 1024];
        ws.send(Message::Binary(payload.clone().into()))
            .await
            .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Binary(payload.into()),
            "message {i}"
        );
    }
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_in_flight_request_finish_then_exits() {
    let r = Replica::start("slow");
    let mut gw = Gateway::start(&simple_config(
        &[&r],
        "",
        "[server]\nshutdown_grace = \"20s\"\n",
    ));
    let c = client();
    let url = gw.url("/api/slow?ms=1500");
    let slow = tokio::spawn(async move { c.get(&url).send().await.map(|r| r.status().as_u16()) });
    assert!(wait_until(Duration::from_secs(5), || r
        .log_text()
        .contains("slow request started")));

    signal(gw.pid(), "TERM");
    let addr = gw.addr;
    assert!(
        wait_until(Duration::from_secs(3), || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err()
        }),
        "the listener kept accepting after SIGTERM"
    );
    assert_eq!(
        slow.await.unwrap().unwrap(),
        200,
        "the in-flight request completed"
    );
    let t = Instant::now();
    let exited = wait_until(Duration::from_secs(5), || {
        gw.child.try_wait().unwrap().is_some()
    });
    assert!(exited, "gateway did not exit once drained");
    assert!(gw.child.try_wait().unwrap().unwrap().success());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "exit waited for the grace period instead of the drain"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_api_goes_not_ready_then_drains_on_sigterm() {
    let mut r = Replica::start_on("drain", free_port(), &["--drain-delay", "1s"]);
    let c = client();
    let base = format!("http://{}", r.addr);
    assert_eq!(
        c.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let url = format!("{base}/api/slow?ms=1500");
    let c2 = c.clone();
    let slow = tokio::spawn(async move { c2.get(&url).send().await.map(|r| r.status().as_u16()) });
    assert!(wait_until(Duration::from_secs(5), || r
        .log_text()
        .contains("slow request started")));
    signal(r.child.id(), "TERM");
    let mut draining = false;
    for _ in 0..20 {
        if let Ok(resp) = c.get(format!("{base}/readyz")).send().await {
            if resp.status() == 503 {
                let v: serde_json::Value = resp.json().await.unwrap();
                assert_eq!(v["status"], "draining");
                draining = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(draining, "/readyz never said draining");
    assert_eq!(slow.await.unwrap().unwrap(), 200);
    assert!(wait_until(Duration::from_secs(5), || r
        .child
        .try_wait()
        .unwrap()
        .is_some()));
    assert!(r.child.try_wait().unwrap().unwrap().success());
}

#[test]
fn check_warns_about_hsts_preload_without_its_requirements() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("g.toml");
    std::fs::write(
        &f,
        "[[listeners]]\naddress = \"127.0.0.1:8443\"\ntls = true\n[[sites]]\nnames = [\"localhost\"]\ncertificate = \"internal\"\nhsts_preload = true\n[pools.p]\nreplicas = [\"x:1\"]\n[[routes]]\npool = \"p\"\n",
    )
    .unwrap();
    let (ok, out, _) = check(&f);
    assert!(ok, "a warning is not an error");
    assert!(
        out.contains("warning: ")
            && out.contains("hsts_preload needs hsts_include_subdomains = true"),
        "{out}"
    );
}

#[test]
fn check_refuses_acme_without_a_plain_listener_and_unusable_names() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("g.toml");
    std::fs::write(
        &f,
        "[[listeners]]\naddress = \"127.0.0.1:8443\"\ntls = true\n[[sites]]\nnames = [\"localhost\", \"*.example.com\"]\ncertificate = \"acme\"\n[sites.acme]\ndirectory = \"https://acme.example/dir\"\nchallenge = \"dns-99\"\n[pools.p]\nreplicas = [\"x:1\"]\n[[routes]]\npool = \"p\"\n",
    )
    .unwrap();
    let (ok, _, err) = check(&f);
    assert!(!ok);
    assert!(
        err.contains("sites[0].acme.challenge: unknown challenge \"dns-99\""),
        "{err}"
    );
    assert!(
        err.contains("localhost: a CA cannot validate this name"),
        "{err}"
    );
    assert!(
        err.contains("*.example.com: wildcard names need the DNS-01 challenge"),
        "{err}"
    );

    // TLS-ALPN-01 is answered on an HTTPS listener: refused when there is none.
    std::fs::write(
        &f,
        "[[listeners]]\naddress = \"127.0.0.1:8080\"\n[[sites]]\nnames = [\"example.com\"]\ncertificate = \"acme\"\n[sites.acme]\ndirectory = \"https://acme.example/dir\"\nchallenge = \"tls-alpn-01\"\n[pools.p]\nreplicas = [\"x:1\"]\n[[routes]]\npool = \"p\"\n",
    )
    .unwrap();
    let (ok, _, err) = check(&f);
    assert!(!ok);
    assert!(
        err.contains("sites[0].acme.challenge: TLS-ALPN-01 needs an HTTPS listener"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_takes_over_the_sockets_without_refusing_a_connection() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let r = Replica::start("r1");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("upgrade.sock");
    let extra = format!(
        "[server]\nupgrade_sock = \"{}\"\nshutdown_grace = \"10s\"\n",
        sock.display()
    );
    let mut old = Gateway::start(&simple_config(&[&r], "", &extra));

    // Load with a new connection per request, so every request goes through accept().
    let c = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (stop, ok, failed, cut) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (c, url, stop, ok, failed, cut) = (
                c.clone(),
                old.url("/api/whoami"),
                stop.clone(),
                ok.clone(),
                failed.clone(),
                cut.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match c.get(&url).send().await {
                        Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) if !e.is_connect() => {
                            // Accepted, then closed before an answer: see below.
                            eprintln!("cut: {e:?}");
                            cut.fetch_add(1, Ordering::Relaxed)
                        }
                        other => {
                            eprintln!("failed: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();

    // The new process waits on the upgrade socket for the listening sockets...
    let new_log = dir.path().join("new.log");
    let mut new = Command::new(bin("gateway"))
        .args(["run", "--upgrade", "--config"])
        .arg(&old.config)
        .stdout(std::fs::File::create(&new_log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || sock.exists()),
        "the new process never waited for sockets"
    );
    let before = ok.load(Ordering::Relaxed);
    // ...which the old one sends on SIGQUIT, then drains and exits.
    signal(old.pid(), "QUIT");
    assert!(
        wait_until(Duration::from_secs(15), || old
            .child
            .try_wait()
            .unwrap()
            .is_some()),
        "the old gateway did not exit"
    );
    let after_handover = ok.load(Ordering::Relaxed);
    assert!(wait_until(Duration::from_secs(5), || ok
        .load(Ordering::Relaxed)
        > after_handover + 50));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no connection was refused and no other error occurred"
    );
    // Pingora closes a connection whose first request it has not read yet when the old
    // process starts draining (pingora-proxy `handle_new_request`), so a request on a
    // connection the old process accepted at that instant can be cut: at most one per
    // client in flight, and only at the hand-over. Seen rarely, under full-suite load.
    assert!(
        cut.load(Ordering::Relaxed) <= 4,
        "more cut requests than clients in flight at the hand-over"
    );
    assert!(
        after_handover > before,
        "requests were served during the hand-over"
    );
    assert!(
        new.try_wait().unwrap().is_none(),
        "the new gateway serves on"
    );
    let out = std::fs::read_to_string(&new_log).unwrap();
    assert!(out.contains("\"event\":\"listening\""), "{out}");
    let _ = new.kill();
    let _ = new.wait();
}
