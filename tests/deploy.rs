//! The deployment files keep their promises: compose.yml parses with docker-compose,
//! only the gateway publishes ports (80 and 443, never the admin listener), every
//! service is health-checked, restarted and limited, the mounted config passes
//! `gateway check`, and the images are multi-stage, pinned and non-root. (No Docker
//! engine runs here, so the images are checked as files, not built.)
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use e2e::bin;
use serde_yaml::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn compose() -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(root().join("compose.yml")).unwrap()).unwrap()
}

#[test]
fn docker_compose_parses_the_file() {
    let out = Command::new("docker-compose")
        .args(["-f", "compose.yml", "config", "-q"])
        .current_dir(root())
        .output()
        .expect("docker-compose (Debian package docker-compose; tests/deps.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn only_the_gateway_publishes_ports_and_never_the_admin_listener() {
    let c = compose();
    let services = c["services"].as_mapping().unwrap();
    for (name, s) in services {
        let name = name.as_str().unwrap();
        if name == "gateway" {
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
    let text = std::fs::read_to_string(root().join("compose.yml")).unwrap();
    assert!(
        !text.contains("9901:"),
        "the admin listener must not be published"
    );
}

#[test]
fn every_service_is_health_checked_restarted_limited_and_rotated() {
    let c = compose();
    for (name, s) in c["services"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        let test = s["healthcheck"]["test"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name}: no healthcheck"));
        assert!(
            !test.iter().any(|t| t.as_str() == Some("curl")),
            "{name}: health checks use the binary, not curl"
        );
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
            "{name}: read-only root filesystem"
        );
    }
    assert_eq!(
        c["services"]["gateway"]["depends_on"]["api"]["condition"].as_str(),
        Some("service_healthy")
    );
    assert_eq!(c["services"]["api"]["deploy"]["replicas"].as_u64(), Some(3));
    assert!(
        c["volumes"].get("certs").is_some(),
        "certificates live on a named volume"
    );
}

#[test]
fn the_mounted_config_passes_check_for_localhost_and_for_a_real_domain() {
    let c = compose();
    let volumes: Vec<&str> = c["services"]["gateway"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mount = volumes
        .iter()
        .find(|v| v.ends_with(":/etc/gateway/gateway.toml:ro"))
        .expect("config mounted read-only");
    let file = root().join(mount.split(':').next().unwrap());
    for env in [
        vec![],
        vec![
            ("DOMAIN", "example.com"),
            ("CERTIFICATE", "acme"),
            ("ACME_EMAIL", "ops@example.com"),
        ],
    ] {
        let out = Command::new(bin("gateway"))
            .arg("check")
            .arg("--config")
            .arg(&file)
            .envs(env.clone())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{env:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // .env.example documents every variable the stack reads.
    let example = std::fs::read_to_string(root().join(".env.example")).unwrap();
    for var in ["DOMAIN", "CERTIFICATE", "ACME_EMAIL", "ACME_DIRECTORY"] {
        assert!(
            example.contains(&format!("{var}=")),
            "{var} missing from .env.example"
        );
    }
    assert!(
        example.contains("acme-staging-v02"),
        "staging is the safe default"
    );
}

#[test]
fn images_are_multi_stage_pinned_and_non_root() {
    for (file, bin_name) in [
        ("Dockerfile.gateway", "gateway"),
        ("Dockerfile.api", "upstream-api"),
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
        assert!(froms.len() >= 2, "{file}: multi-stage");
        for f in &froms {
            let image = f.split_whitespace().nth(1).unwrap();
            assert!(
                !image.ends_with(":latest") && image.contains(':'),
                "{file}: pin {image}"
            );
            assert!(
                image
                    .split(':')
                    .nth(1)
                    .unwrap()
                    .chars()
                    .next()
                    .unwrap()
                    .is_ascii_digit(),
                "{file}: versioned tag {image}"
            );
        }
        let final_stage = text.rsplit("\nFROM ").next().unwrap();
        assert!(
            final_stage
                .lines()
                .any(|l| l.starts_with("USER ") && !l.contains("root") && l.trim() != "USER 0"),
            "{file}: non-root"
        );
        assert!(
            final_stage.contains("HEALTHCHECK")
                && final_stage.contains(&format!("/usr/local/bin/{bin_name}")),
            "{file}: health check by the binary"
        );
        assert!(
            text.contains("cargo build --release")
                && text.find("COPY . .") > text.find("Cargo.lock"),
            "{file}: dependency layer first"
        );
    }
    let gw = std::fs::read_to_string(root().join("Dockerfile.gateway")).unwrap();
    assert!(
        gw.contains("setcap cap_net_bind_service=+ep"),
        "binds 80/443 without root"
    );
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        "target/ stays out of the build context"
    );
}

/// Runs each Dockerfile's dependency-layer step (manifests + stubs) in a scratch
/// directory, with `cargo metadata` in place of the build: the workspace must load, or
/// the image build would fail at its first cargo call.
#[test]
fn the_dependency_layer_stubs_load_as_a_workspace() {
    for file in ["Dockerfile.gateway", "Dockerfile.api"] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let joined = text.replace("\\\n", " ");
        let step = joined
            .lines()
            .find(|l| l.starts_with("RUN mkdir -p gateway/src"))
            .unwrap();
        let script = step.trim_start_matches("RUN ");
        let script = script
            .replace(
                "cargo build --release -p gateway",
                "cargo metadata --offline --no-deps --format-version 1 > /dev/null",
            )
            .replace(
                "cargo build --release -p upstream-api",
                "cargo metadata --offline --no-deps --format-version 1 > /dev/null",
            );
        let dir = tempfile::tempdir().unwrap();
        for m in [
            "Cargo.toml",
            "Cargo.lock",
            "gateway/Cargo.toml",
            "upstream-api/Cargo.toml",
            "tests/Cargo.toml",
        ] {
            let to = dir.path().join(m);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(root().join(m), &to).unwrap();
        }
        let out = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
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
