//! The filesystem core driven directly, over the in-memory doubles: the tree as a user sees
//! it, reads against the plaintext, errnos, the stats file, and the retry bound end to end
//! through the real CDN logic. No `/dev/fuse` needed.

use super::*;
use crate::client::cdn::{Cdn, CdnConfig};
use crate::client::doubles::{MemoryControlPlane, ScriptedRanges, Step, TrackSpec};
use crate::client::transport::{BoxFuture, HttpResponse, Transport, TransportError};
use crate::protocol::keyfile::Keys;
use crate::protocol::model::{AudioFormat, FileId};
use crate::readpath::heads::HeadStore;
use crate::readpath::keys::KeyStore;
use crate::readpath::test_rig::{config, plaintext, BLOCK};
use std::sync::atomic::{AtomicUsize, Ordering};
use tree::ROOT;

struct Mount {
    control: Arc<MemoryControlPlane>,
    ranges: Arc<ScriptedRanges>,
    stats: Arc<Stats>,
    core: FsCore,
}

/// Two albums of one artist and one of another; track 2 of "First" is an Ogg file (its
/// hidden header is not shown).
async fn mount() -> Mount {
    let control = Arc::new(MemoryControlPlane::new());
    let mp3 = AudioFormat::Mp3_320;
    control.add_album(
        "Artist",
        "First",
        &[
            TrackSpec::new(1, "Opening", mp3, plaintext(5 * BLOCK as usize + 7, 1)),
            TrackSpec::new(2, "Ogg", AudioFormat::OggVorbis320, ogg_plaintext()),
        ],
    );
    control.add_album(
        "Artist",
        "Second",
        &[TrackSpec::new(1, "One", mp3, plaintext(100, 3))],
    );
    control.add_album(
        "Other",
        "Third",
        &[TrackSpec::new(7, "Seven", mp3, plaintext(3000, 4))],
    );
    let ranges = Arc::new(ScriptedRanges::serving(&control));
    mount_over(control, ranges.clone(), ranges).await
}

async fn mount_over(
    control: Arc<MemoryControlPlane>,
    ranges: Arc<ScriptedRanges>,
    source: Arc<dyn crate::client::seams::RangeSource>,
) -> Mount {
    let albums = crate::catalogue::load(control.as_ref()).await.unwrap();
    let tree = Tree::build(&albums, &[]);
    let stats = Arc::new(Stats::default());
    let cache = Arc::new(BlockCache::new(1 << 20, stats.clone()));
    let keys = Arc::new(KeyStore::new(Keys::new(), control.clone()));
    let heads = HeadStore::new(control.clone(), 1 << 20);
    let reader = Arc::new(Reader::new(
        cache.clone(),
        source,
        keys,
        heads,
        stats.clone(),
        config(),
    ));
    Mount {
        control,
        ranges,
        stats: stats.clone(),
        core: FsCore::new(tree, reader, cache, stats),
    }
}

/// 167 bytes of hidden header, then an Ogg page.
fn ogg_plaintext() -> Bytes {
    let mut plain = vec![0x42u8; 167];
    plain.extend_from_slice(b"OggS\0\x02");
    plain.extend_from_slice(&plaintext(2000, 9)[3..]);
    plain.into()
}

impl Mount {
    async fn path(&self, path: &str) -> Result<Attr, FsError> {
        let mut attr = self.core.getattr(ROOT).await?;
        for name in path.split('/').filter(|n| !n.is_empty()) {
            attr = self.core.lookup(attr.ino, name).await?;
        }
        Ok(attr)
    }

    fn names(&self, ino: Ino) -> Vec<String> {
        let entries = self.core.readdir(ino).unwrap();
        entries.into_iter().map(|e| e.name).collect()
    }
}

#[tokio::test]
async fn the_root_lists_artists_and_the_meta_directory() {
    let m = mount().await;
    assert_eq!(m.names(ROOT), [".", "..", ".trackfs", "Artist", "Other"]);
    let root = m.core.getattr(ROOT).await.unwrap();
    assert_eq!(root.kind, Kind::Dir);
}

#[tokio::test]
async fn an_artist_lists_albums_and_an_album_its_tracks() {
    let m = mount().await;
    let artist = m.path("Artist").await.unwrap();
    assert_eq!(m.names(artist.ino), [".", "..", "First", "Second"]);
    let album = m.path("Artist/First").await.unwrap();
    assert_eq!(
        m.names(album.ino),
        [".", "..", "01 - Opening.mp3", "02 - Ogg.ogg"]
    );
    let entries = m.core.readdir(album.ino).unwrap();
    assert_eq!(entries[1].ino, artist.ino, "`..` is the artist");
    assert!(entries[2..].iter().all(|e| e.kind == Kind::File));
}

#[tokio::test]
async fn getattr_gives_the_size_a_reader_sees() {
    let m = mount().await;
    let mp3 = m.path("Artist/First/01 - Opening.mp3").await.unwrap();
    assert_eq!((mp3.kind, mp3.size), (Kind::File, 5 * BLOCK + 7));
    assert!(mp3.immutable);
    let ogg = m.path("Artist/First/02 - Ogg.ogg").await.unwrap();
    assert_eq!(
        ogg.size,
        167 + 6 + 1997 - 167,
        "the hidden header is not shown"
    );
    let again = m.core.getattr(mp3.ino).await.unwrap();
    assert_eq!(again.ino, mp3.ino);
}

#[tokio::test]
async fn lookups_of_what_is_not_there_fail_with_the_right_errno() {
    let m = mount().await;
    let missing = m.path("Artist/Nope").await.unwrap_err();
    assert_eq!(missing.errno(), libc::ENOENT);
    let under_a_file = m.path("Artist/Second/01 - One.mp3/x").await.unwrap_err();
    assert_eq!(under_a_file.errno(), libc::ENOTDIR);
    assert_eq!(m.core.getattr(999).await.unwrap_err().errno(), libc::ENOENT);
    assert_eq!(m.core.readdir(999).unwrap_err().errno(), libc::ENOENT);
}

#[tokio::test]
async fn reads_give_the_plaintext_at_every_offset() {
    let m = mount().await;
    let attr = m.path("Other/Third/07 - Seven.mp3").await.unwrap();
    let plain = plaintext(3000, 4);
    for offset in (0..3010u64).step_by(97) {
        let got = m.core.read(attr.ino, offset, 300).await.unwrap();
        let from = (offset as usize).min(3000);
        assert_eq!(
            got,
            plain.slice(from..(from + 300).min(3000)),
            "offset {offset}"
        );
    }
}

#[tokio::test]
async fn an_ogg_file_reads_from_past_its_hidden_header() {
    let m = mount().await;
    let attr = m.path("Artist/First/02 - Ogg.ogg").await.unwrap();
    let whole = m.core.read(attr.ino, 0, 1 << 20).await.unwrap();
    assert_eq!(whole, ogg_plaintext().slice(167..));
    assert!(whole.starts_with(b"OggS"));
}

#[tokio::test]
async fn directories_cannot_be_read_or_written_and_files_not_listed() {
    let m = mount().await;
    let album = m.path("Artist/First").await.unwrap();
    let track = m.path("Artist/First/01 - Opening.mp3").await.unwrap();
    assert_eq!(
        m.core.read(album.ino, 0, 10).await.unwrap_err().errno(),
        libc::EISDIR
    );
    assert_eq!(
        m.core.open(album.ino, false).unwrap_err().errno(),
        libc::EISDIR
    );
    assert_eq!(
        m.core.open(track.ino, true).unwrap_err().errno(),
        libc::EROFS
    );
    assert_eq!(m.core.open(track.ino, false).unwrap(), OpenMode::Cached);
    assert_eq!(
        m.core.readdir(track.ino).unwrap_err().errno(),
        libc::ENOTDIR
    );
    assert_eq!(
        m.core.opendir(track.ino).unwrap_err().errno(),
        libc::ENOTDIR
    );
    assert!(m.core.opendir(album.ino).is_ok());
}

#[tokio::test]
async fn access_allows_reading_and_searching_only() {
    let m = mount().await;
    let album = m.path("Artist/First").await.unwrap();
    let track = m.path("Artist/First/01 - Opening.mp3").await.unwrap();
    assert!(m.core.access(album.ino, false, true).is_ok());
    assert!(m.core.access(track.ino, false, false).is_ok());
    assert_eq!(
        m.core.access(track.ino, false, true).unwrap_err().errno(),
        libc::EACCES
    );
    assert_eq!(
        m.core.access(track.ino, true, false).unwrap_err().errno(),
        libc::EROFS
    );
}

#[tokio::test]
async fn the_stats_file_is_live_and_opened_direct() {
    let m = mount().await;
    let stats = m.path(".trackfs/stats").await.unwrap();
    assert!(!stats.immutable);
    assert_eq!(m.core.open(stats.ino, false).unwrap(), OpenMode::Direct);
    let track = m.path("Artist/Second/01 - One.mp3").await.unwrap();
    m.core.read(track.ino, 0, 100).await.unwrap();
    let text = m.core.read(stats.ino, 0, 1 << 16).await.unwrap();
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(text.contains("bytes_served 100\n"), "{text}");
    assert!(text.contains("reads 1\n"), "{text}");
    assert!(stats.size > 0);
}

#[tokio::test]
async fn reading_the_stats_file_does_not_count_as_serving() {
    let m = mount().await;
    let stats = m.path(".trackfs/stats").await.unwrap();
    for _ in 0..3 {
        m.core.read(stats.ino, 0, 1 << 16).await.unwrap();
    }
    assert_eq!(m.stats.bytes_served.get(), 0);
    assert_eq!(m.stats.reads.get(), 0);
}

#[tokio::test]
async fn a_wrong_key_is_eio_and_counted() {
    let m = mount().await;
    let (file, _) = m
        .control
        .all_ciphertext()
        .into_iter()
        .find(|(_, b)| b.len() == 3000)
        .unwrap();
    m.control.hand_out_wrong_key(file);
    let track = m.path("Other/Third/07 - Seven.mp3").await.unwrap_err();
    assert_eq!(track.errno(), libc::EIO, "{track}");
    assert_eq!(m.stats.errors.get(), 1);
}

#[tokio::test]
async fn a_source_that_keeps_failing_is_eio() {
    let m = mount().await;
    let track = m.path("Artist/Second/01 - One.mp3").await;
    // The size was learned; now every fetch fails.
    let track = track.unwrap();
    m.ranges.always(Step::Fail(FetchError::NoCdnUrl {
        file: FileId([0; 20]),
    }));
    let failing = m.path("Artist/First/01 - Opening.mp3").await.unwrap_err();
    assert_eq!(failing.errno(), libc::EIO);
    let again = m.core.read(track.ino, 0, 10).await;
    assert!(again.is_ok(), "cached blocks still serve");
}

/// A CDN that never answers: every connection attempt fails.
#[derive(Default)]
struct DeadCdn {
    attempts: AtomicUsize,
}

impl Transport for DeadCdn {
    fn get(
        &self,
        _url: &str,
        _range: Option<(u64, u64)>,
    ) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Err(TransportError::Io("connection reset".into())) })
    }
}

#[tokio::test]
async fn a_cdn_that_keeps_failing_is_eio_after_the_retry_bound() {
    let control = Arc::new(MemoryControlPlane::new());
    let mp3 = AudioFormat::Mp3_320;
    control.add_album("A", "B", &[TrackSpec::new(1, "C", mp3, plaintext(2000, 1))]);
    let dead = Arc::new(DeadCdn::default());
    let cdn_config = CdnConfig {
        attempts: 3,
        ..CdnConfig::default()
    };
    let cdn = Arc::new(Cdn::new(
        dead.clone(),
        control.clone(),
        cdn_config,
        Arc::default(),
    ));
    let m = mount_over(control, Arc::new(ScriptedRanges::new()), cdn).await;
    let track = m.path("A/B").await.unwrap();
    let file = m.core.readdir(track.ino).unwrap()[2].ino;
    let error = m.core.read(file, 0, 10).await.unwrap_err();
    assert_eq!(error.errno(), libc::EIO);
    assert!(error.to_string().contains("after 3 attempts"), "{error}");
    assert_eq!(dead.attempts.load(Ordering::SeqCst), 3);
    assert_eq!(m.core.getattr(file).await.unwrap_err().errno(), libc::EIO);
}

#[tokio::test]
async fn a_file_that_changed_on_the_cdn_is_estale() {
    let m = mount().await;
    let attr = m.path("Artist/First/01 - Opening.mp3").await.unwrap();
    let (file, bytes) = m
        .control
        .all_ciphertext()
        .into_iter()
        .find(|(_, b)| b.len() as u64 == 5 * BLOCK + 7)
        .unwrap();
    let mut longer = bytes.to_vec();
    longer.extend_from_slice(&[0; 100]);
    m.ranges.add_file(file, longer.into());
    let error = m.core.read(attr.ino, 3 * BLOCK, 10).await.unwrap_err();
    assert_eq!(error.errno(), libc::ESTALE, "{error}");
}

#[tokio::test]
async fn paths_name_tracks_as_the_user_sees_them() {
    let m = mount().await;
    let attr = m.path("Other/Third/07 - Seven.mp3").await.unwrap();
    assert_eq!(m.core.tree().path(attr.ino), "Other/Third/07 - Seven.mp3");
    assert_eq!(m.core.tree().path(ROOT), "");
}
