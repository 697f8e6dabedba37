//! Covers and playlists in the filesystem core, over the in-memory control plane: names by
//! picture type, the largest picture, exact bytes fetched once, playlists in order with what
//! the tree does not show left out, the `Playlists` folder's clash with an artist, and inode
//! numbers that a rebuilt tree keeps.

use super::*;
use crate::catalogue::library::{self, Extras};
use crate::client::doubles::{MemoryControlPlane, ScriptedRanges, TrackSpec};
use crate::protocol::keyfile::Keys;
use crate::protocol::model::{AudioFormat, ImageSize, TrackId};
use crate::readpath::heads::HeadStore;
use crate::readpath::keys::KeyStore;
use crate::readpath::test_rig::{config, plaintext};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use tree::ROOT;

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n a small png";

fn jpeg(len: usize) -> Vec<u8> {
    let mut bytes = vec![0xffu8, 0xd8, 0xff, 0xe0];
    bytes.extend((0..len - 4).map(|i| i as u8));
    bytes
}

struct Library {
    control: Arc<MemoryControlPlane>,
    core: FsCore,
    extras: Extras,
}

async fn load(control: Arc<MemoryControlPlane>, formats: &[AudioFormat]) -> Library {
    let albums = crate::catalogue::load(control.as_ref()).await.unwrap();
    let stats = Arc::new(Stats::default());
    let images = Arc::new(ImageStore::new(control.clone(), stats.clone(), 1 << 20));
    let (extras, _) = library::load(control.as_ref(), &albums, &HashMap::new(), &images).await;
    let tree = Tree::build_with(&albums, &extras, formats);
    let ranges = Arc::new(ScriptedRanges::serving(&control));
    let cache = Arc::new(BlockCache::new(1 << 20, stats.clone()));
    let keys = Arc::new(KeyStore::new(Keys::new(), control.clone()));
    let heads = HeadStore::new(control.clone(), 1 << 20);
    let reader = Arc::new(Reader::new(
        cache.clone(),
        ranges,
        keys,
        heads,
        stats.clone(),
        config(),
    ));
    let core = FsCore::new(tree, reader, cache, stats).with_images(images);
    Library {
        control,
        core,
        extras,
    }
}

impl Library {
    async fn attr(&self, path: &str) -> Result<Attr, FsError> {
        let mut attr = self.core.getattr(ROOT).await?;
        for name in path.split('/') {
            attr = self.core.lookup(attr.ino, name).await?;
        }
        Ok(attr)
    }

    async fn read_all(&self, path: &str) -> Vec<u8> {
        let attr = self.attr(path).await.unwrap();
        let mut out = Vec::new();
        // Small reads, as the kernel may send them.
        while (out.len() as u64) < attr.size {
            let got = self
                .core
                .read(attr.ino, out.len() as u64, 100)
                .await
                .unwrap();
            assert!(!got.is_empty(), "{path}: short at {}", out.len());
            out.extend_from_slice(&got);
        }
        out
    }

    fn names(&self, ino: Ino) -> Vec<String> {
        let entries = self.core.readdir(ino).unwrap();
        entries.into_iter().skip(2).map(|e| e.name).collect()
    }
}

fn spec(n: u32, title: &str) -> TrackSpec {
    let format = AudioFormat::Mp3_320;
    TrackSpec::new(n, title, format, plaintext(500 + n as usize, n as u8))
}

#[tokio::test]
async fn covers_are_named_by_type_sized_and_read_exactly_once_fetched() {
    let control = Arc::new(MemoryControlPlane::new());
    let (jpeg_album, _) = control.add_album("A", "Jpeg", &[spec(1, "One")]);
    let (png_album, _) = control.add_album("A", "Png", &[spec(1, "One")]);
    control.add_album("A", "Bare", &[spec(1, "One")]);
    // Several sizes: the most pixels win, not the first or the largest file.
    let big = jpeg(3000);
    control.add_image(jpeg_album, jpeg(5000), ImageSize::Small, Some((64, 64)));
    control.add_image(jpeg_album, big.clone(), ImageSize::Large, Some((640, 640)));
    control.add_image(jpeg_album, jpeg(200), ImageSize::Default, Some((300, 300)));
    control.add_image(png_album, PNG, ImageSize::Default, None);
    let lib = load(control, &[]).await;

    let cover = lib.attr("A/Jpeg/cover.jpg").await.unwrap();
    assert_eq!((cover.kind, cover.size), (Kind::File, 3000));
    assert!(cover.immutable);
    assert_eq!(lib.core.open(cover.ino, false).unwrap(), OpenMode::Cached);
    assert_eq!(lib.read_all("A/Jpeg/cover.jpg").await, big);
    assert_eq!(lib.read_all("A/Png/cover.png").await, PNG);
    let png = lib.attr("A/Png").await.unwrap();
    assert_eq!(lib.names(png.ino), ["01 - One.mp3", "cover.png"]);
    let bare = lib.attr("A/Bare").await.unwrap();
    assert_eq!(
        lib.names(bare.ino),
        ["01 - One.mp3"],
        "no picture, no cover"
    );
    assert_eq!(
        lib.control.calls.image.load(Ordering::Relaxed),
        2,
        "each shown picture fetched once, at load; reads found it kept"
    );
    let album_mtime = lib.attr("A/Jpeg").await.unwrap().mtime;
    assert_eq!(cover.mtime, album_mtime);
}

#[tokio::test]
async fn a_picture_that_cannot_be_fetched_shows_no_cover_and_mounts() {
    let control = Arc::new(MemoryControlPlane::new());
    let (album, _) = control.add_album("A", "B", &[spec(1, "One")]);
    let file = control.add_image(album, jpeg(100), ImageSize::Large, None);
    control.fail(&file.0);
    let lib = load(control, &[]).await;
    let dir = lib.attr("A/B").await.unwrap();
    assert_eq!(lib.names(dir.ino), ["01 - One.mp3"]);
}

#[tokio::test]
async fn playlists_keep_order_leave_out_what_is_not_shown_and_resolve() {
    let control = Arc::new(MemoryControlPlane::new());
    let (first, _) = control.add_album(
        "Björk",
        "Vespertine: \"Live\"?",
        &[spec(1, "Hidden Place"), spec(2, "Cocoon")],
    );
    let ogg = TrackSpec::new(1, "Ogg Only", AudioFormat::OggVorbis320, {
        let mut p = b"OggS".to_vec();
        p.resize(300, 1);
        p
    });
    let (second, _) = control.add_album("Other", "Album", &[spec(1, "Song"), ogg]);
    let a = control.track_ids(first);
    let b = control.track_ids(second);
    let unknown = TrackId([0xab; 16]);
    control.add_playlist(
        "Road trip ♫: Björk/Été",
        &[b[0], unknown, a[1], b[1], a[0], b[0]],
    );
    control.add_playlist("Empty", &[]);
    // Only MP3 shown: the Ogg track is hidden, so the playlist leaves it out too.
    let lib = load(control, &[AudioFormat::Mp3_320]).await;
    assert_eq!(lib.extras.playlists.len(), 2);
    let dir = lib.attr("Playlists").await.unwrap();
    assert_eq!(
        lib.names(dir.ino),
        ["Empty.m3u8", "Road trip ♫: Björk_Été.m3u8"]
    );
    let text = lib.read_all("Playlists/Road trip ♫: Björk_Été.m3u8").await;
    let text = String::from_utf8(text).unwrap();
    let paths: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        paths,
        [
            "../Other/Album/01 - Song.mp3",
            "../Björk/Vespertine: \"Live\"?/02 - Cocoon.mp3",
            "../Björk/Vespertine: \"Live\"?/01 - Hidden Place.mp3",
            "../Other/Album/01 - Song.mp3",
        ]
    );
    assert!(
        text.starts_with("#EXTM3U\n#EXTINF:1,Other - Song\n"),
        "{text}"
    );
    // Every entry opens the track's file with the track's bytes.
    for path in paths {
        let path = path.strip_prefix("../").unwrap();
        let attr = lib.attr(path).await.unwrap();
        assert_eq!(attr.kind, Kind::File);
        let bytes = lib.read_all(path).await;
        assert!(bytes.starts_with(b"ID3"), "{path}");
    }
    assert_eq!(lib.read_all("Playlists/Empty.m3u8").await, b"#EXTM3U\n");
}

#[tokio::test]
async fn no_playlists_no_folder_and_an_artist_called_playlists_keeps_its_own() {
    let control = Arc::new(MemoryControlPlane::new());
    control.add_album("Band", "Album", &[spec(1, "One")]);
    let lib = load(control.clone(), &[]).await;
    assert_eq!(lib.names(ROOT), [".trackfs", "Band"]);

    let (album, _) = control.add_album("Playlists", "Their Album", &[spec(1, "Two")]);
    control.add_playlist("Mix", &control.track_ids(album));
    let lib = load(control, &[]).await;
    assert_eq!(
        lib.names(ROOT),
        [".trackfs", "Band", "Playlists", "Playlists (2)"]
    );
    let text = lib.read_all("Playlists (2)/Mix.m3u8").await;
    assert!(String::from_utf8(text)
        .unwrap()
        .contains("\n../Playlists/Their Album/01 - Two.mp3\n"));
}

#[tokio::test]
async fn inode_numbers_sizes_and_times_are_the_same_after_a_rebuild() {
    let control = Arc::new(MemoryControlPlane::new());
    let (album, _) = control.add_album("A", "B", &[spec(1, "One")]);
    control.add_image(album, PNG, ImageSize::Large, None);
    control.add_playlist("Mix", &control.track_ids(album));
    let (one, two) = (load(control.clone(), &[]).await, load(control, &[]).await);
    for path in ["A/B/cover.png", "Playlists", "Playlists/Mix.m3u8"] {
        let (x, y) = (one.attr(path).await.unwrap(), two.attr(path).await.unwrap());
        assert_eq!((x.ino, x.size, x.mtime), (y.ino, y.size, y.mtime), "{path}");
    }
}
