//! The tokio-tungstenite client, configured as generously as it allows (256 KiB buffers, no
//! message size limit), so that a comparison with `raw` is about the library, not its defaults.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::CLOSE_WAIT;
use crate::net::{self, Stream};
use crate::pattern::pattern;
use crate::tls::Tls;
use crate::transfer::{Counter, IO_SIZE, Progress, Transfer};

pub async fn download(port: u16, tls: Option<&Arc<Tls>>, size: u64, progress: &Progress) -> Result<Transfer, String> {
    let mut ws = connect(port, tls).await?;
    let mut counter = Counter::new(size, progress);
    let transfer = loop {
        match ws.next().await {
            Some(Ok(Message::Binary(data))) => {
                if let Some(transfer) = counter.add(&data)? {
                    break transfer;
                }
            }
            Some(Ok(Message::Text(_))) => return Err("text message: the proxy is not relaying in binary mode".into()),
            Some(Ok(Message::Close(_))) => return Err(counter.ended_early("Close received")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(counter.ended_early(&e.to_string())),
            None => return Err(counter.ended_early("connection closed")),
        }
    };
    close(&mut ws).await;
    Ok(transfer)
}

pub async fn upload(port: u16, tls: Option<&Arc<Tls>>, size: u64, message: usize) -> Result<(), String> {
    let mut ws = connect(port, tls).await?;
    let mut sent = 0;
    while sent < size {
        let len = (size - sent).min(message as u64) as usize;
        // `feed` queues without flushing; tungstenite writes whenever its buffer is full.
        let payload = Bytes::copy_from_slice(pattern().window(sent, len));
        ws.feed(Message::Binary(payload))
            .await
            .map_err(|e| format!("WebSocket write failed after {sent} bytes: {e}"))?;
        sent += len as u64;
    }
    ws.flush().await.map_err(|e| format!("WebSocket flush failed: {e}"))?;
    close(&mut ws).await;
    Ok(())
}

async fn connect(port: u16, tls: Option<&Arc<Tls>>) -> Result<WebSocketStream<Stream>, String> {
    let stream = net::connect(port, tls).await?;
    // The scheme only names the Host header here: TLS, if any, is already up underneath.
    let mut request = format!("ws://127.0.0.1:{port}/")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let headers = request.headers_mut();
    headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_static("binary"));
    let origin = HeaderValue::from_str(&format!("http://127.0.0.1:{port}")).map_err(|e| e.to_string())?;
    headers.insert("Origin", origin);
    let config = WebSocketConfig::default()
        .read_buffer_size(IO_SIZE)
        .write_buffer_size(IO_SIZE)
        .max_message_size(None)
        .max_frame_size(None);
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| format!("WebSocket handshake failed: {e}"))?;
    Ok(ws)
}

/// Sends Close and waits, briefly, for the proxy's Close or end of stream.
async fn close(ws: &mut WebSocketStream<Stream>) {
    let _ = timeout(CLOSE_WAIT, async {
        if ws.close(None).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}
