//! Reading back what earlier mounts stored, without holding the mount up: the pieces' names
//! come from the directories alone (no `stat` per piece: a cold cache of 20,000 pieces took
//! about 0.5 s of a mount's start, docs/benchmarks.md row 9), and their sizes and last uses
//! (the LRU order) are `stat`ed by a thread of their own. Until that scan is in, every piece
//! counts as a whole one and nothing is evicted; then the index is rebuilt in the order of the
//! files' times, with the pieces used since the mount began most recent. Reads are right all
//! along: they only ask whether a piece is there, and every read checks the piece itself.
//! Why: docs/design.md, "Disk cache", "Opening the store".

use super::block::HEADER_LEN;
use super::store::BLOCK_SIZE;
use crate::protocol::model::FileId;
use lru::LruCache;
use std::collections::HashSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// (file, block index).
pub(crate) type Key = (FileId, u64);

/// A stored piece as the scan found it: key, size on disk, last use.
pub(crate) type Found = (Key, u64, SystemTime);

/// What a piece is counted as until its size is known: a whole one (an upper bound).
pub(crate) const WHOLE: u64 = HEADER_LEN as u64 + BLOCK_SIZE;

pub(crate) fn parse_name(name: &str) -> Option<Key> {
    let (id, block) = name.split_once('.')?;
    Some((FileId::from_hex(id).ok()?, block.parse().ok()?))
}

/// Where a piece lives under the store's `root`.
pub(crate) fn piece_path(root: &Path, (file, block): Key) -> PathBuf {
    let hex = file.to_string();
    root.join("data")
        .join(&hex[..2])
        .join(format!("{hex}.{block}"))
}

/// [`list_counting`], its progress counted nowhere.
#[cfg(test)]
pub(crate) fn list(data: &Path) -> Vec<Key> {
    list_counting(data, &AtomicU64::new(0))
}

/// Every stored piece's key under `data`, from the directories' entries alone (their types
/// come with them on Linux file systems). Names that are not pieces (left by something else,
/// or by an older version) are removed. Each entry listed adds one to `steps`: millions of
/// pieces on a slow disk take a while, and whoever waits for the open sees it goes on.
pub(crate) fn list_counting(data: &Path, steps: &AtomicU64) -> Vec<Key> {
    let mut found = Vec::new();
    let Ok(prefixes) = std::fs::read_dir(data) else {
        return found;
    };
    for prefix in prefixes.flatten() {
        steps.fetch_add(1, Ordering::Relaxed);
        let Ok(entries) = std::fs::read_dir(prefix.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            steps.fetch_add(1, Ordering::Relaxed);
            let name = entry.file_name();
            let key = name.to_str().and_then(parse_name);
            match (key, entry.file_type()) {
                (Some(key), Ok(kind)) if kind.is_file() => found.push(key),
                _ => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
    found
}

/// The size and last use of each of `keys`. Those gone meanwhile are left out. Those shorter
/// than a header (a power cut can leave a renamed piece empty or torn) are reported with their
/// size, never removed here: the scan may end after its store was closed and the next mount
/// owns the folder, so the store removes them ([`split_short`], [`remove_if_short`]). One that
/// cannot be `stat`ed for another reason stays, as a whole piece used least recently: left
/// out, it would stay on disk uncounted and never evicted.
pub(crate) fn sizes(root: &Path, keys: Vec<Key>) -> Vec<Found> {
    keys.into_iter()
        .filter_map(|key| {
            let path = piece_path(root, key);
            let meta = match std::fs::metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == ErrorKind::NotFound => return None,
                Err(_) => return Some((key, WHOLE, SystemTime::UNIX_EPOCH)),
            };
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            Some((key, meta.len(), modified))
        })
        .collect()
}

/// The pieces found shorter than a header, apart from the rest: torn, never to be indexed.
pub(crate) fn split_short(found: Vec<Found>) -> (Vec<Found>, Vec<Key>) {
    let (short, whole): (Vec<Found>, Vec<Found>) = found
        .into_iter()
        .partition(|(_, len, _)| *len < HEADER_LEN as u64);
    (whole, short.into_iter().map(|(key, _, _)| key).collect())
}

/// Whether the piece at `path` is there and shorter than a header (torn).
pub(crate) fn is_short(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() < HEADER_LEN as u64)
}

/// Removes a piece found torn, if it still is. Only while no writer can run (a store being
/// opened): a store's own removals keep writers out meanwhile (`Store::remove_torn`).
pub(crate) fn remove_if_short(root: &Path, key: Key) {
    let path = piece_path(root, key);
    if is_short(&path) {
        let _ = std::fs::remove_file(&path);
    }
}

/// The index once the scan is in: the pieces still indexed, least recently used first by
/// their files' times with the sizes found, then those `touched` (read or written) since the
/// mount began, in their order and with their own sizes (known exactly: they were read or
/// written). A piece the scan did not find and nobody touched is gone from the disk. Gives
/// the index and its bytes.
pub(crate) fn settled(
    now: &LruCache<Key, u64>,
    mut found: Vec<Found>,
    touched: &HashSet<Key>,
) -> (LruCache<Key, u64>, u64) {
    found.sort_by_key(|(_, _, modified)| *modified);
    let mut lru = LruCache::unbounded();
    let mut bytes = 0;
    let old = found
        .into_iter()
        .filter(|(key, _, _)| now.contains(key) && !touched.contains(key))
        .map(|(key, len, _)| (key, len));
    let recent = now
        .iter()
        .rev()
        .filter(|(key, _)| touched.contains(key))
        .map(|(key, len)| (*key, *len));
    for (key, len) in old.chain(recent) {
        if let Some(before) = lru.put(key, len) {
            bytes -= before;
        }
        bytes += len;
    }
    (lru, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(n: u8) -> Key {
        (FileId([n; 20]), u64::from(n))
    }

    #[test]
    fn the_settled_index_is_in_stored_order_with_the_pieces_used_since_last() {
        let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        // As listed at open (every piece a whole one), then d written and b read meanwhile.
        let mut now = LruCache::unbounded();
        for n in 1..=3 {
            now.put(key(n), WHOLE);
        }
        now.put(key(4), 40);
        now.put(key(2), 20);
        let touched: HashSet<Key> = [key(2), key(4)].into();
        // e was found by the scan but dropped since (a failed check): it stays out.
        let found = vec![
            (key(1), 10, at(3)),
            (key(2), 20, at(1)),
            (key(3), 30, at(2)),
            (key(5), 50, at(0)),
        ];
        let (lru, bytes) = settled(&now, found, &touched);
        let oldest_first: Vec<(Key, u64)> = lru.iter().rev().map(|(k, l)| (*k, *l)).collect();
        let want = vec![(key(3), 30), (key(1), 10), (key(4), 40), (key(2), 20)];
        assert_eq!(oldest_first, want);
        assert_eq!(bytes, 100);
    }

    #[test]
    fn listing_keeps_pieces_and_removes_what_is_not_one() {
        let dir = tempfile::tempdir().unwrap();
        let piece = piece_path(dir.path(), key(7));
        std::fs::create_dir_all(piece.parent().unwrap()).unwrap();
        std::fs::write(&piece, [7u8; HEADER_LEN]).unwrap();
        let stray = piece.with_file_name("not-a-piece");
        std::fs::write(&stray, b"y").unwrap();
        let steps = AtomicU64::new(0);
        assert_eq!(
            list_counting(&dir.path().join("data"), &steps),
            vec![key(7)]
        );
        assert!(!stray.exists());
        // Its prefix folder and its two entries: each one a step.
        assert_eq!(steps.load(Ordering::Relaxed), 3);
        let sized = sizes(dir.path(), vec![key(7), key(8)]);
        assert_eq!(sized.len(), 1);
        assert_eq!((sized[0].0, sized[0].1), (key(7), HEADER_LEN as u64));
    }

    #[test]
    fn a_piece_shorter_than_a_header_is_reported_and_one_that_cannot_be_statted_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let torn = piece_path(dir.path(), key(7));
        std::fs::create_dir_all(torn.parent().unwrap()).unwrap();
        std::fs::write(&torn, [7u8; HEADER_LEN - 1]).unwrap();
        // key(9)'s prefix folder is a file: its `stat` fails with ENOTDIR, not NotFound.
        let odd = piece_path(dir.path(), key(9));
        std::fs::write(odd.parent().unwrap(), b"in the way").unwrap();
        let sized = sizes(dir.path(), vec![key(7), key(9)]);
        assert!(torn.exists(), "the scan removes nothing");
        let (whole, short) = split_short(sized);
        assert_eq!(short, vec![key(7)]);
        let kept: Vec<(Key, u64)> = whole.iter().map(|(k, l, _)| (*k, *l)).collect();
        assert_eq!(kept, vec![(key(9), WHOLE)]);
        remove_if_short(dir.path(), key(7));
        assert!(!torn.exists());
    }
}
