//! The on-disk form of one stored piece: a fixed header, then ciphertext exactly as the CDN
//! sent it. The header names what the piece is (file id, offset, length, the file's total
//! size) and carries a CRC32C of the data and one of itself, so a file that was torn by a
//! crash, flipped on disk, or renamed onto the wrong name is recognised and never believed.
//! The same scheme as mountpoint-s3's block files (docs/design.md, "Disk cache").

use crate::protocol::model::FileId;

/// Changes whenever the layout does: an older or newer piece is simply a miss.
const MAGIC: [u8; 8] = *b"trkfsB01";

/// magic 8 + file id 20 + offset 8 + length 4 + total 8 + data crc 4 + header crc 4.
pub(crate) const HEADER_LEN: usize = 56;

/// Why a stored piece is not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Corrupt {
    #[error("shorter than its header")]
    Short,
    #[error("unknown format")]
    Magic,
    #[error("header checksum mismatch")]
    HeaderChecksum,
    #[error("stored for another piece")]
    WrongPiece,
    #[error("length {got} where {expected} was recorded")]
    Length { got: usize, expected: usize },
    #[error("data checksum mismatch")]
    DataChecksum,
}

/// What the header records besides the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    /// The file's total size, as the CDN's `Content-Range` gave it.
    pub total: u64,
    pub len: usize,
}

/// The header for `data`, stored at `offset` of `file` (whose size is `total`).
pub(crate) fn header(file: FileId, offset: u64, total: u64, data: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..28].copy_from_slice(&file.0);
    h[28..36].copy_from_slice(&offset.to_le_bytes());
    // Pieces are at most a block (far below 4 GiB); the store never writes a larger one.
    h[36..40].copy_from_slice(&(data.len() as u32).to_le_bytes());
    h[40..48].copy_from_slice(&total.to_le_bytes());
    h[48..52].copy_from_slice(&crc32c::crc32c(data).to_le_bytes());
    let own = crc32c::crc32c(&h[..52]);
    h[52..56].copy_from_slice(&own.to_le_bytes());
    h
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Checks a whole stored file (header and data) against the piece it should be.
#[cfg(test)]
pub(crate) fn verify(stored: &[u8], file: FileId, offset: u64) -> Result<Piece, Corrupt> {
    if stored.len() < HEADER_LEN {
        return Err(Corrupt::Short);
    }
    verify_parts(&stored[..HEADER_LEN], &stored[HEADER_LEN..], file, offset)
}

/// The same, with the header and the data read apart (the data straight into a buffer of
/// the caller's, with no copy).
pub(crate) fn verify_parts(
    h: &[u8],
    data: &[u8],
    file: FileId,
    offset: u64,
) -> Result<Piece, Corrupt> {
    if h.len() != HEADER_LEN {
        return Err(Corrupt::Short);
    }
    if h[0..8] != MAGIC {
        return Err(Corrupt::Magic);
    }
    if crc32c::crc32c(&h[..52]) != u32_at(h, 52) {
        return Err(Corrupt::HeaderChecksum);
    }
    if h[8..28] != file.0 || u64_at(h, 28) != offset {
        return Err(Corrupt::WrongPiece);
    }
    let expected = u32_at(h, 36) as usize;
    if data.len() != expected {
        return Err(Corrupt::Length {
            got: data.len(),
            expected,
        });
    }
    if crc32c::crc32c(data) != u32_at(h, 48) {
        return Err(Corrupt::DataChecksum);
    }
    Ok(Piece {
        total: u64_at(h, 40),
        len: expected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(file: FileId, offset: u64, data: &[u8]) -> Vec<u8> {
        let mut v = header(file, offset, 1000, data).to_vec();
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn a_piece_reads_back_with_its_total() {
        let f = FileId([7; 20]);
        let s = stored(f, 512, b"ciphertext");
        assert_eq!(
            verify(&s, f, 512),
            Ok(Piece {
                total: 1000,
                len: 10
            })
        );
    }

    #[test]
    fn every_single_flipped_bit_is_found() {
        let f = FileId([7; 20]);
        let s = stored(f, 0, &[0x55; 300]);
        for byte in 0..s.len() {
            for bit in 0..8 {
                let mut bad = s.clone();
                bad[byte] ^= 1 << bit;
                assert!(verify(&bad, f, 0).is_err(), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn torn_and_misplaced_pieces_are_not_believed() {
        let f = FileId([7; 20]);
        let s = stored(f, 0, &[1; 100]);
        for cut in 0..s.len() {
            assert!(verify(&s[..cut], f, 0).is_err(), "cut at {cut}");
        }
        assert_eq!(verify(&s, FileId([8; 20]), 0), Err(Corrupt::WrongPiece));
        assert_eq!(verify(&s, f, 4096), Err(Corrupt::WrongPiece));
        let mut longer = s.clone();
        longer.push(0);
        assert!(matches!(verify(&longer, f, 0), Err(Corrupt::Length { .. })));
    }
}
