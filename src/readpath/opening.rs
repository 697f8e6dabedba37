//! Whether a file's first block decrypted right. A wrong key does not fail AES-CTR: it turns
//! audio into noise, which a player would play. So the first block must equal the head file
//! where the origin has one, or else open the way its container can.

use super::reader::FileRef;
use crate::client::error::FetchError;
use crate::protocol::model::Container;

/// Where a head file's bytes sit in the stored plaintext. docs/protocol.md says "the first bytes of
/// the file in plaintext": ours (and, we expect, most origins') start at stored byte 0, with an
/// Ogg file's hidden header. Some origins may hand out the head of the file as mounted, which
/// starts with the Vorbis identification page; it then sits after the header. The hidden
/// header may itself be an Ogg page (Spotify's are), but one of exactly 167 bytes, while the
/// identification page is never that long: so a head whose first page is 167 bytes long is
/// of the stored layout, any other head starting with a page of the mounted one.
pub(super) fn head_offset(file: FileRef, head: &[u8]) -> u64 {
    let header = file.container.hidden_header_len();
    match file.container {
        Container::OggVorbis
            if head.starts_with(b"OggS") && ogg_page_len(head) != Some(header as usize) =>
        {
            header
        }
        _ => 0,
    }
}

/// The length of the Ogg page at the start of `bytes`, when its header is all there:
/// 27 header bytes, one lacing value per segment, then the segments.
fn ogg_page_len(bytes: &[u8]) -> Option<usize> {
    let segments = *bytes.get(26)? as usize;
    let lacing = bytes.get(27..27 + segments)?;
    Some(27 + segments + lacing.iter().map(|&l| l as usize).sum::<usize>())
}

/// The first block must hold exactly the head file's bytes where they belong.
pub(super) fn check_head(file: FileRef, plain: &[u8], head: &[u8]) -> Result<(), FetchError> {
    let plain = plain.get(head_offset(file, head) as usize..).unwrap_or(&[]);
    let n = head.len().min(plain.len());
    if plain[..n] == head[..n] {
        return Ok(());
    }
    Err(FetchError::WrongKey {
        file: file.id,
        expected: "the head file's bytes",
    })
}

/// A wrong key turns audio into noise: without a head file, the plaintext after the hidden
/// header must open the way its container can. Real files vary (an ID3 tag before FLAC or AAC,
/// zero padding before MP3, any ISO box first in an MP4), so each accepts every common
/// opening; noise still matches one of them only rarely (an ISO box name: about 1 in 300).
/// Files too short to tell are let through.
pub(super) fn check_magic(file: FileRef, plain: &[u8]) -> Result<(), FetchError> {
    let body = plain
        .get(file.container.hidden_header_len() as usize..)
        .unwrap_or(&[]);
    if body.len() < 8 {
        return Ok(());
    }
    let id3 = body.starts_with(b"ID3");
    let frame_sync = |mask: u8| body[0] == 0xff && body[1] & mask == mask;
    let (ok, expected) = match file.container {
        Container::OggVorbis => (body.starts_with(b"OggS"), "an Ogg stream (OggS)"),
        Container::Flac => (
            body.starts_with(b"fLaC") || id3,
            "a FLAC stream (fLaC or an ID3 tag)",
        ),
        Container::Mp3 => (
            id3 || frame_sync(0xe0) || body[..4] == [0; 4],
            "MP3 (an ID3 tag, a frame sync or zero padding)",
        ),
        Container::Aac => (
            id3 || frame_sync(0xf0) || body[4..8].iter().all(u8::is_ascii_alphanumeric),
            "AAC (an ISO box, an ADTS sync or an ID3 tag)",
        ),
    };
    if ok {
        Ok(())
    } else {
        Err(FetchError::WrongKey {
            file: file.id,
            expected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::model::FileId;

    fn file(container: Container) -> FileRef {
        FileRef {
            id: FileId([0; 20]),
            container,
        }
    }

    #[test]
    fn magic_checks_catch_a_wrong_key() {
        let ogg = file(Container::OggVorbis);
        let mut plain = vec![0u8; 167];
        plain.extend_from_slice(b"OggS\0\x02rest of page");
        assert!(check_magic(ogg, &plain).is_ok());
        plain[167] = b'X';
        assert!(check_magic(ogg, &plain).is_err());
        let mp3 = file(Container::Mp3);
        assert!(check_magic(mp3, b"ID3\x04\0\0\0\0\0\0").is_ok());
        assert!(check_magic(mp3, b"\xff\xfb\x90\x64\0\0\0\0").is_ok());
        assert!(check_magic(mp3, b"garbage!").is_err());
        assert!(
            check_magic(mp3, b"\0\0\0\0\0\0\xff\xfb").is_ok(),
            "zero padding"
        );
        let flac = file(Container::Flac);
        assert!(check_magic(flac, b"fLaC\0\0\0\x22").is_ok());
        assert!(
            check_magic(flac, b"ID3\x04\0\0\0\0").is_ok(),
            "ID3 before fLaC"
        );
        assert!(check_magic(flac, b"\xff\xfb\x90\x64\0\0\0\0").is_err());
        let aac = file(Container::Aac);
        assert!(check_magic(aac, b"\0\0\0\x20ftypM4A ").is_ok());
        assert!(
            check_magic(aac, b"\0\0\0\x08free\0\0").is_ok(),
            "another box first"
        );
        assert!(check_magic(aac, b"\x12\x9a\0\x08\xfe\x01\x80\x7f").is_err());
    }

    #[test]
    fn with_a_head_file_only_its_bytes_count() {
        let flac = file(Container::Flac);
        assert!(check_head(flac, b"RIFFsomething", b"RIFFsome").is_ok());
        assert!(check_head(flac, b"RIFFsomething", b"RIFXsome").is_err());
        let ogg = file(Container::OggVorbis);
        let mut plain = vec![7u8; 167];
        plain.extend_from_slice(b"OggS\0\x02page");
        assert!(
            check_head(ogg, &plain, &plain[..170]).is_ok(),
            "stored layout"
        );
        assert!(
            check_head(ogg, &plain, b"OggS\0\x02pa").is_ok(),
            "mounted layout"
        );
        assert!(check_head(ogg, &plain, b"OggS\0\x03pa").is_err());
    }

    #[test]
    fn a_hidden_header_that_is_an_ogg_page_keeps_the_head_in_the_stored_layout() {
        let ogg = file(Container::OggVorbis);
        // Spotify's shape: one 167-byte page (27 + 1 lacing value + 139), then the audio.
        let mut plain = b"OggS\0\x02".to_vec();
        plain.extend_from_slice(&[0; 20]);
        plain.extend_from_slice(&[1, 139]);
        plain.extend(std::iter::repeat_n(0x81, 139));
        assert_eq!(ogg_page_len(&plain), Some(167));
        plain.extend_from_slice(b"OggS\0\x02vorbis identification");
        assert_eq!(head_offset(ogg, &plain), 0);
        assert!(check_head(ogg, &plain, &plain[..190]).is_ok());
        // The file as mounted starts with the 58-byte identification page instead.
        let mut mounted = b"OggS\0\x02".to_vec();
        mounted.extend_from_slice(&[0; 20]);
        mounted.extend_from_slice(&[1, 30]);
        mounted.extend_from_slice(&[1; 30]);
        assert_eq!(head_offset(ogg, &mounted), 167);
    }
}
