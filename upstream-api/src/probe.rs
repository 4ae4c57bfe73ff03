//! A minimal HTTP/1.1 GET of /healthz, so container health checks need no curl.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Ok when `GET /healthz` on `addr` answers 200 within 3 seconds.
pub async fn probe(addr: SocketAddr) -> Result<(), String> {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::with_capacity(256);
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        if buf.starts_with(b"HTTP/1.1 200") {
            Ok(())
        } else {
            Err(format!(
                "unexpected answer: {}",
                String::from_utf8_lossy(&buf[..buf.len().min(40)])
            ))
        }
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}
