//! Client and server streams, plain TCP or TLS, behind one boxed type.
//!
//! Every connection the benchmark makes or accepts becomes a `Stream`, so the framing, the
//! scenarios and the in-process servers are written once for ws:// and wss://. The box costs one
//! indirect call per read or write, nothing next to a system call.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use crate::tls::Tls;

/// Anything a connection can be.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

pub type Stream = Box<dyn Io>;
pub type Reader = ReadHalf<Stream>;
pub type Writer = WriteHalf<Stream>;

/// Connects to 127.0.0.1:`port`, with TLS when `tls` is given (the certificate is not checked:
/// the proxy's is a throwaway one).
pub async fn connect(port: u16, tls: Option<&Arc<Tls>>) -> Result<Stream, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot connect to 127.0.0.1:{port}: {e}"))?;
    // Data goes out in large writes anyway; this keeps small messages from waiting.
    tcp.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
    match tls {
        None => Ok(Box::new(tcp)),
        Some(tls) => Ok(Box::new(tls.connect(tcp).await?)),
    }
}

/// The server side of an accepted connection: TLS is terminated here when `tls` is given.
pub async fn accept(tcp: TcpStream, tls: Option<&Arc<Tls>>) -> Result<Stream, String> {
    tcp.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
    match tls {
        None => Ok(Box::new(tcp)),
        Some(tls) => Ok(Box::new(tls.accept(tcp).await?)),
    }
}

/// Splits a stream into halves that two tasks (or one `select!`) can use at once.
pub fn split(stream: Stream) -> (Reader, Writer) {
    tokio::io::split(stream)
}
