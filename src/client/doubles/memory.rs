//! An in-memory control plane: the catalogue a test builds, answered without a network.

use crate::client::error::FetchError;
use crate::client::seams::{BoxFuture, ControlPlane, Fresh, Library, Revalidated};
use crate::protocol::crypto::{self, AudioKey};
use crate::protocol::model::{
    Album, AlbumId, AudioFile, AudioFormat, Disc, FileId, Image, ImageSize, Playlist, PlaylistId,
    Track, TrackId,
};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// One track to add: its tags, format and the plaintext of its one file.
#[derive(Debug, Clone)]
pub struct TrackSpec {
    pub title: String,
    pub number: u32,
    pub format: AudioFormat,
    pub plaintext: Bytes,
}

impl TrackSpec {
    pub fn new(number: u32, title: &str, format: AudioFormat, plaintext: impl Into<Bytes>) -> Self {
        TrackSpec {
            title: title.to_string(),
            number,
            format,
            plaintext: plaintext.into(),
        }
    }
}

#[derive(Default)]
struct Catalogue {
    library: Vec<AlbumId>,
    albums: HashMap<AlbumId, Album>,
    tracks: HashMap<TrackId, Track>,
    /// The keys the files were encrypted with.
    keys: HashMap<FileId, AudioKey>,
    /// Keys handed out instead (a wrong key, for tests of the checks).
    handed_out: HashMap<FileId, AudioKey>,
    ciphertext: HashMap<FileId, Bytes>,
    plaintext: HashMap<FileId, Bytes>,
    heads: HashMap<FileId, Bytes>,
    /// Ids whose metadata or key requests fail (with a 503-like transient error).
    failing: HashSet<Vec<u8>>,
    next_id: u32,
    /// v1.1: pictures by file id, and the playlists in rootlist order.
    images: HashMap<FileId, Bytes>,
    playlists: Vec<Playlist>,
    /// Whether answers carry ETags (docs/protocol.md §8); off, like a v1 origin.
    etags: bool,
}

impl Catalogue {
    fn id_bytes<const N: usize>(&mut self) -> [u8; N] {
        self.next_id += 1;
        let mut bytes = [0u8; N];
        bytes[..4].copy_from_slice(&self.next_id.to_be_bytes());
        bytes[N - 1] = 0x5a;
        bytes
    }
}

/// Calls answered, by kind.
#[derive(Default, Debug)]
pub struct Calls {
    pub library: AtomicUsize,
    pub album: AtomicUsize,
    pub track: AtomicUsize,
    pub resolve: AtomicUsize,
    pub audio_key: AtomicUsize,
    pub head: AtomicUsize,
    pub image: AtomicUsize,
    /// Conditional requests answered "unchanged" (a `304`).
    pub not_modified: AtomicUsize,
}

/// A control plane answering from a catalogue built with [`MemoryControlPlane::add_album`].
#[derive(Default)]
pub struct MemoryControlPlane {
    catalogue: Mutex<Catalogue>,
    pub calls: Calls,
}

fn unavailable(what: &str) -> FetchError {
    FetchError::Status {
        url: format!("memory://{what}"),
        status: 503,
        retry_after: None,
    }
}

fn not_found(what: String) -> FetchError {
    FetchError::NotFound {
        url: format!("memory://{what}"),
    }
}

impl MemoryControlPlane {
    pub fn new() -> Self {
        Self::default()
    }

    fn catalogue(&self) -> std::sync::MutexGuard<'_, Catalogue> {
        self.catalogue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an album by `artist` with `tracks` (one disc), each file encrypted under a key of
    /// its own. Returns the album's id and the file ids, in the order of `tracks`.
    pub fn add_album(
        &self,
        artist: &str,
        name: &str,
        tracks: &[TrackSpec],
    ) -> (AlbumId, Vec<FileId>) {
        let mut c = self.catalogue();
        let album_id = AlbumId(c.id_bytes());
        let mut track_ids = Vec::new();
        let mut files = Vec::new();
        for spec in tracks {
            let track_id = TrackId(c.id_bytes());
            let file = FileId(c.id_bytes());
            let key = AudioKey(c.id_bytes());
            let mut ciphertext = spec.plaintext.to_vec();
            crypto::apply_keystream(&key, 0, &mut ciphertext);
            c.ciphertext.insert(file, ciphertext.into());
            c.plaintext.insert(file, spec.plaintext.clone());
            c.keys.insert(file, key);
            c.tracks.insert(
                track_id,
                Track {
                    id: track_id,
                    name: spec.title.clone(),
                    artists: vec![artist.to_string()],
                    number: spec.number,
                    disc_number: 1,
                    duration_ms: 1000,
                    files: vec![AudioFile {
                        id: file,
                        format: spec.format,
                    }],
                },
            );
            track_ids.push(track_id);
            files.push(file);
        }
        c.albums.insert(
            album_id,
            Album {
                id: album_id,
                name: name.to_string(),
                artists: vec![artist.to_string()],
                date: None,
                covers: Vec::new(),
                discs: vec![Disc {
                    number: 1,
                    tracks: track_ids,
                }],
            },
        );
        c.library.push(album_id);
        (album_id, files)
    }

    /// Lists an album id the catalogue does not hold (its loading fails with 404).
    pub fn add_missing_album(&self) -> AlbumId {
        let mut c = self.catalogue();
        let id = AlbumId(c.id_bytes());
        c.library.push(id);
        id
    }

    /// The file's stored (encrypted) bytes, for a range source to serve.
    pub fn ciphertext(&self, file: FileId) -> Option<Bytes> {
        self.catalogue().ciphertext.get(&file).cloned()
    }

    /// Every file's stored bytes.
    pub fn all_ciphertext(&self) -> Vec<(FileId, Bytes)> {
        let c = self.catalogue();
        c.ciphertext.iter().map(|(f, b)| (*f, b.clone())).collect()
    }

    pub fn plaintext(&self, file: FileId) -> Option<Bytes> {
        self.catalogue().plaintext.get(&file).cloned()
    }

    /// The key `file` was encrypted with.
    pub fn key(&self, file: FileId) -> Option<AudioKey> {
        self.catalogue().keys.get(&file).cloned()
    }

    /// Serves the first `len` plaintext bytes as `file`'s head file.
    pub fn add_head(&self, file: FileId, len: usize) {
        let mut c = self.catalogue();
        if let Some(plain) = c.plaintext.get(&file).cloned() {
            c.heads.insert(file, plain.slice(..len.min(plain.len())));
        }
    }

    /// Hands out a wrong key for `file` from now on.
    pub fn hand_out_wrong_key(&self, file: FileId) {
        let mut c = self.catalogue();
        c.handed_out.insert(file, AudioKey([0xee; 16]));
    }

    /// Requests about this id (album, track or file, as raw bytes) fail transiently from now on.
    pub fn fail(&self, id: &[u8]) {
        self.catalogue().failing.insert(id.to_vec());
    }

    fn failing(&self, id: &[u8]) -> bool {
        self.catalogue().failing.contains(id)
    }
}

/// v1.1: covers and playlists.
impl MemoryControlPlane {
    /// Adds a picture of `album` (its bytes as given) and returns its file id.
    pub fn add_image(
        &self,
        album: AlbumId,
        bytes: impl Into<Bytes>,
        size: ImageSize,
        dims: Option<(u32, u32)>,
    ) -> FileId {
        let mut c = self.catalogue();
        let file_id = FileId(c.id_bytes());
        c.images.insert(file_id, bytes.into());
        if let Some(a) = c.albums.get_mut(&album) {
            a.covers.push(Image {
                file_id,
                size,
                width: dims.map(|d| d.0),
                height: dims.map(|d| d.1),
            });
        }
        file_id
    }

    /// Adds a playlist of `tracks` (any ids, known or not) at the end of the rootlist.
    pub fn add_playlist(&self, name: &str, tracks: &[TrackId]) -> PlaylistId {
        let mut c = self.catalogue();
        let id = PlaylistId(c.id_bytes());
        c.playlists.push(Playlist {
            id,
            name: name.to_string(),
            revision: vec![1],
            tracks: tracks.to_vec(),
        });
        id
    }

    /// The album's track ids, in order.
    pub fn track_ids(&self, album: AlbumId) -> Vec<TrackId> {
        let c = self.catalogue();
        let discs = c.albums.get(&album).map(|a| a.discs.clone());
        discs.into_iter().flatten().flat_map(|d| d.tracks).collect()
    }
}

/// Mutations, as a publish would make them, and ETags.
impl MemoryControlPlane {
    /// Answers carry ETags from now on (or no longer).
    pub fn set_etags(&self, on: bool) {
        self.catalogue().etags = on;
    }

    /// Takes the album out of the library (its tracks' keys and files stay, as an origin's do
    /// for a grace period).
    pub fn remove_album(&self, id: AlbumId) {
        let mut c = self.catalogue();
        c.library.retain(|a| *a != id);
        c.albums.remove(&id);
    }

    /// Gives the track a new file (new bytes under a new file id, as a retagged file gets),
    /// keeping the track id. Returns the new file id.
    pub fn replace_file(&self, track: TrackId, plaintext: impl Into<Bytes>) -> Option<FileId> {
        let mut c = self.catalogue();
        let file = FileId(c.id_bytes());
        let key = AudioKey(c.id_bytes());
        let plaintext: Bytes = plaintext.into();
        let mut ciphertext = plaintext.to_vec();
        crypto::apply_keystream(&key, 0, &mut ciphertext);
        let t = c.tracks.get_mut(&track)?;
        let format = t
            .files
            .first()
            .map_or(AudioFormat::OggVorbis320, |f| f.format);
        t.files = vec![AudioFile { id: file, format }];
        c.ciphertext.insert(file, ciphertext.into());
        c.plaintext.insert(file, plaintext);
        c.keys.insert(file, key);
        Some(file)
    }

    /// Renames an album in place (same id, new body).
    pub fn rename_album(&self, id: AlbumId, name: &str) {
        if let Some(a) = self.catalogue().albums.get_mut(&id) {
            a.name = name.to_string();
        }
    }

    /// The album's track ids, in order.
    pub fn album_tracks(&self, id: AlbumId) -> Vec<TrackId> {
        let c = self.catalogue();
        let discs = c
            .albums
            .get(&id)
            .map(|a| a.discs.clone())
            .unwrap_or_default();
        discs.into_iter().flat_map(|d| d.tracks).collect()
    }

    /// The ETag of an answer: a hash of what it stands for, as an origin's is of its bytes.
    /// An album's covers only the album (a track's new file leaves it as it was, which the
    /// protocol allows); the library's covers all, tracks and playlists included.
    fn etag(c: &Catalogue, what: Etagged) -> Option<String> {
        use std::hash::{Hash, Hasher};
        if !c.etags {
            return None;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let album = |id: &AlbumId, h: &mut std::collections::hash_map::DefaultHasher| {
            let a = c.albums.get(id);
            format!("{a:?}").hash(h);
            for t in a.iter().flat_map(|a| &a.discs).flat_map(|d| &d.tracks) {
                format!("{:?}", c.tracks.get(t)).hash(h);
            }
        };
        match what {
            Etagged::Library => {
                c.library.iter().for_each(|id| {
                    id.0.hash(&mut h);
                    album(id, &mut h);
                });
                format!("{:?}", c.playlists).hash(&mut h);
            }
            Etagged::Album(id) => format!("{:?}", c.albums.get(&id)).hash(&mut h),
            Etagged::Track(id) => format!("{:?}", c.tracks.get(&id)).hash(&mut h),
            Etagged::Playlist(id) => {
                format!("{:?}", c.playlists.iter().find(|p| p.id == id)).hash(&mut h)
            }
        }
        Some(format!("\"{:016x}\"", h.finish()))
    }

    /// `Unchanged` when `etag` is the answer's current one.
    fn revalidated<T>(
        &self,
        what: Etagged,
        etag: Option<String>,
        answer: Result<T, FetchError>,
    ) -> Revalidated<T> {
        let current = Self::etag(&self.catalogue(), what);
        let value = answer?;
        if etag.is_some() && etag == current {
            self.calls.not_modified.fetch_add(1, Ordering::Relaxed);
            return Ok(Fresh::Unchanged);
        }
        Ok(Fresh::New(value, current))
    }
}

#[derive(Clone, Copy)]
enum Etagged {
    Library,
    Album(AlbumId),
    Track(TrackId),
    Playlist(PlaylistId),
}

impl ControlPlane for MemoryControlPlane {
    fn library_if(&self, etag: Option<String>) -> BoxFuture<'_, Revalidated<Library>> {
        Box::pin(async move {
            let answer = self.library().await;
            self.revalidated(Etagged::Library, etag, answer)
        })
    }

    fn album_if(&self, id: AlbumId, etag: Option<String>) -> BoxFuture<'_, Revalidated<Album>> {
        Box::pin(async move {
            let answer = self.album(id).await;
            self.revalidated(Etagged::Album(id), etag, answer)
        })
    }

    fn track_if(&self, id: TrackId, etag: Option<String>) -> BoxFuture<'_, Revalidated<Track>> {
        Box::pin(async move {
            let answer = self.track(id).await;
            self.revalidated(Etagged::Track(id), etag, answer)
        })
    }

    fn library(&self) -> BoxFuture<'_, Result<Vec<Result<AlbumId, FetchError>>, FetchError>> {
        self.calls.library.fetch_add(1, Ordering::Relaxed);
        let ids = self.catalogue().library.iter().map(|id| Ok(*id)).collect();
        Box::pin(async move { Ok(ids) })
    }

    fn album(&self, id: AlbumId) -> BoxFuture<'_, Result<Album, FetchError>> {
        self.calls.album.fetch_add(1, Ordering::Relaxed);
        let answer = match self.failing(&id.0) {
            true => Err(unavailable("album")),
            false => self
                .catalogue()
                .albums
                .get(&id)
                .cloned()
                .ok_or_else(|| not_found(format!("album/{id}"))),
        };
        Box::pin(async move { answer })
    }

    fn track(&self, id: TrackId) -> BoxFuture<'_, Result<Track, FetchError>> {
        self.calls.track.fetch_add(1, Ordering::Relaxed);
        let answer = match self.failing(&id.0) {
            true => Err(unavailable("track")),
            false => self
                .catalogue()
                .tracks
                .get(&id)
                .cloned()
                .ok_or_else(|| not_found(format!("track/{id}"))),
        };
        Box::pin(async move { answer })
    }

    fn resolve(&self, file: FileId) -> BoxFuture<'_, Result<Vec<String>, FetchError>> {
        self.calls.resolve.fetch_add(1, Ordering::Relaxed);
        let answer = match self.catalogue().ciphertext.contains_key(&file) {
            true => Ok(vec![format!("http://127.0.0.1:9/cdn/{file}")]),
            false => Err(not_found(format!("storage-resolve/{file}"))),
        };
        Box::pin(async move { answer })
    }

    fn audio_key(&self, file: FileId) -> BoxFuture<'_, Result<AudioKey, FetchError>> {
        self.calls.audio_key.fetch_add(1, Ordering::Relaxed);
        let answer = if self.failing(&file.0) {
            Err(unavailable("audiokey"))
        } else {
            let c = self.catalogue();
            c.handed_out
                .get(&file)
                .or_else(|| c.keys.get(&file))
                .cloned()
                .ok_or_else(|| not_found(format!("audiokey/{file}")))
        };
        Box::pin(async move { answer })
    }

    fn head(&self, file: FileId) -> BoxFuture<'_, Result<Option<Bytes>, FetchError>> {
        self.calls.head.fetch_add(1, Ordering::Relaxed);
        let head = self.catalogue().heads.get(&file).cloned();
        Box::pin(async move { Ok(head) })
    }

    fn rootlist(&self) -> BoxFuture<'_, Result<Vec<PlaylistId>, FetchError>> {
        let ids = self.catalogue().playlists.iter().map(|p| p.id).collect();
        Box::pin(async move { Ok(ids) })
    }

    fn playlist(&self, id: PlaylistId) -> BoxFuture<'_, Result<Playlist, FetchError>> {
        let answer = match self.failing(&id.0) {
            true => Err(unavailable("playlist")),
            false => self
                .catalogue()
                .playlists
                .iter()
                .find(|p| p.id == id)
                .cloned()
                .ok_or_else(|| not_found(format!("playlist/{id}"))),
        };
        Box::pin(async move { answer })
    }

    fn playlist_if(
        &self,
        id: PlaylistId,
        etag: Option<String>,
    ) -> BoxFuture<'_, Revalidated<Playlist>> {
        Box::pin(async move {
            let answer = self.playlist(id).await;
            self.revalidated(Etagged::Playlist(id), etag, answer)
        })
    }

    fn image(&self, file: FileId) -> BoxFuture<'_, Result<Bytes, FetchError>> {
        self.calls.image.fetch_add(1, Ordering::Relaxed);
        let answer = match self.failing(&file.0) {
            true => Err(unavailable("image")),
            false => self
                .catalogue()
                .images
                .get(&file)
                .cloned()
                .ok_or_else(|| not_found(format!("image/{file}"))),
        };
        Box::pin(async move { answer })
    }
}
