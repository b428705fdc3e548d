//! [`WsStream`]: the client end of a WebSocket connection, seen as a byte stream.
//!
//! - **Writes** become one masked binary frame each (the relay writes what it decoded from one
//!   client read at once, so frames stay large). The frame is built in a pooled buffer and a
//!   write returns `Pending` until the previous frame is out: backpressure as with a plain
//!   target, one buffer at most, none while idle.
//! - **Reads** give the payload of the target's data frames (binary, text or continuation; the
//!   browser gets binary). Frame headers are parsed from a pooled buffer; a long payload is read
//!   straight into the relay's buffer, so the bulk is not copied.
//! - **Control frames**: a ping is answered with a pong between data frames (at most
//!   `MAX_QUEUED_CONTROL` wait: a flood drops the oldest); the target's close frame ends the
//!   stream (end of file for the relay), is answered, and stays readable in
//!   [`WsStream::closed_by`]; a protocol violation is answered with its close code and is a read
//!   error.
//! - **Shutdown** only stops writes: the close frame for the target carries the browser's code,
//!   which the relay's owner knows once the relay is over ([`WsStream::close`]).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::relay::buffer::{BUF_LEN, Slot};
use crate::relay::frame::{
    self, CloseFrame, MAX_CLIENT_HEADER, MAX_CONTROL_PAYLOAD, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, Violation,
};

/// Control frames waiting to go to the target at most.
const MAX_QUEUED_CONTROL: usize = 16;
/// Masking keys drawn from the system's random generator at once.
const MASKS: usize = 32;
/// A control frame with a short length and a mask.
const CONTROL_LEN: usize = 2 + 4 + MAX_CONTROL_PAYLOAD;

/// A masked control frame for the target, kept inline.
struct Control {
    bytes: [u8; CONTROL_LEN],
    len: u8,
}

impl Control {
    fn new(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Control {
        let n = payload.len().min(MAX_CONTROL_PAYLOAD);
        let mut bytes = [0u8; CONTROL_LEN];
        let h = frame::write_client_header(&mut bytes, opcode, n, mask);
        bytes[h..h + n].copy_from_slice(&payload[..n]);
        frame::unmask_move(&mut bytes, h, h, n, mask, 0);
        Control {
            bytes,
            len: (h + n) as u8,
        }
    }

    fn close(code: Option<u16>, reason: &str, mask: [u8; 4]) -> Control {
        let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
        let Some(code) = code else {
            return Control::new(OP_CLOSE, &[], mask);
        };
        payload[..2].copy_from_slice(&code.to_be_bytes());
        let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        payload[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
        Control::new(OP_CLOSE, &payload[..2 + cut], mask)
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

pub struct WsStream<S> {
    inner: S,
    /// `[rpos..rfilled)`: target bytes not parsed yet.
    rbuf: Slot,
    rpos: usize,
    rfilled: usize,
    /// Payload bytes of the current data frame not read yet.
    remaining: u64,
    /// The target closed (its close frame, a violation, or end of stream): reads give end of file.
    read_done: bool,
    closed_by: Option<CloseFrame>,
    /// `[wstart..wend)`: the frame being written.
    wbuf: Slot,
    wstart: usize,
    wend: usize,
    control: VecDeque<Control>,
    /// Bytes were written since the last flush (TLS buffers).
    wdirty: bool,
    /// Our close frame is queued: nothing more is sent (data written later is dropped).
    close_queued: bool,
    masks: [u8; 4 * MASKS],
    mask_next: usize,
}

impl<S> WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// After the handshake; `early` holds what the target sent after its 101.
    pub(super) fn new(inner: S, early: &[u8]) -> WsStream<S> {
        let mut rbuf = Slot::default();
        if !early.is_empty() {
            rbuf.get()[..early.len()].copy_from_slice(early);
        }
        WsStream {
            inner,
            rbuf,
            rpos: 0,
            rfilled: early.len(),
            remaining: 0,
            read_done: false,
            closed_by: None,
            wbuf: Slot::default(),
            wstart: 0,
            wend: 0,
            control: VecDeque::new(),
            wdirty: false,
            close_queued: false,
            masks: [0; 4 * MASKS],
            mask_next: MASKS,
        }
    }

    /// The target's close frame, once it sent one.
    pub fn closed_by(&self) -> Option<&CloseFrame> {
        self.closed_by.as_ref()
    }

    /// Ends the connection from our side: the close frame with `code` and `reason` (unless the
    /// target closed first; then only our reply still goes out), then the target's reply or end
    /// of stream is awaited, all within `wait`.
    pub async fn close(&mut self, code: Option<u16>, reason: &str, wait: Duration) {
        if !self.close_queued {
            self.queue_close(code, reason);
        }
        let _ = tokio::time::timeout(wait, async {
            std::future::poll_fn(|cx| self.poll_send(cx)).await?;
            let mut sink = [0u8; 4096];
            while self.read(&mut sink).await? > 0 {}
            std::future::poll_fn(|cx| Pin::new(&mut self.inner).poll_shutdown(cx)).await
        })
        .await;
    }

    fn next_mask(&mut self) -> [u8; 4] {
        if self.mask_next == MASKS {
            // A failure of the system generator keeps the previous keys: they still mask.
            let _ = SystemRandom::new().fill(&mut self.masks);
            self.mask_next = 0;
        }
        let at = self.mask_next * 4;
        self.mask_next += 1;
        [
            self.masks[at],
            self.masks[at + 1],
            self.masks[at + 2],
            self.masks[at + 3],
        ]
    }

    fn queue(&mut self, opcode: u8, payload: &[u8]) {
        if self.control.len() >= MAX_QUEUED_CONTROL {
            self.control.pop_front();
        }
        let mask = self.next_mask();
        self.control.push_back(Control::new(opcode, payload, mask));
    }

    fn queue_close(&mut self, code: Option<u16>, reason: &str) {
        self.close_queued = true;
        let mask = self.next_mask();
        self.control.push_back(Control::close(code, reason, mask));
    }

    /// The target broke the protocol: answer with the violation's close code (sent now if it can
    /// be, else by `close`), stop reading, and fail the read.
    fn poll_broken(&mut self, cx: &mut Context<'_>, violation: Violation) -> Poll<io::Result<()>> {
        self.read_done = true;
        if !self.close_queued {
            self.queue_close(Some(violation.code), violation.reason);
        }
        let _ = self.poll_send(cx);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the WebSocket target broke the protocol: {}", violation.reason),
        )))
    }

    /// Writes the frame in progress and the queued control frames, then flushes.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.wstart < self.wend {
                let buf = self.wbuf.held();
                match ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[self.wstart..self.wend])) {
                    Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Ok(n) => {
                        self.wstart += n;
                        self.wdirty = true;
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
                continue;
            }
            if let Some(control) = self.control.pop_front() {
                let bytes = control.as_bytes();
                self.wbuf.get()[..bytes.len()].copy_from_slice(bytes);
                self.wstart = 0;
                self.wend = bytes.len();
                continue;
            }
            self.wstart = 0;
            self.wend = 0;
            self.wbuf.release();
            if self.wdirty {
                ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
                self.wdirty = false;
            }
            return Poll::Ready(Ok(()));
        }
    }

    fn poll_payload(&mut self, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.read_done || out.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let buffered = self.rfilled - self.rpos;
            if self.remaining > 0 {
                if buffered > 0 {
                    let n = usize::try_from(self.remaining).map_or(buffered, |r| r.min(buffered));
                    let n = n.min(out.remaining());
                    out.put_slice(&self.rbuf.held()[self.rpos..self.rpos + n]);
                    self.rpos += n;
                    self.remaining -= n as u64;
                    return Poll::Ready(Ok(()));
                }
                // Nothing buffered: the payload goes straight into the caller's buffer.
                self.rpos = 0;
                self.rfilled = 0;
                self.rbuf.release();
                let limit = usize::try_from(self.remaining).map_or(out.remaining(), |r| r.min(out.remaining()));
                let mut part = ReadBuf::new(out.initialize_unfilled_to(limit));
                ready!(Pin::new(&mut self.inner).poll_read(cx, &mut part))?;
                let n = part.filled().len();
                if n == 0 {
                    // Ended inside a frame: the same as an end of stream without a close frame.
                    self.read_done = true;
                    return Poll::Ready(Ok(()));
                }
                out.advance(n);
                self.remaining -= n as u64;
                return Poll::Ready(Ok(()));
            }
            let header = match frame::parse_server_header(&self.rbuf.held()[self.rpos..self.rfilled]) {
                Err(violation) => return self.poll_broken(cx, violation),
                Ok(header) => header,
            };
            match header {
                Some(h) if h.opcode & 0x8 == 0 => {
                    self.rpos += h.header_len;
                    self.remaining = h.payload_len;
                    continue;
                }
                Some(h) if buffered >= h.header_len + h.payload_len as usize => {
                    let start = self.rpos + h.header_len;
                    let len = h.payload_len as usize;
                    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
                    payload[..len].copy_from_slice(&self.rbuf.held()[start..start + len]);
                    self.rpos = start + len;
                    match h.opcode {
                        OP_PING => {
                            if !self.close_queued {
                                self.queue(OP_PONG, &payload[..len]);
                            }
                            if let Poll::Ready(Err(e)) = self.poll_send(cx) {
                                return Poll::Ready(Err(e));
                            }
                        }
                        OP_PONG => {}
                        _ => match frame::parse_close(&payload[..len]) {
                            Ok(close) => {
                                self.read_done = true;
                                if !self.close_queued {
                                    // RFC 6455 5.5.1: the reply echoes the status code.
                                    self.queue_close(close.code, "");
                                }
                                self.closed_by = Some(close);
                                let _ = self.poll_send(cx);
                                return Poll::Ready(Ok(()));
                            }
                            Err(violation) => return self.poll_broken(cx, violation),
                        },
                    }
                    continue;
                }
                _ => {}
            }
            // A header or a control frame is incomplete: read more after it.
            if self.rpos > 0 {
                let (pos, filled) = (self.rpos, self.rfilled);
                self.rbuf.held().copy_within(pos..filled, 0);
                self.rfilled -= pos;
                self.rpos = 0;
            }
            let buf = self.rbuf.get();
            let mut read = ReadBuf::new(&mut buf[self.rfilled..]);
            match Pin::new(&mut self.inner).poll_read(cx, &mut read) {
                Poll::Pending => {
                    if self.rfilled == 0 {
                        self.rbuf.release();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    self.read_done = true;
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(())) => self.rfilled += read.filled().len(),
            }
        }
    }
}

impl<S> AsyncRead for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Pongs and close replies also go out while only the target talks.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        this.poll_payload(cx, out)
    }
}

impl<S> AsyncWrite for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.close_queued {
            // The target is closing: nothing more reaches it.
            return Poll::Ready(Ok(data.len()));
        }
        ready!(this.poll_send(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = data.len().min(BUF_LEN - MAX_CLIENT_HEADER);
        let mask = this.next_mask();
        let buf = this.wbuf.get();
        let h = frame::write_client_header(buf, OP_BINARY, n, mask);
        buf[h..h + n].copy_from_slice(&data[..n]);
        frame::unmask_move(buf, h, h, n, mask, 0);
        this.wstart = 0;
        this.wend = h + n;
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    /// Only finishes what is queued: the close frame comes from [`WsStream::close`].
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::relay::frame::{OP_TEXT, close};

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; frame::MAX_SERVER_HEADER];
        let start = frame::write_server_header(&mut out, frame::MAX_SERVER_HEADER, opcode, payload.len());
        out.drain(..start);
        out.extend_from_slice(payload);
        out
    }

    /// Reads one client frame from the server's end: (opcode, unmasked payload).
    async fn client_frame(server: &mut (impl AsyncRead + Unpin)) -> (u8, Vec<u8>) {
        let mut buf = Vec::new();
        loop {
            if let Some(h) = frame::parse_client_header(&buf).unwrap() {
                let total = h.header_len + h.payload_len as usize;
                if buf.len() >= total {
                    let payload = buf[h.header_len..total]
                        .iter()
                        .enumerate()
                        .map(|(i, b)| b ^ h.mask[i % 4])
                        .collect();
                    return (h.opcode, payload);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = server.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client side closed");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    #[tokio::test]
    async fn payloads_come_out_whatever_the_split_and_pings_get_masked_pongs() {
        let (ours, server) = tokio::io::duplex(1 << 16);
        let mut bytes = server_frame(OP_BINARY, b"RFB 003.008\n");
        let early = bytes.split_off(5);
        let mut ws = WsStream::new(ours, &bytes);
        let mut rest = early;
        rest.extend(server_frame(OP_PING, b"are you there"));
        rest.extend(server_frame(OP_TEXT, b"text too"));
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        rest.extend(server_frame(OP_BINARY, &big));
        let (mut from_server, mut to_server) = tokio::io::split(server);
        let writer = tokio::spawn(async move {
            for piece in rest.chunks(7777) {
                to_server.write_all(piece).await.unwrap();
            }
            to_server
        });
        let mut got = vec![0u8; 12 + 8 + big.len()];
        ws.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..20], b"RFB 003.008\ntext too");
        assert!(got[20..] == big[..]);
        let _to_server = writer.await.unwrap();
        assert_eq!(
            client_frame(&mut from_server).await,
            (OP_PONG, b"are you there".to_vec())
        );

        ws.write_all(b"hello").await.unwrap();
        ws.flush().await.unwrap();
        assert_eq!(client_frame(&mut from_server).await, (OP_BINARY, b"hello".to_vec()));
    }

    #[tokio::test]
    async fn the_targets_close_ends_the_stream_and_is_answered() {
        let (ours, mut server) = tokio::io::duplex(1 << 16);
        let mut ws = WsStream::new(ours, &[]);
        let mut close = server_frame(OP_BINARY, b"last");
        close.extend(server_frame(OP_CLOSE, b"\x0f\xa1going"));
        server.write_all(&close).await.unwrap();
        let mut all = Vec::new();
        ws.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"last");
        let closed = ws.closed_by().unwrap();
        assert_eq!((closed.code, closed.reason.as_str()), (Some(4001), "going"));
        assert_eq!(client_frame(&mut server).await, (OP_CLOSE, vec![0x0f, 0xa1]));
        // Data written after the target's close is dropped, and close() sends nothing more.
        ws.write_all(b"late").await.unwrap();
        ws.close(Some(1000), "", Duration::from_secs(1)).await;
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{rest:?}");
    }

    #[tokio::test]
    async fn close_sends_the_code_and_a_violation_is_a_read_error_with_its_close() {
        let (ours, mut server) = tokio::io::duplex(1 << 16);
        let mut ws = WsStream::new(ours, &[]);
        let closing = tokio::spawn(async move {
            ws.close(Some(4002), "window closed", Duration::from_secs(5)).await;
        });
        let (opcode, payload) = client_frame(&mut server).await;
        assert_eq!(
            (opcode, &payload[..2], &payload[2..]),
            (OP_CLOSE, &[0x0f, 0xa2][..], &b"window closed"[..])
        );
        server.write_all(&server_frame(OP_CLOSE, &payload[..2])).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), closing)
            .await
            .unwrap()
            .unwrap();

        let (ours, mut server) = tokio::io::duplex(1 << 16);
        let mut ws = WsStream::new(ours, &[]);
        server.write_all(&[0x82, 0x81, 1, 2, 3, 4, 5]).await.unwrap();
        let err = ws.read(&mut [0u8; 16]).await.unwrap_err();
        assert!(err.to_string().contains("masked"), "{err}");
        let (opcode, payload) = client_frame(&mut server).await;
        assert_eq!(
            (opcode, u16::from_be_bytes([payload[0], payload[1]])),
            (OP_CLOSE, close::PROTOCOL_ERROR)
        );
    }
}
