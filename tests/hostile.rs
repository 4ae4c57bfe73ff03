//! Hostile requests seen from outside: body size limits, request smuggling vectors
//! and malformed request heads each get a 4xx with a JSON body carrying the request
//! id, and none of them completes at the real upstream-api replica behind.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::*;

/// One replica behind `/api`, and `/small` in front of it with a 1 KiB body limit.
fn config(replica: &Replica) -> String {
    format!(
        r#"
[[listeners]]
address = "{{listen}}"

[pools.api]
replicas = {list}

[[routes]]
path = "/api"
pool = "api"

[[routes]]
path = "/small"
strip_prefix = true
pool = "api"
max_body_size = "1KiB"
"#,
        list = replica_list(&[replica])
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn body_limits_and_smuggling_vectors_never_reach_the_replica() {
    let r = Replica::start("r1");
    let gw = Gateway::start(&config(&r));
    let c = client();
    let small = c
        .post(gw.url("/small/api/echo"))
        .body(vec![b'a'; 500])
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    // Requests the replica completed (a truncated body fails there with 400).
    let echoes = || {
        r.log_text()
            .matches("\"path\":\"/api/echo\",\"status\":200")
            .count()
    };
    assert_eq!(echoes(), 1);

    // Declared too large: 413 before anything goes upstream.
    let big = c
        .post(gw.url("/small/api/echo"))
        .body(vec![b'a'; 2048])
        .send()
        .await
        .unwrap();
    let id = big.headers()["x-request-id"].to_str().unwrap().to_owned();
    let v = assert_error_contract(
        big.status().as_u16(),
        413,
        Some(&id),
        &big.text().await.unwrap(),
    );
    assert_eq!(v["error"]["code"], "payload_too_large");
    // Chunked, crossing the limit mid-stream.
    let chunked = b"POST /small/api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n400\r\n";
    let mut req = chunked.to_vec();
    req.extend(std::iter::repeat_n(b'a', 0x400));
    req.extend_from_slice(b"\r\n400\r\n");
    req.extend(std::iter::repeat_n(b'a', 0x400));
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    let out = raw_request(gw.addr, &req, Duration::from_secs(5));
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    let seen_by_replica = || r.log_text().matches("\"path\":\"/api/echo\"").count();
    // The body is read (buffered) before the request is forwarded: the replica never
    // saw the oversized request, not even its head.
    assert_eq!(seen_by_replica(), 1, "{}", r.log_text());
    let before = seen_by_replica();
    let vectors: [&[u8]; 5] = [
        b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 5\r\n\r\nabcde",
    ];
    for v in vectors {
        let out = raw_request(gw.addr, v, Duration::from_secs(5));
        // Each is refused in the JSON contract (most by pingora's parser, whose bare 400
        // the gateway replaces) and logged once with its request id.
        let (id, _) = assert_raw_error(&out, 400);
        let line = gw.access_line(&id);
        assert_eq!(line["status"], 400, "{line}");
        assert_eq!(line["method"], "POST", "{line}");
        assert_eq!(line["path"], "/api/echo", "{line}");
        assert!(
            out.contains("\r\nConnection: close\r\n"),
            "{}\n=> {out}",
            String::from_utf8_lossy(v)
        );
    }
    assert_eq!(
        seen_by_replica(),
        before,
        "no smuggling vector was forwarded at all"
    );
    let out = raw_request(gw.addr, vectors[0], Duration::from_secs(5));
    assert!(
        out.contains("ambiguous_framing"),
        "CL+TE gets our JSON error: {out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_request_shapes_get_a_4xx_and_never_complete_at_the_replica() {
    let r = Replica::start("r1");
    let mut gw = Gateway::start(&config(&r));
    // Requests the replica completed successfully: nothing refused here may ever
    // complete there (and, bodies being read before forwarding, none may even arrive).
    let seen = || r.log_text().matches("\"status\":2").count();
    let before = seen();
    let long_line = format!(
        "GET /api/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(70_000)
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("HTTP/1.1 without Host", b"GET /api/whoami HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("invalid Host", b"GET /api/whoami HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("Host with a path", b"GET /api/whoami HTTP/1.1\r\nHost: a/b\r\nConnection: close\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("two Hosts", b"GET /api/whoami HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("absolute-form against Host", b"GET http://other.test/api/whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("CONNECT", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n".to_vec(), "HTTP/1.1 405"),
        ("invalid method", b"G@T /api/whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("header name with a space", b"GET /api/whoami HTTP/1.1\r\nHost: x\r\nBad Name: v\r\nConnection: close\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("70 KB request line", long_line.into_bytes(), "HTTP/1.1 4"),
        ("bare LF line endings", b"GET /api/whoami HTTP/1.1\nHost: x\nConnection: close\n\n".to_vec(), "HTTP/1.1 400"),
        ("one bare LF among CRLFs", b"GET /api/whoami HTTP/1.1\r\nHost: x\nConnection: close\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (
            "oversized chunk size",
            b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
    ];
    for (name, bytes, want) in &cases {
        let out = raw_request(gw.addr, bytes, Duration::from_secs(5));
        assert!(out.starts_with(want), "{name}: {out}");
        // Every refusal, ours or pingora's parser's, is in the JSON contract and has
        // exactly one access-log line.
        let status = out[9..12].parse().unwrap();
        let (id, _) = assert_raw_error(&out, status);
        assert_eq!(gw.access_line(&id)["status"], status, "{name}");
        let lines = gw
            .log_text()
            .lines()
            .filter(|l| l.contains("\"target\":\"access\"") && l.contains(&id))
            .count();
        assert_eq!(lines, 1, "{name}: {lines} access lines");
    }
    // Ours carry the JSON contract.
    let out = raw_request(gw.addr, &cases[0].1, Duration::from_secs(5));
    assert!(
        out.contains("\"code\":\"invalid_host\"") && out.contains("\"request_id\""),
        "{out}"
    );
    let bare = cases
        .iter()
        .find(|c| c.0 == "one bare LF among CRLFs")
        .unwrap();
    let out = raw_request(gw.addr, &bare.1, Duration::from_secs(5));
    assert!(
        out.contains("\"code\":\"invalid_line_ending\"") && out.contains("\"request_id\""),
        "{out}"
    );
    assert_eq!(
        seen(),
        before,
        "no refused request completed at the replica:\n{}",
        r.log_text()
    );
    let heads_seen = r.log_text().matches("\"message\":\"request\"").count();
    assert_eq!(
        heads_seen,
        0,
        "no refused request reached the replica:\n{}",
        r.log_text()
    );
    // HTTP/1.0 may omit Host; it is served, and the process is still up.
    let out = raw_request(
        gw.addr,
        b"GET /api/whoami HTTP/1.0\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "the gateway survived"
    );
}
