//! Copying the caller's socket address onto the stack.

use core::mem::size_of;
use core::ptr;

use libc::{sa_family_t, sockaddr, sockaddr_in, sockaddr_in6, socklen_t};

/// An internet socket address, copied out of the caller's buffer.
#[derive(Clone, Copy)]
pub(crate) enum Addr {
    V4(sockaddr_in),
    V6(sockaddr_in6),
}

impl Addr {
    /// The pointer and length to pass to `bind`; valid while `self` lives.
    pub(crate) fn as_raw(&self) -> (*const sockaddr, socklen_t) {
        match self {
            Self::V4(sin) => (ptr::from_ref(sin).cast(), len_of::<sockaddr_in>()),
            Self::V6(sin6) => (ptr::from_ref(sin6).cast(), len_of::<sockaddr_in6>()),
        }
    }
}

/// `size_of::<T>()` as a `socklen_t` (the socket address structs are far
/// smaller than `socklen_t::MAX`).
pub(crate) fn len_of<T>() -> socklen_t {
    socklen_t::try_from(size_of::<T>()).unwrap_or(socklen_t::MAX)
}

/// Copies an `AF_INET`/`AF_INET6` address whose `len` covers the whole
/// struct. Returns `None` for a null pointer, another family or a short
/// length, without reading beyond `len` bytes.
///
/// # Safety
///
/// `addr` is null or points to at least `len` readable bytes (no alignment
/// needed).
pub(crate) unsafe fn read(addr: *const sockaddr, len: socklen_t) -> Option<Addr> {
    if addr.is_null() || len < len_of::<sa_family_t>() {
        return None;
    }
    // SAFETY: non-null and at least `size_of::<sa_family_t>()` readable
    // bytes (checked above); `sa_family` is the first field of every
    // sockaddr; read_unaligned needs no alignment.
    let family = unsafe { ptr::read_unaligned(addr.cast::<sa_family_t>()) };
    match c_int_of(family) {
        libc::AF_INET if len >= len_of::<sockaddr_in>() => {
            // SAFETY: `len` readable bytes cover a whole `sockaddr_in`,
            // a plain C struct for which any bytes are valid.
            Some(Addr::V4(unsafe { ptr::read_unaligned(addr.cast::<sockaddr_in>()) }))
        }
        libc::AF_INET6 if len >= len_of::<sockaddr_in6>() => {
            // SAFETY: as above, for `sockaddr_in6`.
            Some(Addr::V6(unsafe { ptr::read_unaligned(addr.cast::<sockaddr_in6>()) }))
        }
        _ => None,
    }
}

fn c_int_of(family: sa_family_t) -> libc::c_int {
    libc::c_int::from(family)
}

#[cfg(test)]
// `AF_INET as sa_family_t` is how C spells it; the values fit.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
mod tests {
    use super::*;

    fn v4(port: u16) -> sockaddr_in {
        sockaddr_in {
            sin_family: libc::AF_INET as sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: 0 },
            sin_zero: [0; 8],
        }
    }

    fn v6(port: u16) -> sockaddr_in6 {
        sockaddr_in6 {
            sin6_family: libc::AF_INET6 as sa_family_t,
            sin6_port: port.to_be(),
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr { s6_addr: [0; 16] },
            sin6_scope_id: 0,
        }
    }

    fn read_struct<T>(value: &T, len: socklen_t) -> Option<Addr> {
        // SAFETY: `value` is a live `T`; every caller passes `len <=
        // size_of::<T>()`.
        unsafe { read(ptr::from_ref(value).cast(), len) }
    }

    #[test]
    fn null_is_none() {
        // SAFETY: null is allowed.
        assert!(unsafe { read(ptr::null(), 16) }.is_none());
    }

    #[test]
    fn full_length_v4_and_v6_are_copied() {
        let a = v4(80);
        assert!(matches!(
            read_struct(&a, len_of::<sockaddr_in>()),
            Some(Addr::V4(s)) if u16::from_be(s.sin_port) == 80
        ));
        let a = v6(81);
        assert!(matches!(
            read_struct(&a, len_of::<sockaddr_in6>()),
            Some(Addr::V6(s)) if u16::from_be(s.sin6_port) == 81
        ));
    }

    #[test]
    fn short_lengths_are_none() {
        let a = v4(80);
        for len in [0, 1, 2, 8, 15] {
            assert!(read_struct(&a, len).is_none(), "len {len}");
        }
        let a = v6(80);
        for len in [2, 16, 27] {
            assert!(read_struct(&a, len).is_none(), "len {len}");
        }
    }

    #[test]
    fn other_families_are_none() {
        let mut a = v4(80);
        a.sin_family = libc::AF_UNIX as sa_family_t;
        assert!(read_struct(&a, len_of::<sockaddr_in>()).is_none());
    }

    #[test]
    fn unaligned_input_is_fine() {
        let a = v6(8080);
        let mut bytes = [0u8; 64];
        let src = ptr::from_ref(&a).cast::<u8>();
        // SAFETY: copying a live struct's bytes into a larger buffer at
        // offset 1.
        unsafe {
            ptr::copy_nonoverlapping(src, bytes.as_mut_ptr().add(1), size_of::<sockaddr_in6>());
        }
        // SAFETY: `bytes[1..]` holds a whole `sockaddr_in6`.
        let got = unsafe { read(bytes.as_ptr().add(1).cast(), len_of::<sockaddr_in6>()) };
        assert!(matches!(got, Some(Addr::V6(s)) if u16::from_be(s.sin6_port) == 8080));
    }
}
