//! The Compose stack as users run it, on this machine's Docker engine: the repository's
//! compose.yml, copied with the few changes this machine needs (published ports on
//! 127.0.0.1 high ports, the test's own copy of the config directory so a test can
//! change it, and a test-only Pebble service), driven through `docker-compose` under a
//! project name of its own. Dropping the stack removes its containers, networks and
//! volumes, whatever happened; the images stay as the build cache.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_yaml::Value;

use crate::free_port;
use crate::pki::TestCa;

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The Docker engine answers, and its disk has room for the images and a stack.
pub fn preflight() {
    let info = Command::new("docker")
        .args(["info", "-f", "{{.DockerRootDir}}"])
        .output();
    let dir = match info {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => panic!("no Docker engine answers `docker info`: the Compose test needs one"),
    };
    let df = Command::new("df")
        .args(["--output=avail", "-B1G", &dir])
        .output()
        .unwrap();
    let free: u64 = String::from_utf8_lossy(&df.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        free >= 6,
        "only {free} GiB free under {dir}: the images and the stack need about 6 GiB \
         (remove old images: docker image prune)"
    );
}

/// Builds what the stack runs: the base images (made here when missing), the two
/// images from the repository's Dockerfiles, and the test-only Pebble image. Cached:
/// an unchanged tree takes seconds. `tests/run.sh` runs this before the tests, so the
/// long first build does not share the machine with timing-sensitive tests.
pub fn build_images() {
    let status = Command::new("bash")
        .arg(root().join("tests/compose/build.sh"))
        .status()
        .unwrap();
    assert!(status.success(), "tests/compose/build.sh failed");
}

pub struct Stack {
    pub project: String,
    /// The modified copies of the compose files, in order.
    files: Vec<PathBuf>,
    env: Vec<(String, String)>,
    /// The stack's config directory (mounted at /etc/gateway).
    pub config_dir: PathBuf,
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// compose.cluster.yml's second edge, when that file is used.
    pub http_b: SocketAddr,
    pub https_b: SocketAddr,
    /// Pebble's management listener (its roots), published for the test.
    pub pebble_mgmt: SocketAddr,
    /// The CA of Pebble's own HTTPS listener, in the config directory.
    pub pebble_ca: TestCa,
    dir: tempfile::TempDir,
}

/// The name the gateway has on the Compose network for ACME (Pebble resolves it
/// through Docker's DNS, so its HTTP-01 requests reach the gateway's port 80).
pub const ACME_NAME: &str = "shop.acme.test";

impl Stack {
    /// compose.yml's stack; writes its files, starts nothing.
    pub fn create() -> Stack {
        Self::create_with(&["compose.yml"])
    }

    /// The stack of several compose files (e.g. compose.yml and compose.cluster.yml),
    /// each copied with this machine's changes.
    pub fn create_with(compose_files: &[&str]) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let project = format!("edgee2e{}", std::process::id());
        let config_dir = dir.path().join("config");
        std::fs::create_dir(&config_dir).unwrap();
        for f in std::fs::read_dir(root().join("config")).unwrap() {
            let f = f.unwrap().path();
            if f.is_file() {
                std::fs::copy(&f, config_dir.join(f.file_name().unwrap())).unwrap();
            }
        }
        // Pebble's HTTPS listener, and the CA the gateway trusts it with.
        let pebble_dir = dir.path().join("pebble");
        std::fs::create_dir(&pebble_dir).unwrap();
        let pebble_ca = TestCa::new(&config_dir, "pebble");
        let (cert, key) = pebble_ca.leaf(&pebble_dir, "pebble", &["pebble"]);
        let pebble = serde_json::json!({"pebble": {
            "listenAddress": "0.0.0.0:14000",
            "managementListenAddress": "0.0.0.0:15000",
            "certificate": format!("/etc/pebble/{}", cert.file_name().unwrap().to_string_lossy()),
            "privateKey": format!("/etc/pebble/{}", key.file_name().unwrap().to_string_lossy()),
            "httpPort": 80,
            "tlsPort": 443,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(pebble_dir.join("pebble.json"), pebble.to_string()).unwrap();
        // Readable by the containers' own users.
        Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(dir.path())
            .status()
            .unwrap();

        let port = || -> SocketAddr { format!("127.0.0.1:{}", free_port()).parse().unwrap() };
        let (http, https, http_b, https_b, pebble_mgmt) = (port(), port(), port(), port(), port());
        let mut files = Vec::new();
        for (n, name) in compose_files.iter().enumerate() {
            let mut c: Value =
                serde_yaml::from_str(&std::fs::read_to_string(root().join(name)).unwrap()).unwrap();
            let services = c["services"].as_mapping_mut().unwrap();
            for (service, s) in services.iter_mut() {
                let ports = match service.as_str() {
                    Some("edge") => Some((http, https)),
                    Some("edge-b") => Some((http_b, https_b)),
                    _ => None,
                };
                if let (Some((h, hs)), true) = (ports, s.get("ports").is_some()) {
                    s["ports"] =
                        Value::Sequence(vec![format!("{h}:80").into(), format!("{hs}:443").into()]);
                }
                if service.as_str() == Some("edge") {
                    let aliases = &mut s["networks"]["default"]["aliases"];
                    aliases.as_sequence_mut().unwrap().push(ACME_NAME.into());
                }
                if let Some(volumes) = s.get_mut("volumes").and_then(Value::as_sequence_mut) {
                    for v in volumes.iter_mut() {
                        if v.as_str() == Some("./config:/etc/gateway:ro") {
                            *v = format!("{}:/etc/gateway:ro", config_dir.display()).into();
                        }
                    }
                }
            }
            if n == 0 {
                c["services"]["pebble"] = pebble_service(&pebble_dir, pebble_mgmt);
            }
            let file = dir.path().join(format!("compose-{n}.yml"));
            std::fs::write(&file, serde_yaml::to_string(&c).unwrap()).unwrap();
            files.push(file);
        }
        Stack {
            project,
            files,
            env: Vec::new(),
            config_dir,
            http,
            https,
            http_b,
            https_b,
            pebble_mgmt,
            pebble_ca,
            dir,
        }
    }
}

/// The test-only Pebble service (profile `acme`), validating on port 80 of whatever
/// Compose's DNS names.
fn pebble_service(pebble_dir: &Path, mgmt: SocketAddr) -> Value {
    serde_yaml::from_str(&format!(
            "image: edge-test-pebble:local\n\
             command: [\"-config\", \"/etc/pebble/pebble.json\", \"-dnsserver\", \"127.0.0.11:53\"]\n\
             environment: {{PEBBLE_VA_NOSLEEP: \"1\"}}\n\
             volumes: [\"{}:/etc/pebble:ro\"]\n\
             ports: [\"{mgmt}:15000\"]\n\
             profiles: [\"acme\"]\n",
        pebble_dir.display()
    ))
    .unwrap()
}

impl Stack {
    /// A variable of `.env`, for the commands run from now on.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.to_owned(), value.to_owned()));
    }

    /// `docker-compose ARGS` for this stack, as run from the repository (relative
    /// paths in compose.yml, like the build context, resolve there).
    pub fn compose(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("docker-compose");
        cmd.args(["-p", &self.project]);
        for f in &self.files {
            cmd.arg("-f").arg(f);
        }
        cmd.arg("--project-directory")
            .arg(root())
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap()
    }

    /// As [`Stack::compose`], asserting success; returns stdout.
    pub fn compose_ok(&self, args: &[&str]) -> String {
        let out = self.compose(args);
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The running containers of `service`, by id.
    pub fn containers(&self, service: &str) -> Vec<String> {
        self.compose_ok(&["ps", "-q", service])
            .lines()
            .map(str::to_owned)
            .filter(|id| !id.is_empty() && self.inspect(id, "{{.State.Running}}") == "true")
            .collect()
    }

    /// The one gateway container.
    pub fn gateway(&self) -> String {
        let ids = self.containers("gateway");
        assert_eq!(ids.len(), 1, "one gateway container: {ids:?}");
        ids[0].clone()
    }

    pub fn inspect(&self, id: &str, format: &str) -> String {
        let out = Command::new("docker")
            .args(["inspect", "-f", format, id])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Waits until `service` has exactly `n` running containers, all healthy.
    pub fn wait_healthy(&self, service: &str, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let ids = self.containers(service);
            if ids.len() == n
                && ids
                    .iter()
                    .all(|id| self.inspect(id, "{{.State.Health.Status}}") == "healthy")
            {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `docker exec CONTAINER ARGS`.
    pub fn exec(&self, id: &str, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("exec")
            .arg(id)
            .args(args)
            .output()
            .unwrap()
    }

    /// What the gateway's `/status` says, through `gateway status` in its container.
    pub fn status(&self) -> serde_json::Value {
        let out = self.exec(&self.gateway(), &["gateway", "status"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A file from a container (`docker cp`, which needs nothing inside the image).
    pub fn read_file(&self, id: &str, path: &str) -> String {
        let to = self.dir.path().join("copied");
        let _ = std::fs::remove_file(&to);
        let ok = Command::new("docker")
            .arg("cp")
            .arg(format!("{id}:{path}"))
            .arg(&to)
            .status()
            .unwrap()
            .success();
        assert!(ok, "docker cp {id}:{path}");
        std::fs::read_to_string(&to).unwrap()
    }

    /// The stack's copy of a file of the config directory.
    pub fn config_file(&self, name: &str) -> PathBuf {
        self.config_dir.join(name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let out = self.compose(&[
            "--profile",
            "acme",
            "down",
            "-v",
            "--remove-orphans",
            "-t",
            "5",
        ]);
        if !out.status.success() {
            eprintln!(
                "cleanup of {}: {}",
                self.project,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
