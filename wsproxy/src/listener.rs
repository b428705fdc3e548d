//! Listening sockets: TCP, a UNIX socket, or the socket inetd/systemd hands over on stdin.
//!
//! Sockets are bound with std before the runtime exists, so `--daemon` can fork safely and a bind
//! error is a start-up error (exit 64), then handed to tokio inside the runtime.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrLike, SockaddrStorage, sockopt};
use nix::sys::stat::{Mode, umask};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::either::Either;

use crate::config::Listen;

/// A client connection before TLS detection.
pub type Plain = Either<TcpStream, UnixStream>;

/// How many connections the kernel queues before `accept`; bursts of browser tabs and load tests
/// overflow the usual 128.
const BACKLOG: i32 = 1024;

/// A bound socket, not yet registered with the runtime.
pub enum Bound {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener, PathBuf),
    /// inetd "nowait": stdin is one client connection, served and then wsproxy exits.
    Connection(OwnedFd),
}

impl Bound {
    /// What to print so people (and tests, with port 0) know where to connect.
    pub fn describe(&self) -> String {
        match self {
            Bound::Tcp(l) => l
                .local_addr()
                .map_or_else(|e| format!("tcp (unknown address: {e})"), |a| a.to_string()),
            Bound::Unix(_, path) => format!("unix:{}", path.display()),
            Bound::Connection(_) => "the connection on stdin".into(),
        }
    }

    /// Path to remove at exit, for UNIX sockets.
    pub fn socket_path(&self) -> Option<&Path> {
        match self {
            Bound::Unix(_, path) => Some(path),
            _ => None,
        }
    }
}

pub fn bind(listen: &Listen) -> Result<Bound, String> {
    match listen {
        Listen::Tcp(addr) => bind_tcp(*addr).map(Bound::Tcp).map_err(|e| {
            let hint = match e.kind() {
                io::ErrorKind::AddrInUse => " (another program uses this port: pick another one or stop it)",
                io::ErrorKind::PermissionDenied => " (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
                io::ErrorKind::AddrNotAvailable => " (that address is not on this machine)",
                _ => "",
            };
            format!("cannot listen on {addr}: {e}{hint}")
        }),
        Listen::Unix { path, mode } => bind_unix(path, *mode)
            .map(|l| Bound::Unix(l, path.clone()))
            .map_err(|e| format!("cannot listen on UNIX socket {}: {e}", path.display())),
        Listen::Inetd => from_stdin(),
    }
}

fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(addr))?;
    socket::listen(&fd, socket::Backlog::new(BACKLOG).unwrap_or(socket::Backlog::MAXCONN))?;
    Ok(std::net::TcpListener::from(fd))
}

fn bind_unix(path: &Path, mode: u32) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        // A stale socket from an earlier run is replaced (as websockify does); anything else is kept.
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ));
        }
        Err(_) => {}
    }
    // The socket gets its permissions at bind time, so no one can connect in a window before chmod.
    let old = umask(Mode::from_bits_truncate(0o777 & !mode));
    let result = std::os::unix::net::UnixListener::bind(path);
    umask(old);
    result
}

/// `--inetd`: stdin is either a listening socket (inetd "wait", systemd socket activation with
/// Accept=no) or one accepted connection (inetd "nowait").
fn from_stdin() -> Result<Bound, String> {
    let fd = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("--inetd: cannot use stdin: {e}"))?;
    let family = socket::getsockname::<SockaddrStorage>(std::os::fd::AsRawFd::as_raw_fd(&fd))
        .map_err(|_| "--inetd: stdin is not a socket (start wsproxy from inetd or systemd)".to_string())?
        .family();
    let listening = socket::getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false);
    match (listening, family) {
        (false, _) => Ok(Bound::Connection(fd)),
        (true, Some(AddressFamily::Unix)) => Ok(Bound::Unix(
            std::os::unix::net::UnixListener::from(fd),
            PathBuf::from("(stdin)"),
        )),
        (true, _) => Ok(Bound::Tcp(std::net::TcpListener::from(fd))),
    }
}

/// The bound socket, registered with the runtime.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
    Connection(Option<Plain>),
}

impl Listener {
    pub fn register(bound: Bound) -> io::Result<Listener> {
        Ok(match bound {
            Bound::Tcp(l) => {
                l.set_nonblocking(true)?;
                Listener::Tcp(TcpListener::from_std(l)?)
            }
            Bound::Unix(l, _) => {
                l.set_nonblocking(true)?;
                Listener::Unix(UnixListener::from_std(l)?)
            }
            Bound::Connection(fd) => {
                let family = socket::getsockname::<SockaddrStorage>(std::os::fd::AsRawFd::as_raw_fd(&fd))?.family();
                let plain = if family == Some(AddressFamily::Unix) {
                    let s = std::os::unix::net::UnixStream::from(fd);
                    s.set_nonblocking(true)?;
                    Either::Right(UnixStream::from_std(s)?)
                } else {
                    let s = std::net::TcpStream::from(fd);
                    s.set_nonblocking(true)?;
                    Either::Left(TcpStream::from_std(s)?)
                };
                Listener::Connection(Some(plain))
            }
        })
    }

    /// The next client and a printable peer address; `Ok(None)` once a single inetd connection
    /// has been handed out.
    pub async fn accept(&mut self) -> io::Result<Option<(Plain, String)>> {
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                // Interactive consoles send small messages; Nagle would delay each keystroke.
                stream.set_nodelay(true)?;
                Ok(Some((Either::Left(stream), peer.to_string())))
            }
            Listener::Unix(l) => {
                let (stream, _) = l.accept().await?;
                let peer = l
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(|p| p.display().to_string()));
                Ok(Some((
                    Either::Right(stream),
                    format!("unix:{}", peer.unwrap_or_default()),
                )))
            }
            Listener::Connection(one) => Ok(one.take().map(|s| (s, "inetd".to_string()))),
        }
    }
}
