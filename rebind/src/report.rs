//! Lines the library writes: the report line after a rewritten bind, the
//! startup warning about an invalid variable, and the warning about a report
//! line that could not be delivered. Each is built in a stack buffer and
//! written with one `write(2)`.

use core::mem::MaybeUninit;
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};

use libc::{c_int, sockaddr_in, sockaddr_in6, sockaddr_storage};

use crate::addr::len_of;
use crate::config::{self, Invalid};
use crate::line::Line;
use crate::real;
use crate::rewrite::Loopback;

/// Longest part of an invalid value quoted in the warning.
const QUOTE_MAX: usize = 40;

/// Which open file a descriptor refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

/// Set once this process has warned about its report descriptor.
static REPORT_WARNED: AtomicBool = AtomicBool::new(false);

/// After a rewritten bind succeeded: remember a kernel-chosen port and
/// write the report line. Leaves `errno` as it found it.
pub(crate) fn bound(fd: c_int, host: Loopback) {
    let saved = real::errno();
    if let Some(port) = bound_port(fd) {
        config::remember_chosen(port);
        if let Some((report_fd, at_startup)) = config::report_fd() {
            let line = format(host, port);
            // The identity check skips a descriptor that the program closed
            // and whose number now names something else.
            if at_startup.is_some() && identity(report_fd, PIPE_OR_SOCKET) == at_startup {
                write_line(report_fd, &line);
            } else if !REPORT_WARNED.swap(true, Ordering::Relaxed) {
                warn_unreported(report_fd, &line);
            }
        }
    }
    real::set_errno(saved);
}

/// The report line: `127.0.0.1:PORT\n` or `[::1]:PORT\n`.
pub(crate) fn format(host: Loopback, port: u16) -> Line {
    let mut line = Line::new();
    line.push(match host {
        Loopback::V4 | Loopback::Mapped => b"127.0.0.1:",
        Loopback::V6 => b"[::1]:",
    });
    line.push_decimal(u64::from(port));
    line.push(b"\n");
    line
}

/// The port `fd` is bound to, from `getsockname`; `None` for port 0 or a
/// non-internet socket.
fn bound_port(fd: c_int) -> Option<u16> {
    let mut storage = MaybeUninit::<sockaddr_storage>::zeroed();
    let mut len = len_of::<sockaddr_storage>();
    // SAFETY: `storage` is writable for `len` bytes and `len` is a valid
    // in/out length.
    let rc = unsafe { libc::getsockname(fd, storage.as_mut_ptr().cast(), &mut len) };
    if rc != 0 {
        return None;
    }
    // SAFETY: zero-initialised above, so every byte is initialised whatever
    // the kernel wrote; any bytes are a valid `sockaddr_storage`.
    let storage = unsafe { storage.assume_init() };
    let base = ptr::from_ref(&storage);
    let port = match c_int::from(storage.ss_family) {
        // SAFETY: `sockaddr_storage` is larger than and aligned for every
        // sockaddr type, and the family says the kernel wrote this one.
        libc::AF_INET => unsafe { ptr::read(base.cast::<sockaddr_in>()) }.sin_port,
        // SAFETY: as above.
        libc::AF_INET6 => unsafe { ptr::read(base.cast::<sockaddr_in6>()) }.sin6_port,
        _ => return None,
    };
    let port = u16::from_be(port);
    (port != 0).then_some(port)
}

/// The file types a report descriptor may have.
pub(crate) const PIPE_OR_SOCKET: &[libc::mode_t] = &[libc::S_IFIFO, libc::S_IFSOCK];

/// The identity of `fd` if it is open and of one of the file types `kinds`.
pub(crate) fn identity(fd: c_int, kinds: &[libc::mode_t]) -> Option<Identity> {
    let mut stat = MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `stat` is a writable `struct stat`.
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: zero-initialised and then filled in by a successful fstat.
    let stat = unsafe { stat.assume_init() };
    let kind = stat.st_mode & libc::S_IFMT;
    // dev_t and ino_t are narrower than u64 on some targets.
    #[allow(clippy::useless_conversion)]
    kinds.contains(&kind).then(|| Identity {
        dev: u64::from(stat.st_dev),
        ino: u64::from(stat.st_ino),
    })
}

/// One warning line on stderr for a set but unusable variable.
pub(crate) fn warn_invalid(invalid: &Invalid<'_>) {
    let mut line = Line::new();
    line.push(b"rebind: ");
    line.push(invalid.name.as_bytes());
    match invalid.value {
        Some(value) => {
            line.push(b"=\"");
            push_quoted(&mut line, value);
            line.push(b"\" is not ");
        }
        None => line.push(b" is missing, want "),
    }
    line.push(invalid.expected.as_bytes());
    line.push(b"; bind() is not rewritten\n");
    write_line(libc::STDERR_FILENO, &line);
}

/// One warning line on stderr for a report line that cannot be written.
fn warn_unreported(fd: c_int, report: &Line) {
    let address = report.as_bytes().strip_suffix(b"\n").unwrap_or_default();
    let mut line = Line::new();
    line.push(b"rebind: bound ");
    line.push(address);
    line.push(b" but REBIND_REPORT_FD=");
    line.push_decimal(u64::from(fd.unsigned_abs()));
    line.push(b" is not the pipe or socket inherited at startup; not reported\n");
    write_line(libc::STDERR_FILENO, &line);
}

/// Appends at most `QUOTE_MAX` bytes of `value`, with control bytes,
/// quotes and backslashes shown as `?` so the warning stays one line.
fn push_quoted(line: &mut Line, value: &[u8]) {
    for &byte in value.iter().take(QUOTE_MAX) {
        let shown = if byte.is_ascii_control() || byte == b'"' || byte == b'\\' {
            b'?'
        } else {
            byte
        };
        line.push(&[shown]);
    }
    if value.len() > QUOTE_MAX {
        line.push(b"...");
    }
}

/// Writes `line` with a single `write`, retrying only on `EINTR`. Errors
/// are ignored: there is nobody to tell. The caller restores `errno`.
fn write_line(fd: c_int, line: &Line) {
    let bytes = line.as_bytes();
    for _ in 0..3 {
        // SAFETY: `bytes` is a live buffer of `bytes.len()` bytes.
        let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if written >= 0 || real::errno() != libc::EINTR {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines() {
        assert_eq!(format(Loopback::V4, 40123).as_bytes(), b"127.0.0.1:40123\n");
        assert_eq!(format(Loopback::V6, 1).as_bytes(), b"[::1]:1\n");
        assert_eq!(format(Loopback::Mapped, 65535).as_bytes(), b"127.0.0.1:65535\n");
    }

    #[test]
    fn report_line_fits_pipe_buf() {
        assert!(format(Loopback::V6, u16::MAX).as_bytes().len() < 512);
    }

    #[test]
    fn quoting_keeps_one_line_and_caps_length() {
        let mut line = Line::new();
        push_quoted(&mut line, b"a\nb\"c\\d");
        assert_eq!(line.as_bytes(), b"a?b?c?d");
        let mut line = Line::new();
        push_quoted(&mut line, &[b'9'; 100]);
        assert_eq!(line.as_bytes().len(), QUOTE_MAX + 3);
        assert!(line.as_bytes().ends_with(b"9..."));
    }

    #[test]
    fn bound_port_of_a_real_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0");
        let Ok(listener) = listener else {
            unreachable!("cannot bind 127.0.0.1:0: {listener:?}");
        };
        let Ok(addr) = listener.local_addr() else {
            unreachable!("no local address");
        };
        use std::os::fd::AsRawFd;
        assert_eq!(bound_port(listener.as_raw_fd()), Some(addr.port()));
        assert_eq!(bound_port(-1), None);
    }

    #[test]
    fn identity_accepts_sockets_only_among_these() {
        use std::os::fd::AsRawFd;
        let Ok((a, _b)) = std::os::unix::net::UnixStream::pair() else {
            unreachable!("socketpair failed");
        };
        assert!(identity(a.as_raw_fd(), PIPE_OR_SOCKET).is_some());
        let Ok(file) = std::fs::File::open("/dev/null") else {
            unreachable!("/dev/null");
        };
        assert_eq!(identity(file.as_raw_fd(), PIPE_OR_SOCKET), None);
        assert_eq!(identity(-1, PIPE_OR_SOCKET), None);
    }
}
