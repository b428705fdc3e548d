//! `librebind.so`: an `LD_PRELOAD` library that moves one listening port to
//! loopback. It replaces websockify's `rebind.so` for wsproxy's wrap mode
//! (`wsproxy PORT -- COMMAND`) and for the standalone `scripts/rebind` helper.
//!
//! # Mechanism
//!
//! The library interposes `bind(2)` and nothing else. When the wrapped program
//! binds the *old* port (the port wsproxy itself listens on), the bind is
//! redirected to loopback and to the *new* port, so only wsproxy can reach
//! the program.
//!
//! Configuration is read once, in an ELF constructor (`.init_array`), from
//! these environment variables:
//!
//! | Variable | Meaning |
//! |----------|---------|
//! | `REBIND_OLD_PORT` | the port to move, `1..=65535` |
//! | `REBIND_NEW_PORT` | where it goes, `0..=65535`; `0` lets the kernel pick a free port |
//! | `REBIND_PORT_OLD`, `REBIND_PORT_NEW` | the same pair under the names websockify's `rebind` script has used since 2011 (its library never read them); used only if neither `REBIND_OLD_PORT` nor `REBIND_NEW_PORT` is set |
//! | `REBIND_REPORT_FD` | optional: an inherited pipe (or socket) to report the bound address to |
//! | `REBIND_STATE_FD` | optional: an inherited regular file (a memfd) where the processes of the command share the kernel-chosen port |
//!
//! Values are plain decimal digits (leading zeros allowed, no sign, no
//! spaces). A variable set to the empty string counts as unset. If none of
//! the port variables is set the library passes everything through silently.
//! If the chosen pair (or `REBIND_REPORT_FD`) is set but invalid, it also
//! passes everything through and writes one warning line to stderr when the
//! process starts (so each process of the command that loads the library
//! prints it once).
//!
//! # Which binds move
//!
//! A bind is rewritten only if the address is `AF_INET` or `AF_INET6`, its
//! `addrlen` covers the whole `sockaddr_in`/`sockaddr_in6`, and its port is
//! the old port. Any address is moved, wildcard or specific, as websockify
//! does; every socket type (TCP and UDP) is moved. The caller's address is
//! never written to: the library passes a rewritten stack copy to the real
//! `bind`.
//!
//! * IPv4 (`0.0.0.0`, `192.0.2.1`, ...) becomes `127.0.0.1:NEW`.
//! * IPv6 (`::`, `2001:db8::1`, `fe80::1%eth0`, ...) becomes `[::1]:NEW`,
//!   with `sin6_scope_id = 0` and `sin6_flowinfo` kept. On a dual-stack socket
//!   (`IPV6_V6ONLY=0`, as Xvnc uses) this gives up IPv4 loopback: the program
//!   is then reachable on `[::1]:NEW` only. That is deliberate: wsproxy learns
//!   the real address from the report line and connects to `[::1]:PORT`.
//! * IPv4-mapped IPv6 (`::ffff:0.0.0.0`, `::ffff:192.0.2.1`) becomes
//!   `[::ffff:127.0.0.1]:NEW`, which stays reachable as `127.0.0.1:NEW` over
//!   IPv4. The library does not query `IPV6_V6ONLY` for this: on a V6ONLY
//!   socket the kernel rejects any mapped address with `EINVAL`, so the
//!   rewritten bind fails exactly as the original one would have.
//!
//! Everything else (a null address, `AF_UNIX`, other ports, a short
//! `addrlen`) goes to the real `bind` unchanged, and its return value and
//! `errno` reach the caller untouched. A rewritten bind that fails (for
//! example `EADDRINUSE` on the new port) also returns the real result and
//! `errno`.
//!
//! # The report line and the kernel-chosen port
//!
//! If `REBIND_REPORT_FD=N` is set, every rewritten bind that succeeds writes
//! one line to file descriptor `N`: the address actually bound, with the port
//! taken from `getsockname`, as `127.0.0.1:PORT\n` or `[::1]:PORT\n`
//! (mapped binds report `127.0.0.1:PORT`). Each line is a single `write` of
//! fewer than `PIPE_BUF` bytes, so lines from several processes never mix.
//! wsproxy sets `REBIND_NEW_PORT=0` and reads the first line: the kernel picks
//! the port at bind time, so no other process can take it in between (the
//! race websockify has, since it binds port 0, closes it and passes the
//! number on). The line means "bound", not yet "listening": a connection
//! attempt right after it can still be refused until the program calls
//! `listen`.
//!
//! The descriptor must be a pipe or socket when the library starts, and its
//! identity (device and inode) is checked again before each write, so a
//! program that closes it and reuses the number for a file never gets the
//! line written into that file. The reader must keep its end open while the
//! program may still bind: writing to a pipe without a reader raises
//! `SIGPIPE` in the program. If the descriptor is unusable when a rewritten
//! bind succeeds, the port is still moved and the process that bound it
//! writes one warning line to stderr naming the address instead.
//!
//! # A second bind of the old port
//!
//! A program may bind the old port more than once, typically `0.0.0.0:P` and
//! `[::]:P` with `IPV6_V6ONLY=1`. All those binds go to the same new port.
//! With `REBIND_NEW_PORT=0`, the first rewritten bind that succeeds stores the
//! port the kernel chose, and later rewritten binds in the same process (and
//! in children forked after it) ask for that port. Two threads racing through
//! their first rewritten bind at the same time can still get two different
//! ports; that is the program's own race and the report shows both.
//!
//! With `REBIND_STATE_FD`, the chosen port is also shared with processes
//! that `exec` later (see `shared`): `vncserver` probes the old port with its
//! own bind before `Xvnc` binds it, and both must land on the same new port.
//! Between the probe closing its socket and the server binding, another
//! program could take the port; the server's bind then fails with
//! `EADDRINUSE`, as it would without the library.
//!
//! # Limits
//!
//! `LD_PRELOAD` interposition only sees calls that go through the dynamic
//! linker's `bind` symbol, so these programs are not moved (they bind the old
//! port, which collides with wsproxy's listener):
//!
//! * statically linked programs (no dynamic linker at all);
//! * Go binaries and anything else that makes raw `socket`/`bind` syscalls
//!   (Go does so even when dynamically linked against libc);
//! * setuid/setgid programs: the loader ignores `LD_PRELOAD` paths with a
//!   slash for secure-execution programs;
//! * sockets bound through io_uring (`IORING_OP_BIND`, Linux 6.11+), or
//!   through another library that wraps the raw syscall;
//! * programs that clear `LD_PRELOAD` before starting the process that binds.
//!
//! Children and grandchildren inherit `LD_PRELOAD` and the `REBIND_*`
//! variables, so the library is loaded into every process the command
//! starts. That is wanted: `vncserver` forks `Xvnc`, and `Xvnc` is the
//! process that binds. The flip side is that any descendant binding the old
//! port is moved too, and each descendant that finds an invalid value prints
//! its own warning line.
//!
//! # Safety rules
//!
//! `bind` may run in a signal handler or between `fork` and `exec`, so it is
//! async-signal-safe: no allocation, locks, `std::env`, thread-locals, panics
//! or logging. The configuration lives in atomics written once by the
//! constructor. The real `bind` comes from `dlsym(RTLD_NEXT, "bind")`, looked
//! up by the constructor and, if `bind` runs before it, lazily on first use;
//! if it cannot be found the hook fails with `ENOSYS`. Diagnostics save and
//! restore `errno`. The library exports `bind` and no other function.
//!
//! # Layout
//!
//! * `config`: the constructor, environment parsing and the atomics.
//! * `rewrite`: pure address rewriting.
//! * `addr`: reading the caller's address into a stack copy.
//! * `report`: the report line and the warning line.
//! * `shared`: the port shared across `exec` (`REBIND_STATE_FD`).
//! * `line`: a fixed-size stack buffer for those lines.
//! * `real`: the real `bind` and `errno`.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::undocumented_unsafe_blocks
)]

mod addr;
mod config;
mod line;
mod real;
mod report;
mod rewrite;
mod shared;

use libc::{c_int, sockaddr, socklen_t};

/// The interposed `bind(2)`.
///
/// Moves a bind of the configured old port to loopback and the new port,
/// and passes every other call to the real `bind` unchanged.
///
/// # Safety
///
/// The contract of `bind(2)`: `addr` is null or points to `len` readable
/// bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let Some(real_bind) = real::bind() else {
        real::set_errno(libc::ENOSYS);
        return -1;
    };
    let Some(ports) = config::ports() else {
        // SAFETY: the caller's own arguments, passed on unchanged under the
        // same contract.
        return unsafe { real_bind(fd, addr, len) };
    };
    // SAFETY: the bind(2) contract above; `addr::read` checks for null
    // and reads at most `len` bytes.
    let original = unsafe { crate::addr::read(addr, len) };
    let Some((moved, host)) = original.and_then(|a| rewrite::rewrite(&a, ports)) else {
        // SAFETY: as above, the caller's arguments unchanged.
        return unsafe { real_bind(fd, addr, len) };
    };
    let (moved_ptr, moved_len) = moved.as_raw();
    // SAFETY: `moved_ptr` points to `moved`, a live stack value of
    // `moved_len` bytes.
    let ret = unsafe { real_bind(fd, moved_ptr, moved_len) };
    if ret == 0 {
        report::bound(fd, host);
    }
    ret
}
