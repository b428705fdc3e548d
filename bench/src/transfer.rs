//! Moving test data through a connection: sending it, and counting, checking and timing it on
//! arrival, over plain TCP (the backend's side of a proxy) or WebSocket (the client's side).
//!
//! The receiving end does the timing, from its first byte to its last, so the result is the rate
//! at which data came out of the proxy, whichever way it flows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::pattern::{MAX_WINDOW, pattern};
use crate::rng::XorShift;
use crate::ws::{Event, FrameReader, MAX_HEADER, put_binary};

/// The size of every read and write on this side of the proxy. Large, so that the tool makes far
/// fewer system calls than the proxy it measures (87–92 % of a relay's CPU on loopback is the
/// kernel, so call counts matter more than anything done with the bytes).
pub const IO_SIZE: usize = 256 * 1024;

const MIB: f64 = 1024.0 * 1024.0;

/// Bytes received so far in the current run; the stall watchdog polls it.
pub type Progress = Arc<AtomicU64>;

/// One measured run.
#[derive(Clone, Copy, Debug)]
pub struct Transfer {
    pub bytes: u64,
    /// From the arrival of the first byte to the arrival of the last.
    pub elapsed: Duration,
}

impl Transfer {
    pub fn mib_per_sec(&self) -> f64 {
        self.bytes as f64 / MIB / self.elapsed.as_secs_f64()
    }
}

/// Counts, checks and times arriving test data.
pub struct Counter {
    size: u64,
    received: u64,
    first: Option<Instant>,
    progress: Progress,
}

impl Counter {
    pub fn new(size: u64, progress: &Progress) -> Self {
        Self {
            size,
            received: 0,
            first: None,
            progress: progress.clone(),
        }
    }

    /// Takes the next bytes of the stream; `Ok(Some(..))` once all `size` bytes are in.
    pub fn add(&mut self, data: &[u8]) -> Result<Option<Transfer>, String> {
        let first = *self.first.get_or_insert_with(Instant::now);
        let end = self.received + data.len() as u64;
        if end > self.size {
            return Err(format!("received {end} bytes, more than the {} sent", self.size));
        }
        if !pattern().matches(self.received, data) {
            return Err(format!("wrong bytes somewhere in {}..{end}", self.received));
        }
        self.received = end;
        self.progress.store(end, Ordering::Relaxed);
        Ok((end == self.size).then(|| Transfer {
            bytes: end,
            elapsed: first.elapsed(),
        }))
    }

    /// Describes a stream that ended early.
    pub fn ended_early(&self, how: &str) -> String {
        format!("{how} after {} of {} bytes", self.received, self.size)
    }
}

/// Writes `size` bytes of test data, `IO_SIZE` at a time.
pub async fn send_tcp<W: AsyncWrite + Unpin>(io: &mut W, size: u64) -> Result<(), String> {
    let mut sent = 0;
    while sent < size {
        let len = (size - sent).min(IO_SIZE as u64) as usize;
        io.write_all(pattern().window(sent, len))
            .await
            .map_err(|e| format!("backend write failed after {sent} bytes: {e}"))?;
        sent += len as u64;
    }
    Ok(())
}

/// Reads `size` bytes of test data.
pub async fn receive_tcp<R: AsyncRead + Unpin>(io: &mut R, size: u64, progress: &Progress) -> Result<Transfer, String> {
    let mut counter = Counter::new(size, progress);
    let mut buf = vec![0; IO_SIZE];
    loop {
        let n = io
            .read(&mut buf)
            .await
            .map_err(|e| format!("backend read failed: {e}"))?;
        if n == 0 {
            return Err(counter.ended_early("the proxy closed the backend connection"));
        }
        if let Some(transfer) = counter.add(&buf[..n])? {
            return Ok(transfer);
        }
    }
}

/// Sends `size` bytes of test data as binary messages of `message` bytes, masked with a fresh
/// mask each when `masks` is given. Several messages go out per write, up to `IO_SIZE` bytes:
/// the proxy sees the same byte stream either way, and the client spends fewer calls.
pub async fn send_ws<W: AsyncWrite + Unpin>(
    io: &mut W,
    size: u64,
    message: usize,
    mut masks: Option<&mut XorShift>,
) -> Result<(), String> {
    assert!(message <= MAX_WINDOW);
    let per_write = (IO_SIZE / message).max(1);
    let mut out = Vec::with_capacity(per_write * (MAX_HEADER + message));
    let mut sent = 0;
    while sent < size {
        out.clear();
        let batch_start = sent;
        for _ in 0..per_write {
            if sent == size {
                break;
            }
            let len = (size - sent).min(message as u64) as usize;
            put_binary(&mut out, pattern().window(sent, len), masks.as_deref_mut());
            sent += len as u64;
        }
        io.write_all(&out)
            .await
            .map_err(|e| format!("WebSocket write failed after {batch_start} bytes: {e}"))?;
    }
    // A TLS stream holds its last record until flushed; a TCP one has nothing to do.
    io.flush().await.map_err(|e| format!("WebSocket flush failed: {e}"))
}

/// Receives `size` bytes of test data as binary messages.
pub async fn receive_ws<R: AsyncRead + Unpin>(
    frames: &mut FrameReader<R>,
    size: u64,
    progress: &Progress,
) -> Result<Transfer, String> {
    let mut counter = Counter::new(size, progress);
    loop {
        match frames.next().await.map_err(|e| counter.ended_early(&e))? {
            Event::Data(data) => {
                if let Some(transfer) = counter.add(data)? {
                    return Ok(transfer);
                }
            }
            Event::Close => return Err(counter.ended_early("Close received")),
            Event::Eof => return Err(counter.ended_early("connection closed")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn websocket_data_arrives_whole_and_checked() {
        let (mut tx, rx) = tokio::io::duplex(1 << 16);
        let size = 3 * IO_SIZE as u64 + 12_345;
        let sender = tokio::spawn(async move { send_ws(&mut tx, size, 64 * 1024, Some(&mut XorShift::new(7))).await });
        let mut frames = FrameReader::new(rx, &[], IO_SIZE, true);
        let progress = Progress::default();
        let transfer = receive_ws(&mut frames, size, &progress).await.unwrap();
        assert_eq!(transfer.bytes, size);
        assert_eq!(progress.load(Ordering::Relaxed), size);
        sender.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn tcp_data_that_ends_early_is_an_error() {
        let (mut tx, mut rx) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move { send_tcp(&mut tx, 1000).await });
        let err = receive_tcp(&mut rx, 2000, &Progress::default()).await.unwrap_err();
        assert!(err.contains("after 1000 of 2000 bytes"), "{err}");
    }

    #[test]
    fn a_wrong_byte_is_caught() {
        let mut counter = Counter::new(10, &Progress::default());
        let mut data = pattern().window(0, 10).to_vec();
        data[9] ^= 0x40;
        assert!(counter.add(&data).is_err());
    }
}
