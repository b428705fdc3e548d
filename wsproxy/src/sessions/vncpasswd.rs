//! VNC's password file, as `vncpasswd -f` writes it: the password cut or padded to 8 bytes, DES
//! encrypted with the fixed key every VNC implementation uses (its bits mirrored per byte, a quirk
//! of the original code). It is obfuscation, not protection: the file lies in the session's 0700
//! runtime directory, mode 0600.

use des::Des;
use des::cipher::{BlockEncrypt, KeyInit};

/// The fixed VNC key {23, 82, 107, 6, 35, 78, 88, 7}, each byte's bits reversed.
const KEY: [u8; 8] = [0xe8, 0x4a, 0xd6, 0x60, 0xc4, 0x72, 0x1a, 0xe0];

pub fn obfuscate(password: &str) -> [u8; 8] {
    let mut block = [0u8; 8];
    for (slot, byte) in block.iter_mut().zip(password.bytes()) {
        *slot = byte;
    }
    let cipher = Des::new(&KEY.into());
    let mut out = block.into();
    cipher.encrypt_block(&mut out);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_vncpasswd() {
        // `echo password | vncpasswd -f | xxd -p`
        assert_eq!(obfuscate("password"), [0xdb, 0xd8, 0x3c, 0xfd, 0x72, 0x7a, 0x14, 0x58]);
        assert_eq!(obfuscate("password-longer"), obfuscate("password"));
        for (i, b) in [23u8, 82, 107, 6, 35, 78, 88, 7].iter().enumerate() {
            assert_eq!(b.reverse_bits(), KEY[i]);
        }
    }
}
