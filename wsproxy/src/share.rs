//! Shared consoles (`--share`, or `share = true` for a service): one target connection, fanned
//! out to every window on it.
//!
//! A QEMU serial chardev, a telnet session or a serial server accepts one connection at a time.
//! With sharing, the first window on a target connects to it and later windows join that
//! connection instead of opening their own:
//! - every window sees everything the target sends; one that joins late first gets the last
//!   [`REPLAY`] bytes, so its screen is not blank;
//! - input from any window goes to the target, each window's bytes whole and in the order they
//!   came (with `--share-view-only`, only the oldest open window's; the others' is dropped);
//! - a window more than [`MAX_LAG`] behind the target is dropped (its session closes with 1008)
//!   rather than slowing the others: the target is read at its own pace, never at a window's;
//! - when the last window leaves, the target connection is closed, unless `--share-keep` (then
//!   the output of the meantime is read and its last [`REPLAY`] bytes kept for the next window).
//!
//! The relay does not know any of this: a [`Window`] reads and writes like a target stream, and
//! [`Upstream`] is what a session relays to, its own target connection or a window.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{OnceCell, mpsc};
use tokio_util::sync::{CancellationToken, PollSender};

use crate::route::{Destination, Resolved};
use crate::sessions::manager::Lease;
use crate::target::TargetStream;

/// What a window that joins late is shown first: the end of the target's output.
pub const REPLAY: usize = 64 * 1024;
/// How far a window may fall behind the target's output before it is dropped.
pub const MAX_LAG: u64 = 1 << 20;
/// The close code of a dropped window (policy violation: it did not keep up).
pub const TOO_SLOW: u16 = 1008;
/// Largest read from the target.
const READ_CHUNK: usize = 64 * 1024;
/// Writes from the windows waiting for the target, at most; a full queue makes windows wait.
const INPUT_QUEUE: usize = 64;

/// What is shared and how (from the command line; a service's `share = true` adds its sessions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// `--share`: every session shares its target's connection.
    pub all: bool,
    /// `--share-keep`: the connection stays when the last window leaves.
    pub keep: bool,
    /// `--share-view-only`: only the oldest open window's input reaches the target.
    pub view_only: bool,
}

/// Why a connection could not be had: what to log, and what the client is told.
pub type ConnectError = (String, String);

/// The open shared connections, by what they connect to.
#[derive(Default)]
pub struct Shares {
    policy: Policy,
    open: Arc<Mutex<HashMap<String, Arc<Share>>>>,
}

/// What a session relays to: a connection of its own, or a window on a shared one.
pub enum Upstream {
    Own(TargetStream),
    Shared(Window),
}

/// One shared target connection.
struct Share {
    key: String,
    policy: Policy,
    /// Where `Share` is listed, to leave the list when it closes.
    registry: Weak<Mutex<HashMap<String, Arc<Share>>>>,
    /// Set once by the first window: the input queue of the connection, or why it failed.
    connected: OnceCell<Result<mpsc::Sender<Bytes>, ConnectError>>,
    hub: Mutex<Hub>,
    /// Cancelled when the last window leaves (without `keep`): the connection closes.
    stop: CancellationToken,
}

/// The target's output and where each window is in it.
#[derive(Default)]
struct Hub {
    /// Output still kept, as (offset in the target's stream, bytes), contiguous up to `head`.
    log: VecDeque<(u64, Bytes)>,
    /// Bytes the target has sent so far.
    head: u64,
    /// The windows, by id (join order: the first is the oldest).
    seats: BTreeMap<u64, Seat>,
    next_id: u64,
    /// The target connection is over: windows read what is left, then end of stream.
    ended: bool,
}

#[derive(Default)]
struct Seat {
    offset: u64,
    lagged: bool,
    reader: Option<Waker>,
    lag_watcher: Option<Waker>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data here (no invariant spans an unwind).
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shares {
    pub fn new(policy: Policy) -> Self {
        Shares {
            policy,
            open: Arc::default(),
        }
    }

    /// The key of the shared connection a session uses, or `None` when it has its own.
    pub fn key(&self, resolved: &Resolved) -> Option<String> {
        match &resolved.destination {
            Destination::Target(target) => self.policy.all.then(|| format!("target {target}")),
            Destination::Session(lease) => Self::session_key(lease),
        }
    }

    /// The key of an on-demand session's shared connection, for its clients here and those other
    /// instances forward (`http::forward`); `None` unless the session runs here and is shared
    /// (the manager knows `--share` too). A client of a session another instance runs is piped
    /// there as it is: that instance fans it out with its own clients.
    pub fn session_key(lease: &Lease) -> Option<String> {
        lease.shared().then(|| format!("session {}", lease.session()))
    }

    /// A window on the connection `key` names; the first window connects with `connect`, the
    /// others wait for it (and share its failure).
    pub async fn open<F>(&self, key: String, connect: F) -> Result<Upstream, ConnectError>
    where
        F: Future<Output = Result<TargetStream, ConnectError>>,
    {
        let (share, id) = {
            let mut open = lock(&self.open);
            let share = match open.get(&key) {
                Some(share) if !share.closing() => share.clone(),
                _ => {
                    let share = Arc::new(Share {
                        key: key.clone(),
                        policy: self.policy,
                        registry: Arc::downgrade(&self.open),
                        connected: OnceCell::new(),
                        hub: Mutex::default(),
                        stop: CancellationToken::new(),
                    });
                    open.insert(key, share.clone());
                    share
                }
            };
            let id = share.seat();
            (share, id)
        };
        // From here the seat is the window's: dropping the window frees it, whatever happens.
        let mut window = Window {
            share: share.clone(),
            id,
            input: PollSender::new(closed_sender()),
        };
        let connected = share
            .connected
            .get_or_init(|| async {
                let stream = connect.await?;
                let (input, queue) = mpsc::channel(INPUT_QUEUE);
                tokio::spawn(pump(share.clone(), stream, queue));
                Ok(input)
            })
            .await;
        match connected {
            Ok(input) => {
                window.input = PollSender::new(input.clone());
                Ok(Upstream::Shared(window))
            }
            Err(e) => {
                share.unlist();
                Err(e.clone())
            }
        }
    }
}

/// A sender whose receiver is gone, until the window has the real one.
fn closed_sender() -> mpsc::Sender<Bytes> {
    mpsc::channel(1).0
}

impl Share {
    /// The connection is closing or closed: a new window needs a new one.
    fn closing(&self) -> bool {
        self.stop.is_cancelled() || lock(&self.hub).ended || matches!(self.connected.get(), Some(Err(_)))
    }

    /// A new seat at the end of the kept output (or at its start, for the first window).
    fn seat(&self) -> u64 {
        let mut hub = lock(&self.hub);
        let id = hub.next_id;
        hub.next_id += 1;
        let replay_from = hub.head.saturating_sub(REPLAY as u64);
        let offset = hub.log.front().map_or(hub.head, |(start, _)| (*start).max(replay_from));
        hub.seats.insert(
            id,
            Seat {
                offset,
                ..Seat::default()
            },
        );
        id
    }

    /// Leaves the list of open connections (if still listed).
    fn unlist(self: &Arc<Self>) {
        if let Some(registry) = self.registry.upgrade() {
            let mut open = lock(&registry);
            if open.get(&self.key).is_some_and(|listed| Arc::ptr_eq(listed, self)) {
                open.remove(&self.key);
            }
        }
    }

    /// Output from the target: kept for every window, and windows too far behind are dropped.
    fn push(&self, chunk: Bytes) {
        let mut hub = lock(&self.hub);
        let start = hub.head;
        hub.head += chunk.len() as u64;
        hub.log.push_back((start, chunk));
        let head = hub.head;
        for seat in hub.seats.values_mut() {
            if seat.lagged {
                continue;
            }
            if head - seat.offset > MAX_LAG {
                tracing::info!(
                    "{}: a window is more than 1 MiB behind the target; closing it (1008)",
                    self.key
                );
                seat.lagged = true;
                if let Some(waker) = seat.lag_watcher.take() {
                    waker.wake();
                }
            }
            if let Some(waker) = seat.reader.take() {
                waker.wake();
            }
        }
        hub.trim();
    }

    /// The target connection is over: every window gets what is left, then end of stream.
    fn end(self: &Arc<Self>) {
        self.unlist();
        let mut hub = lock(&self.hub);
        hub.ended = true;
        for seat in hub.seats.values_mut() {
            if let Some(waker) = seat.reader.take() {
                waker.wake();
            }
        }
    }
}

impl Hub {
    /// Forgets output that no window needs and that is older than the replay.
    fn trim(&mut self) {
        let replay_from = self.head.saturating_sub(REPLAY as u64);
        let oldest_reader = self
            .seats
            .values()
            .filter(|seat| !seat.lagged)
            .map(|seat| seat.offset)
            .min()
            .unwrap_or(self.head);
        let keep_from = replay_from.min(oldest_reader);
        while let Some((start, chunk)) = self.log.front() {
            if start + chunk.len() as u64 > keep_from {
                break;
            }
            self.log.pop_front();
        }
    }
}

/// Owns the target connection: reads it into the hub at the target's pace, writes the windows'
/// input to it, until the target ends or the last window leaves.
async fn pump(share: Arc<Share>, target: TargetStream, mut input: mpsc::Receiver<Bytes>) {
    let (mut read, mut write) = tokio::io::split(target);
    let reading = async {
        let mut buf = BytesMut::new();
        loop {
            buf.reserve(READ_CHUNK);
            match read.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => share.push(buf.split().freeze()),
            }
        }
    };
    let writing = async {
        while let Some(bytes) = input.recv().await {
            if write.write_all(&bytes).await.is_err() || write.flush().await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = reading => tracing::debug!("{}: the shared target connection ended", share.key),
        () = writing => tracing::debug!("{}: the shared target connection failed", share.key),
        () = share.stop.cancelled() => tracing::debug!("{}: the last window left; closed", share.key),
    }
    share.end();
}

/// One window on a shared connection: reads what the target sent (from where the window joined),
/// writes to the target. Dropping it leaves the share.
pub struct Window {
    share: Arc<Share>,
    id: u64,
    input: PollSender<Bytes>,
}

impl Window {
    /// This window's input reaches the target: always, or with `--share-view-only` when it is
    /// the oldest window open.
    fn may_type(&self) -> bool {
        !self.share.policy.view_only || lock(&self.share.hub).seats.keys().next() == Some(&self.id)
    }

    /// A handle that resolves once this window has fallen too far behind and is dropped.
    pub fn lagged(&self) -> Lagged {
        Lagged {
            share: self.share.clone(),
            id: self.id,
        }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // The registry before the hub (as in `open`), so that no window joins a share being closed.
        let registry = self.share.registry.upgrade();
        let open = registry.as_deref().map(lock);
        let mut hub = lock(&self.share.hub);
        hub.seats.remove(&self.id);
        hub.trim();
        if hub.seats.is_empty() && !self.share.policy.keep {
            self.share.stop.cancel();
            if let Some(mut open) = open
                && open
                    .get(&self.share.key)
                    .is_some_and(|listed| Arc::ptr_eq(listed, &self.share))
            {
                open.remove(&self.share.key);
            }
        }
    }
}

impl AsyncRead for Window {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut hub = lock(&self.share.hub);
        let hub = &mut *hub;
        let Some(seat) = hub.seats.get_mut(&self.id) else {
            return Poll::Ready(Ok(()));
        };
        if seat.lagged {
            // Dropped: `Lagged` tells the session, which closes with 1008.
            return Poll::Pending;
        }
        if seat.offset < hub.head {
            for (start, chunk) in &hub.log {
                let end = start + chunk.len() as u64;
                if end <= seat.offset {
                    continue;
                }
                let from = (seat.offset - start) as usize;
                let n = (chunk.len() - from).min(buf.remaining());
                buf.put_slice(&chunk[from..from + n]);
                seat.offset += n as u64;
                if buf.remaining() == 0 {
                    break;
                }
            }
            hub.trim();
            return Poll::Ready(Ok(()));
        }
        if hub.ended {
            return Poll::Ready(Ok(()));
        }
        seat.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for Window {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if !self.may_type() {
            return Poll::Ready(Ok(buf.len()));
        }
        let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "the shared target connection is closed");
        ready!(self.input.poll_reserve(cx)).map_err(|_| gone())?;
        self.input.send_item(Bytes::copy_from_slice(buf)).map_err(|_| gone())?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// A window that is done writing leaves the target connection open for the others.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Resolves once its window has fallen more than [`MAX_LAG`] behind.
pub struct Lagged {
    share: Arc<Share>,
    id: u64,
}

impl Lagged {
    /// The close code and reason the window's client gets.
    pub async fn wait(&self) -> (u16, String) {
        std::future::poll_fn(|cx| {
            let mut hub = lock(&self.share.hub);
            match hub.seats.get_mut(&self.id) {
                Some(seat) if seat.lagged => Poll::Ready(()),
                Some(seat) => {
                    seat.lag_watcher = Some(cx.waker().clone());
                    Poll::Pending
                }
                None => Poll::Pending,
            }
        })
        .await;
        (
            TOO_SLOW,
            "Too slow for the shared console: more than 1 MiB behind".to_owned(),
        )
    }
}

impl Upstream {
    /// Resolves when the session must close because of the share (a window dropped for lag).
    pub fn lagged(&self) -> Option<Lagged> {
        match self {
            Upstream::Own(_) => None,
            Upstream::Shared(window) => Some(window.lagged()),
        }
    }
}

// Each call goes to the stream the session has by a plain match: no dynamic dispatch on the path
// every byte of every session takes.
impl AsyncRead for Upstream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Own(stream) => Pin::new(stream).poll_read(cx, buf),
            Upstream::Shared(window) => Pin::new(window).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upstream::Own(stream) => Pin::new(stream).poll_write(cx, buf),
            Upstream::Shared(window) => Pin::new(window).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Own(stream) => Pin::new(stream).poll_flush(cx),
            Upstream::Shared(window) => Pin::new(window).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Own(stream) => Pin::new(stream).poll_shutdown(cx),
            Upstream::Shared(window) => Pin::new(window).poll_shutdown(cx),
        }
    }
}
