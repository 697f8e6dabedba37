//! AES-128-CTR over a whole stored file, at any byte offset.
//!
//! Knows nothing of HTTP or files: callers hand it a key, the absolute offset of the first byte
//! and a buffer. Encryption and decryption are the same operation (a keystream XOR), so the
//! origin uses this module to encrypt and the client to decrypt.

use aes::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use std::fmt;

/// The initial counter block of every audio file (docs/protocol.md §5).
pub const AUDIO_IV: [u8; 16] = [
    0x72, 0xe0, 0x67, 0xfb, 0xdd, 0xcb, 0xcf, 0x77, 0xeb, 0xe8, 0xbc, 0x64, 0x3f, 0x63, 0x0d, 0x93,
];

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

#[cfg(target_arch = "x86_64")]
mod vaes;

/// A file's 16-byte AES key. Its `Debug` output is redacted so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct AudioKey(pub [u8; 16]);

impl AudioKey {
    /// Accepts exactly 16 bytes; anything else is an error naming the wrong length.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyLengthError> {
        <[u8; 16]>::try_from(bytes)
            .map(AudioKey)
            .map_err(|_| KeyLengthError(bytes.len()))
    }

    /// Parses 32 hex characters.
    pub fn from_hex(text: &str) -> Result<Self, KeyLengthError> {
        let bytes = hex::decode(text.trim()).map_err(|_| KeyLengthError(text.len() / 2))?;
        Self::from_slice(&bytes)
    }
}

impl fmt::Debug for AudioKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AudioKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("an audio key must be 16 bytes, got {0}")]
pub struct KeyLengthError(pub usize);

/// XORs `buf` with the keystream starting at byte `offset` of the file: counter
/// `AUDIO_IV + offset / 16`, skipping `offset % 16` bytes of that block's keystream.
pub fn apply_keystream(key: &AudioKey, offset: u64, buf: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if vaes::available() {
        // Up to a block boundary, whole groups of eight blocks with VAES, then the tail.
        let head = ((16 - offset % 16) % 16).min(buf.len() as u64) as usize;
        let (first, rest) = buf.split_at_mut(head);
        apply_keystream_portable(key, offset, first);
        let block = (offset + head as u64) / 16;
        let counter = u128::from_be_bytes(AUDIO_IV).wrapping_add(u128::from(block));
        let done = vaes::xor_keystream(&key.0, counter, rest);
        let tail_offset = offset + (head + done) as u64;
        apply_keystream_portable(key, tail_offset, &mut rest[done..]);
        return;
    }
    apply_keystream_portable(key, offset, buf);
}

/// The `aes` crate's implementation (AES-NI when the CPU has it), for any CPU.
pub fn apply_keystream_portable(key: &AudioKey, offset: u64, buf: &mut [u8]) {
    let mut cipher = Aes128Ctr::new(&key.0.into(), &AUDIO_IV.into());
    cipher.seek(offset);
    cipher.apply_keystream(buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NIST SP 800-38A F.5.1 (CTR-AES128.Encrypt): the counter runs across all 128 bits.
    #[test]
    fn nist_sp800_38a_f51() {
        let key = hex::decode("2b7e151628aed2a6abf7158809cf4f3c").unwrap();
        let iv: [u8; 16] = hex::decode("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
            .unwrap()
            .try_into()
            .unwrap();
        let plain = hex::decode(concat!(
            "6bc1bee22e409f96e93d7e117393172a",
            "ae2d8a571e03ac9c9eb76fac45af8e51",
            "30c81c46a35ce411e5fbc1191a0a52ef",
            "f69f2445df4f9b17ad2b417be66c3710"
        ))
        .unwrap();
        let expected = hex::decode(concat!(
            "874d6191b620e3261bef6864990db6ce",
            "9806f66b7970fdff8617187bb9fffdff",
            "5ae4df3edbd5d35e5b4f09020db03eab",
            "1e031dda2fbe03d1792170a0f3009cee"
        ))
        .unwrap();
        let mut cipher = Aes128Ctr::new(key.as_slice().into(), &iv.into());
        let mut buf = plain.clone();
        cipher.apply_keystream(&mut buf);
        assert_eq!(buf, expected);
        // And from every offset, through our seeking path, with the same counter semantics.
        for offset in 0..plain.len() {
            let mut part = plain[offset..].to_vec();
            let mut c = Aes128Ctr::new(key.as_slice().into(), &iv.into());
            c.seek(offset as u64);
            c.apply_keystream(&mut part);
            assert_eq!(part, expected[offset..], "offset {offset}");
        }
    }

    #[test]
    fn offset_decrypt_matches_whole_file() {
        let key = AudioKey([7; 16]);
        let plain: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut whole = plain.clone();
        apply_keystream(&key, 0, &mut whole);
        for (start, len) in [(0, 1), (1, 15), (15, 2), (16, 16), (17, 500), (999, 1)] {
            let mut part = whole[start..start + len].to_vec();
            apply_keystream(&key, start as u64, &mut part);
            assert_eq!(part, plain[start..start + len]);
        }
    }

    #[test]
    fn the_fast_path_matches_the_aes_crate_at_every_offset_and_length() {
        let key = AudioKey(*b"trackfs test key");
        let plain: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 253) as u8).collect();
        let cases = (0..300).map(|i| (i * 37 % 211, i * 53 % 1400));
        for (offset, len) in cases.chain([(0, 5000), (5, 4995), (16, 128), (1, 255)]) {
            let mut fast = plain[..len].to_vec();
            let mut portable = fast.clone();
            apply_keystream(&key, offset as u64, &mut fast);
            apply_keystream_portable(&key, offset as u64, &mut portable);
            assert!(fast == portable, "offset {offset} len {len}");
        }
        // Past the block where the IV's low 32 bits wrap (51 GB in), the carry must reach
        // bit 32, also in the middle of an eight-block group.
        let carry_block = (1u64 << 32) - u64::from(u32::from_be_bytes([0x3f, 0x63, 0x0d, 0x93]));
        let offset = (carry_block - 3) * 16;
        let mut fast = plain[..1024].to_vec();
        let mut portable = fast.clone();
        apply_keystream(&key, offset, &mut fast);
        apply_keystream_portable(&key, offset, &mut portable);
        assert!(fast == portable, "counter carry");
    }

    #[test]
    fn key_debug_is_redacted_and_length_checked() {
        let key = AudioKey([0xab; 16]);
        assert!(!format!("{key:?}").contains("ab"));
        assert_eq!(AudioKey::from_slice(&[1; 15]), Err(KeyLengthError(15)));
        assert!(AudioKey::from_hex("00112233445566778899aabbccddeeff").is_ok());
    }
}
