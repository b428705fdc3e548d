//! Listening sockets: TCP, a UNIX socket, or the socket inetd/systemd hands over on stdin (or
//! those systemd passes by socket activation, `ops::systemd`).
//!
//! Sockets are bound with std before the runtime exists, so `--daemon` can fork safely and a bind
//! error is a start-up error (exit 64), then handed to tokio inside the runtime. With several
//! workers (`--workers`), each gets its own TCP socket on the same address (`SO_REUSEPORT`: the
//! kernel spreads new connections over them); a UNIX or passed socket is shared, every worker
//! accepting on its own handle of it.

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
    Unix {
        listener: std::os::unix::net::UnixListener,
        path: PathBuf,
        /// Ours to remove at exit (not one systemd or inetd passed).
        remove: bool,
    },
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
            Bound::Unix { path, .. } => format!("unix:{}", path.display()),
            Bound::Connection(_) => "the connection on stdin".into(),
        }
    }

    /// Path to remove at exit, for UNIX sockets wsproxy bound.
    pub fn socket_path(&self) -> Option<&Path> {
        match self {
            Bound::Unix { path, remove: true, .. } => Some(path),
            _ => None,
        }
    }

    /// Another handle on the same socket, for another worker (never the one to remove at exit).
    pub fn try_clone(&self) -> io::Result<Bound> {
        Ok(match self {
            Bound::Tcp(l) => Bound::Tcp(l.try_clone()?),
            Bound::Unix { listener, path, .. } => Bound::Unix {
                listener: listener.try_clone()?,
                path: path.clone(),
                remove: false,
            },
            Bound::Connection(fd) => Bound::Connection(fd.try_clone()?),
        })
    }
}

/// The listeners of `workers` event loops (`--workers`), one list each: for TCP a socket each,
/// all bound to the same address with `SO_REUSEPORT`; otherwise one socket, shared.
pub fn bind_workers(listen: &Listen, workers: usize) -> Result<Vec<Vec<Bound>>, String> {
    let Listen::Tcp(addr) = listen else {
        return share(vec![bind(listen)?], workers);
    };
    if workers <= 1 {
        return Ok(vec![vec![bind(listen)?]]);
    }
    let first = bind_tcp(*addr, true).map_err(|e| tcp_error(*addr, &e))?;
    // Port 0: the others join the port the kernel picked for the first.
    let addr = first.local_addr().map_err(|e| tcp_error(*addr, &e))?;
    let mut all = vec![vec![Bound::Tcp(first)]];
    for _ in 1..workers {
        let next = bind_tcp(addr, true).map_err(|e| tcp_error(addr, &e))?;
        all.push(vec![Bound::Tcp(next)]);
    }
    Ok(all)
}

/// Sockets bound once (a UNIX socket, systemd's): every worker accepts on each.
pub fn share(bound: Vec<Bound>, workers: usize) -> Result<Vec<Vec<Bound>>, String> {
    let mut all = Vec::with_capacity(workers);
    for _ in 1..workers.max(1) {
        let copies = bound
            .iter()
            .map(Bound::try_clone)
            .collect::<io::Result<Vec<Bound>>>()
            .map_err(|e| format!("cannot share the listening socket between workers: {e}"))?;
        all.push(copies);
    }
    all.insert(0, bound);
    Ok(all)
}

fn tcp_error(addr: SocketAddr, e: &io::Error) -> String {
    let hint = match e.kind() {
        io::ErrorKind::AddrInUse => " (another program uses this port: pick another one or stop it)",
        io::ErrorKind::PermissionDenied => " (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
        io::ErrorKind::AddrNotAvailable => " (that address is not on this machine)",
        _ => "",
    };
    format!("cannot listen on {addr}: {e}{hint}")
}

pub fn bind(listen: &Listen) -> Result<Bound, String> {
    match listen {
        Listen::Tcp(addr) => bind_tcp(*addr, false).map(Bound::Tcp).map_err(|e| tcp_error(*addr, &e)),
        Listen::Unix { path, mode } => bind_unix(path, *mode)
            .map(|listener| Bound::Unix {
                listener,
                path: path.clone(),
                remove: true,
            })
            .map_err(|e| format!("cannot listen on UNIX socket {}: {e}", path.display())),
        Listen::Inetd => from_stdin(),
    }
}

fn bind_tcp(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if reuse_port {
        socket::setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
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
        (true, Some(AddressFamily::Unix)) => Ok(Bound::Unix {
            listener: std::os::unix::net::UnixListener::from(fd),
            path: PathBuf::from("(stdin)"),
            remove: false,
        }),
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
            Bound::Unix { listener, .. } => {
                listener.set_nonblocking(true)?;
                Listener::Unix(UnixListener::from_std(listener)?)
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
