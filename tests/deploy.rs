//! What the Compose run (`compose.rs`) cannot see, because it runs compose.yml with
//! this machine's ports and config directory: the published ports users get, the
//! restart, resource and log-rotation settings of every service, that `.env.example`
//! documents every variable the stack reads, and that the shipped config passes
//! `gateway check` for a real domain.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use e2e::bin;
use serde_yaml::Value;

fn root() -> PathBuf {
    e2e::compose::root()
}

fn compose() -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(root().join("compose.yml")).unwrap()).unwrap()
}

#[test]
fn only_the_edge_publishes_ports_80_and_443_and_never_the_admin_listener() {
    let c = compose();
    for (name, s) in c["services"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        if name == "edge" {
            let ports: Vec<&str> = s["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            assert_eq!(ports, ["80:80", "443:443"]);
        } else {
            assert!(s.get("ports").is_none(), "{name} publishes ports");
        }
    }
    assert_eq!(
        c["services"]["gateway"]["network_mode"].as_str(),
        Some("service:edge"),
        "the gateway runs in the namespace that holds the ports"
    );
    let text = std::fs::read_to_string(root().join("compose.yml")).unwrap();
    assert!(
        !text.contains("9901:"),
        "the admin listener must not be published"
    );
}

#[test]
fn every_service_is_restarted_limited_rotated_and_read_only() {
    let c = compose();
    for (name, s) in c["services"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        assert_eq!(s["restart"].as_str(), Some("unless-stopped"), "{name}");
        assert!(
            s["deploy"]["resources"]["limits"]["memory"].is_string(),
            "{name}: memory limit"
        );
        assert!(
            s["deploy"]["resources"]["limits"]["cpus"].is_string(),
            "{name}: cpu limit"
        );
        assert!(
            s["logging"]["options"]["max-size"].is_string(),
            "{name}: log rotation"
        );
        assert_eq!(
            s["read_only"].as_bool(),
            Some(true),
            "{name}: read-only root"
        );
        assert!(
            s["cap_drop"]
                .as_sequence()
                .is_some_and(|c| c.iter().any(|v| v.as_str() == Some("ALL"))),
            "{name}: no capabilities"
        );
        if name != "edge" {
            let test = s["healthcheck"]["test"]
                .as_sequence()
                .unwrap_or_else(|| panic!("{name}: no healthcheck"));
            assert!(
                !test.iter().any(|t| t.as_str() == Some("curl")),
                "{name}: health checks use the binary, not curl"
            );
        }
    }
    assert_eq!(c["services"]["api"]["deploy"]["replicas"].as_u64(), Some(3));
}

#[test]
fn the_shipped_config_passes_check_for_a_real_domain_and_env_example_documents_it() {
    let file = root().join("config/gateway.compose.toml");
    let out = Command::new(bin("gateway"))
        .arg("check")
        .arg("--config")
        .arg(&file)
        .envs([
            ("DOMAIN", "example.com"),
            ("CERTIFICATE", "acme"),
            ("ACME_EMAIL", "ops@example.com"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every variable compose.yml hands the gateway is documented in .env.example.
    let example = std::fs::read_to_string(root().join(".env.example")).unwrap();
    let env = compose()["services"]["gateway"]["environment"].clone();
    for var in env.as_mapping().unwrap().keys() {
        let var = var.as_str().unwrap();
        if var == "RUST_LOG" || example.contains(&format!("{var}=")) {
            continue;
        }
        panic!("{var} missing from .env.example");
    }
    assert!(
        example.contains("acme-staging-v02"),
        "staging is the safe default"
    );
}

/// The migration guides show the example configs verbatim (and CI checks those files),
/// so what a reader copies is what passes `gateway check`.
#[test]
fn migration_guides_embed_the_checked_example_configs() {
    for (doc, example) in [
        (
            "docs/migrate-from-caddy.md",
            "config/examples/from-caddy.toml",
        ),
        (
            "docs/migrate-from-nginx.md",
            "config/examples/from-nginx.toml",
        ),
    ] {
        let doc_text = std::fs::read_to_string(root().join(doc)).unwrap();
        let example_text = std::fs::read_to_string(root().join(example)).unwrap();
        assert!(
            doc_text.contains(&example_text),
            "{doc} must embed {example} unchanged"
        );
    }
}
