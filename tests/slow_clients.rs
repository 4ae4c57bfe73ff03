//! Slow and greedy clients: a request head trickled or never sent is cut off at
//! `header_timeout` (from the connection's start, or a keep-alive request's first
//! byte), an idle keep-alive connection is closed at `keepalive_timeout`, a stalled
//! body gets 408 after `body_timeout`, the per-client connection cap
//! answers 429, and slowhttptest's slowloris and slow-body attacks (bounded runs) do
//! not stop another client being served.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::*;

/// Reads until the peer closes the connection (or `limit`); returns what came and when.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&out).into(), Some(start.elapsed())),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (String::from_utf8_lossy(&out).into(), Some(start.elapsed())),
        }
    }
    (String::from_utf8_lossy(&out).into(), None)
}

/// slowhttptest's report without its terminal colours.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A client doing one request every 50 ms until `stop`; counts (ok, failed).
fn background_client(
    gw: &Gateway,
    stop: Arc<AtomicBool>,
) -> (
    tokio::task::JoinHandle<()>,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
) {
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let url = gw.url("/api/whoami");
    let (o, f) = (ok.clone(), failed.clone());
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let task = tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            match c.get(&url).send().await {
                Ok(r) if r.status() == 200 => o.fetch_add(1, Ordering::Relaxed),
                _ => f.fetch_add(1, Ordering::Relaxed),
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (task, ok, failed)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trickled_or_missing_head_is_cut_off_at_the_header_timeout() {
    let r = Replica::start("r1");
    let gw = Gateway::start(&simple_config(
        &[&r],
        "",
        "[limits]\nheader_timeout = \"2s\"\n",
    ));
    let addr = gw.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let (load, ok, failed) = background_client(&gw, stop.clone());

    // Slowloris: a header byte every 200 ms, forever; pingora alone would wait 60 s
    // between reads and never see a gap that long.
    let trickle = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let start = Instant::now();
        s.write_all(b"GET /api/whoami HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .unwrap();
        while start.elapsed() < Duration::from_secs(10) {
            if s.write_all(b"a").is_err() {
                break;
            }
            let mut probe = [0u8; 1];
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            match s.read(&mut probe) {
                Ok(0) => break,
                Ok(_) => panic!("the gateway answered a request whose head never ended"),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        start.elapsed()
    });
    // A connection that never sends a byte.
    let mut silent = TcpStream::connect(addr).unwrap();
    let (got, closed_after) = read_until_closed(&mut silent, Duration::from_secs(10));
    assert_eq!(got, "", "nothing is sent to a client that sent nothing");
    let closed_after = closed_after.expect("a silent connection is closed");
    assert!(
        closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(5),
        "silent connection closed after {closed_after:?}, expected about 2 s"
    );
    let trickled_for = trickle.join().unwrap();
    assert!(
        trickled_for >= Duration::from_millis(1500) && trickled_for < Duration::from_secs(5),
        "trickling client cut after {trickled_for:?}, expected about 2 s"
    );

    // Keep-alive: an idle gap longer than the header timeout between two requests is
    // fine; the next request's clock starts with its first byte.
    let mut s = TcpStream::connect(addr).unwrap();
    let req = b"GET /api/whoami HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(req).unwrap();
    assert!(read_response(&mut s).starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_secs(3));
    s.write_all(req).unwrap();
    let second = read_response(&mut s);
    assert!(second.starts_with("HTTP/1.1 200"), "{second:?}");

    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(ok.load(Ordering::Relaxed) > 20);
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    let s = scrape(&gw).await;
    assert!(sample(&s, "gateway_client_header_timeouts_total", &[]) >= 2.0);
}

/// `keepalive_timeout`: an idle keep-alive connection is closed after it, one that
/// comes back sooner is served; `"0s"` answers with `Connection: close` and closes.
#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_connections_are_closed_after_the_keepalive_timeout() {
    let r = Replica::start("r1");
    let gw = Gateway::start(&simple_config(
        &[&r],
        "",
        "[limits]\nkeepalive_timeout = \"2s\"\n",
    ));
    let req = b"GET /api/whoami HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(req).unwrap();
    let first = read_response(&mut s);
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        !first.to_ascii_lowercase().contains("connection: close"),
        "{first}"
    );
    std::thread::sleep(Duration::from_millis(800));
    s.write_all(req).unwrap();
    assert!(
        read_response(&mut s).starts_with("HTTP/1.1 200"),
        "back within the timeout"
    );
    let (got, closed_after) = read_until_closed(&mut s, Duration::from_secs(10));
    assert_eq!(got, "");
    let closed_after = closed_after.expect("the idle connection is closed");
    assert!(
        closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(5),
        "idle keep-alive connection closed after {closed_after:?}, expected about 2 s"
    );

    let off = Gateway::start(&simple_config(
        &[&r],
        "",
        "[limits]\nkeepalive_timeout = \"0s\"\n",
    ));
    let mut s = TcpStream::connect(off.addr).unwrap();
    s.write_all(req).unwrap();
    let (got, closed_after) = read_until_closed(&mut s, Duration::from_secs(5));
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        got.to_ascii_lowercase().contains("connection: close"),
        "{got}"
    );
    assert!(closed_after.is_some(), "closed after the response");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_body_gets_408_after_the_body_timeout() {
    let r = Replica::start("r1");
    let gw = Gateway::start(&simple_config(
        &[&r],
        "",
        "[limits]\nbody_timeout = \"1s\"\n",
    ));
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(
        b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nX-Request-ID: stalled-1\r\n\r\n0123456789",
    )
    .unwrap();
    let start = Instant::now();
    let resp = read_response(&mut s);
    let waited = start.elapsed();
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    let body = resp.split_once("\r\n\r\n").unwrap().1;
    let v = assert_error_contract(408, 408, Some("stalled-1"), body);
    assert_eq!(v["error"]["code"], "request_timeout");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_per_client_cap_get_429_and_are_closed() {
    let r = Replica::start("r1");
    let gw = Gateway::start(&simple_config(
        &[&r],
        "",
        "[limits]\nmax_connections_per_client = 3\n",
    ));
    // Three keep-alive connections from 127.0.0.1, each used once and held open.
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(gw.addr).unwrap();
            s.write_all(b"GET /api/whoami HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            assert!(read_response(&mut s).starts_with("HTTP/1.1 200"));
            s
        })
        .collect();
    // A fourth from the same address: 429 in the JSON contract, then closed.
    let mut fourth = TcpStream::connect(gw.addr).unwrap();
    fourth
        .write_all(b"GET /api/whoami HTTP/1.1\r\nHost: x\r\nX-Request-ID: fourth\r\n\r\n")
        .unwrap();
    let (resp, closed) = read_until_closed(&mut fourth, Duration::from_secs(5));
    assert!(resp.starts_with("HTTP/1.1 429"), "{resp}");
    assert!(closed.is_some(), "the connection over the cap is closed");
    let v = assert_error_contract(
        429,
        429,
        Some("fourth"),
        resp.split_once("\r\n\r\n").unwrap().1,
    );
    assert_eq!(v["error"]["code"], "too_many_connections");
    assert_eq!(gw.access_line("fourth")["status"], 429);

    // Another address has its own count.
    let other = raw_request_from(
        "127.0.0.2",
        gw.addr,
        b"GET /api/whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");

    // A held connection closes: its place is given back.
    drop(held.pop());
    let mut again = None;
    let freed = wait_until(Duration::from_secs(5), || {
        let resp = raw_request(
            gw.addr,
            b"GET /api/whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        );
        let ok = resp.starts_with("HTTP/1.1 200");
        again = Some(resp);
        ok
    });
    assert!(freed, "{again:?}");
    // The ones still held keep working.
    for s in &mut held {
        s.write_all(b"GET /api/whoami HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert!(read_response(s).starts_with("HTTP/1.1 200"));
    }
    let m = scrape(&gw).await;
    assert!(sample(&m, "gateway_client_connections_over_cap_total", &[]) >= 1.0);
}

/// slowhttptest (Debian package) in slowloris mode and in slow-body mode, bounded to a
/// few seconds and a few hundred connections, while another client keeps being served.
#[tokio::test(flavor = "multi_thread")]
async fn slowhttptest_attacks_do_not_stop_other_clients() {
    let r = Replica::start("r1");
    let mut gw = Gateway::start(&simple_config(
        &[&r],
        "",
        "[limits]\nheader_timeout = \"3s\"\nbody_timeout = \"3s\"\n",
    ));
    let url = gw.url("/api/echo");
    for (mode, extra) in [
        ("-H", &["-t", "GET"][..]),
        ("-B", &["-t", "POST", "-s", "8192"][..]),
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let (load, ok, failed) = background_client(&gw, stop.clone());
        let out = std::process::Command::new("slowhttptest")
            .args([
                mode, "-c", "400", "-r", "200", "-i", "1", "-l", "8", "-p", "2", "-x", "10",
            ])
            .args(extra)
            .args(["-u", &url])
            .output()
            .expect("slowhttptest (Debian package; tests/deps.sh installs it)");
        stop.store(true, Ordering::Relaxed);
        load.await.unwrap();
        let report = strip_ansi(&String::from_utf8_lossy(&out.stdout));
        let availability: Vec<&str> = report
            .lines()
            .filter_map(|l| l.strip_prefix("service available:"))
            .map(str::trim)
            .collect();
        assert!(
            !availability.is_empty() && availability.iter().all(|a| *a == "YES"),
            "{mode}: {report}"
        );
        assert!(
            ok.load(Ordering::Relaxed) > 50,
            "{mode}: {}",
            ok.load(Ordering::Relaxed)
        );
        assert_eq!(failed.load(Ordering::Relaxed), 0, "{mode}: {report}");
        if mode == "-H" {
            // Every slowloris connection was closed by the gateway before the run's end.
            assert!(
                report.contains("Exit status: No open connections left"),
                "{report}"
            );
        }
    }
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "the gateway is still up"
    );
}
