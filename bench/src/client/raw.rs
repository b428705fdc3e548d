//! The hand-written client: `handshake` plus the framing in `ws`.
//!
//! `Conn` is one WebSocket connection as a browser holds it; the throughput runs use it with
//! 256 KiB reads, the small-message scenarios with small ones (10,000 idle connections must not
//! cost the benchmark gigabytes).

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

use super::CLOSE_WAIT;
use crate::handshake;
use crate::net::{self, Reader, Writer};
use crate::rng::XorShift;
use crate::tls::Tls;
use crate::transfer::{IO_SIZE, Progress, Transfer, receive_ws, send_ws};
use crate::ws::{Event, FrameReader, MAX_HEADER, put_binary, send_close};

pub async fn download(port: u16, tls: Option<&Arc<Tls>>, size: u64, progress: &Progress) -> Result<Transfer, String> {
    let mut conn = Conn::open(port, "/", tls, IO_SIZE).await?;
    let transfer = receive_ws(&mut conn.frames, size, progress).await?;
    conn.close().await;
    Ok(transfer)
}

pub async fn upload(port: u16, tls: Option<&Arc<Tls>>, size: u64, message: usize) -> Result<(), String> {
    let mut conn = Conn::open(port, "/", tls, IO_SIZE).await?;
    send_ws(&mut conn.writer, size, message, Some(&mut conn.masks)).await?;
    conn.close().await;
    Ok(())
}

/// One client connection after the upgrade.
pub struct Conn {
    pub frames: FrameReader<Reader>,
    pub writer: Writer,
    /// A fresh mask per message, as browsers do.
    pub masks: XorShift,
    /// The frame being sent, reused.
    out: Vec<u8>,
}

impl Conn {
    /// Connects to 127.0.0.1:`port` (wss:// when `tls` is given) and upgrades, asking for
    /// `path`; reads are at most `read_size` bytes.
    pub async fn open(port: u16, path: &str, tls: Option<&Arc<Tls>>, read_size: usize) -> Result<Conn, String> {
        let mut stream = net::connect(port, tls).await?;
        let leftover = handshake::client(&mut stream, port, path).await?;
        let (reader, writer) = net::split(stream);
        Ok(Conn {
            frames: FrameReader::new(reader, &leftover, read_size, false),
            writer,
            masks: XorShift::from_entropy(),
            out: Vec::new(),
        })
    }

    /// Sends `payload` as one masked binary message, in one write.
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), String> {
        self.out.clear();
        self.out.reserve(MAX_HEADER + payload.len());
        put_binary(&mut self.out, payload, Some(&mut self.masks));
        self.writer
            .write_all(&self.out)
            .await
            .map_err(|e| format!("WebSocket write failed: {e}"))?;
        // A TLS stream holds records until flushed; a TCP one returns at once.
        self.writer
            .flush()
            .await
            .map_err(|e| format!("WebSocket flush failed: {e}"))
    }

    /// Receives `expected` back, however the peer split it into frames.
    pub async fn expect(&mut self, expected: &[u8]) -> Result<(), String> {
        let mut got = 0;
        while got < expected.len() {
            match self.frames.next().await? {
                Event::Data(data) => {
                    let end = got + data.len();
                    if end > expected.len() || data != &expected[got..end] {
                        return Err(format!("the echo differs from what was sent ({got}..{end})"));
                    }
                    got = end;
                }
                Event::Close => return Err(format!("Close received after {got} of {} echoed bytes", expected.len())),
                Event::Eof => {
                    return Err(format!(
                        "connection closed after {got} of {} echoed bytes",
                        expected.len()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Sends `payload` and waits for the echo.
    pub async fn round_trip(&mut self, payload: &[u8]) -> Result<(), String> {
        self.send(payload).await?;
        self.expect(payload).await
    }

    /// Sends Close and waits, at most `CLOSE_WAIT`, for the peer's Close or end of stream.
    pub async fn close(mut self) {
        let _ = timeout(CLOSE_WAIT, async {
            if send_close(&mut self.writer, Some(&mut self.masks)).await.is_ok() && self.writer.flush().await.is_ok() {
                self.frames.drain_until_close().await;
            }
        })
        .await;
    }
}
