//! The new port shared by every process of the command, across `exec`.
//!
//! `CHOSEN` in `config` survives `fork` but not `exec`, and wrappers such as
//! tigervnc's `vncserver` probe the port themselves before they exec the
//! server: the probe's bind picks a port, then `Xvnc` (a fresh image) would
//! pick another, and the probe (which binds the old port until that fails
//! with `EADDRINUSE`) would never see the server come up. With
//! `REBIND_STATE_FD`, an inherited regular file (wsproxy passes a memfd),
//! the first process that gets a kernel-chosen port writes it there as two
//! big-endian bytes, and every later process of the command reads it before
//! its own first rewritten bind, so all of them agree on one port.
//!
//! `pread`/`pwrite` at offset 0 are async-signal-safe and leave the shared
//! file offset alone. Two processes making their very first rewritten bind
//! at the same moment can still both choose; the first write wins the file,
//! and the report lines show both ports.

use libc::c_int;

use crate::config;
use crate::real;
use crate::report;

/// The file type the state descriptor must have.
pub(crate) const REGULAR_FILE: &[libc::mode_t] = &[libc::S_IFREG];

/// The port another process of the command stored, if any.
pub(crate) fn load() -> Option<u16> {
    let fd = state_fd()?;
    let saved = real::errno();
    let mut bytes = [0u8; 2];
    // SAFETY: `bytes` is a live, writable buffer of 2 bytes.
    let read = unsafe { libc::pread(fd, bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    real::set_errno(saved);
    let port = u16::from_be_bytes(bytes);
    (read == 2 && port != 0).then_some(port)
}

/// Stores `port` unless another process stored one first.
pub(crate) fn store(port: u16) {
    if load().is_some() {
        return;
    }
    let Some(fd) = state_fd() else {
        return;
    };
    let saved = real::errno();
    let bytes = port.to_be_bytes();
    // SAFETY: `bytes` is a live buffer of 2 bytes. A failed write only
    // loses the sharing; there is nobody to tell.
    let _ = unsafe { libc::pwrite(fd, bytes.as_ptr().cast(), bytes.len(), 0) };
    real::set_errno(saved);
}

/// The state descriptor if it is still the file inherited at startup (the
/// program may have closed the number and reused it).
fn state_fd() -> Option<c_int> {
    let (fd, at_startup) = config::state_fd()?;
    (report::identity(fd, REGULAR_FILE) == Some(at_startup)).then_some(fd)
}
