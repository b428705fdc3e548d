//! The hand-written client: `handshake` plus the framing in `ws`, 256 KiB reads and writes.

use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::timeout;

use super::CLOSE_WAIT;
use crate::handshake;
use crate::rng::XorShift;
use crate::transfer::{IO_SIZE, Progress, Transfer, receive_ws, send_ws};
use crate::ws::{FrameReader, send_close};

pub async fn download(port: u16, size: u64, progress: &Progress) -> Result<Transfer, String> {
    let (mut frames, mut writer) = connect(port).await?;
    let transfer = receive_ws(&mut frames, size, progress).await?;
    close(&mut frames, &mut writer).await;
    Ok(transfer)
}

pub async fn upload(port: u16, size: u64, message: usize) -> Result<(), String> {
    let (mut frames, mut writer) = connect(port).await?;
    send_ws(&mut writer, size, message, Some(&mut XorShift::from_entropy())).await?;
    close(&mut frames, &mut writer).await;
    Ok(())
}

async fn connect(port: u16) -> Result<(FrameReader<OwnedReadHalf>, OwnedWriteHalf), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot connect to 127.0.0.1:{port}: {e}"))?;
    // Data goes out in large writes anyway; this keeps the small Close frame from waiting.
    stream.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
    let leftover = handshake::client(&mut stream, port).await?;
    let (reader, writer) = stream.into_split();
    Ok((FrameReader::new(reader, &leftover, IO_SIZE, false), writer))
}

/// Sends Close and waits, briefly, for the proxy's Close or end of stream.
async fn close(frames: &mut FrameReader<OwnedReadHalf>, writer: &mut OwnedWriteHalf) {
    if send_close(writer, Some(&mut XorShift::from_entropy())).await.is_ok() {
        let _ = timeout(CLOSE_WAIT, frames.drain_until_close()).await;
    }
}
