//! The real `bind` (the next definition after ours in lookup order) and
//! `errno`.

use core::ffi::c_void;
use core::sync::atomic::{AtomicUsize, Ordering};

use libc::{c_int, sockaddr, socklen_t};

/// The signature of `bind(2)`.
pub(crate) type BindFn = unsafe extern "C" fn(c_int, *const sockaddr, socklen_t) -> c_int;

/// The address of the real `bind`, or 0 while not yet resolved.
///
/// A race on first use is harmless: every thread stores the same address.
static REAL_BIND: AtomicUsize = AtomicUsize::new(0);

/// Returns the real `bind`, looking it up on first use.
///
/// The constructor calls this once, so `dlsym` (which is not
/// async-signal-safe) normally never runs inside the hook; only a `bind`
/// called before our constructor (from another library's constructor)
/// takes the lazy path.
pub(crate) fn bind() -> Option<BindFn> {
    let mut addr = REAL_BIND.load(Ordering::Acquire);
    if addr == 0 {
        // SAFETY: `RTLD_NEXT` with a NUL-terminated name is a valid dlsym
        // call from inside a shared object.
        let found = unsafe { libc::dlsym(libc::RTLD_NEXT, c"bind".as_ptr()) };
        if found.is_null() {
            return None;
        }
        addr = found.expose_provenance();
        REAL_BIND.store(addr, Ordering::Release);
    }
    let ptr: *mut c_void = core::ptr::with_exposed_provenance_mut(addr);
    // SAFETY: `ptr` is the non-null address dlsym returned for the symbol
    // `bind`, a function with exactly the `bind(2)` signature.
    Some(unsafe { core::mem::transmute::<*mut c_void, BindFn>(ptr) })
}

/// Reads the calling thread's `errno`.
pub(crate) fn errno() -> c_int {
    // SAFETY: `__errno_location` always returns a valid pointer to the
    // calling thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's `errno`.
pub(crate) fn set_errno(value: c_int) {
    // SAFETY: as in `errno`; the location is writable.
    unsafe { *libc::__errno_location() = value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_the_libc_bind() {
        assert!(bind().is_some());
    }

    #[test]
    fn errno_round_trips() {
        let saved = errno();
        set_errno(libc::EADDRINUSE);
        assert_eq!(errno(), libc::EADDRINUSE);
        set_errno(saved);
    }
}
