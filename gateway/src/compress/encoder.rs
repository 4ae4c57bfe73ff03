//! A response body compressed as it streams: every chunk the replica sends is
//! compressed and flushed at once (zstd, brotli or gzip), so a Server-Sent Events
//! stream goes out event by event and a large body is never held whole; the end of the
//! body finishes the stream. The codecs are the ones Pingora already links (flate2 on
//! zlib-ng, brotli, zstd); zstd's contexts are reused (`zstd_stream.rs`).

use std::io::{self, Write};

use bytes::Bytes;

use super::negotiate::Coding;
use super::zstd_stream::ZstdStream;

enum Inner {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(ZstdStream),
}

/// One response's compressor. Behind a mutex in the request context (which must be
/// `Sync`; zstd's context is not), uncontended.
pub struct Encoder {
    inner: Option<Inner>,
    pub coding: Coding,
    /// Bytes in and out, for `gateway_compression_*_bytes_total`.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// The window of brotli and zstd: 512 KiB (ngx_brotli's default). Their own defaults
/// (4 MiB for brotli, 2 MiB for zstd level 3) cost that much memory per response being
/// compressed; responses a gateway compresses are seldom larger than the window, and
/// what a larger window finds beyond it is little.
const WINDOW_LOG: u32 = 19;
/// brotli's internal buffer.
const BROTLI_BUFFER: usize = 4096;

impl Encoder {
    pub fn new(coding: Coding, level: u32) -> io::Result<Encoder> {
        let inner = match coding {
            Coding::Gzip => Inner::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level.min(9)),
            )),
            Coding::Br => Inner::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                level.min(11),
                WINDOW_LOG,
            ))),
            Coding::Zstd => Inner::Zstd(ZstdStream::new(level.min(22) as i32, WINDOW_LOG)?),
        };
        Ok(Encoder {
            inner: Some(inner),
            coding,
            bytes_in: 0,
            bytes_out: 0,
        })
    }

    /// Compresses `chunk` and returns what can be sent now (everything so far: each
    /// chunk is flushed); with `end`, the stream's last bytes too.
    pub fn encode(&mut self, chunk: &[u8], end: bool) -> io::Result<Bytes> {
        self.bytes_in += chunk.len() as u64;
        let out = if end {
            match self.inner.take() {
                Some(Inner::Gzip(mut e)) => {
                    e.write_all(chunk)?;
                    e.finish()?
                }
                Some(Inner::Br(mut e)) => {
                    e.write_all(chunk)?;
                    e.into_inner()
                }
                Some(Inner::Zstd(mut e)) => {
                    let mut out = Vec::new();
                    e.write(chunk, true, &mut out)?;
                    out
                }
                None => Vec::new(),
            }
        } else {
            match self.inner.as_mut() {
                Some(Inner::Gzip(e)) => {
                    e.write_all(chunk)?;
                    e.flush()?;
                    std::mem::take(e.get_mut())
                }
                Some(Inner::Br(e)) => {
                    e.write_all(chunk)?;
                    e.flush()?;
                    std::mem::take(e.get_mut())
                }
                Some(Inner::Zstd(e)) => {
                    let mut out = Vec::new();
                    e.write(chunk, false, &mut out)?;
                    out
                }
                None => Vec::new(),
            }
        };
        self.bytes_out += out.len() as u64;
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn decode(coding: Coding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            Coding::Gzip => {
                flate2::read::GzDecoder::new(data)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Coding::Br => {
                brotli::Decompressor::new(data, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Coding::Zstd => out = zstd::stream::decode_all(data).unwrap(),
        }
        out
    }

    #[test]
    fn every_chunk_goes_out_at_once_and_the_whole_decodes() {
        for coding in [Coding::Gzip, Coding::Br, Coding::Zstd] {
            let mut e = Encoder::new(coding, 5).unwrap();
            let mut wire = Vec::new();
            let events: Vec<String> = (0..5).map(|i| format!("data: event {i}\n\n")).collect();
            for ev in &events {
                let out = e.encode(ev.as_bytes(), false).unwrap();
                assert!(!out.is_empty(), "{coding:?}: flushed per chunk");
                wire.extend_from_slice(&out);
                // What went out so far already holds this event.
                let partial = decode_prefix(coding, &wire);
                assert!(
                    String::from_utf8_lossy(&partial).contains(ev.trim()),
                    "{coding:?}"
                );
            }
            wire.extend_from_slice(&e.encode(b"", true).unwrap());
            assert_eq!(decode(coding, &wire), events.concat().into_bytes());
            assert!(
                e.encode(b"x", false).unwrap().is_empty(),
                "finished stays finished"
            );
        }
    }

    /// Decodes what a stream sent so far (not yet finished).
    fn decode_prefix(coding: Coding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        match coding {
            Coding::Gzip => {
                let mut d = flate2::read::GzDecoder::new(data);
                while let Ok(n) = d.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.extend_from_slice(&buf[..n]);
                }
            }
            Coding::Br => {
                let mut d = brotli::Decompressor::new(data, 4096);
                while let Ok(n) = d.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.extend_from_slice(&buf[..n]);
                }
            }
            Coding::Zstd => {
                let mut d = zstd::stream::read::Decoder::new(data).unwrap();
                while let Ok(n) = d.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.extend_from_slice(&buf[..n]);
                }
            }
        }
        out
    }

    #[test]
    fn a_large_body_shrinks() {
        let body = "{\"id\": 1, \"name\": \"tea\", \"tags\": [\"green\", \"loose\"]}\n".repeat(500);
        for coding in [Coding::Gzip, Coding::Br, Coding::Zstd] {
            let mut e = Encoder::new(coding, 5).unwrap();
            let mut wire = e.encode(body.as_bytes(), false).unwrap().to_vec();
            wire.extend_from_slice(&e.encode(b"", true).unwrap());
            assert!(wire.len() * 10 < body.len(), "{coding:?}: {}", wire.len());
            assert_eq!(decode(coding, &wire), body.as_bytes());
        }
    }
}
