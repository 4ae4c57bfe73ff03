//! Response compression as a client sees it: the coding negotiated by the rules
//! (q-values, `*`, `identity`, the server's preference), the body decoding to exactly
//! what the replica sent, `Vary` on every response that could have been compressed,
//! and nothing compressed that must not be. Server-Sent Events stay streamed.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::time::{Duration, Instant};

use e2e::*;

fn config(r: &Replica) -> String {
    TestConfig::plain()
        .with("[compression.web]\nmin_length = \"256\"")
        .with("[route_defaults]\ncompression = \"web\"")
        .pool("api", &[r])
        .route("/api", "api", "")
        .route(
            "/plain",
            "api",
            "strip_prefix = true\ncompression = \"off\"",
        )
        .build()
}

fn decode(coding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::stream::decode_all(data).unwrap(),
        "" => out = data.to_vec(),
        other => panic!("unexpected coding {other}"),
    }
    out
}

struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn coding(&self) -> &str {
        self.headers
            .get("content-encoding")
            .map_or("", |v| v.to_str().unwrap())
    }

    fn varies(&self) -> bool {
        self.headers.get_all("vary").iter().any(|v| {
            v.to_str()
                .unwrap()
                .to_ascii_lowercase()
                .contains("accept-encoding")
        })
    }
}

async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = client().get(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    Got {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.unwrap().to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_coding_is_negotiated_by_the_rules_and_the_body_arrives_whole() {
    let r = Replica::start("r1");
    let gw = Gateway::start(&config(&r));
    let identity = get(&gw, "/api/sample?size=20000", &[]).await;
    assert_eq!(identity.coding(), "", "no Accept-Encoding: as it is");
    assert!(identity.varies(), "but it varies");
    assert_eq!(identity.body.len(), 20000);

    for (accept, want) in [
        ("gzip, deflate, br, zstd", "zstd"),
        ("gzip, deflate, br", "gzip"), // Safari: equal q, the server's order
        ("gzip;q=0.8, br", "br"),      // a higher q beats the order
        ("br", "br"),
        ("gzip", "gzip"),
        ("zstd;q=0.5, gzip;q=0.9, br;q=0.7", "gzip"),
        ("*", "zstd"),
        ("*, zstd;q=0", "gzip"),
        ("gzip;q=0.5, identity", ""),
        ("gzip;q=0", ""),
        ("deflate", ""),
    ] {
        let got = get(
            &gw,
            "/api/sample?size=20000",
            &[("accept-encoding", accept)],
        )
        .await;
        assert_eq!(got.status, 200);
        assert_eq!(got.coding(), want, "Accept-Encoding: {accept}");
        assert!(got.varies(), "{accept}");
        assert_eq!(
            decode(want, &got.body),
            identity.body,
            "{accept}: the same body"
        );
        if !want.is_empty() {
            assert!(
                got.body.len() * 5 < identity.body.len(),
                "{accept}: smaller"
            );
            assert!(got.headers.get("content-length").is_none(), "{accept}");
            assert!(got.headers.get("accept-ranges").is_none(), "{accept}");
        }
    }
    // A route that turns it off neither compresses nor varies.
    let off = get(
        &gw,
        "/plain/api/sample?size=20000",
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(off.coding(), "");
    assert!(!off.varies());
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_compressed_that_must_not_be() {
    let r = Replica::start("r1");
    let gw = Gateway::start(&config(&r));
    let ae = [("accept-encoding", "gzip, br, zstd")];
    let cases: [(&str, bool); 6] = [
        ("/api/sample?size=100", true),                   // under min_length
        ("/api/sample?size=20000&type=image/png", false), // not a listed type
        ("/api/sample?size=20000&encoding=br", false),    // encoded already
        ("/api/sample?size=20000&cache_control=no-transform", false),
        ("/api/sample?size=20000&status=204", false),
        ("/api/sample?size=20000&status=304", true), // no body, but varies
    ];
    for (path, varies) in cases {
        let got = get(&gw, path, &ae).await;
        let expected_coding = if path.contains("encoding=br") {
            "br"
        } else {
            ""
        };
        assert_eq!(
            got.coding(),
            expected_coding,
            "{path}: never (again) compressed"
        );
        assert_eq!(got.varies(), varies, "{path}: Vary");
    }
    // Encoded by the replica: passed through untouched, not encoded twice.
    let pre = get(&gw, "/api/sample?size=3000&encoding=br", &ae).await;
    assert_eq!(pre.body.len(), 3000);

    // A Range request gets the identity body's range (the replica's answer), never a
    // slice of a compressed stream.
    let ranged = get(
        &gw,
        "/api/sample?size=20000",
        &[("accept-encoding", "gzip"), ("range", "bytes=0-99")],
    )
    .await;
    assert_eq!(ranged.coding(), "");
    assert!(ranged.varies());

    // A strong ETag is weakened when the body changes, a weak one kept.
    let strong = get(&gw, "/api/sample?size=20000&etag=%22v1%22", &ae).await;
    assert_eq!(strong.headers["etag"], "W/\"v1\"");
    let plain = get(&gw, "/api/sample?size=20000&etag=%22v1%22", &[]).await;
    assert_eq!(plain.headers["etag"], "\"v1\"", "identity keeps it strong");

    // HEAD says what GET would: the same coding and Vary, and no length.
    let head = client()
        .head(gw.url("/api/sample?size=20000"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(head.headers()["content-encoding"], "gzip");
    assert!(head.headers().get("content-length").is_none());
    assert!(head.headers()["vary"]
        .to_str()
        .unwrap()
        .contains("ccept-encoding"));
}

/// Server-Sent Events through the compressor: each event arrives when it is sent (the
/// compressor flushes per chunk), not when the stream ends.
#[tokio::test(flavor = "multi_thread")]
async fn server_sent_events_stay_streamed_when_compressed() {
    let r = Replica::start("r1");
    let gw = Gateway::start(&config(&r));
    let started = Instant::now();
    let mut resp = client()
        .get(gw.url("/api/events?count=4&interval_ms=400"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let mut wire = Vec::new();
    let mut seen_at = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        wire.extend_from_slice(&chunk);
        let mut text = Vec::new();
        let mut d = flate2::read::GzDecoder::new(&wire[..]);
        let mut buf = [0u8; 4096];
        while let Ok(n) = d.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
        }
        let events = String::from_utf8_lossy(&text)
            .matches("data: event")
            .count();
        while seen_at.len() < events {
            seen_at.push(started.elapsed());
        }
    }
    assert_eq!(seen_at.len(), 4, "every event decoded");
    // Event i is sent at i * 400 ms: it must be readable then, not at the end (1.2 s).
    assert!(seen_at[0] < Duration::from_millis(350), "{seen_at:?}");
    assert!(seen_at[1] < Duration::from_millis(750), "{seen_at:?}");
}

/// A large body sent slowly by the replica is compressed as it comes: the first bytes
/// reach the client long before the replica has sent the last.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_body_is_never_held_whole() {
    let r = Replica::start("r1");
    let gw = Gateway::start(&config(&r));
    let started = Instant::now();
    let mut resp = client()
        .get(gw.url("/api/sample?size=4000000&chunks=8&chunk_ms=150"))
        .header("accept-encoding", "zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "zstd");
    let first = resp.chunk().await.unwrap().unwrap();
    let first_at = started.elapsed();
    let mut wire = first.to_vec();
    while let Some(c) = resp.chunk().await.unwrap() {
        wire.extend_from_slice(&c);
    }
    let total = started.elapsed();
    assert!(
        first_at + Duration::from_millis(700) < total,
        "first bytes at {first_at:?}, last at {total:?}"
    );
    assert_eq!(decode("zstd", &wire).len(), 4_000_000);
}

/// What real clients do with it: curl `--compressed` over HTTP/2 and HTTP/1.1 gets the
/// replica's exact bytes, and a body saved as sent decodes with Debian's `zstd`, `brotli`
/// and `gzip` tools to the same bytes; the metrics count what went in and out.
#[tokio::test(flavor = "multi_thread")]
async fn real_clients_decode_the_replicas_own_bytes() {
    let state = tempfile::tempdir().unwrap();
    let r = Replica::start("r1");
    let cfg = TestConfig::tls_only(state.path())
        .internal_site(&["localhost"], "")
        .with("[route_defaults]\ncompression = \"default\"")
        .pool("api", &[&r])
        .route("/api", "api", "")
        .build();
    let gw = Gateway::start(&cfg);
    let ca = state.path().join("internal/ca.pem");
    let dir = tempfile::tempdir().unwrap();
    let path = "/api/sample?size=60000";
    let own = reqwest::get(format!("http://{}{path}", r.addr))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let url = format!("https://localhost:{}{path}", gw.addr.port());
    let curl = |args: &[&str], out: &std::path::Path| {
        let o = std::process::Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&ca)
            .args(args)
            .arg("-o")
            .arg(out)
            .args(["-w", "%{http_version} %{size_download}"])
            .arg(&url)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    for version in ["--http2", "--http1.1"] {
        let out = dir.path().join("compressed");
        let w = curl(&[version, "--compressed"], &out);
        let (proto, wire) = w.split_once(' ').unwrap();
        assert_eq!(proto, &version[6..], "{version}");
        let wire: usize = wire.parse().unwrap();
        assert!(wire * 10 < own.len(), "{version}: {wire} bytes on the wire");
        assert_eq!(std::fs::read(&out).unwrap(), own, "{version}: same bytes");
    }
    for (coding, tool) in [("zstd", "zstd"), ("br", "brotli"), ("gzip", "gzip")] {
        let saved = dir.path().join(format!("body.{coding}"));
        let header = format!("accept-encoding: {coding}");
        curl(&["--http2", "-H", &header], &saved);
        let o = std::process::Command::new(tool)
            .arg("-dc")
            .arg(&saved)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(o.stdout, own, "{tool} decodes the replica's bytes");
    }
    let scrape = scrape(&gw).await;
    let labels = [("route", "/api"), ("encoding", "zstd")];
    let inn = sample(&scrape, "gateway_compression_in_bytes_total", &labels);
    let out = sample(&scrape, "gateway_compression_out_bytes_total", &labels);
    assert_eq!(inn, 3.0 * own.len() as f64, "two --compressed and one zstd");
    assert!(out > 0.0 && out * 10.0 < inn, "in {inn}, out {out}");
}
