//! Pinning (`trackfs pin`): whole files fetched into the disk cache, with their keys, and kept
//! out of eviction; and the report of `trackfs cache`.
//!
//! The store's bookkeeping (pins, usage) is blocking file I/O: it runs on blocking threads,
//! waited for at most [`ANSWER_WAIT`] ([`Calls`]), so a hung disk answers the command with an
//! error instead of freezing one of the runtime's few workers (and with it FUSE requests).

use super::disk::Disk;
use crate::fs::tree::{NodeKind, Tree, ROOT};
use crate::readpath::disk::store::BLOCK_SIZE;
use crate::readpath::reader::FileRef;
use crate::units::format_size;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// The longest a command waits for the store's bookkeeping. Generous: settling the opening
/// scan of a large cache on a cold disk takes seconds; a disk that answers never gets near it.
pub(crate) const ANSWER_WAIT: Duration = Duration::from_secs(30);

/// The answer when the store did not answer in time.
pub(crate) const NOT_ANSWERING: &str =
    "the disk cache is not answering (a spun-down or hung disk?); try again later";

/// Blocking store calls made for the control socket: each on a blocking thread, waited for
/// at most a bound. While a call given up on has not returned, the next ones fail at once, so
/// a hung disk holds one thread, not one per command.
pub(crate) struct Calls {
    wait: Duration,
    stuck: Arc<AtomicU64>,
}

impl Calls {
    pub(crate) fn new(wait: Duration) -> Calls {
        Calls {
            wait,
            stuck: Arc::default(),
        }
    }

    /// `call`'s result, or [`NOT_ANSWERING`] once it took longer than the bound (it goes on
    /// alone: what it does is done when the disk answers) or an earlier one is still stuck.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        if self.stuck.load(Ordering::Acquire) > 0 {
            return Err(NOT_ANSWERING.into());
        }
        let mut task = tokio::task::spawn_blocking(call);
        match tokio::time::timeout(self.wait, &mut task).await {
            Ok(joined) => joined.map_err(|e| e.to_string()),
            Err(_) => {
                tracing::warn!(
                    "disk cache: the disk did not answer within {} s (a spun-down or hung disk?)",
                    self.wait.as_secs_f32()
                );
                self.stuck.fetch_add(1, Ordering::AcqRel);
                let stuck = self.stuck.clone();
                tokio::spawn(async move {
                    let _ = task.await;
                    stuck.fetch_sub(1, Ordering::AcqRel);
                });
                Err(NOT_ANSWERING.into())
            }
        }
    }
}

/// Bytes fetched per request while pinning: whole stored pieces, so every one is kept.
const CHUNK: u64 = 8 * BLOCK_SIZE;

/// Pins `files`, then fetches what of them is not stored yet, reporting (done, total) bytes.
pub(crate) async fn pin(
    disk: &Disk,
    files: &[FileRef],
    progress: UnboundedSender<(u64, u64)>,
) -> Result<String, String> {
    let ids: Vec<_> = files.iter().map(|f| f.id).collect();
    let store = disk.store.clone();
    let recorded = disk.calls.run(move || store.pin(&ids)).await?;
    recorded.map_err(|e| format!("cannot record the pins: {e}"))?;
    let (tier, reader, keys) = disk.parts().ok_or("the mount is shutting down")?;
    // Sizes first (one small request each when unknown), for an honest progress total.
    let mut sizes = Vec::with_capacity(files.len());
    for file in files {
        let size = reader.size(*file).await.map_err(|e| e.to_string())?;
        sizes.push(size);
    }
    let total: u64 = sizes.iter().sum();
    let mut done = 0;
    for (file, size) in files.iter().zip(&sizes) {
        keys.get(file.id).await.map_err(|e| e.to_string())?;
        let mut first = 0;
        while first < *size {
            let last = (first + CHUNK).min(*size) - 1;
            let stored =
                (first / BLOCK_SIZE..=last / BLOCK_SIZE).all(|b| disk.store.contains(file.id, b));
            if !stored {
                let request = crate::client::seams::RangeRequest {
                    file: file.id,
                    first,
                    last,
                    known_total: Some(*size),
                };
                use crate::client::seams::RangeSource;
                tier.fetch(request, None)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("no tier holds these bytes")?;
                // Written before the next chunk: memory stays bounded and nothing is dropped.
                // A flush that runs out (`FLUSH_WAIT`) is a disk that does not write: said
                // now rather than after waiting that out for every chunk left.
                let flushing = tier.clone();
                let flushed = tokio::task::spawn_blocking(move || flushing.flush()).await;
                if !flushed.unwrap_or(false) {
                    return Err(format!(
                        "{NOT_ANSWERING}: file {} is not all stored (the pins stay)",
                        file.id
                    ));
                }
            }
            done += last + 1 - first;
            let _ = progress.send((done, total));
            first = last + 1;
        }
        let complete = (0..size.div_ceil(BLOCK_SIZE)).all(|b| disk.store.contains(file.id, b));
        if !complete {
            return Err(format!(
                "could not store all of file {} (is the disk full or the cache directory \
                 unwritable? see the mount's log)",
                file.id
            ));
        }
    }
    let mut message = format!("pinned {} track(s), {}", files.len(), format_size(total));
    let store = disk.store.clone();
    // All is pinned and stored by now: a store that does not answer only leaves the totals out.
    let Ok(usage) = disk.calls.run(move || store.usage()).await else {
        return Ok(message);
    };
    message += &format!("; {} pinned in all", format_size(usage.pinned_bytes));
    if usage.pinned_bytes > usage.bound {
        message += &format!(
            "; that is more than --disk-cache-size ({}): the pins stay, nothing else is kept",
            format_size(usage.bound)
        );
    }
    Ok(message)
}

pub(crate) async fn unpin(disk: &Disk, files: &[FileRef]) -> Result<String, String> {
    let ids: Vec<_> = files.iter().map(|f| f.id).collect();
    let store = disk.store.clone();
    let recorded = disk.calls.run(move || store.unpin(&ids)).await?;
    recorded.map_err(|e| format!("cannot record the pins: {e}"))?;
    Ok(format!(
        "unpinned {} track(s); they may be evicted now",
        files.len()
    ))
}

/// Total, pinned, bound, hits and misses, and per album the share of its bytes on disk.
pub(crate) async fn report(disk: &Disk, tree: &Tree) -> Result<String, String> {
    let store = disk.store.clone();
    let usage = disk.calls.run(move || store.usage()).await?;
    let stats = &disk.store.stats;
    let mut out = format!(
        "disk cache   {}\nused         {} of {}\npinned       {}\nhits         {}\nmisses       {}\n\n",
        disk.folder.display(),
        format_size(usage.bytes),
        format_size(usage.bound),
        format_size(usage.pinned_bytes),
        stats.disk_hits.get(),
        stats.disk_misses.get()
    );
    if usage.measuring {
        out += "(what earlier mounts stored is still being measured: the figures are upper \
                bounds)\n\n";
    }
    let reader = disk.parts().map(|(_, reader, _)| reader);
    for (artist, album, files) in albums(tree) {
        let (mut have, mut size, mut pinned) = (0, 0, true);
        for file in &files {
            let stored = usage.files.get(&file.id).copied().unwrap_or(0);
            have += stored;
            size += reader
                .as_ref()
                .and_then(|r| r.known_size(file.id))
                .unwrap_or(stored);
            pinned &= usage.pinned.contains(&file.id);
        }
        let percent = match size {
            0 => 0.0,
            size => 100.0 * have as f64 / size as f64,
        };
        let mark = if pinned { "  (pinned)" } else { "" };
        out += &format!("{percent:5.1} %  {artist}/{album}{mark}\n");
    }
    Ok(out)
}

/// (artist, album, tracks) for every album folder.
fn albums(tree: &Tree) -> Vec<(String, String, Vec<FileRef>)> {
    let children = |ino| match tree.get(ino).map(|n| &n.kind) {
        Some(NodeKind::Dir { children }) => children.clone(),
        _ => Default::default(),
    };
    let mut out = Vec::new();
    for (artist, artist_ino) in children(ROOT) {
        for (album, album_ino) in children(artist_ino) {
            if matches!(
                tree.get(album_ino).map(|n| &n.kind),
                Some(NodeKind::Dir { .. })
            ) {
                let files = tree.tracks_below(album_ino, usize::MAX, usize::MAX);
                out.push((artist.clone(), album, files));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[tokio::test]
    async fn a_call_that_hangs_is_answered_and_the_next_fail_at_once_until_it_returns() {
        let calls = Calls::new(Duration::from_millis(50));
        let (release, hung) = std::sync::mpsc::channel::<()>();
        // One runtime thread: a call made on it would freeze the test.
        let first = calls.run(move || hung.recv().is_ok()).await;
        assert_eq!(first, Err(NOT_ANSWERING.to_string()));
        let ran = Arc::new(AtomicBool::new(false));
        let also = ran.clone();
        let second = calls.run(move || also.store(true, Ordering::SeqCst)).await;
        assert_eq!(second, Err(NOT_ANSWERING.to_string()));
        assert!(!ran.load(Ordering::SeqCst), "not run while the disk hangs");
        release.send(()).unwrap();
        // Hang guard only: the stuck call returns at once now.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match calls.run(|| 7).await {
                Ok(answer) => break assert_eq!(answer, 7),
                Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
