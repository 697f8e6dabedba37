//! Pinning (`trackfs pin`): whole files fetched into the disk cache, with their keys, and kept
//! out of eviction; and the report of `trackfs cache`.

use super::disk::Disk;
use crate::fs::tree::{NodeKind, Tree, ROOT};
use crate::readpath::disk::store::BLOCK_SIZE;
use crate::readpath::reader::FileRef;
use crate::units::format_size;
use tokio::sync::mpsc::UnboundedSender;

/// Bytes fetched per request while pinning: whole stored pieces, so every one is kept.
const CHUNK: u64 = 8 * BLOCK_SIZE;

/// Pins `files`, then fetches what of them is not stored yet, reporting (done, total) bytes.
pub(crate) async fn pin(
    disk: &Disk,
    files: &[FileRef],
    progress: UnboundedSender<(u64, u64)>,
) -> Result<String, String> {
    let ids: Vec<_> = files.iter().map(|f| f.id).collect();
    disk.store
        .pin(&ids)
        .map_err(|e| format!("cannot record the pins: {e}"))?;
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
                let flushing = tier.clone();
                let _ = tokio::task::spawn_blocking(move || flushing.flush()).await;
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
    let usage = disk.store.usage();
    let mut message = format!(
        "pinned {} track(s), {}; {} pinned in all",
        files.len(),
        format_size(total),
        format_size(usage.pinned_bytes)
    );
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
    tokio::task::spawn_blocking(move || store.unpin(&ids))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot record the pins: {e}"))?;
    Ok(format!(
        "unpinned {} track(s); they may be evicted now",
        files.len()
    ))
}

/// Total, pinned, bound, hits and misses, and per album the share of its bytes on disk.
pub(crate) fn report(disk: &Disk, tree: &Tree) -> String {
    let usage = disk.store.usage();
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
    out
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
