//! A small xorshift generator for test data and frame masks.
//!
//! Masks only have to differ from message to message (they exist so that caches and middleboxes
//! never see attacker-chosen plain bytes; nothing here is secret), and test data only has to look
//! random, so a cryptographic generator would only add cost to the measured loop.

use std::hash::BuildHasher;

pub struct XorShift(u64);

impl XorShift {
    /// A fixed seed, for data both ends must agree on.
    pub fn new(seed: u64) -> Self {
        // Zero is the one state xorshift never leaves.
        Self(seed | 1)
    }

    /// A seed from the OS (through std's randomly keyed hasher), for masks.
    pub fn from_entropy() -> Self {
        Self::new(std::collections::hash_map::RandomState::new().hash_one(0u8))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn mask(&mut self) -> [u8; 4] {
        let [a, b, c, d, ..] = self.next_u64().to_le_bytes();
        [a, b, c, d]
    }
}
