//! `.m3u` / `.m3u8` playlists of the music folder, for `publish` (docs/protocol.md §7): each entry
//! is resolved to a file of the music folder (relative to the playlist, absolute, or a
//! `file://` URL), whatever the playlist's line ends, BOM or `#EXTINF` lines.

use std::path::{Component, Path, PathBuf};

/// Whether `name` is a playlist's name.
pub(crate) fn is_playlist(name: &str) -> bool {
    let lower = name.to_lowercase();
    lower.ends_with(".m3u") || lower.ends_with(".m3u8")
}

/// The entries of a playlist, as written (comments and blank lines left out). `.m3u8` is
/// UTF-8; a plain `.m3u` that is not valid UTF-8 is read as Latin-1, as old players wrote it.
pub(crate) fn entries(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    };
    text.lines()
        .map(|l| l.trim_end_matches('\r').trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// `a/./b/../c` → `a/c`, without touching the filesystem; `None` when `..` climbs above the
/// start of a relative path.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    Some(out)
}

/// The path, relative to the music folder `root`, that an entry of the playlist at
/// `playlist` (also relative to `root`) names; `None` for a URL or a path outside `root`.
/// `canonical_root` is `root` with symlinks resolved, for absolute entries that use it.
pub(crate) fn resolve(
    entry: &str,
    playlist: &Path,
    root: &Path,
    canonical_root: &Path,
) -> Option<PathBuf> {
    let entry = match entry.strip_prefix("file://") {
        Some(url) => percent_encoding::percent_decode_str(url)
            .decode_utf8()
            .ok()?
            .into_owned(),
        None if entry.contains("://") => return None,
        None => entry.to_string(),
    };
    let path = Path::new(&entry);
    if path.is_absolute() {
        let path = normalize(path)?;
        for base in [root, canonical_root] {
            if let Ok(rel) = path.strip_prefix(base) {
                return Some(rel.to_path_buf());
            }
        }
        return None;
    }
    let dir = playlist.parent().unwrap_or(Path::new(""));
    normalize(&dir.join(path))
}

/// A Windows playlist's `Artist\Album\01.mp3`, for a second try when the entry is not found.
pub(crate) fn with_forward_slashes(entry: &str) -> Option<String> {
    entry.contains('\\').then(|| entry.replace('\\', "/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_skip_comments_bom_and_crlf() {
        let text = b"\xef\xbb\xbf#EXTM3U\r\n#EXTINF:123,A - B\r\nA/B/01 x.ogg\r\n\r\n  C/d.mp3  \n";
        assert_eq!(entries(text), vec!["A/B/01 x.ogg", "C/d.mp3"]);
        assert_eq!(entries(b"caf\xe9.mp3\n"), vec!["café.mp3"], "Latin-1");
        assert!(entries(b"").is_empty());
    }

    #[test]
    fn entries_resolve_relative_absolute_and_file_urls() {
        let root = Path::new("/music");
        let real = Path::new("/data/music");
        let list = Path::new("lists/road.m3u8");
        let r = |e: &str| resolve(e, list, root, real);
        assert_eq!(r("../A/B/01.ogg"), Some("A/B/01.ogg".into()));
        assert_eq!(r("x.ogg"), Some("lists/x.ogg".into()));
        assert_eq!(r("/music/A/01.ogg"), Some("A/01.ogg".into()));
        assert_eq!(r("/data/music/A/01.ogg"), Some("A/01.ogg".into()));
        assert_eq!(r("file:///music/A/01%20B.ogg"), Some("A/01 B.ogg".into()));
        assert_eq!(r("/elsewhere/01.ogg"), None);
        assert_eq!(r("../../etc/passwd"), None);
        assert_eq!(r("http://radio.example/stream"), None);
        assert_eq!(
            with_forward_slashes("A\\B\\01.mp3"),
            Some("A/B/01.mp3".into())
        );
        assert!(is_playlist("Mix.M3U8") && is_playlist("a.m3u") && !is_playlist("a.pls"));
    }
}
