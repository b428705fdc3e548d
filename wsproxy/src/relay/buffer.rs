//! Relay buffers that exist only while data flows.
//!
//! An idle session holds no buffer at all (the memory target is a few KiB per idle connection),
//! and a busy one borrows a large buffer so each read and write moves as much as possible (the
//! kernel's loopback path is most of the relay's cost, so fewer, larger calls win). Returned buffers
//! are kept in a small per-thread pool, so a session that wakes for every small message does not
//! go to the allocator each time.

use std::cell::RefCell;

/// Size of each relay buffer: large reads keep syscalls per byte low.
pub const BUF_LEN: usize = 256 * 1024;
/// How many free buffers a thread keeps for reuse.
const POOL_MAX: usize = 8;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer slot: empty while idle, filled from the pool when data arrives.
#[derive(Default)]
pub struct Slot(Option<Box<[u8]>>);

impl Slot {
    /// The buffer, taken from the pool (or allocated) if the slot is empty.
    pub fn get(&mut self) -> &mut [u8] {
        self.0.get_or_insert_with(|| {
            POOL.with(|pool| pool.borrow_mut().pop())
                .unwrap_or_else(|| vec![0u8; BUF_LEN].into_boxed_slice())
        })
    }

    /// The buffer if one is held; callers only read from it when they know data is in it.
    pub fn held(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().unwrap_or(&mut [])
    }

    /// Gives the buffer back to the pool; call only when it holds no pending data.
    pub fn release(&mut self) {
        if let Some(buf) = self.0.take() {
            POOL.with(|pool| {
                let mut pool = pool.borrow_mut();
                if pool.len() < POOL_MAX {
                    pool.push(buf);
                }
            });
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_idle_slots_hold_nothing() {
        let mut slot = Slot::default();
        assert!(slot.held().is_empty());
        let first = slot.get().as_ptr();
        assert_eq!(slot.get().len(), BUF_LEN);
        slot.release();
        assert!(slot.held().is_empty());
        let mut other = Slot::default();
        assert_eq!(other.get().as_ptr(), first, "a released buffer is reused");
    }
}
