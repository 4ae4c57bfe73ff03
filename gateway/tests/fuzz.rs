//! Property tests (proptest: stable Rust, so no cargo-fuzz) over the code that reads
//! what an operator or a client sends: the config parser and validator, request ids,
//! client-address and `X-Forwarded-For` handling, Host checks, and routing. Each
//! property runs a bounded number of cases in CI; a failure prints the shrunk input.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::Path;

use gateway::config::{self, DEFAULT_CONFIG};
use gateway::{headers, request_id, routing};
use proptest::prelude::*;

fn no_env(_: &str) -> Option<String> {
    None
}

/// Lines an operator might write (valid, misspelt or nonsense), to splice into configs.
fn config_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[[routes]]".to_owned()),
        Just("[pools.api]".to_owned()),
        Just("[limits]".to_owned()),
        Just("[[sites]]".to_owned()),
        Just("[rate_limits.x]".to_owned()),
        "[a-z_]{1,20} = \"[ -~]{0,30}\"",
        "[a-z_]{1,20} = [0-9]{1,12}",
        "(path|pool|host|rate|interval|timeout|address|names|replicas) = \"[ -~]{0,40}\"",
        "(header_timeout|body_timeout|max_body_size|burst) = (\"[0-9a-z ]{0,8}\"|-?[0-9]{1,20})",
        "[ -~]{0,60}",
        "\\$\\{[A-Z_]{0,8}(:-[a-z]{0,5})?\\}?",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// Any text: an answer, never a panic; every error names the file, and a position
    /// inside the text when it has one.
    #[test]
    fn config_never_panics_on_arbitrary_text(text in "(?s).{0,400}") {
        let path = Path::new("fuzz.toml");
        if let Err(errors) = config::load_str(path, &text, &no_env) {
            prop_assert!(!errors.0.is_empty());
            let lines = text.lines().count().max(1) + 1;
            for e in &errors.0 {
                prop_assert_eq!(&e.file, path);
                prop_assert!(!e.message.is_empty());
                if let Some((line, col)) = e.position {
                    prop_assert!(line >= 1 && line <= lines && col >= 1, "{e} in {text:?}");
                }
            }
        }
    }

    /// The shipped config with lines deleted, duplicated or inserted: still an answer
    /// with located errors, never a panic.
    #[test]
    fn config_mutations_are_answered(
        edits in proptest::collection::vec((0usize..200, 0u8..3, config_line()), 1..6)
    ) {
        let mut lines: Vec<String> = DEFAULT_CONFIG.lines().map(str::to_owned).collect();
        for (at, kind, line) in edits {
            let i = at % (lines.len() + 1);
            match kind {
                0 if i < lines.len() => { lines.remove(i); }
                1 if i < lines.len() => { let l = lines[i].clone(); lines.insert(i, l); }
                _ => lines.insert(i, line),
            }
        }
        let text = lines.join("\n");
        match config::load_str(Path::new("g.toml"), &text, &no_env) {
            Ok(c) => { let _ = c.summary(); }
            Err(errors) => {
                for e in &errors.0 {
                    prop_assert!(!e.message.is_empty());
                    prop_assert!(!e.to_string().is_empty());
                }
            }
        }
    }

    /// A request id is the client's exactly when it is sane; whatever is chosen is safe
    /// to log, echo and forward.
    #[test]
    fn request_ids_are_always_sane(incoming in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200))) {
        // What pingora can hand over: bytes a header value may hold.
        let header = incoming.as_deref().and_then(|v| http::HeaderValue::from_bytes(v).ok());
        let id = request_id::choose(header.as_ref());
        prop_assert!(request_id::is_sane(id.as_str().as_bytes()));
        match header {
            Some(v) if request_id::is_sane(v.as_bytes()) => prop_assert_eq!(id.as_str().as_bytes(), v.as_bytes()),
            _ => prop_assert_eq!(id.as_str().len(), 36, "a fresh UUID"),
        }
    }

    /// The client address is the peer, or an address the trusted chain wrote into
    /// `X-Forwarded-For`; the forwarded list always ends with the peer.
    #[test]
    fn client_address_comes_from_the_peer_or_its_header(
        peer in any::<IpAddr>(),
        xff in proptest::option::of(prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..80),
            "((([0-9]{1,3}\\.){3}[0-9]{1,3}|\\[?[0-9a-f:]{2,20}\\]?(:[0-9]{1,5})?|[ -~]{0,8}) ?, ?){0,5}".prop_map(String::into_bytes),
        ]),
        trust_all in any::<bool>(),
    ) {
        let trusted: Vec<ipnet::IpNet> = if trust_all {
            vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()]
        } else {
            vec!["10.0.0.0/8".parse().unwrap()]
        };
        let client = headers::client_ip(peer, xff.as_deref(), &trusted);
        let text = xff.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
        let canonical_peer = headers::client_ip(peer, None, &trusted);
        prop_assert!(
            client == canonical_peer || text.contains(&client.to_string()) || text.to_ascii_lowercase().contains(&client.to_string()) || {
                // An IPv4-mapped IPv6 entry is reported as its IPv4 address.
                text.contains("::ffff:")
            },
            "{client} from peer {peer} and {text:?}"
        );
        let forwarded = headers::forwarded_for(peer, xff.as_deref(), &trusted);
        prop_assert!(forwarded.ends_with(canonical_peer.to_string().as_bytes()));
    }

    /// Host checks and routing take any client input without panicking; a stripped
    /// path is never empty and always absolute.
    #[test]
    fn host_and_path_handling_never_panic(
        host in "[ -~]{0,40}",
        path in "/[ -~]{0,60}",
        prefix in "/[a-z/.%]{0,12}",
    ) {
        let mut h = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&host) {
            h.insert(http::header::HOST, v);
        }
        let uri: http::Uri = "/".parse().unwrap();
        for version in [http::Version::HTTP_10, http::Version::HTTP_11] {
            let _ = headers::host_acceptable(&h, &uri, version);
        }
        let _ = headers::request_host(&h, &uri);
        let _ = routing::has_dot_segment(&path);
        if routing::prefix_matches(&prefix, &path) {
            let stripped = routing::strip_prefix(&prefix, &path);
            prop_assert!(stripped.starts_with('/'), "{prefix} {path} -> {stripped}");
        }
    }

    /// The shipped config's router resolves any host and path without panicking.
    #[test]
    fn routing_any_host_and_path(host in "[ -~]{0,40}", path in "[ -~]{0,80}") {
        let c = config::load_str(Path::new("g.toml"), DEFAULT_CONFIG, &no_env).unwrap();
        let router = routing::Router::new(c.routes.clone());
        let _ = router.resolve_index(&host, &path);
    }
}
