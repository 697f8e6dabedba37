//! The directory tree, built from the catalogue: `<Artist>/<Album>/<NN> - <Title>.<ext>`
//! (`<D>-<NN> - …` on multi-disc albums), `<Artist>/<Album>/cover.jpg` (or `.png`),
//! `Playlists/<Name>.m3u8` and `.trackfs/{stats,changes,refresh}`. A refresh builds a whole
//! new tree and swaps it in (`fs::diff` says what the kernel must forget).
//!
//! Inode numbers come from what a node is (its path, and a track's file id), not from where
//! it falls in the catalogue: an album published later must not renumber every file after it,
//! or backup tools (restic, borg) and library scanners that track files by inode would read
//! the whole library through the CDN again after a remount.

use super::names::unique_name;
use super::playlists;
use crate::catalogue::library::Extras;
use crate::protocol::model::{Album, AudioFile, AudioFormat, Date, FileId, Image, Track, TrackId};
use crate::readpath::reader::FileRef;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub type Ino = u64;
pub const ROOT: Ino = 1;
/// trackfs's own directory (`.trackfs/stats`) at the root.
const META_DIR: &str = ".trackfs";
/// The folder of playlist files at the root (a suffix when an artist has the name).
const PLAYLISTS_DIR: &str = "Playlists";

#[derive(Debug, Clone)]
pub enum NodeKind {
    Dir {
        children: BTreeMap<String, Ino>,
    },
    Track {
        file: FileRef,
        header: u64,
    },
    Stats,
    /// The album's picture, `size` bytes (learned when the catalogue was loaded).
    Cover {
        image: FileId,
        size: u64,
    },
    /// A playlist file, its whole text made when the tree was built.
    Playlist {
        text: Bytes,
    },
    /// `.trackfs/changes`: what refreshes added, changed and removed.
    Changes,
    /// `.trackfs/refresh`: reading it refreshes the library and says how that went.
    Refresh,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub parent: Ino,
    pub name: String,
    pub kind: NodeKind,
    /// From the album's release date, so sizes and times stay stable across mounts (rsync).
    pub mtime: SystemTime,
}

#[derive(Debug)]
pub struct Tree {
    nodes: Vec<Node>,
    /// Where each inode's node is in `nodes`.
    index: HashMap<Ino, usize>,
}

/// A track as shown in the tree, for the playlists that list it.
struct Placed<'a> {
    ino: Ino,
    track: &'a Track,
    album_artist: &'a str,
}

/// An album and its tracks, as fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlbumEntry {
    pub album: Album,
    pub tracks: Vec<Track>,
}

/// Chooses the file to show: the first preferred format present, else the best quality.
pub fn pick_file(track: &Track, preferences: &[AudioFormat]) -> Option<AudioFile> {
    for format in preferences {
        if let Some(f) = track.files.iter().find(|f| f.format == *format) {
            return Some(*f);
        }
    }
    if !preferences.is_empty() {
        return None;
    }
    track
        .files
        .iter()
        .max_by_key(|f| f.format.quality())
        .copied()
}

/// 2000-01-01, for albums without a date: stable, unlike "now".
const FALLBACK_TIME: u64 = 946_684_800;

fn album_time(date: Option<Date>) -> SystemTime {
    let secs = date
        .filter(|d| d.year > 1900)
        .and_then(|d| {
            let month = time::Month::try_from(d.month.clamp(1, 12) as u8).ok()?;
            let last = time::util::days_in_month(month, d.year);
            let day =
                time::Date::from_calendar_date(d.year, month, d.day.clamp(1, last.into()) as u8);
            u64::try_from(day.ok()?.midnight().assume_utc().unix_timestamp()).ok()
        })
        .unwrap_or(FALLBACK_TIME);
    UNIX_EPOCH + Duration::from_secs(secs)
}

impl Tree {
    /// The tree of albums alone (tests; a mount adds covers and playlists: `build_with`).
    #[cfg(test)]
    pub fn build(albums: &[AlbumEntry], preferences: &[AudioFormat]) -> Tree {
        Tree::build_with(albums, &Extras::default(), preferences)
    }

    /// The tree with covers and playlists too.
    pub fn build_with(albums: &[AlbumEntry], extras: &Extras, preferences: &[AudioFormat]) -> Tree {
        let epoch = UNIX_EPOCH + Duration::from_secs(FALLBACK_TIME);
        let mut tree = Tree {
            nodes: vec![Node {
                parent: ROOT,
                name: String::new(),
                kind: NodeKind::Dir {
                    children: BTreeMap::new(),
                },
                mtime: epoch,
            }],
            index: HashMap::from([(ROOT, 0)]),
        };
        let meta = tree.add_dir(ROOT, META_DIR, epoch);
        tree.add(meta, "stats".into(), NodeKind::Stats, epoch);
        tree.add(meta, "changes".into(), NodeKind::Changes, epoch);
        tree.add(meta, "refresh".into(), NodeKind::Refresh, epoch);
        let mut placed = HashMap::new();
        for entry in albums {
            tree.add_album(entry, extras, preferences, &mut placed);
        }
        tree.add_playlists(extras, &placed);
        tree
    }

    /// One album's directory: its tracks (each placed in `placed`, the first time a track id
    /// is shown) and its cover.
    fn add_album<'a>(
        &mut self,
        entry: &'a AlbumEntry,
        extras: &Extras,
        preferences: &[AudioFormat],
        placed: &mut HashMap<TrackId, Placed<'a>>,
    ) {
        let album = &entry.album;
        let mtime = album_time(album.date);
        let artist = album
            .artists
            .first()
            .or_else(|| entry.tracks.iter().find_map(|t| t.artists.first()))
            .map_or("Unknown Artist", String::as_str);
        let artist_dir = self.child_dir(ROOT, artist, mtime);
        let album_dir = self.new_unique_dir(artist_dir, &album.name, mtime);
        let multi_disc = album.discs.len() > 1;
        for disc in &album.discs {
            for (position, track_id) in disc.tracks.iter().enumerate() {
                let Some(track) = entry.tracks.iter().find(|t| t.id == *track_id) else {
                    continue;
                };
                let Some(file) = pick_file(track, preferences) else {
                    tracing::debug!(track = %track.id, name = %track.name, "no file in a wanted format; track hidden");
                    continue;
                };
                let number = if track.number > 0 {
                    track.number
                } else {
                    position as u32 + 1
                };
                let stem = if multi_disc {
                    format!("{}-{number:02} - {}", disc.number, track.name)
                } else {
                    format!("{number:02} - {}", track.name)
                };
                let container = file.format.container();
                let suffix = format!(".{}", container.extension());
                let name = unique_name(self.children(album_dir), &stem, &suffix);
                let kind = NodeKind::Track {
                    file: FileRef {
                        id: file.id,
                        container,
                    },
                    header: container.hidden_header_len(),
                };
                let ino = self.add(album_dir, name, kind, mtime);
                placed.entry(track.id).or_insert(Placed {
                    ino,
                    track,
                    album_artist: artist,
                });
            }
        }
        let cover = Image::largest(&album.covers)
            .and_then(|i| Some((i.file_id, extras.covers.get(&i.file_id)?)));
        if let Some((image, info)) = cover {
            let file_name = info.file_name();
            let (stem, ext) = file_name.split_at("cover".len());
            let name = unique_name(self.children(album_dir), stem, ext);
            let kind = NodeKind::Cover {
                image,
                size: info.size,
            };
            self.add(album_dir, name, kind, mtime);
        }
    }

    /// `Playlists/<Name>.m3u8` for each playlist, listing the tracks the tree shows; no
    /// folder without playlists. It comes after the artists, so an artist called `Playlists`
    /// keeps its folder and this one gets a suffix.
    fn add_playlists(&mut self, extras: &Extras, placed: &HashMap<TrackId, Placed<'_>>) {
        if extras.playlists.is_empty() {
            return;
        }
        let epoch = UNIX_EPOCH + Duration::from_secs(FALLBACK_TIME);
        let dir = self.new_unique_dir(ROOT, PLAYLISTS_DIR, epoch);
        for playlist in &extras.playlists {
            let entries: Vec<_> = playlist
                .tracks
                .iter()
                .filter_map(|id| placed.get(id))
                .map(|p| playlists::Entry {
                    track: p.track,
                    album_artist: p.album_artist,
                    path: self.path_of(p.ino),
                })
                .collect();
            let text = Bytes::from(playlists::render(&entries));
            let name = unique_name(self.children(dir), &playlist.name, ".m3u8");
            self.add(dir, name, NodeKind::Playlist { text }, epoch);
        }
    }

    /// The node's path from the root, `/`-separated.
    fn path_of(&self, ino: Ino) -> String {
        let mut parts = Vec::new();
        let mut at = ino;
        while at != ROOT {
            let Some(node) = self.get(at) else { break };
            parts.push(node.name.as_str());
            at = node.parent;
        }
        parts.reverse();
        parts.join("/")
    }

    /// A directory's entries (none for anything else).
    pub fn children(&self, dir: Ino) -> &BTreeMap<String, Ino> {
        static EMPTY: BTreeMap<String, Ino> = BTreeMap::new();
        match self.get(dir).map(|n| &n.kind) {
            Some(NodeKind::Dir { children }) => children,
            _ => &EMPTY,
        }
    }

    /// The existing directory `name` under `parent`, or a new one.
    fn child_dir(&mut self, parent: Ino, raw_name: &str, mtime: SystemTime) -> Ino {
        let name = super::names::safe_name(raw_name, "");
        // An artist called ".trackfs" gets a directory of its own, not trackfs's.
        let reserved = parent == ROOT && name == META_DIR;
        if let Some(&ino) = self.children(parent).get(&name).filter(|_| !reserved) {
            if matches!(self.get(ino).map(|n| &n.kind), Some(NodeKind::Dir { .. })) {
                return ino;
            }
        }
        self.new_unique_dir(parent, raw_name, mtime)
    }

    fn new_unique_dir(&mut self, parent: Ino, raw_name: &str, mtime: SystemTime) -> Ino {
        let name = unique_name(self.children(parent), raw_name, "");
        self.add_dir(parent, &name, mtime)
    }

    fn add_dir(&mut self, parent: Ino, name: &str, mtime: SystemTime) -> Ino {
        let kind = NodeKind::Dir {
            children: BTreeMap::new(),
        };
        self.add(parent, name.to_string(), kind, mtime)
    }

    fn add(&mut self, parent: Ino, name: String, kind: NodeKind, mtime: SystemTime) -> Ino {
        let ino = self.free_ino(parent, &name, &kind);
        let parent_at = self.index[&parent];
        if let NodeKind::Dir { children } = &mut self.nodes[parent_at].kind {
            children.insert(name.clone(), ino);
        }
        self.index.insert(ino, self.nodes.len());
        self.nodes.push(Node {
            parent,
            name,
            kind,
            mtime,
        });
        ino
    }

    /// A number derived from the parent's (so, from the path) and the name, and for a track
    /// from its file id too, so that a file whose contents changed is a new file to backup
    /// tools. Kept below 2^63 for tools that read inode numbers as signed. A clash (very rare)
    /// takes the next free number.
    fn free_ino(&self, parent: Ino, name: &str, kind: &NodeKind) -> Ino {
        let mut hash = Sha256::new();
        hash.update(parent.to_le_bytes());
        hash.update(name.as_bytes());
        match kind {
            NodeKind::Track { file, .. } => hash.update(file.id.0),
            NodeKind::Cover { image, .. } => hash.update(image.0),
            // A playlist's text changes with it (and with the tree): new text, new file.
            NodeKind::Playlist { text } => hash.update(Sha256::digest(text)),
            _ => {}
        }
        let digest = hash.finalize();
        let mut ino = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")) >> 1;
        while ino <= ROOT || self.index.contains_key(&ino) {
            ino = (ino + 1) & (u64::MAX >> 1);
        }
        ino
    }

    pub fn get(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(*self.index.get(&ino)?)
    }

    /// The path as a user sees it below the mountpoint (`Artist/Album/01 - Title.mp3`), for
    /// messages; empty for the root.
    pub fn path(&self, ino: Ino) -> String {
        let mut names = Vec::new();
        let mut next = ino;
        while next != ROOT {
            let Some(node) = self.get(next) else { break };
            names.push(node.name.as_str());
            next = node.parent;
        }
        names.reverse();
        names.join("/")
    }

    pub fn lookup(&self, parent: Ino, name: &str) -> Option<Ino> {
        match &self.get(parent)?.kind {
            NodeKind::Dir { children } => children.get(name).copied(),
            _ => None,
        }
    }

    /// Tracks in `ino` and in its subdirectories down to `depth` levels, at most `limit`.
    pub fn tracks_below(&self, ino: Ino, depth: usize, limit: usize) -> Vec<FileRef> {
        let mut out = Vec::new();
        let mut stack = vec![(ino, 0)];
        while let Some((next, level)) = stack.pop() {
            match self.get(next).map(|n| &n.kind) {
                Some(NodeKind::Dir { children }) if level <= depth => {
                    stack.extend(children.values().map(|&c| (c, level + 1)));
                }
                Some(NodeKind::Track { file, .. }) => out.push(*file),
                _ => {}
            }
            if out.len() >= limit {
                break;
            }
        }
        out
    }

    pub fn track_count(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| matches!(n.kind, NodeKind::Track { .. }))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::model::{AlbumId, AudioFile, Disc, FileId, TrackId};

    fn track(n: u8, name: &str, formats: &[AudioFormat]) -> Track {
        Track {
            id: TrackId([n; 16]),
            name: name.into(),
            artists: vec!["Artist".into()],
            number: n as u32,
            disc_number: 1,
            duration_ms: 0,
            files: formats
                .iter()
                .enumerate()
                .map(|(i, f)| AudioFile {
                    id: FileId([n * 10 + i as u8; 20]),
                    format: *f,
                })
                .collect(),
        }
    }

    #[test]
    fn the_preferred_format_wins_else_the_best_quality() {
        let t = track(
            1,
            "T",
            &[
                AudioFormat::OggVorbis160,
                AudioFormat::Flac,
                AudioFormat::Mp3_320,
            ],
        );
        assert_eq!(pick_file(&t, &[]).unwrap().format, AudioFormat::Flac);
        assert_eq!(
            pick_file(&t, &[AudioFormat::Mp3_320]).unwrap().format,
            AudioFormat::Mp3_320
        );
        assert!(pick_file(&t, &[AudioFormat::Aac24]).is_none());
    }

    #[test]
    fn tree_layout_multi_disc_names_clashes_and_dates() {
        let tracks = vec![
            track(1, "Intro", &[AudioFormat::Mp3_320]),
            track(2, "Intro", &[AudioFormat::Mp3_320]),
            track(3, "A/B", &[AudioFormat::OggVorbis320]),
        ];
        let album = Album {
            id: AlbumId([9; 16]),
            name: "Live: \"One\"?".into(),
            artists: vec![],
            date: Some(Date {
                year: 2021,
                month: 3,
                day: 4,
            }),
            covers: vec![],
            discs: vec![
                Disc {
                    number: 1,
                    tracks: vec![tracks[0].id, tracks[1].id],
                },
                Disc {
                    number: 2,
                    tracks: vec![tracks[2].id],
                },
            ],
        };
        let tree = Tree::build(
            &[AlbumEntry {
                album,
                tracks: tracks.clone(),
            }],
            &[],
        );
        let artist = tree
            .lookup(ROOT, "Artist")
            .expect("artist from the tracks when the album has none");
        let dir = tree.lookup(artist, "Live: \"One\"?").unwrap();
        assert!(tree.lookup(dir, "1-01 - Intro.mp3").is_some());
        assert!(tree.lookup(dir, "1-02 - Intro.mp3").is_some());
        assert!(tree.lookup(dir, "2-03 - A_B.ogg").is_some());
        assert_eq!(tree.track_count(), 3);
        let mtime = tree.get(dir).unwrap().mtime;
        assert_eq!(mtime, UNIX_EPOCH + Duration::from_secs(1_614_816_000));
        assert!(tree.lookup(ROOT, ".trackfs").is_some());
        assert_eq!(tree.tracks_below(dir, 0, 100).len(), 3);
        assert_eq!(
            tree.tracks_below(artist, 1, 100).len(),
            3,
            "an artist's albums are probed"
        );
        assert_eq!(
            tree.tracks_below(ROOT, 1, 100).len(),
            0,
            "listing the root probes nothing"
        );
    }

    #[test]
    fn an_artist_called_like_the_meta_directory_gets_its_own() {
        let t = track(1, "stats", &[AudioFormat::Mp3_320]);
        let album = Album {
            id: AlbumId([8; 16]),
            name: "stats".into(),
            artists: vec![".trackfs".into()],
            date: None,
            covers: vec![],
            discs: vec![Disc {
                number: 1,
                tracks: vec![t.id],
            }],
        };
        let tree = Tree::build(
            &[AlbumEntry {
                album,
                tracks: vec![t],
            }],
            &[],
        );
        let meta = tree.lookup(ROOT, ".trackfs").unwrap();
        assert!(tree.lookup(meta, "stats").is_some());
        assert!(
            tree.lookup(meta, "stats (2)").is_none(),
            "nothing merged into it"
        );
        let artist = tree
            .lookup(ROOT, ".trackfs (2)")
            .expect("the artist's own directory");
        assert!(tree.lookup(artist, "stats").is_some());
    }

    fn album(id: u8, name: &str, artist: &str, tracks: &[Track]) -> AlbumEntry {
        AlbumEntry {
            album: Album {
                id: AlbumId([id; 16]),
                name: name.into(),
                artists: vec![artist.into()],
                date: None,
                covers: vec![],
                discs: vec![Disc {
                    number: 1,
                    tracks: tracks.iter().map(|t| t.id).collect(),
                }],
            },
            tracks: tracks.to_vec(),
        }
    }

    fn ino_of(tree: &Tree, path: &[&str]) -> Ino {
        path.iter()
            .fold(ROOT, |dir, name| tree.lookup(dir, name).expect(name))
    }

    #[test]
    fn inode_numbers_do_not_move_when_the_catalogue_grows() {
        let (one, two) = (
            track(1, "One", &[AudioFormat::Mp3_320]),
            track(2, "Two", &[AudioFormat::Mp3_320]),
        );
        let before = Tree::build(&[album(1, "Old", "Band", std::slice::from_ref(&one))], &[]);
        let after = Tree::build(
            &[
                album(2, "New", "Another Band", std::slice::from_ref(&two)),
                album(3, "Newer", "Band", std::slice::from_ref(&two)),
                album(1, "Old", "Band", std::slice::from_ref(&one)),
            ],
            &[],
        );
        for path in [
            &["Band"][..],
            &["Band", "Old"],
            &["Band", "Old", "01 - One.mp3"],
            &[".trackfs", "stats"],
        ] {
            assert_eq!(ino_of(&before, path), ino_of(&after, path), "{path:?}");
        }
        assert!(after.nodes.len() > before.nodes.len());
        // The same name with other contents is another file.
        let mut changed = one.clone();
        changed.files[0].id = FileId([99; 20]);
        let replaced = Tree::build(&[album(1, "Old", "Band", &[changed])], &[]);
        let path = ["Band", "Old", "01 - One.mp3"];
        assert_ne!(ino_of(&before, &path), ino_of(&replaced, &path));
        // Every number is distinct and none is the root's.
        let mut all: Vec<Ino> = after.index.keys().copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), after.nodes.len());
        assert!(all.iter().all(|&i| i == ROOT || (i > ROOT && i < 1 << 63)));
    }
}
