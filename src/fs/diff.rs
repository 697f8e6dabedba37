//! What changed between two trees, for the kernel and for people.
//!
//! Inode numbers come from a node's path and contents (`tree`), so a node that did not change
//! has the same number in both trees, and the comparison is by number: under each directory
//! found in both, a name whose inode is gone was removed, a name with another inode changed
//! (a track with a new file), a new name was added. This knows nothing of node kinds beyond
//! "a directory has children", so covers, playlists or any later kind are compared alike.
//!
//! For the kernel, every name that went or changed is an `inval_entry` (its cached lookup and,
//! for a directory, everything below it), and every directory whose entries changed, or any
//! node whose attributes did, an `inval_inode` (attributes, and the listing the kernel caches
//! with `FOPEN_CACHE_DIR`). New names need the parent's `inval_inode` only; they are told too,
//! in case the kernel cached a negative lookup.

use super::tree::{Ino, NodeKind, Tree, ROOT};

/// One line of `.trackfs/changes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Changed,
    Removed,
}

impl Change {
    pub fn word(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Changed => "changed",
            Change::Removed => "removed",
        }
    }
}

/// Something the kernel must forget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forget {
    /// The name's cached lookup (and what hangs below it).
    Entry { parent: Ino, name: String },
    /// The inode's attributes and cached contents (a directory's listing).
    Inode(Ino),
}

#[derive(Debug, Default)]
pub struct Diff {
    /// Paths below the root: a whole directory that came or went is one line.
    pub changes: Vec<(Change, String)>,
    pub forget: Vec<Forget>,
    /// Nodes of the old tree that are gone, for open files to go on reading.
    pub gone: Vec<Ino>,
}

impl Diff {
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.forget.is_empty()
    }
}

/// What changed from `old` to `new`.
pub fn diff(old: &Tree, new: &Tree) -> Diff {
    let mut out = Diff::default();
    let mut stack = vec![ROOT];
    while let Some(dir) = stack.pop() {
        let (before, after) = (old.children(dir), new.children(dir));
        let mut touched = false;
        for (name, &ino) in before {
            match after.get(name) {
                Some(&same) if same == ino => {
                    let (a, b) = (old.get(ino), new.get(ino));
                    if matches!(b.map(|n| &n.kind), Some(NodeKind::Dir { .. })) {
                        stack.push(ino);
                    }
                    if a.map(|n| n.mtime) != b.map(|n| n.mtime) {
                        out.forget.push(Forget::Inode(ino));
                    }
                }
                Some(_) => {
                    touched = true;
                    out.changes
                        .push((Change::Changed, new_path(new, dir, name)));
                    out.forget.push(entry(dir, name));
                    gone_below(old, ino, &mut out.gone);
                }
                None => {
                    touched = true;
                    out.changes
                        .push((Change::Removed, new_path(old, dir, name)));
                    out.forget.push(entry(dir, name));
                    gone_below(old, ino, &mut out.gone);
                }
            }
        }
        for name in after.keys().filter(|n| !before.contains_key(*n)) {
            touched = true;
            out.changes.push((Change::Added, new_path(new, dir, name)));
            out.forget.push(entry(dir, name));
        }
        if touched {
            out.forget.push(Forget::Inode(dir));
        }
    }
    // Paths in order, so a change feed reads like a listing.
    out.changes.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

fn entry(parent: Ino, name: &str) -> Forget {
    Forget::Entry {
        parent,
        name: name.to_string(),
    }
}

fn new_path(tree: &Tree, dir: Ino, name: &str) -> String {
    match dir {
        ROOT => name.to_string(),
        _ => format!("{}/{name}", tree.path(dir)),
    }
}

/// `ino` and everything below it in `tree`.
fn gone_below(tree: &Tree, ino: Ino, out: &mut Vec<Ino>) {
    let mut stack = vec![ino];
    while let Some(next) = stack.pop() {
        out.push(next);
        stack.extend(tree.children(next).values().copied());
    }
}
