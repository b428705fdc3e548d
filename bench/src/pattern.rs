//! The test data every run sends, and checking it on arrival.
//!
//! The stream is one pseudo-random block of `PERIOD` bytes, repeated. `PERIOD` is prime, so it
//! never lines up with message, read or write sizes: a message that a proxy drops, repeats or
//! reorders shifts the content and fails the comparison, not only the byte count. Checking is a
//! memcmp against bytes that were just received and are still in cache, a few percent of the cost
//! of receiving them, and it costs every proxy (and the baseline) the same.

use std::sync::LazyLock;

use crate::rng::XorShift;

/// Length of the repeated block: the largest prime below 64 KiB.
const PERIOD: usize = 65_521;

/// The longest slice `window` hands out; senders write at most this much at once.
pub const MAX_WINDOW: usize = 256 * 1024;

static PATTERN: LazyLock<Pattern> = LazyLock::new(Pattern::new);

/// The shared test data.
pub fn pattern() -> &'static Pattern {
    &PATTERN
}

pub struct Pattern {
    /// The block, repeated to `PERIOD + MAX_WINDOW` bytes, so that the stream's bytes from any
    /// offset on are one contiguous slice of up to `MAX_WINDOW` bytes.
    bytes: Box<[u8]>,
}

impl Pattern {
    fn new() -> Self {
        let mut rng = XorShift::new(0x5eed);
        let block: Vec<u8> = (0..PERIOD).map(|_| rng.next_u64().to_le_bytes()[0]).collect();
        let bytes = block.iter().copied().cycle().take(PERIOD + MAX_WINDOW).collect();
        Self { bytes }
    }

    /// The stream's bytes `offset..offset + len`; `len` is at most `MAX_WINDOW`.
    pub fn window(&self, offset: u64, len: usize) -> &[u8] {
        assert!(len <= MAX_WINDOW, "window of {len} bytes");
        let start = (offset % PERIOD as u64) as usize;
        &self.bytes[start..start + len]
    }

    /// Whether `data` is the stream's bytes from `offset` on.
    pub fn matches(&self, offset: u64, data: &[u8]) -> bool {
        let mut at = offset;
        data.chunks(MAX_WINDOW).all(|chunk| {
            let same = chunk == self.window(at, chunk.len());
            at += chunk.len() as u64;
            same
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_continue_the_stream() {
        let p = pattern();
        let whole = p.window(1000, 200_000).to_vec();
        assert!(p.matches(1000, &whole));
        assert!(p.matches(1000 + 70_000, &whole[70_000..]));
        assert!(p.matches(u64::from(u32::MAX), p.window(u64::from(u32::MAX), 10)));
    }

    #[test]
    fn a_shifted_or_changed_slice_does_not_match() {
        let p = pattern();
        let data = p.window(500, 65_536).to_vec();
        assert!(
            !p.matches(500 + 65_536, &data),
            "a message delivered twice must not match"
        );
        let mut changed = data.clone();
        changed[40_000] ^= 1;
        assert!(!p.matches(500, &changed));
        // Longer than one window, so `matches` has to walk several.
        let long: Vec<u8> = (0..3)
            .flat_map(|i| p.window(i * MAX_WINDOW as u64, MAX_WINDOW).to_vec())
            .collect();
        assert!(p.matches(0, &long));
    }
}
