//! Revalidation against the in-memory control plane, with and without ETags: what it costs
//! (requests by kind) and what it finds.

use super::*;
use crate::client::doubles::{MemoryControlPlane, TrackSpec};
use crate::client::seams::Revalidated;
use crate::protocol::model::AudioFormat;
use std::sync::atomic::Ordering;

fn spec(n: u32, title: &str) -> TrackSpec {
    TrackSpec::new(n, title, AudioFormat::OggVorbis320, vec![n as u8; 64])
}

fn origin(etags: bool) -> (MemoryControlPlane, Vec<AlbumId>) {
    let api = MemoryControlPlane::new();
    api.set_etags(etags);
    let ids = (0..3)
        .map(|i| {
            let tracks = [spec(1, "One"), spec(2, "Two")];
            api.add_album("Band", &format!("Album {i}"), &tracks).0
        })
        .collect();
    (api, ids)
}

/// Requests since the last call: (library, album, track, not modified).
fn take_calls(api: &MemoryControlPlane) -> (usize, usize, usize, usize) {
    let c = &api.calls;
    (
        c.library.swap(0, Ordering::Relaxed),
        c.album.swap(0, Ordering::Relaxed),
        c.track.swap(0, Ordering::Relaxed),
        c.not_modified.swap(0, Ordering::Relaxed),
    )
}

async fn refreshed(api: &MemoryControlPlane, current: &Catalogue) -> Option<Catalogue> {
    match revalidate(api, current).await.unwrap() {
        Outcome::Unchanged => None,
        Outcome::Revalidated {
            catalogue,
            complete,
            failed,
        } => {
            assert!(complete);
            assert!(failed.is_none());
            Some(catalogue)
        }
    }
}

fn names(c: &Catalogue) -> Vec<String> {
    c.albums.iter().map(|a| a.album.name.clone()).collect()
}

#[tokio::test]
async fn with_etags_a_quiet_refresh_is_one_conditional_request() {
    let (api, _) = origin(true);
    let first = load(&api).await.unwrap();
    assert_eq!(take_calls(&api), (1, 3, 6, 0));
    assert!(first.etags.library.is_some());
    assert!(refreshed(&api, &first).await.is_none());
    assert_eq!(take_calls(&api), (1, 0, 0, 1));
}

#[tokio::test]
async fn with_etags_only_what_changed_is_fetched() {
    let (api, ids) = origin(true);
    let first = load(&api).await.unwrap();
    take_calls(&api);
    let new = api.add_album("Other", "Fresh", &[spec(1, "A")]).0;
    api.remove_album(ids[0]);
    let retagged = api.album_tracks(ids[1])[1];
    let file = api.replace_file(retagged, vec![9u8; 80]).unwrap();
    let after = refreshed(&api, &first).await.expect("changed");
    assert_eq!(names(&after), ["Album 1", "Album 2", "Fresh"]);
    // Library; albums 1, 2 (both 304: a track's new file leaves its album's answer as it
    // was) and the new one; albums 1 and 2's four tracks (three 304) and the new album's one.
    assert_eq!(take_calls(&api), (1, 3, 5, 5));
    let track = after.albums[0]
        .tracks
        .iter()
        .find(|t| t.id == retagged)
        .unwrap();
    assert_eq!(track.files[0].id, file);
    assert!(after.albums.iter().any(|a| a.album.id == new));
    // And then it is quiet again.
    assert!(refreshed(&api, &after).await.is_none());
    assert_eq!(take_calls(&api), (1, 0, 0, 1));
}

#[tokio::test]
async fn without_etags_every_body_is_fetched_and_compared() {
    let (api, ids) = origin(false);
    let first = load(&api).await.unwrap();
    assert_eq!(first.etags, Etags::default());
    take_calls(&api);
    let quiet = refreshed(&api, &first)
        .await
        .expect("no ETag: always a new answer");
    assert_eq!(quiet, first);
    assert_eq!(take_calls(&api), (1, 3, 6, 0), "every answer fetched");
    api.rename_album(ids[2], "Renamed");
    let after = refreshed(&api, &first).await.unwrap();
    assert_eq!(names(&after), ["Album 0", "Album 1", "Renamed"]);
    assert_eq!(after.albums[2].tracks, first.albums[2].tracks);
}

#[tokio::test]
async fn a_new_file_under_the_same_track_id_is_found_with_and_without_etags() {
    for etags in [true, false] {
        let (api, ids) = origin(etags);
        let first = load(&api).await.unwrap();
        let track = api.album_tracks(ids[1])[0];
        let album_before = first.albums[1].album.clone();
        let file = api.replace_file(track, vec![7u8; 99]).unwrap();
        let after = refreshed(&api, &first).await.expect("the library changed");
        assert_eq!(
            after.albums[1].album, album_before,
            "the album's answer is the same"
        );
        let found = after.albums[1]
            .tracks
            .iter()
            .find(|t| t.id == track)
            .unwrap();
        assert_eq!(found.files[0].id, file, "etags: {etags}");
    }
}

#[tokio::test]
async fn what_cannot_be_fetched_is_kept_and_the_library_etag_forgotten() {
    let (api, ids) = origin(true);
    let first = load(&api).await.unwrap();
    api.rename_album(ids[1], "Renamed");
    api.fail(&ids[1].0);
    let Outcome::Revalidated {
        catalogue,
        complete,
        ..
    } = revalidate(&api, &first).await.unwrap()
    else {
        panic!("the library changed");
    };
    assert!(!complete);
    assert_eq!(names(&catalogue), ["Album 0", "Album 1", "Album 2"]);
    assert_eq!(
        catalogue.etags.library, None,
        "the next refresh must look again"
    );
    assert_eq!(
        catalogue.etags.albums.get(&ids[1]),
        first.etags.albums.get(&ids[1])
    );
}

#[tokio::test]
async fn a_library_whose_albums_all_fail_is_an_error() {
    let api = MemoryControlPlane::new();
    api.add_missing_album();
    assert!(load(&api).await.is_err());
}

#[tokio::test]
async fn known_albums_keep_their_place_and_new_ones_follow() {
    let (api, _) = origin(false);
    let mut known = load(&api).await.unwrap();
    // As if the origin had listed them the other way round before.
    known.albums.reverse();
    api.add_album("Band", "Album 0", &[spec(1, "Newcomer")]);
    let after = refreshed(&api, &known).await.unwrap();
    assert_eq!(names(&after), ["Album 2", "Album 1", "Album 0", "Album 0"]);
    assert_eq!(after.albums[3].tracks[0].name, "Newcomer");
}

#[tokio::test]
async fn playlists_are_revalidated_each_with_its_etag() {
    let (api, ids) = origin(true);
    let tracks = api.album_tracks(ids[0]);
    let mix = api.add_playlist("Mix", &tracks);
    api.add_playlist("Other", &tracks[..1]);
    let (first, etags) = revalidate_playlists(&api, &[], &HashMap::new()).await;
    assert_eq!(first.len(), 2);
    assert_eq!(etags.len(), 2);
    take_calls(&api);
    let (again, kept) = revalidate_playlists(&api, &first, &etags).await;
    assert_eq!(again, first);
    assert_eq!(kept, etags);
    assert_eq!(take_calls(&api).3, 2, "two 304s");
    // A playlist that fails is kept, with its ETag; without ETags they are fetched again.
    api.fail(&mix.0);
    let (kept_too, kept_etags) = revalidate_playlists(&api, &first, &etags).await;
    assert_eq!(kept_too, first);
    assert_eq!(kept_etags, etags);
    let (kept_too, _) = revalidate_playlists(&api, &first, &HashMap::new()).await;
    assert_eq!(kept_too, first);
}

#[tokio::test]
async fn playlists_loaded_at_mount_keep_their_etags_for_the_first_refresh() {
    let (api, ids) = origin(true);
    api.add_playlist("Mix", &api.album_tracks(ids[0]));
    let (first, etags) = crate::catalogue::library::load_playlists(&api).await;
    assert_eq!((first.len(), etags.len()), (1, 1));
    take_calls(&api);
    let (again, _) = revalidate_playlists(&api, &first, &etags).await;
    assert_eq!(again, first);
    assert_eq!(take_calls(&api).3, 1, "a 304, no body");
}

/// An origin that answers `/library`, then dies: after `answers` more albums and tracks, every
/// request fails with `error` (by default it gives up as the real control plane's would after
/// its attempts: no connection). `unreadable`: the library lists an entry that is no id.
struct Dying {
    inner: MemoryControlPlane,
    answers: std::sync::atomic::AtomicIsize,
    /// Album and track requests made.
    asked: std::sync::atomic::AtomicUsize,
    error: FetchError,
    unreadable: bool,
}

impl Dying {
    fn new(inner: MemoryControlPlane, answers: isize) -> Self {
        Dying {
            inner,
            answers: answers.into(),
            asked: 0.into(),
            error: FetchError::GaveUp {
                what: "track metadata".into(),
                attempts: 6,
                last: Box::new(FetchError::Connect {
                    url: "http://127.0.0.1:9/metadata".into(),
                    reason: "connection refused".into(),
                }),
            },
            unreadable: false,
        }
    }

    fn asked(&self) -> usize {
        self.asked.load(Ordering::Relaxed)
    }

    async fn item<T>(
        &self,
        answer: crate::client::seams::BoxFuture<'_, Revalidated<T>>,
    ) -> Revalidated<T> {
        self.asked.fetch_add(1, Ordering::Relaxed);
        if self.answers.fetch_sub(1, Ordering::Relaxed) > 0 {
            return answer.await;
        }
        Err(self.error.clone())
    }
}

impl ControlPlane for Dying {
    fn library_if(
        &self,
        etag: Option<String>,
    ) -> crate::client::seams::BoxFuture<'_, Revalidated<crate::client::seams::Library>> {
        Box::pin(async move {
            let mut answer = self.inner.library_if(etag).await;
            if let (Ok(Fresh::New(entries, _)), true) = (&mut answer, self.unreadable) {
                entries.push(Err(FetchError::Malformed {
                    what: "the library",
                    url: "memory://library".into(),
                    reason: "an album gid must be 16 bytes, got 3".into(),
                }));
            }
            answer
        })
    }
    fn album_if(
        &self,
        id: AlbumId,
        etag: Option<String>,
    ) -> crate::client::seams::BoxFuture<'_, Revalidated<crate::protocol::model::Album>> {
        Box::pin(self.item(self.inner.album_if(id, etag)))
    }
    fn track_if(
        &self,
        id: TrackId,
        etag: Option<String>,
    ) -> crate::client::seams::BoxFuture<'_, Revalidated<Track>> {
        Box::pin(self.item(self.inner.track_if(id, etag)))
    }
    fn library(
        &self,
    ) -> crate::client::seams::BoxFuture<'_, Result<crate::client::seams::Library, FetchError>>
    {
        self.inner.library()
    }
    fn album(
        &self,
        id: AlbumId,
    ) -> crate::client::seams::BoxFuture<'_, Result<crate::protocol::model::Album, FetchError>>
    {
        self.inner.album(id)
    }
    fn track(&self, id: TrackId) -> crate::client::seams::BoxFuture<'_, Result<Track, FetchError>> {
        self.inner.track(id)
    }
    fn resolve(
        &self,
        file: crate::protocol::model::FileId,
    ) -> crate::client::seams::BoxFuture<'_, Result<Vec<String>, FetchError>> {
        self.inner.resolve(file)
    }
    fn audio_key(
        &self,
        file: crate::protocol::model::FileId,
    ) -> crate::client::seams::BoxFuture<'_, Result<crate::protocol::crypto::AudioKey, FetchError>>
    {
        self.inner.audio_key(file)
    }
    fn head(
        &self,
        file: crate::protocol::model::FileId,
    ) -> crate::client::seams::BoxFuture<'_, Result<Option<bytes::Bytes>, FetchError>> {
        self.inner.head(file)
    }
    fn rootlist(&self) -> crate::client::seams::BoxFuture<'_, Result<Vec<PlaylistId>, FetchError>> {
        self.inner.rootlist()
    }
    fn playlist_if(
        &self,
        id: PlaylistId,
        etag: Option<String>,
    ) -> crate::client::seams::BoxFuture<'_, Revalidated<Playlist>> {
        Box::pin(self.item(self.inner.playlist_if(id, etag)))
    }
    fn playlist(
        &self,
        id: PlaylistId,
    ) -> crate::client::seams::BoxFuture<'_, Result<Playlist, FetchError>> {
        self.inner.playlist(id)
    }
    fn image(
        &self,
        file: crate::protocol::model::FileId,
    ) -> crate::client::seams::BoxFuture<'_, Result<bytes::Bytes, FetchError>> {
        self.inner.image(file)
    }
}

/// A library of `albums` albums of ten tracks, loaded, then changed (one album more), so
/// that a refresh revalidates every album and track.
async fn large_library(albums: usize) -> (MemoryControlPlane, Catalogue) {
    let api = MemoryControlPlane::new();
    api.set_etags(true);
    let tracks: Vec<TrackSpec> = (1..=10).map(|n| spec(n, &format!("T{n}"))).collect();
    for i in 0..albums {
        api.add_album("Band", &format!("Album {i}"), &tracks);
    }
    let first = load(&api).await.unwrap();
    api.add_album("Band", "Late", &tracks);
    (api, first)
}

#[tokio::test]
async fn an_origin_dying_after_the_library_stops_the_refresh_and_keeps_everything() {
    // Dead at once (the metadata endpoint fails), and dead after the albums (100 known, one
    // new) and 250 of the known albums' tracks: (answers, tracks kept).
    for (answers, kept) in [(0, 1000), (101 + 250, 750)] {
        let (api, first) = large_library(100).await;
        let api = Dying::new(api, answers);
        let Outcome::Revalidated {
            catalogue,
            complete,
            failed,
        } = revalidate(&api, &first).await.unwrap()
        else {
            panic!("the library changed");
        };
        // Without the stop: 101 albums and 1,010 tracks asked, each giving up in turn.
        let bound = answers as usize + ALBUMS_AT_ONCE.max(TRACKS_AT_ONCE);
        assert!(api.asked() <= bound, "{} requests", api.asked());
        assert!(!complete);
        let failed = failed.expect("the refresh says the origin failed");
        assert!(matches!(failed.error, FetchError::GaveUp { .. }));
        assert_eq!(failed.kept, kept);
        // Nothing removed: every album and track as it was; the new album waits.
        assert!(catalogue.albums == first.albums, "answers: {answers}");
        assert_eq!(catalogue.etags.library, None);
    }
}

/// The outcome of a refresh that found the library changed.
async fn revalidated(
    api: &dyn ControlPlane,
    current: &Catalogue,
) -> (Catalogue, bool, Option<Box<Failed>>) {
    match revalidate(api, current).await.unwrap() {
        Outcome::Revalidated {
            catalogue,
            complete,
            failed,
        } => (catalogue, complete, failed),
        Outcome::Unchanged => panic!("the library changed"),
    }
}

#[tokio::test]
async fn an_unreadable_library_entry_removes_nothing_and_the_library_is_asked_again() {
    let (api, ids) = origin(true);
    let first = load(&api).await.unwrap();
    // Album 0 is no longer listed readably: it may be the unreadable entry.
    api.remove_album(ids[0]);
    let mut api = Dying::new(api, isize::MAX);
    api.unreadable = true;
    let (catalogue, complete, failed) = revalidated(&api, &first).await;
    assert_eq!(names(&catalogue), ["Album 0", "Album 1", "Album 2"]);
    assert_eq!(catalogue.albums[0], first.albums[0]);
    assert!(!complete);
    assert!(failed.is_none(), "the rest of the library answered");
    assert_eq!(catalogue.etags.library, None);
}

#[tokio::test]
async fn a_track_failing_mid_refresh_is_kept_and_the_library_asked_again() {
    let (api, ids) = origin(true);
    let first = load(&api).await.unwrap();
    api.rename_album(ids[2], "Renamed");
    let track = api.album_tracks(ids[1])[1];
    api.fail(&track.0);
    let (catalogue, complete, failed) = revalidated(&api, &first).await;
    let kept = catalogue.albums[1].tracks.iter().find(|t| t.id == track);
    assert_eq!(kept, first.albums[1].tracks.iter().find(|t| t.id == track));
    assert!(kept.is_some());
    assert!(!complete);
    assert!(failed.is_some(), "a 503 is the origin failing");
    assert_eq!(catalogue.etags.library, None);
}

#[tokio::test]
async fn a_new_album_whose_tracks_all_fail_waits_for_the_next_refresh() {
    let (api, _) = origin(true);
    let first = load(&api).await.unwrap();
    let (fresh, _) = api.add_album("Other", "Fresh", &[spec(1, "A"), spec(2, "B")]);
    for track in api.album_tracks(fresh) {
        api.fail(&track.0);
    }
    let (catalogue, complete, _) = revalidated(&api, &first).await;
    assert_eq!(names(&catalogue), ["Album 0", "Album 1", "Album 2"]);
    assert!(!catalogue.etags.albums.contains_key(&fresh));
    assert!(!complete);
    assert_eq!(catalogue.etags.library, None);
}

#[tokio::test]
async fn a_refresh_where_no_album_or_track_answers_has_failed() {
    let (api, _) = origin(true);
    let first = load(&api).await.unwrap();
    api.add_album("Other", "Fresh", &[spec(1, "A")]);
    let mut api = Dying::new(api, 0);
    // Each album's own failure, not the origin's: every one is asked, none answers.
    api.error = FetchError::NotFound {
        url: "memory://album".into(),
    };
    let (catalogue, complete, failed) = revalidated(&api, &first).await;
    assert_eq!(api.asked(), 4);
    assert_eq!(catalogue.albums, first.albums);
    assert!(!complete);
    let failed = failed.expect("nothing answered: the refresh failed");
    assert_eq!(failed.kept, 6);
}

#[tokio::test]
async fn an_origin_dying_before_the_playlists_stops_asking_and_keeps_them() {
    let (api, ids) = origin(true);
    let tracks = api.album_tracks(ids[0]);
    for i in 0..40 {
        api.add_playlist(&format!("Mix {i}"), &tracks);
    }
    let (first, etags) = revalidate_playlists(&api, &[], &HashMap::new()).await;
    assert_eq!(first.len(), 40);
    let api = Dying::new(api, 0);
    let (again, kept) = revalidate_playlists(&api, &first, &etags).await;
    // Without the stop: all 40 asked, each spending its retries.
    assert!(api.asked() <= PLAYLISTS_AT_ONCE, "{} requests", api.asked());
    assert_eq!(again, first, "every playlist kept as it was");
    assert_eq!(kept, etags, "with its ETag, for a 304 next time");
}
