//! Echo servers for the small-message scenarios: every byte a client sends comes back.
//!
//! Behind a WebSocket-to-TCP proxy the echo is a TCP backend; in the baseline (and behind a raw
//! relay) it is a WebSocket server that answers each piece of payload with a binary frame. Each
//! connection gets a task with a 4 KiB buffer, so 10,000 idle ones cost the benchmark little;
//! dropping the `Echo` aborts the accept loop and every connection task with it.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::peer::{self, Server};
use crate::tls::Tls;
use crate::ws::{Event, put_binary, send_close};

const BUF: usize = 4096;

/// A running echo server; stops when dropped.
pub struct Echo(JoinHandle<()>);

impl Echo {
    pub fn spawn(server: Server) -> Echo {
        Echo(tokio::spawn(accept_loop(server)))
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn accept_loop(server: Server) {
    let mut connections = JoinSet::new();
    let (listener, websocket, tls) = match server {
        Server::Tcp(listener) => (listener, false, None),
        Server::WebSocket(listener, tls) => (listener, true, tls),
    };
    loop {
        // Reap finished connections, so a long connects run does not pile them up.
        while connections.try_join_next().is_some() {}
        let Ok(stream) = accept(&listener).await else {
            // EMFILE and the like: the client side sees its connections fail and reports it.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        if websocket {
            connections.spawn(echo_ws(stream, tls.clone()));
        } else {
            connections.spawn(echo_tcp(stream));
        }
    }
}

async fn accept(listener: &TcpListener) -> std::io::Result<TcpStream> {
    let (stream, _) = listener.accept().await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Echoes until the proxy closes, then closes too.
async fn echo_tcp(mut stream: TcpStream) {
    let mut buf = [0; BUF];
    while let Ok(n @ 1..) = stream.read(&mut buf).await {
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = stream.shutdown().await;
}

/// Upgrades, echoes payload as binary frames, answers Close with Close.
async fn echo_ws(stream: TcpStream, tls: Option<Arc<Tls>>) {
    let Ok(Some((mut frames, mut writer))) = peer::upgrade(stream, tls.as_ref(), BUF).await else {
        return;
    };
    let mut out = Vec::with_capacity(BUF + 16);
    loop {
        match frames.next().await {
            Ok(Event::Data(data)) => {
                out.clear();
                put_binary(&mut out, data, None);
                if writer.write_all(&out).await.is_err() || writer.flush().await.is_err() {
                    return;
                }
            }
            Ok(Event::Close) => {
                let _ = send_close(&mut writer, None).await;
                let _ = writer.shutdown().await;
                return;
            }
            Ok(Event::Eof) | Err(_) => return,
        }
    }
}
