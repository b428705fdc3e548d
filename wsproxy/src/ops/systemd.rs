//! systemd: socket activation and readiness notices, both optional and silent without systemd.
//!
//! Socket activation (sd_listen_fds(3): `LISTEN_FDS` descriptors from 3 on, for the process
//! `LISTEN_PID` names): the listening sockets passed are served instead of binding the listen
//! address. The command line still names one (the positional port or `--unix-listen`), so a
//! unit's `ExecStart` stays a websockify command line that also works without activation; it is
//! not bound while sockets are passed. TCP and UNIX stream sockets, several at once, all serve the
//! same thing. Only listening sockets (`Accept=no`): with `Accept=yes` use `--inetd`.
//!
//! Notices (sd_notify(3), a datagram to `NOTIFY_SOCKET`) for `Type=notify` and
//! `Type=notify-reload`: `READY=1` once serving, `RELOADING=1` with `MONOTONIC_USEC` then
//! `READY=1` around a reload, `STOPPING=1` as the drain begins.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use nix::sys::socket::{getsockopt, sockopt};

use crate::listener::Bound;

/// The sockets systemd passed, if it passed any to this process. Read once, before any thread
/// starts (listenfd removes the variables so no child sees them).
pub fn listen_fds() -> Result<Option<Vec<Bound>>, String> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let mut bound = Vec::with_capacity(fds.len());
    for index in 0..fds.len() {
        let fd = 3 + index;
        let socket = match fds.take_tcp_listener(index) {
            Ok(Some(tcp)) => Bound::Tcp(tcp),
            _ => match fds.take_unix_listener(index) {
                Ok(Some(unix)) => {
                    let path = unix
                        .local_addr()
                        .ok()
                        .and_then(|a| a.as_pathname().map(PathBuf::from))
                        .unwrap_or_else(|| PathBuf::from(format!("(systemd socket {fd})")));
                    Bound::Unix {
                        listener: unix,
                        path,
                        remove: false,
                    }
                }
                _ => {
                    return Err(format!(
                        "LISTEN_FDS: descriptor {fd} is not a TCP or UNIX stream socket (wsproxy serves \
                         ListenStream= sockets)"
                    ));
                }
            },
        };
        if !listening(&socket) {
            return Err(format!(
                "LISTEN_FDS: descriptor {fd} is a connection, not a listening socket: use Accept=no \
                 (or --inetd for Accept=yes)"
            ));
        }
        bound.push(socket);
    }
    Ok(Some(bound))
}

fn listening(bound: &Bound) -> bool {
    let fd = match bound {
        Bound::Tcp(l) => l.as_fd(),
        Bound::Unix { listener, .. } => listener.as_fd(),
        Bound::Connection(fd) => fd.as_fd(),
    };
    getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false)
}

/// `READY=1`: serving (again, after a reload).
pub fn ready() {
    notify("READY=1\nSTATUS=serving");
}

/// `RELOADING=1`, stamped with the monotonic clock as sd_notify(3) asks for `Type=notify-reload`.
pub fn reloading() {
    let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1_000)
        .unwrap_or(0);
    notify(&format!("RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC={usec}"));
}

/// `STOPPING=1`: the drain has begun.
pub fn stopping() {
    notify("STOPPING=1\nSTATUS=stopping: closing sessions");
}

/// Sends `message` to `NOTIFY_SOCKET` if it is set; a failure is logged, never fatal.
pub fn notify(message: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&socket, message) {
        tracing::warn!(
            "cannot notify systemd at NOTIFY_SOCKET={}: {e}",
            socket.to_string_lossy()
        );
    }
}

fn send(socket: &std::ffi::OsStr, message: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = socket.as_bytes();
    let datagram = UnixDatagram::unbound()?;
    let sent = match bytes.strip_prefix(b"@") {
        // An abstract socket (systemd's own are paths; abstract ones are allowed too).
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            datagram.send_to_addr(message.as_bytes(), &addr)?
        }
        None if bytes.starts_with(b"/") => datagram.send_to(message.as_bytes(), socket)?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "only a path or an @abstract name is supported",
            ));
        }
    };
    if sent != message.len() {
        return Err(io::Error::other("the notice was cut short"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_reach_path_and_abstract_sockets() {
        let dir = std::env::temp_dir().join(format!("wsproxy-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("wsproxy-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_server = UnixDatagram::bind_addr(&addr).unwrap();
        send(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let n = abstract_server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");

        assert!(send(std::ffi::OsStr::new("relative"), "X").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
