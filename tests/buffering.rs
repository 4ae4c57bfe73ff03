//! Request buffering: a body up to `request_buffer` is read before the request is
//! forwarded. What a user sees: a slow upload reaches the app at once and whole, a
//! malformed body never reaches it, `Expect: 100-continue` is answered by the gateway,
//! and bodies of every framing (declared, chunked, larger than the buffer, HTTP/2)
//! arrive byte for byte.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::pki::TestCa;
use e2e::*;

fn config(r: &Replica, extra: &str) -> String {
    format!(
        r#"
[[listeners]]
address = "{{listen}}"
{extra}

[pools.api]
replicas = ["{r}"]

[[routes]]
path = "/api"
pool = "api"

[[routes]]
path = "/stream"
strip_prefix = true
pool = "api"
request_buffer = "0"
"#,
        r = r.addr
    )
}

/// upstream-api's echo digest (FNV-1a, 64 bit).
fn fnv1a(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{h:016x}")
}

/// A body that is not one byte repeated, so a lost, doubled or moved piece shows.
fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// `body` in chunked framing, chunk sizes cycling through `sizes`.
fn chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    for &n in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(n.min(rest.len()));
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
        rest = tail;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn json_body(response: &str) -> serde_json::Value {
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
}

/// The replica's log line for a request id: how long the app spent on it, from its
/// head arriving to its answer.
fn replica_duration_ms(r: &Replica, id: &str) -> f64 {
    let mut line = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            line = r
                .log_text()
                .lines()
                .find(|l| l.contains(id) && l.contains("\"duration_ms\""))
                .map(str::to_owned);
            line.is_some()
        }),
        "the replica logged {id}:\n{}",
        r.log_text()
    );
    let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
    v["fields"]["duration_ms"]
        .as_f64()
        .or_else(|| v["duration_ms"].as_f64())
        .unwrap_or_else(|| panic!("no duration in {v}"))
}

/// Sends the head, then the body in ten pieces over about 1.5 s; returns the response.
fn trickle_upload(addr: std::net::SocketAddr, path: &str, id: &str, body: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nX-Request-ID: {id}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    for piece in body.chunks(body.len().div_ceil(10)) {
        std::thread::sleep(Duration::from_millis(150));
        s.write_all(piece).unwrap();
    }
    read_response(&mut s)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_upload_reaches_the_app_at_once_and_whole() {
    let r = Replica::start("r1");
    let gw = Gateway::start(&config(&r, ""));
    let data = body(200_000);

    let out = trickle_upload(gw.addr, "/api/echo", "buffered-upload-1", &data);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let v = json_body(&out);
    assert_eq!(v["bytes"], 200_000, "{v}");
    assert_eq!(v["fnv1a"], fnv1a(&data), "{v}");
    let buffered = replica_duration_ms(&r, "buffered-upload-1");
    assert!(
        buffered < 500.0,
        "the app got the body in one go, not over the client's 1.5 s: {buffered} ms"
    );

    // The same upload on a route with buffering off: the app waits for the client.
    let out = trickle_upload(gw.addr, "/stream/api/echo", "streamed-upload-1", &data);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(json_body(&out)["fnv1a"], fnv1a(&data));
    let streamed = replica_duration_ms(&r, "streamed-upload-1");
    assert!(
        streamed > 1000.0,
        "streamed, the app's request lasts as long as the upload: {streamed} ms"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_body_framing_arrives_byte_for_byte() {
    let r = Replica::start("r1");
    let gw = Gateway::start(&config(&r, ""));
    let send = |head: &str, body: &[u8]| {
        let mut s = TcpStream::connect(gw.addr).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        read_response(&mut s)
    };
    let cases: [(&str, usize, &[usize]); 5] = [
        // Held whole through the retry buffer.
        ("small chunked", 10_000, &[1_000, 7, 333]),
        // Passes the 64 KiB retry buffer: the held head goes first, the rest streams.
        ("large chunked", 300_000, &[40_000, 1, 17_000, 65_536]),
        ("chunked ending at 64 KiB", 65_536, &[16_384]),
        ("empty chunked", 0, &[1]),
        ("one big chunk", 200_000, &[200_000]),
    ];
    for (name, len, sizes) in cases {
        let data = body(len);
        let out = send(
            "POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            &chunked(&data, sizes),
        );
        assert!(out.starts_with("HTTP/1.1 200"), "{name}: {out}");
        let v = json_body(&out);
        assert_eq!(v["bytes"], len, "{name}: {v}");
        assert_eq!(v["fnv1a"], fnv1a(&data), "{name}: {v}");
    }
    // Declared lengths: within the last 64 KiB, over it (the retry buffer takes only
    // the tail), and just under the 1 MiB limit.
    for len in [1, 65_536, 65_537, 900_000, 1_048_576] {
        let data = body(len);
        let out = send(
            &format!("POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"),
            &data,
        );
        assert!(out.starts_with("HTTP/1.1 200"), "{len}: {out}");
        let v = json_body(&out);
        assert_eq!(v["fnv1a"], fnv1a(&data), "{len}: {v}");
    }
    // Over the limit: streamed, and still whole.
    let data = body(1_500_000);
    let out = client()
        .post(gw.url("/api/echo"))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
    let v: serde_json::Value = out.json().await.unwrap();
    assert_eq!(v["fnv1a"], fnv1a(&data), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_body_is_refused_before_the_app_sees_its_request() {
    let r = Replica::start("r1");
    let gw = Gateway::start(&config(&r, ""));
    let good = chunked(&body(20_000), &[4_000]);
    let good = &good[..good.len() - 5]; // without the last chunk
    let bad_bodies: [(&str, Vec<u8>); 3] = [
        (
            "a chunk size that is not hex",
            [good, b"zz\r\nabc\r\n0\r\n\r\n"].concat(),
        ),
        (
            "an oversized chunk size",
            [good, b"FFFFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n"].concat(),
        ),
        (
            "chunk data longer than its size",
            [good, b"2\r\nabcdef\r\n0\r\n\r\n"].concat(),
        ),
    ];
    for (name, bad) in &bad_bodies {
        let id = format!("malformed-{}", name.len());
        let mut s = TcpStream::connect(gw.addr).unwrap();
        let head = format!(
            "POST /api/echo HTTP/1.1\r\nHost: x\r\nX-Request-ID: {id}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(bad).unwrap();
        let out = read_response(&mut s);
        let (got, _) = assert_raw_error(&out, 400);
        assert_eq!(got, id, "{name}");
        assert_eq!(gw.access_line(&id)["status"], 400, "{name}");
    }
    // A request sent after them is served, and the replica logged only that one: none
    // of the refused requests' heads reached it.
    let ok = client()
        .post(gw.url("/api/echo"))
        .body("after")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let log = r.log_text();
    assert_eq!(
        log.matches("\"path\":\"/api/echo\"").count(),
        1,
        "only the good request reached the app:\n{log}"
    );
    assert!(!log.contains("malformed-"), "{log}");

    // With buffering off the head goes up first, and the app sees a broken request:
    // the control that shows the check above can fail.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"POST /stream/api/echo HTTP/1.1\r\nHost: x\r\nX-Request-ID: streamed-malformed\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").unwrap();
    s.write_all(&bad_bodies[0].1).unwrap();
    let out = read_response(&mut s);
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(
        wait_until(Duration::from_secs(5), || r
            .log_text()
            .contains("streamed-malformed")),
        "streamed, the head reached the app:\n{}",
        r.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_100_continue_is_answered_by_the_gateway() {
    let r = Replica::start("r1");
    let gw = Gateway::start(&config(&r, ""));
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    let go_on = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        go_on.starts_with("HTTP/1.1 100 Continue\r\n"),
        "the client is told to send its body: {go_on:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    s.write_all(b"hello").unwrap();
    let out = read_response(&mut s);
    assert!(out.contains("HTTP/1.1 200"), "{out}");
    assert_eq!(json_body(&out)["bytes"], 5, "{out}");

    // A body over the limit is not buffered: the go-ahead is the app's to give.
    let out = client()
        .post(gw.url("/api/echo"))
        .header("expect", "100-continue")
        .body(body(1_200_000))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_upload_is_buffered_and_arrives_whole_over_h2_and_http1() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "buffering");
    let (cert, key) = ca.leaf(dir.path(), "a", &["a.test"]);
    let r = Replica::start("r1");
    let tls = format!(
        r#"[[listeners]]
address = "{{tls}}"
tls = true

[[sites]]
names = ["a.test"]
certificate = "files"
cert_file = "{}"
key_file = "{}"
"#,
        cert.display(),
        key.display()
    );
    let gw = Gateway::start(&config(&r, &tls));
    let data = body(300_000);
    let file = dir.path().join("upload.bin");
    std::fs::write(&file, &data).unwrap();
    // Over HTTP/2 and over HTTP/1.1 on TLS: TLS listeners read with no buffer of their
    // own under rustls, so a large body arrives in many small reads.
    for (flag, version, id) in [
        ("--http2", "2", "h2-upload-1"),
        ("--http1.1", "1.1", "tls-h1-upload-1"),
    ] {
        let out = Command::new("curl")
            .args(["-s", flag, "--cacert"])
            .arg(&ca.cert_path)
            .args(["--resolve", &format!("a.test:{}:127.0.0.1", gw.tls.port())])
            .args(["-H", &format!("X-Request-ID: {id}"), "--data-binary"])
            .arg(format!("@{}", file.display()))
            .args(["-w", "\n%{http_version} %{http_code}"])
            .arg(format!("https://a.test:{}/api/echo", gw.tls.port()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (json, status) = text.rsplit_once('\n').unwrap();
        assert_eq!(status, format!("{version} 200"), "{text}");
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["fnv1a"], fnv1a(&data), "{v}");
        replica_duration_ms(&r, id);
    }
}
