//! Relay buffers that exist only while data flows.
//!
//! An idle session holds no buffer at all (the memory target is a few KiB per idle connection),
//! and a busy one borrows a large buffer so each read and write moves as much as possible (the
//! kernel's loopback path is most of the relay's cost, so fewer, larger calls win). Returned buffers
//! are kept in a small per-thread pool, so a session that wakes for every small message does not
//! go to the allocator each time. When no session of the thread holds a buffer, the pool keeps
//! one: the others' pages go back, so memory after a burst of traffic is what it was before
//! (`wsproxy-bench soak`), not up to `POOL_MAX` buffers more.

use std::cell::{Cell, RefCell};

/// Size of each relay buffer: large reads keep syscalls per byte low.
pub const BUF_LEN: usize = 256 * 1024;
/// How many free buffers a thread keeps for reuse.
const POOL_MAX: usize = 8;

/// How many free buffers a thread keeps while none of its sessions holds one.
const POOL_IDLE: usize = 1;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
    /// Buffers this thread's slots hold now.
    static LENT: Cell<usize> = const { Cell::new(0) };
}

/// A buffer slot: empty while idle, filled from the pool when data arrives.
#[derive(Default)]
pub struct Slot(Option<Box<[u8]>>);

impl Slot {
    /// The buffer, taken from the pool (or allocated) if the slot is empty.
    pub fn get(&mut self) -> &mut [u8] {
        self.0.get_or_insert_with(|| {
            LENT.with(|lent| lent.set(lent.get() + 1));
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
            let lent = LENT.with(|lent| {
                lent.set(lent.get().saturating_sub(1));
                lent.get()
            });
            POOL.with(|pool| {
                let mut pool = pool.borrow_mut();
                if pool.len() < POOL_MAX {
                    pool.push(buf);
                }
                if lent == 0 {
                    pool.truncate(POOL_IDLE);
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

    #[test]
    fn the_pool_keeps_many_while_busy_and_one_when_idle() {
        // Each test runs on its own thread: the pool and the count are this test's alone.
        let mut slots: Vec<Slot> = (0..POOL_MAX + 2).map(|_| Slot::default()).collect();
        for slot in &mut slots {
            slot.get();
        }
        let mut busy = slots.pop().unwrap_or_default();
        for slot in &mut slots {
            slot.release();
        }
        assert_eq!(
            POOL.with(|pool| pool.borrow().len()),
            POOL_MAX,
            "kept while a session holds one"
        );
        busy.release();
        assert_eq!(
            POOL.with(|pool| pool.borrow().len()),
            POOL_IDLE,
            "trimmed once none is held"
        );
        assert_eq!(LENT.with(Cell::get), 0);
    }
}
