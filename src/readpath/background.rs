//! Disk writes the read path leaves to the background (a wrapped key, a cover picture): a
//! read never waits for them, and they are bounded in number, so a hung disk ties up a few
//! blocking threads, not one per track or picture read (docs/design.md, "Disk cache",
//! "Nothing outside the tier waits on the disk either"). What finds no turn is not stored
//! this time: it is fetched again when next needed, and stored then.

use crate::protocol::model::FileId;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The files being written, at most `most` at a time.
pub(crate) struct Writes {
    pending: Arc<Mutex<HashSet<FileId>>>,
    most: usize,
}

/// A turn to write one file; the turn ends when it is dropped.
pub(crate) struct Writing {
    pending: Arc<Mutex<HashSet<FileId>>>,
    file: FileId,
}

impl Writes {
    pub(crate) fn new(most: usize) -> Writes {
        Writes {
            pending: Arc::default(),
            most,
        }
    }

    /// A turn to write `file`, or `None` when it is being written already or `most` writes
    /// are pending.
    pub(crate) fn start(&self, file: FileId) -> Option<Writing> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= self.most || !pending.insert(file) {
            return None;
        }
        Some(Writing {
            pending: self.pending.clone(),
            file,
        })
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.remove(&self.file);
    }
}

/// Makes `path` a named pipe: opening it waits for the other side, like I/O on a hung disk
/// (tests; opening it the other way lets the waiting side go).
#[cfg(test)]
pub(crate) fn hung_file(path: &std::path::Path) {
    use rustix::fs::{FileType, Mode, CWD};
    rustix::fs::mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_write_per_file_and_at_most_the_bound_at_once() {
        let writes = Writes::new(2);
        let (a, b, c) = (FileId([1; 20]), FileId([2; 20]), FileId([3; 20]));
        let first = writes.start(a).expect("a turn");
        assert!(writes.start(a).is_none(), "the same file twice");
        let second = writes.start(b).expect("a second turn");
        assert!(writes.start(c).is_none(), "beyond the bound");
        drop(first);
        let third = writes.start(c).expect("a turn once one ended");
        assert!(writes.start(a).is_none(), "beyond the bound again");
        drop((second, third));
        assert!(writes.start(a).is_some());
    }
}
