//! A fixed-size line buffer on the stack: formatting without allocation.

/// Bytes a line can hold; longer input is cut off.
const CAPACITY: usize = 160;

/// A line being built on the stack.
pub(crate) struct Line {
    buf: [u8; CAPACITY],
    len: usize,
}

impl Line {
    pub(crate) const fn new() -> Self {
        Self {
            buf: [0; CAPACITY],
            len: 0,
        }
    }

    /// Appends `bytes`, dropping whatever does not fit.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            let Some(slot) = self.buf.get_mut(self.len) else {
                return;
            };
            *slot = byte;
            self.len = self.len.saturating_add(1);
        }
    }

    /// Appends `n` in decimal.
    pub(crate) fn push_decimal(&mut self, mut n: u64) {
        // u64::MAX has 20 digits; fill from the right.
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        for slot in digits.iter_mut().rev() {
            *slot = b'0'.wrapping_add(u8::try_from(n.wrapping_rem(10)).unwrap_or(0));
            start = start.saturating_sub(1);
            n = n.wrapping_div(10);
            if n == 0 {
                break;
            }
        }
        self.push(digits.get(start..).unwrap_or(&[]));
    }

    /// The bytes written so far.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal() {
        for (n, text) in [
            (0, "0"),
            (7, "7"),
            (10, "10"),
            (65535, "65535"),
            (u64::MAX, "18446744073709551615"),
        ] {
            let mut line = Line::new();
            line.push_decimal(n);
            assert_eq!(line.as_bytes(), text.as_bytes());
        }
    }

    #[test]
    fn push_truncates_instead_of_overflowing() {
        let mut line = Line::new();
        line.push(&[b'x'; CAPACITY + 10]);
        line.push_decimal(123);
        assert_eq!(line.as_bytes().len(), CAPACITY);
    }

    #[test]
    fn pieces_concatenate() {
        let mut line = Line::new();
        line.push(b"a:");
        line.push_decimal(42);
        line.push(b"\n");
        assert_eq!(line.as_bytes(), b"a:42\n");
    }
}
