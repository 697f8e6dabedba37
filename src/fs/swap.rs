//! A refresh swaps the whole tree at once: a request sees the old tree or the new one, never a
//! mix. Tracks that left stay readable by inode number (a program that had one open reads its
//! exact bytes to the end: file ids never change meaning), and what changed is written to
//! `.trackfs/changes`. Telling the kernel is the caller's part (`fs::fuse::Notifier`), from a
//! task of its own: never from here, which may run inside a request.

use super::diff::{diff, Diff};
use super::tree::{Ino, NodeKind, Tree};
use super::{FsCore, What};
use crate::client::seams::BoxFuture;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

/// Lines `.trackfs/changes` keeps: the last few thousand, enough for a scanner's hook that
/// runs after each refresh, small enough to read at once.
const CHANGES_KEPT: usize = 4096;

/// Files that left the tree and can still be read, the most recent ones: a program reading
/// one has it open, and a few hundred thousand bytes of them cost less than a broken read.
const RETIRED_KEPT: usize = 65_536;

/// Runs a refresh and says how it went, in a line: `Ok` when the origin was reached.
pub type RefreshFn = Box<dyn Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync>;

#[derive(Default)]
pub(super) struct Retired {
    nodes: HashMap<Ino, (What, SystemTime)>,
    order: VecDeque<Ino>,
}

/// The contents of trackfs's own live files.
#[derive(Default)]
pub(super) struct Live {
    changes: Mutex<ChangeLog>,
    refresh: OnceLock<RefreshFn>,
    /// The last answer of `.trackfs/refresh`, for reads past its first bytes.
    last_refresh: Mutex<Bytes>,
}

#[derive(Default)]
struct ChangeLog {
    seq: u64,
    lines: VecDeque<String>,
    /// `lines` joined, rendered once per change rather than once per read.
    text: Bytes,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Live {
    pub(super) fn changes(&self) -> Bytes {
        lock(&self.changes).text.clone()
    }

    pub(super) fn changes_len(&self) -> u64 {
        lock(&self.changes).text.len() as u64
    }
}

impl FsCore {
    /// Shows `new` from now on and returns what changed (for the kernel: `diff.forget`).
    pub fn swap(&self, new: Tree) -> Diff {
        let new = Arc::new(new);
        let old = {
            let mut tree = self.tree.write().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *tree, new.clone())
        };
        let diff = diff(&old, &new);
        {
            let mut retired = lock(&self.retired);
            for &ino in &diff.gone {
                let Some(node) = old.get(ino) else { continue };
                // Files only: a directory that left is not read by an open file descriptor.
                if matches!(node.kind, NodeKind::Dir { .. }) || new.get(ino).is_some() {
                    continue;
                }
                if retired
                    .nodes
                    .insert(ino, (What::of(&node.kind), node.mtime))
                    .is_none()
                {
                    retired.order.push_back(ino);
                }
                while retired.order.len() > RETIRED_KEPT {
                    if let Some(oldest) = retired.order.pop_front() {
                        retired.nodes.remove(&oldest);
                    }
                }
            }
        }
        let mut log = lock(&self.live.changes);
        for (change, path) in &diff.changes {
            log.seq += 1;
            let line = format!("{} {} {path}\n", log.seq, change.word());
            log.lines.push_back(line);
        }
        while log.lines.len() > CHANGES_KEPT {
            log.lines.pop_front();
        }
        if !diff.changes.is_empty() {
            log.text = Bytes::from(log.lines.iter().map(String::as_str).collect::<String>());
        }
        diff
    }

    /// Numbers the lines of `.trackfs/changes` from `first` on, when none is written yet (the
    /// mount starts its feed above any number an earlier mount gave, docs/design.md).
    pub fn number_changes_from(&self, first: u64) {
        let mut log = lock(&self.live.changes);
        if log.lines.is_empty() {
            log.seq = first.saturating_sub(1);
        }
    }

    pub(super) fn retired_node(&self, ino: Ino) -> Option<(What, SystemTime)> {
        lock(&self.retired).nodes.get(&ino).cloned()
    }

    /// What refreshing the library runs (`.trackfs/refresh`); set once, by the mount.
    pub fn set_refresh(&self, refresh: RefreshFn) {
        if self.live.refresh.set(refresh).is_err() {
            tracing::warn!("the refresh of this mount was set twice; the first one stays");
        }
    }

    /// Reading `.trackfs/refresh` from its start refreshes the library and answers `ok …` or
    /// `error: …`; reads further on continue that answer.
    pub(super) async fn refresh_text(&self, offset: u64) -> Bytes {
        if offset > 0 {
            return lock(&self.live.last_refresh).clone();
        }
        let text = match self.live.refresh.get() {
            Some(refresh) => match refresh().await {
                Ok(line) => format!("ok {line}\n"),
                Err(reason) => format!("error: {reason}\n"),
            },
            None => "error: this mount cannot refresh\n".to_string(),
        };
        let text = Bytes::from(text);
        *lock(&self.live.last_refresh) = text.clone();
        text
    }
}

#[cfg(test)]
#[path = "swap_tests.rs"]
mod tests;
