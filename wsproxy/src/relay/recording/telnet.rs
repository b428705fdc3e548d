//! Telnet's commands taken out of a byte stream, across reads, for asciicast recordings.
//!
//! A terminal page (telnet.html) interprets `IAC ...` sequences and shows only the text between
//! them, so a recording of what the terminal showed leaves them out too. Byte 255 (IAC) never
//! occurs in UTF-8 text, so streams that are not telnet pass through unchanged. The window size a
//! client reports (NAWS) is kept: asciicast records it as a resize.

const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;
const WILL: u8 = 251;
const DONT: u8 = 254;
const NAWS: u8 = 31;
/// Longest subnegotiation kept (NAWS needs 5 bytes); longer ones are skipped, not stored.
const MAX_SUB: usize = 64;

#[derive(Default)]
pub struct Filter {
    state: State,
    /// The subnegotiation being read (option first), at most `MAX_SUB` bytes.
    sub: Vec<u8>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Data,
    /// After IAC.
    Iac,
    /// After IAC WILL/WONT/DO/DONT: the option byte comes next.
    Option,
    /// Inside IAC SB ... IAC SE.
    Sub,
    /// After IAC inside a subnegotiation.
    SubIac,
}

impl Filter {
    /// Appends the text of `data` to `text`; returns the last window size (columns, rows) a NAWS
    /// subnegotiation in it reported.
    pub fn text(&mut self, data: &[u8], text: &mut Vec<u8>) -> Option<(u16, u16)> {
        let mut size = None;
        for &b in data {
            self.state = match (self.state, b) {
                (State::Data, IAC) => State::Iac,
                (State::Data, _) => {
                    text.push(b);
                    State::Data
                }
                (State::Iac, IAC) => {
                    text.push(IAC);
                    State::Data
                }
                (State::Iac, SB) => {
                    self.sub.clear();
                    State::Sub
                }
                (State::Iac, WILL..=DONT) => State::Option,
                (State::Iac | State::Option, _) => State::Data,
                (State::Sub, IAC) => State::SubIac,
                (State::Sub, _) | (State::SubIac, IAC) => {
                    if self.sub.len() < MAX_SUB {
                        self.sub.push(b);
                    }
                    State::Sub
                }
                (State::SubIac, SE) => {
                    if let [NAWS, w1, w0, h1, h0] = self.sub[..] {
                        size = Some((u16::from_be_bytes([w1, w0]), u16::from_be_bytes([h1, h0])));
                    }
                    State::Data
                }
                (State::SubIac, _) => State::Data,
            };
        }
        size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_dropped_across_reads_and_naws_is_reported() {
        let mut f = Filter::default();
        let mut text = Vec::new();
        assert_eq!(f.text(b"lo\xff\xfd\x18gin", &mut text), None);
        assert_eq!(f.text(b": \xff", &mut text), None);
        assert_eq!(f.text(b"\xff\xff\xfb", &mut text), None);
        assert_eq!(f.text(b"\x01x\xff\xfa\x1f\x00\x84", &mut text), None);
        assert_eq!(f.text(b"\x00\x30\xff\xf0!", &mut text), Some((132, 48)));
        assert_eq!(text, b"login: \xffx!");
        // Plain UTF-8 passes unchanged.
        let mut text = Vec::new();
        assert_eq!(Filter::default().text("héllo ✓\r\n".as_bytes(), &mut text), None);
        assert_eq!(text, "héllo ✓\r\n".as_bytes());
    }
}
