//! A real redis-server (Debian package `redis-server`) on a free loopback port, one per
//! test, with no persistence; stopped (SIGKILL) when dropped. Tests hang it
//! (SIGSTOP), kill it and start it again on the same port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, signal, wait_until};

pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        r.restart();
        r
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// (Re)starts the server on its port, empty.
    pub fn restart(&mut self) {
        self.kill();
        let log: PathBuf = self.dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; tests/deps.sh installs it)");
        self.child = Some(child);
        assert!(
            wait_until(Duration::from_secs(10), || self.cli(&["PING"]) == "PONG"),
            "redis-server did not start on {}",
            self.port
        );
    }

    /// `redis-cli ARGS` against this server; its output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGSTOP: the server holds its connections and answers nothing.
    pub fn hang(&self) {
        signal(self.pid(), "STOP");
    }

    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = signal_quietly(c.id(), "CONT");
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn signal_quietly(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
