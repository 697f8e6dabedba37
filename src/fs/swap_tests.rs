//! A tree swapped under the core: what lookups, reads and the change feed see, and what the
//! kernel is told to forget.

use super::super::diff::Forget;
use super::super::tree::{Tree, ROOT};
use super::super::*;
use crate::catalogue::refresh::{self, Catalogue, Outcome};
use crate::client::doubles::{MemoryControlPlane, ScriptedRanges, TrackSpec};
use crate::protocol::keyfile::Keys;
use crate::protocol::model::{AlbumId, AudioFormat};
use crate::readpath::heads::HeadStore;
use crate::readpath::keys::KeyStore;
use crate::readpath::test_rig::{config, plaintext};

struct Mount {
    control: Arc<MemoryControlPlane>,
    ranges: Arc<ScriptedRanges>,
    core: FsCore,
    catalogue: Catalogue,
    albums: Vec<AlbumId>,
}

async fn mount() -> Mount {
    let control = Arc::new(MemoryControlPlane::new());
    control.set_etags(true);
    let mp3 = AudioFormat::Mp3_320;
    let albums = vec![
        control
            .add_album(
                "Band",
                "Stays",
                &[TrackSpec::new(1, "Kept", mp3, plaintext(5000, 1))],
            )
            .0,
        control
            .add_album(
                "Band",
                "Leaves",
                &[TrackSpec::new(1, "Gone", mp3, plaintext(7000, 2))],
            )
            .0,
    ];
    let catalogue = refresh::load(control.as_ref()).await.unwrap();
    let tree = Tree::build(&catalogue.albums, &[]);
    let stats = Arc::new(Stats::default());
    let cache = Arc::new(BlockCache::new(1 << 20, stats.clone()));
    let keys = Arc::new(KeyStore::new(Keys::new(), control.clone()));
    let heads = HeadStore::new(control.clone(), 1 << 20);
    let ranges = Arc::new(ScriptedRanges::serving(&control));
    let reader = Arc::new(Reader::new(
        cache.clone(),
        ranges.clone(),
        keys,
        heads,
        stats.clone(),
        config(),
    ));
    Mount {
        control,
        ranges,
        core: FsCore::new(tree, reader, cache, stats),
        catalogue,
        albums,
    }
}

impl Mount {
    /// The CDN double serves files the origin double got since.
    fn serve(&self, file: crate::protocol::model::FileId) {
        self.ranges
            .add_file(file, self.control.ciphertext(file).unwrap());
    }

    async fn ino(&self, path: &str) -> Option<Ino> {
        let mut ino = ROOT;
        for name in path.split('/') {
            ino = self.core.lookup(ino, name).await.ok()?.ino;
        }
        Some(ino)
    }

    async fn refresh(&mut self) -> diff::Diff {
        let Outcome::Revalidated { catalogue, .. } =
            refresh::revalidate(self.control.as_ref(), &self.catalogue)
                .await
                .unwrap()
        else {
            panic!("the library changed");
        };
        self.catalogue = catalogue;
        self.core.swap(Tree::build(&self.catalogue.albums, &[]))
    }
}

#[tokio::test]
async fn a_refresh_adds_removes_and_changes_while_open_files_read_on() {
    let mut m = mount().await;
    let kept = m.ino("Band/Stays/01 - Kept.mp3").await.unwrap();
    let band = m.ino("Band").await.unwrap();
    let gone = m.ino("Band/Leaves/01 - Gone.mp3").await.unwrap();
    // "Gone" is open; its album leaves, a new album comes, and "Kept" stays.
    m.control.remove_album(m.albums[1]);
    let (_, files) = m.control.add_album(
        "Newcomer",
        "Fresh",
        &[TrackSpec::new(
            1,
            "New",
            AudioFormat::Mp3_320,
            plaintext(300, 3),
        )],
    );
    m.serve(files[0]);
    let diff = m.refresh().await;

    assert_eq!(
        m.ino("Band/Stays/01 - Kept.mp3").await,
        Some(kept),
        "same inode"
    );
    assert!(m.ino("Band/Leaves").await.is_none());
    assert!(m.ino("Newcomer/Fresh/01 - New.mp3").await.is_some());
    // The open file reads its exact bytes to the end.
    assert_eq!(
        m.core.read(gone, 0, 10_000).await.unwrap(),
        plaintext(7000, 2)
    );
    assert_eq!(m.core.getattr(gone).await.unwrap().size, 7000);

    let changes = String::from_utf8(m.core.live.changes().to_vec()).unwrap();
    assert_eq!(changes, "1 removed Band/Leaves\n2 added Newcomer\n");
    assert!(diff.forget.contains(&Forget::Entry {
        parent: band,
        name: "Leaves".into()
    }));
    assert!(diff.forget.contains(&Forget::Inode(band)));
    assert!(diff.forget.contains(&Forget::Inode(ROOT)));
    assert!(!diff.forget.contains(&Forget::Inode(kept)));
}

#[tokio::test]
async fn a_track_with_a_new_file_is_a_changed_file_with_a_new_inode() {
    let mut m = mount().await;
    let path = "Band/Stays/01 - Kept.mp3";
    let before = m.ino(path).await.unwrap();
    let track = m.control.album_tracks(m.albums[0])[0];
    let file = m.control.replace_file(track, plaintext(900, 5)).unwrap();
    m.serve(file);
    let diff = m.refresh().await;
    let after = m.ino(path).await.unwrap();
    assert_ne!(before, after);
    assert_eq!(
        m.core.read(after, 0, 2000).await.unwrap(),
        plaintext(900, 5)
    );
    assert_eq!(
        m.core.read(before, 0, 9000).await.unwrap(),
        plaintext(5000, 1)
    );
    assert_eq!(diff.changes, [(diff::Change::Changed, path.to_string())]);
    let changes = String::from_utf8(m.core.live.changes().to_vec()).unwrap();
    assert_eq!(changes, format!("1 changed {path}\n"));
}

#[tokio::test]
async fn an_unchanged_tree_changes_nothing() {
    let m = mount().await;
    let diff = m.core.swap(Tree::build(&m.catalogue.albums, &[]));
    assert!(diff.is_empty(), "{diff:?}");
    assert!(m.core.live.changes().is_empty());
}

#[tokio::test]
async fn reading_the_refresh_file_runs_the_refresh_and_says_how_it_went() {
    let m = mount().await;
    let refresh = m.ino(".trackfs/refresh").await.unwrap();
    assert_eq!(m.core.open(refresh, false).unwrap(), OpenMode::Direct);
    let none = m.core.read(refresh, 0, 100).await.unwrap();
    assert!(none.starts_with(b"error:"), "no refresh set yet");
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = runs.clone();
    m.core.set_refresh(Box::new(move || {
        let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move { Ok(format!("refresh {n}")) })
    }));
    assert_eq!(
        &m.core.read(refresh, 0, 100).await.unwrap()[..],
        b"ok refresh 0\n"
    );
    assert_eq!(
        &m.core.read(refresh, 3, 100).await.unwrap()[..],
        b"refresh 0\n"
    );
    assert_eq!(
        runs.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only a read from the start runs one"
    );
}
