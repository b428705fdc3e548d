//! The relay: one WebSocket client and one target stream, bytes both ways until both sides are done.
//!
//! It is a single hand-polled future per session that owns both streams, in the manner of
//! `tokio::io::copy_bidirectional`: no task, lock or channel per direction, and no buffer while idle.
//!
//! - **Upstream** (client → target): raw client bytes are read into a buffer, frames are parsed in
//!   place, payloads are unmasked *and* moved down over the frame headers in one pass, so everything
//!   decoded from one read goes to the target in one write.
//! - **Downstream** (target → client): target bytes are read after `MAX_SERVER_HEADER` bytes of
//!   room, the frame header is written just in front of them, and header + payload leave in one write.
//! - **Backpressure**: a direction reads again only once its previous output is fully written, so a
//!   slow reader slows the writer on the other side and memory stays at one buffer per direction.
//! - **`base64` clients** (the subprotocol of old clients): their messages are decoded in place
//!   as they stream in (`b64`), and target bytes go out as base64 text frames, encoded in place.
//! - **Closing**: a close frame is queued between data frames. Whoever closes first, the relay
//!   finishes the closing handshake, delivers everything already read, half-closes the target
//!   (`shutdown(Write)`) and ends. Waiting for the peer's close reply is bounded by a timeout.

pub mod b64;
pub mod buffer;
pub mod frame;
#[cfg(test)]
mod properties;
pub mod recording;
pub mod tap;

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use buffer::Slot;
use frame::{
    CloseFrame, ControlFrame, MAX_CONTROL_PAYLOAD, MAX_SERVER_HEADER, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING,
    OP_PONG, OP_TEXT, Violation, close,
};
use tap::Tap;

/// Pings and pongs queued for the client at most (see `Relay::control`).
const MAX_QUEUED_CONTROL: usize = 64;

/// Per-session limits and timers.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Largest client message (sum of its fragments), in bytes; larger ones are refused with 1009.
    pub max_message: u64,
    /// Send a ping this often; a client that sends nothing back for a whole interval is dropped.
    pub heartbeat: Option<Duration>,
    /// How long to wait for the client's reply to our close frame before giving up on it.
    pub close_timeout: Duration,
}

/// Why a session ended; the first cause wins and is logged.
#[derive(Debug)]
pub enum End {
    ClientClosed(Option<u16>, String),
    TargetClosed,
    /// A WebSocket target's close frame, passed on to the client.
    TargetClosedWith(u16, String),
    ClientGone,
    ClientError(io::Error),
    TargetError(io::Error),
    Refused(Violation),
    HeartbeatTimeout,
    Shutdown,
    SessionEnded(String),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::ClientClosed(Some(code), reason) if reason.is_empty() => {
                write!(f, "client closed ({code})")
            }
            End::ClientClosed(Some(code), reason) => write!(f, "client closed ({code} {reason})"),
            End::ClientClosed(None, _) => write!(f, "client closed (no status)"),
            End::TargetClosed => write!(f, "target closed"),
            End::TargetClosedWith(code, reason) if reason.is_empty() => write!(f, "target closed ({code})"),
            End::TargetClosedWith(code, reason) => write!(f, "target closed ({code} {reason})"),
            End::ClientGone => write!(f, "client disconnected without a close frame"),
            End::ClientError(e) => write!(f, "client error: {e}"),
            End::TargetError(e) => write!(f, "target error: {e}"),
            End::Refused(v) => write!(f, "refused client frame ({} {})", v.code, v.reason),
            End::HeartbeatTimeout => write!(f, "client stopped answering heartbeat pings"),
            End::Shutdown => write!(f, "server shutting down"),
            End::SessionEnded(reason) => write!(f, "session ended: {reason}"),
        }
    }
}

/// What a finished session did.
#[derive(Debug)]
pub struct Report {
    pub end: End,
    pub to_target: u64,
    pub to_client: u64,
}

/// What the client's messages carry: the subprotocol it chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// The bytes themselves (`binary`, or no subprotocol).
    Binary,
    /// Base64 text (`base64`), both ways.
    Base64,
}

/// How the relay treats bytes from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadMode {
    /// Parse frames and relay their payloads.
    Frames,
    /// The client broke the protocol: read and drop until it goes away.
    Discard,
    /// Nothing more is read from the client.
    Done,
}

/// Client → target state. Buffer layout: `[out_start..out_end)` decoded payload still to write,
/// then `[pos..filled)` raw client bytes not parsed yet (`out_end <= pos`).
struct Up {
    buf: Slot,
    out_start: usize,
    out_end: usize,
    pos: usize,
    filled: usize,
    /// Payload bytes of the current data frame not read yet, its mask and how far into it we are.
    remaining: u64,
    mask: [u8; 4],
    mask_offset: u64,
    in_message: bool,
    message_len: u64,
    mode: ReadMode,
    /// The target has written bytes that may need a flush (TLS targets buffer).
    dirty: bool,
    /// Writes to the target still work; after a failure decoded payload is dropped.
    target_ok: bool,
    target_shut: bool,
    /// A frame arrived since the last heartbeat ping.
    heard: bool,
    /// `Payload::Base64`: the decoder of the client's base64 messages.
    base64: Option<b64::Decoder>,
}

/// Target → client state: `[start..end)` of the buffer is a frame being written.
struct Down {
    buf: Slot,
    start: usize,
    end: usize,
    /// The frame in `start..end` has not begun to go out (it may still be dropped whole).
    untouched: bool,
    /// Target bytes in that frame (fewer than its payload when base64 encoded).
    payload: usize,
    /// `Payload::Base64`: target bytes go out as base64 text frames.
    base64: bool,
    reading: bool,
    dirty: bool,
    client_ok: bool,
    client_shut: bool,
}

/// Something the upstream parser found that the relay must act on.
enum Event {
    Ping([u8; MAX_CONTROL_PAYLOAD], usize),
    Pong,
    Close(Result<CloseFrame, Violation>),
    Refuse(Violation),
}

pub struct Relay<C, T> {
    client: C,
    target: T,
    settings: Settings,
    up: Up,
    down: Down,
    /// Control frame being written to the client (between data frames) and how much of it is out.
    writing: Option<(ControlFrame, usize)>,
    /// Pings and pongs waiting to go out, in order: every client ping gets its pong (RFC 6455
    /// allows answering only the latest, Autobahn 2.10/2.11 do not). At most `MAX_QUEUED_CONTROL`:
    /// a flood drops the oldest, so it cannot grow memory. Empty, it holds no allocation.
    control: VecDeque<ControlFrame>,
    close_frame: Option<ControlFrame>,
    /// A close frame is queued or sent: no data frame follows it.
    closing: bool,
    close_sent: bool,
    /// One side changed state the other side must look at before the relay can sleep.
    changed: bool,
    end: Option<End>,
    /// A heartbeat ping was sent; the client must send something before the next one is due.
    ping_outstanding: bool,
    /// The target's end of stream waits for the owner to say how to close (`hold_target_eof`).
    hold_eof: bool,
    eof_held: bool,
    /// Next heartbeat, or the deadline for the client's close reply once closing.
    timer: Option<Pin<Box<Sleep>>>,
    tap: Option<Box<Tap>>,
    to_target: u64,
    to_client: u64,
}

impl<C, T> Relay<C, T>
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    /// `early` holds client bytes read past the HTTP handshake (a client may send frames at once).
    pub fn new(client: C, target: T, early: &[u8], settings: Settings, tap: Option<Box<Tap>>) -> Self {
        Self::with_payload(client, target, early, settings, tap, Payload::Binary)
    }

    /// `new`, for a client whose messages carry `payload`.
    pub fn with_payload(
        client: C,
        target: T,
        early: &[u8],
        settings: Settings,
        tap: Option<Box<Tap>>,
        payload: Payload,
    ) -> Self {
        let base64 = payload == Payload::Base64;
        let mut up = Up {
            buf: Slot::default(),
            out_start: 0,
            out_end: 0,
            pos: 0,
            filled: 0,
            remaining: 0,
            mask: [0; 4],
            mask_offset: 0,
            in_message: false,
            message_len: 0,
            mode: ReadMode::Frames,
            dirty: false,
            target_ok: true,
            target_shut: false,
            heard: false,
            base64: base64.then(b64::Decoder::default),
        };
        if !early.is_empty() {
            let buf = up.buf.get();
            let n = early.len().min(buf.len());
            buf[..n].copy_from_slice(&early[..n]);
            up.filled = n;
        }
        let timer = settings.heartbeat.map(|every| Box::pin(tokio::time::sleep(every)));
        let mut relay = Relay {
            client,
            target,
            settings,
            up,
            down: Down {
                buf: Slot::default(),
                start: 0,
                end: 0,
                reading: true,
                dirty: false,
                client_ok: true,
                client_shut: false,
                untouched: false,
                payload: 0,
                base64,
            },
            writing: None,
            control: VecDeque::new(),
            close_frame: None,
            closing: false,
            close_sent: false,
            changed: false,
            end: None,
            ping_outstanding: false,
            hold_eof: false,
            eof_held: false,
            timer,
            tap,
            to_target: 0,
            to_client: 0,
        };
        relay.decode_all();
        relay
    }

    /// Starts a clean close with 1001, for server shutdown.
    pub fn go_away(&mut self) {
        self.begin_close(close::GOING_AWAY, "Server shutting down", End::Shutdown);
    }

    /// Starts a clean close with `code` because the session behind the target ended.
    pub fn session_ended(&mut self, code: u16, reason: &str) {
        self.begin_close(code, reason, End::SessionEnded(reason.to_owned()));
    }

    /// The target's end of stream no longer closes with 1000 at once: the owner learns of it from
    /// `target_eof_held` and closes with `session_ended` (an on-demand session's command that
    /// exited gets 1011 and its exit status) or `target_closed`.
    pub fn hold_target_eof(&mut self) {
        self.hold_eof = true;
    }

    pub fn target_eof_held(&self) -> bool {
        self.eof_held
    }

    /// The close the target's end of stream gives when nothing else is known.
    pub fn target_closed(&mut self) {
        self.begin_close(close::NORMAL, "Target closed", End::TargetClosed);
    }

    /// The close a WebSocket target's close frame gives: its code and reason reach the client.
    pub fn target_closed_with(&mut self, code: u16, reason: &str) {
        self.begin_close(code, reason, End::TargetClosedWith(code, reason.to_owned()));
    }

    /// The client stream, once the relay is over (for the lingering close).
    pub fn into_client(self) -> C {
        self.client
    }

    /// The target stream, while the relay runs.
    pub fn target(&self) -> &T {
        &self.target
    }

    /// Both streams, once the relay is over (a WebSocket target still gets its close frame).
    pub fn into_parts(self) -> (C, T) {
        (self.client, self.target)
    }

    /// Drives both directions; ready when the session is over.
    pub fn poll_relay(&mut self, cx: &mut Context<'_>) -> Poll<Report> {
        loop {
            self.changed = false;
            if let Some(timer) = self.timer.as_mut()
                && timer.as_mut().poll(cx).is_ready()
                && self.on_timer()
            {
                return Poll::Ready(self.report());
            }
            let up_done = self.poll_up(cx).is_ready();
            let down_done = self.poll_down(cx).is_ready();
            if up_done && down_done {
                return Poll::Ready(self.report());
            }
            if !self.changed {
                return Poll::Pending;
            }
        }
    }

    fn report(&mut self) -> Report {
        self.up.buf.release();
        self.down.buf.release();
        Report {
            end: self.end.take().unwrap_or(End::ClientGone),
            to_target: self.to_target,
            to_client: self.to_client,
        }
    }

    fn set_end(&mut self, end: End) {
        if self.end.is_none() {
            self.end = Some(end);
        }
    }

    /// Queues a close frame (once) and stops reading the target. The client's reply is awaited
    /// until `close_timeout`.
    fn queue_control(&mut self, frame: ControlFrame) {
        if self.control.len() >= MAX_QUEUED_CONTROL {
            self.control.pop_front();
        }
        self.control.push_back(frame);
        self.changed = true;
    }

    fn begin_close(&mut self, code: u16, reason: &str, end: End) {
        self.set_end(end);
        if self.closing {
            return;
        }
        self.queue_close(ControlFrame::close(code, reason));
    }

    fn queue_close(&mut self, frame: ControlFrame) {
        self.closing = true;
        self.close_frame = Some(frame);
        self.down.reading = false;
        self.timer = Some(Box::pin(tokio::time::sleep(self.settings.close_timeout)));
        self.changed = true;
    }

    /// Returns true when the session must end at once.
    fn on_timer(&mut self) -> bool {
        self.changed = true;
        if self.closing {
            // The client did not answer our close frame in time: stop waiting for it.
            self.timer = None;
            self.up.mode = ReadMode::Done;
            if !self.close_sent {
                self.down.client_ok = false;
            }
            return false;
        }
        let Some(every) = self.settings.heartbeat else {
            self.timer = None;
            return false;
        };
        if self.ping_outstanding && !self.up.heard {
            // Nothing at all came back for a whole interval after our ping: the peer is gone.
            self.set_end(End::HeartbeatTimeout);
            return true;
        }
        self.up.heard = false;
        self.ping_outstanding = true;
        self.queue_control(ControlFrame::new(OP_PING, b"wsproxy"));
        self.timer = Some(Box::pin(tokio::time::sleep_until(Instant::now() + every)));
        false
    }

    fn client_failed(&mut self, err: io::Error) {
        self.set_end(End::ClientError(err));
        self.down.client_ok = false;
        self.up.mode = ReadMode::Done;
        self.changed = true;
    }

    fn target_failed(&mut self, err: io::Error) {
        self.up.target_ok = false;
        self.up.out_start = self.up.out_end;
        self.begin_close(close::INTERNAL_ERROR, "Target connection error", End::TargetError(err));
    }

    /// Client → target. Ready once nothing more will be read from the client and everything
    /// decoded has reached the target.
    fn poll_up(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let up = &mut self.up;
            if up.out_start < up.out_end {
                let buf = up.buf.held();
                match Pin::new(&mut self.target).poll_write(cx, &buf[up.out_start..up.out_end]) {
                    Poll::Ready(Ok(0)) => self.target_failed(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => {
                        up.out_start += n;
                        up.dirty = true;
                        self.to_target += n as u64;
                        if let Some(tap) = &mut self.tap {
                            tap.traffic(">");
                        }
                    }
                    Poll::Ready(Err(e)) => self.target_failed(e),
                    Poll::Pending => return Poll::Pending,
                }
                continue;
            }
            if up.dirty && up.target_ok {
                match Pin::new(&mut self.target).poll_flush(cx) {
                    Poll::Ready(Ok(())) => up.dirty = false,
                    Poll::Ready(Err(e)) => self.target_failed(e),
                    Poll::Pending => return Poll::Pending,
                }
                continue;
            }
            // All decoded output is out: move any partial frame to the front of the buffer.
            if up.pos == up.filled {
                up.pos = 0;
                up.filled = 0;
            } else if up.pos > 0 {
                let (pos, filled) = (up.pos, up.filled);
                up.buf.held().copy_within(pos..filled, 0);
                up.filled -= pos;
                up.pos = 0;
            }
            up.out_start = 0;
            up.out_end = 0;

            if up.mode == ReadMode::Done {
                if up.target_ok && !up.target_shut {
                    // Half-close: the target sees EOF after the last byte, and may still answer.
                    if Pin::new(&mut self.target).poll_shutdown(cx).is_pending() {
                        return Poll::Pending;
                    }
                    up.target_shut = true;
                }
                up.buf.release();
                return Poll::Ready(());
            }

            let buf = up.buf.get();
            let mut read = ReadBuf::new(&mut buf[up.filled..]);
            match Pin::new(&mut self.client).poll_read(cx, &mut read) {
                Poll::Pending => {
                    if up.filled == 0 {
                        up.buf.release();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => self.client_failed(e),
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    self.set_end(End::ClientGone);
                    self.up.mode = ReadMode::Done;
                    // Nobody reads our frames any more; finish the target side and stop.
                    if !self.close_sent {
                        self.down.client_ok = false;
                    }
                    self.changed = true;
                }
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    up.filled += n;
                    if up.mode == ReadMode::Discard {
                        up.pos = up.filled;
                    } else {
                        if let Some(tap) = &mut self.tap {
                            tap.traffic("}");
                        }
                        self.decode_all();
                    }
                }
            }
        }
    }

    /// Parses what the client sent, acting on control frames as they come.
    fn decode_all(&mut self) {
        let before = self.up.out_end;
        while self.up.mode == ReadMode::Frames {
            let Some(event) = self.up.decode(self.settings.max_message) else {
                break;
            };
            match event {
                Event::Ping(payload, n) => {
                    if !self.closing {
                        self.queue_control(ControlFrame::new(OP_PONG, &payload[..n]));
                    }
                }
                Event::Pong => {}
                Event::Close(Ok(CloseFrame { code, reason })) => {
                    self.up.mode = ReadMode::Done;
                    self.up.pos = self.up.filled;
                    // The client wants no more data: a frame that has not begun to go out is
                    // dropped, so the close reply comes next (noVNC logs an error for data that
                    // arrives after its close). One half written is finished, to keep the framing.
                    if self.down.untouched {
                        self.to_client -= self.down.payload as u64;
                        self.down.start = self.down.end;
                        self.down.untouched = false;
                    }
                    let reply = match code {
                        Some(code) => ControlFrame::close(code, &reason),
                        None => ControlFrame::new(OP_CLOSE, &[]),
                    };
                    self.set_end(End::ClientClosed(code, reason));
                    if !self.closing {
                        // websockify answers with the client's own code and reason.
                        self.queue_close(reply);
                    }
                    self.changed = true;
                }
                Event::Close(Err(violation)) | Event::Refuse(violation) => {
                    self.up.mode = ReadMode::Discard;
                    self.up.pos = self.up.filled;
                    self.begin_close(violation.code, violation.reason, End::Refused(violation));
                }
            }
        }
        if let Some(tap) = &mut self.tap
            && self.up.out_end > before
        {
            tap.from_client(&self.up.buf.held()[before..self.up.out_end]);
        }
        if !self.up.target_ok {
            self.up.out_start = self.up.out_end;
        }
    }

    /// Target → client. Ready once the close frame is out (or the client is gone).
    fn poll_down(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let down = &mut self.down;
            if !down.client_ok {
                down.buf.release();
                return Poll::Ready(());
            }
            if down.start < down.end {
                let buf = down.buf.held();
                match Pin::new(&mut self.client).poll_write(cx, &buf[down.start..down.end]) {
                    Poll::Ready(Ok(0)) => self.client_failed(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => {
                        down.start += n;
                        down.untouched = false;
                        down.dirty = true;
                        if down.start == down.end
                            && let Some(tap) = &mut self.tap
                        {
                            tap.traffic("<");
                        }
                    }
                    Poll::Ready(Err(e)) => self.client_failed(e),
                    Poll::Pending => return Poll::Pending,
                }
                continue;
            }
            if let Some((frame, done)) = &mut self.writing {
                match Pin::new(&mut self.client).poll_write(cx, &frame.as_bytes()[*done..]) {
                    Poll::Ready(Ok(0)) => self.client_failed(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => {
                        *done += n;
                        down.dirty = true;
                        if *done == frame.as_bytes().len() {
                            if frame.opcode() == OP_CLOSE {
                                self.close_sent = true;
                                self.changed = true;
                            }
                            self.writing = None;
                        }
                    }
                    Poll::Ready(Err(e)) => self.client_failed(e),
                    Poll::Pending => return Poll::Pending,
                }
                continue;
            }
            // Pongs owed for pings that came before the close go out before it.
            if let Some(frame) = self.control.pop_front() {
                self.writing = Some((frame, 0));
                continue;
            }
            if let Some(frame) = self.close_frame.take() {
                self.writing = Some((frame, 0));
                self.control = VecDeque::new();
                continue;
            }
            if down.dirty {
                match Pin::new(&mut self.client).poll_flush(cx) {
                    Poll::Ready(Ok(())) => down.dirty = false,
                    Poll::Ready(Err(e)) => self.client_failed(e),
                    Poll::Pending => return Poll::Pending,
                }
                continue;
            }
            if self.close_sent {
                if !down.client_shut {
                    // The server closes the TCP connection first (RFC 6455 7.1.1); we keep
                    // reading the client's close reply on the other half.
                    ready!(Pin::new(&mut self.client).poll_shutdown(cx)).ok();
                    down.client_shut = true;
                }
                down.buf.release();
                return Poll::Ready(());
            }
            if !down.reading {
                return Poll::Pending;
            }

            let buf = down.buf.get();
            // Base64 text is 4/3 of the bytes: read only what fits once encoded.
            let room = match down.base64 {
                true => MAX_SERVER_HEADER + b64::max_input(buf.len() - MAX_SERVER_HEADER),
                false => buf.len(),
            };
            let mut read = ReadBuf::new(&mut buf[MAX_SERVER_HEADER..room]);
            match Pin::new(&mut self.target).poll_read(cx, &mut read) {
                Poll::Pending => {
                    down.buf.release();
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => self.target_failed(e),
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    if self.hold_eof {
                        self.eof_held = true;
                        down.reading = false;
                        down.buf.release();
                        return Poll::Pending;
                    }
                    self.target_closed();
                }
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    if let Some(tap) = &mut self.tap {
                        tap.traffic("{");
                        tap.to_client(&buf[MAX_SERVER_HEADER..MAX_SERVER_HEADER + n]);
                    }
                    let (len, opcode) = match down.base64 {
                        true => (b64::encode_in_place(buf, MAX_SERVER_HEADER, n), OP_TEXT),
                        false => (n, OP_BINARY),
                    };
                    down.start = frame::write_server_header(buf, MAX_SERVER_HEADER, opcode, len);
                    down.end = MAX_SERVER_HEADER + len;
                    down.payload = n;
                    down.untouched = true;
                    self.to_client += n as u64;
                }
            }
        }
    }
}

impl Up {
    /// Decodes buffered client bytes until an event needs the relay, or more bytes are needed.
    fn decode(&mut self, max_message: u64) -> Option<Event> {
        let buf = self.buf.held();
        loop {
            if self.remaining > 0 {
                let available = self.filled - self.pos;
                if available == 0 {
                    return None;
                }
                let n = usize::try_from(self.remaining).map_or(available, |r| r.min(available));
                frame::unmask_move(buf, self.pos, self.out_end, n, self.mask, self.mask_offset);
                self.pos += n;
                self.remaining -= n as u64;
                self.mask_offset += n as u64;
                let Some(decoder) = &mut self.base64 else {
                    self.out_end += n;
                    continue;
                };
                match decoder.decode(buf, self.out_end, self.out_end, n) {
                    Ok(bytes) => self.out_end += bytes,
                    Err(violation) => return Some(Event::Refuse(violation)),
                }
                // The message's last frame is all here: its last group must be complete.
                if self.remaining == 0
                    && !self.in_message
                    && let Err(violation) = decoder.end_message()
                {
                    return Some(Event::Refuse(violation));
                }
                continue;
            }
            let header = match frame::parse_client_header(&buf[self.pos..self.filled]) {
                Ok(Some(header)) => header,
                Ok(None) => return None,
                Err(violation) => return Some(Event::Refuse(violation)),
            };
            self.heard = true;
            match header.opcode {
                OP_TEXT if self.base64.is_none() => {
                    return Some(refuse(
                        close::UNSUPPORTED_DATA,
                        "Unsupported: Text frames are not supported",
                    ));
                }
                // Base64 clients send text frames (websockify's old mode decoded binary ones too).
                OP_BINARY | OP_TEXT | OP_CONTINUATION => {
                    if header.opcode != OP_CONTINUATION && self.in_message {
                        return Some(refuse(close::PROTOCOL_ERROR, "Expected a continuation frame"));
                    }
                    if header.opcode == OP_CONTINUATION && !self.in_message {
                        return Some(refuse(close::PROTOCOL_ERROR, "Continuation frame without a message"));
                    }
                    self.message_len += header.payload_len;
                    if self.message_len > max_message {
                        return Some(refuse(close::MESSAGE_TOO_BIG, "Message too big"));
                    }
                    self.in_message = !header.fin;
                    if header.fin {
                        self.message_len = 0;
                    }
                    self.pos += header.header_len;
                    self.remaining = header.payload_len;
                    self.mask = header.mask;
                    self.mask_offset = 0;
                    if header.fin
                        && header.payload_len == 0
                        && let Some(decoder) = &mut self.base64
                        && let Err(violation) = decoder.end_message()
                    {
                        return Some(Event::Refuse(violation));
                    }
                }
                opcode => {
                    // Control frames are at most 131 bytes: wait until the whole frame is here.
                    let len = header.payload_len as usize;
                    let total = header.header_len + len;
                    if self.filled - self.pos < total {
                        return None;
                    }
                    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
                    let start = self.pos + header.header_len;
                    for (i, byte) in payload[..len].iter_mut().enumerate() {
                        *byte = buf[start + i] ^ header.mask[i % 4];
                    }
                    self.pos += total;
                    return Some(match opcode {
                        OP_PING => Event::Ping(payload, len),
                        OP_PONG => Event::Pong,
                        _ => Event::Close(frame::parse_close(&payload[..len])),
                    });
                }
            }
        }
    }
}

fn refuse(code: u16, reason: &'static str) -> Event {
    Event::Refuse(Violation { code, reason })
}
