//! How one audio file is stored: its file id (SHA-1 of the source bytes), its ciphertext under
//! `audio/<file id>` (AES-128-CTR with its own key; Ogg Vorbis files get the 167-byte header in
//! front) and its plaintext head file. Files whose ciphertext and key are already there are
//! not encrypted again.

use super::library::{write_atomic, write_if_changed, Library, LibraryError};
use crate::protocol::crypto::{apply_keystream, AudioKey};
use crate::protocol::keyfile::Keys;
use crate::protocol::model::{Container, FileId, OGG_HEADER_LEN};
use rand::RngCore;
use sha1::{Digest, Sha1};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

/// Bytes of stored plaintext that go into a head file.
pub const HEAD_LEN: u64 = 128 * 1024;

const CHUNK: usize = 256 * 1024;

#[derive(Debug)]
pub(crate) enum StoreError {
    Source(io::Error),
    Library(LibraryError),
}

/// Encrypts one file into the library (unless its ciphertext is already there) and writes its
/// head file. Returns the file id and the ciphertext bytes written.
pub(crate) fn store_file(
    lib: &Library,
    keys: &mut Keys,
    path: &Path,
    container: Container,
) -> Result<(FileId, u64), StoreError> {
    let (file_id, source_len) = hash_file(path).map_err(StoreError::Source)?;
    let known = keys.contains_key(&file_id);
    let key = keys.entry(file_id).or_insert_with(random_key).clone();
    let header = stored_header(container, &file_id);
    let stored_len = header.len() as u64 + source_len;
    let audio = lib.audio(&file_id);
    let present = std::fs::metadata(&audio).is_ok_and(|m| m.len() == stored_len);
    let (head, written) = if known && present {
        (read_head(path, &header).map_err(StoreError::Source)?, 0)
    } else {
        let stored = StoredBytes {
            header: &header,
            file_id,
            len: stored_len,
        };
        (encrypt_into(&audio, path, &key, &stored)?, stored_len)
    };
    write_if_changed(&lib.head(&file_id), &head, 0o644).map_err(StoreError::Library)?;
    Ok((file_id, written))
}

/// Bytes stored for a source file of `source_len` bytes in this container.
pub(crate) fn stored_len(container: Container, source_len: u64) -> u64 {
    source_len + container.hidden_header_len()
}

/// Whether a file's ciphertext (of the expected length), head and key are all in the library.
pub(crate) fn is_stored(lib: &Library, keys: &Keys, id: &FileId, stored_len: u64) -> bool {
    keys.contains_key(id)
        && std::fs::metadata(lib.audio(id)).is_ok_and(|m| m.len() == stored_len)
        && lib.head(id).is_file()
}

fn random_key() -> AudioKey {
    let mut key = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut key);
    AudioKey(key)
}

/// SHA-1 and length of a file, streamed.
pub(crate) fn hash_file(path: &Path) -> io::Result<(FileId, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha1::new();
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((FileId(hasher.finalize().into()), len))
}

/// The bytes stored before the source file: for Ogg Vorbis a 167-byte header that does not
/// start with `OggS` (deterministic, so re-publishing writes the same bytes), else nothing.
pub fn stored_header(container: Container, file_id: &FileId) -> Vec<u8> {
    if container != Container::OggVorbis {
        return Vec::new();
    }
    let mut header = vec![0u8; OGG_HEADER_LEN as usize];
    let text = format!("trackfs ogg header v1\n{file_id}\n");
    let n = text.len().min(header.len());
    header[..n].copy_from_slice(&text.as_bytes()[..n]);
    header
}

/// What a source file must become: `header` + the source, `len` bytes, whose source part
/// hashed to `file_id` a moment ago.
struct StoredBytes<'a> {
    header: &'a [u8],
    file_id: FileId,
    len: u64,
}

/// Writes `header + source`, encrypted from offset 0, to `dest` through a temporary file, and
/// returns the head (the first `HEAD_LEN` plaintext bytes) from the same read. The source is
/// hashed again as it is read: a file that changed since its id was computed is refused, as
/// its id would no longer name its content.
fn encrypt_into(
    dest: &Path,
    source: &Path,
    key: &AudioKey,
    stored: &StoredBytes<'_>,
) -> Result<Vec<u8>, StoreError> {
    let mut input = File::open(source).map_err(StoreError::Source)?;
    let mut source_error = None;
    let mut head = stored.header.to_vec();
    let result = write_atomic(dest, 0o644, |out| {
        let mut block = stored.header.to_vec();
        apply_keystream(key, 0, &mut block);
        out.write_all(&block)?;
        let mut offset = block.len() as u64;
        let mut hasher = Sha1::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = input.read(&mut buf).inspect_err(|e| {
                source_error = Some(io::Error::new(e.kind(), e.to_string()));
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            let room = (HEAD_LEN as usize).saturating_sub(head.len()).min(n);
            head.extend_from_slice(&buf[..room]);
            apply_keystream(key, offset, &mut buf[..n]);
            out.write_all(&buf[..n])?;
            offset += n as u64;
        }
        if offset != stored.len || FileId(hasher.finalize().into()) != stored.file_id {
            let e = io::Error::other("the file changed while it was being published");
            source_error = Some(io::Error::new(e.kind(), e.to_string()));
            return Err(e);
        }
        Ok(())
    });
    match (result, source_error) {
        (Ok(()), _) => Ok(head),
        (Err(_), Some(e)) => Err(StoreError::Source(e)),
        (Err(e), None) => Err(StoreError::Library(e)),
    }
}

/// The first `HEAD_LEN` bytes of the stored plaintext (header included).
fn read_head(source: &Path, header: &[u8]) -> io::Result<Vec<u8>> {
    let mut head = header.to_vec();
    let rest = HEAD_LEN - header.len() as u64;
    File::open(source)?.take(rest).read_to_end(&mut head)?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_that_no_longer_matches_its_id_is_refused_and_nothing_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("a.mp3");
        std::fs::write(&source, b"ID3 the bytes as they are now").unwrap();
        let (file_id, len) = hash_file(&source).unwrap();
        let dest = dir.path().join("stored");
        let key = AudioKey([7; 16]);
        let stored = |file_id| StoredBytes {
            header: &[],
            file_id,
            len,
        };
        let head = encrypt_into(&dest, &source, &key, &stored(file_id)).unwrap();
        assert_eq!(head, std::fs::read(&source).unwrap());
        std::fs::remove_file(&dest).unwrap();
        // Same length, other content: as if the file changed after it was hashed.
        let other = FileId([1; 20]);
        match encrypt_into(&dest, &source, &key, &stored(other)) {
            Err(StoreError::Source(e)) => assert!(e.to_string().contains("changed"), "{e}"),
            other => panic!("expected a source error, got {other:?}"),
        }
        assert!(!dest.exists());
    }
}
