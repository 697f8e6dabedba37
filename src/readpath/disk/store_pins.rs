//! The store's pins: files kept out of eviction, across restarts, in the `pins` file (one
//! file id a line), replaced whole under a temporary name of the store's own. Apart from
//! `store.rs` for its size only.

use super::{FileId, HashSet, Path, Store};

impl Store {
    /// Keeps `files` out of eviction, across restarts.
    pub fn pin(&self, files: &[FileId]) -> std::io::Result<()> {
        self.change_pins(|pinned| pinned.extend(files.iter().copied()))
    }

    /// Lets `files` be evicted again, and evicts now if the cache is over its bound and the
    /// opening scan is in (else the mount's `tidy` does, once it is: an unpin never waits
    /// for the scan). Blocking.
    pub fn unpin(&self, files: &[FileId]) -> std::io::Result<()> {
        self.change_pins(|pinned| {
            files.iter().for_each(|f| {
                pinned.remove(f);
            })
        })?;
        self.settle_if_done();
        if self.is_settled() {
            self.evict();
        }
        Ok(())
    }

    fn change_pins(&self, change: impl FnOnce(&mut HashSet<FileId>)) -> std::io::Result<()> {
        let _file = self.pins_file.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_closed() {
            return Err(closed());
        }
        let text = {
            let mut state = self.lock();
            change(&mut state.pinned);
            let mut text: Vec<String> = state.pinned.iter().map(|f| f.to_string()).collect();
            text.sort();
            text.join("\n") + "\n"
        };
        #[cfg(test)]
        self.pins_hold.pass();
        // A name of this store's own: a store stuck on a hung disk until the next mount owns
        // the directory never writes over that mount's temporary, and renames nothing.
        let temp = self.temp_path();
        let written = std::fs::write(&temp, text).and_then(|()| match self.is_closed() {
            true => Err(closed()),
            false => std::fs::rename(&temp, self.root.join("pins")),
        });
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written
    }

    pub fn is_pinned(&self, file: FileId) -> bool {
        self.lock().pinned.contains(&file)
    }
}

fn closed() -> std::io::Error {
    std::io::Error::other("the disk cache is closed (unmounted)")
}

pub(super) fn read_pins(path: &Path) -> HashSet<FileId> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| FileId::from_hex(l.trim()).ok())
        .collect()
}
