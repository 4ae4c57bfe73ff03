//! Ports for the processes the tests start: free ones that stay free until bound, a
//! dead one that refuses connections, and the set one gateway listens on.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

/// A port nobody listens on right now and that no other process will be handed before
/// the caller's process binds it. `bind(127.0.0.1:0)` alone is not enough: the port is
/// free again once the probe socket closes, and the kernel hands the same ephemeral
/// range out for every outgoing connection and every other `bind(0)`, so a busy run
/// once gave a gateway's port away before it was bound (CI: "gateway did not start").
/// Ports come from below the ephemeral range instead (where nothing is handed out
/// implicitly), and each is reserved across the run's test processes by creating a file
/// named after it; reservations older than ten minutes (a test's upper bound) lapse.
pub fn free_port() -> u16 {
    let (lo, hi) = fixed_port_range();
    if lo >= hi {
        return kernel_port();
    }
    let dir = std::env::temp_dir().join("gateway-e2e-ports");
    std::fs::create_dir_all(&dir).unwrap();
    let span = u32::from(hi - lo);
    let start = random_u32() % span;
    for i in 0..span {
        let port = lo + ((start + i) % span) as u16;
        if reserve(&dir, port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    kernel_port()
}

fn kernel_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `[10000, start of ip_local_port_range)`, or an empty range where that is too small.
fn fixed_port_range() -> (u16, u16) {
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let first = range
        .split_whitespace()
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(0);
    (10_000, first.max(10_000))
}

/// Claims `port` for this run: true when its file was created now or had lapsed.
fn reserve(dir: &Path, port: u16) -> bool {
    let file = dir.join(port.to_string());
    let lapsed = |f: &Path| {
        std::fs::metadata(f)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(600))
    };
    if lapsed(&file) {
        // Two processes taking the same lapsed port at the same instant could both
        // win; `free_port`'s random start points make that vanishingly rare.
        let _ = std::fs::remove_file(&file);
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file)
        .is_ok()
}

/// A start point that differs between test processes, so they do not all walk the
/// same ports in the same order.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u32
}

/// A port where connections are refused, for as long as this test process lives: the
/// socket is bound but never listens, so no other process (another test's gateway or
/// replica, possibly the gateway under test itself) can take the port meanwhile. A
/// port from `free_port` can be handed out again; once it was, a "dead" replica was
/// the gateway's own listener and a request looped through it thousands of times.
pub fn dead_port() -> u16 {
    static SOCKET: std::sync::OnceLock<tokio::net::TcpSocket> = std::sync::OnceLock::new();
    SOCKET
        .get_or_init(|| {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            socket
        })
        .local_addr()
        .unwrap()
        .port()
}

/// The ports one gateway listens on, chosen before it starts.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub listen: SocketAddr,
    pub tls: SocketAddr,
    pub admin: SocketAddr,
}

impl Ports {
    pub fn fresh() -> Ports {
        let at = |p: u16| format!("127.0.0.1:{p}").parse().unwrap();
        Ports {
            listen: at(free_port()),
            tls: at(free_port()),
            admin: at(free_port()),
        }
    }
}
