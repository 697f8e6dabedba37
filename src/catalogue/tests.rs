//! Catalogue loading against the in-memory control plane: every album and track, in order,
//! and what is skipped when parts of the origin fail.

use super::load;
use crate::client::doubles::{MemoryControlPlane, TrackSpec};
use crate::client::error::FetchError;
use crate::protocol::model::AudioFormat;
use std::sync::atomic::Ordering;

fn spec(n: u32) -> TrackSpec {
    TrackSpec::new(n, &format!("T{n}"), AudioFormat::Flac, vec![n as u8; 10])
}

#[tokio::test]
async fn every_album_and_track_is_loaded_in_library_order() {
    let control = MemoryControlPlane::new();
    control.add_album("A", "One", &[spec(1), spec(2), spec(3)]);
    control.add_album("B", "Two", &[spec(1)]);
    let albums = load(&control).await.unwrap();
    let names: Vec<_> = albums.iter().map(|a| a.album.name.as_str()).collect();
    assert_eq!(names, ["One", "Two"]);
    let mut numbers: Vec<_> = albums[0].tracks.iter().map(|t| t.number).collect();
    numbers.sort();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(control.calls.track.load(Ordering::Relaxed), 4);
    assert_eq!(control.calls.library.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn an_album_that_fails_is_skipped_and_the_rest_load() {
    let control = MemoryControlPlane::new();
    let (broken, _) = control.add_album("A", "Broken", &[spec(1)]);
    control.add_album("B", "Fine", &[spec(1)]);
    control.add_missing_album();
    control.fail(&broken.0);
    let albums = load(&control).await.unwrap();
    let names: Vec<_> = albums.iter().map(|a| a.album.name.as_str()).collect();
    assert_eq!(names, ["Fine"]);
}

#[tokio::test]
async fn a_track_that_fails_is_skipped_not_its_album() {
    let control = MemoryControlPlane::new();
    control.add_album("A", "One", &[spec(1), spec(2)]);
    let albums = load(&control).await.unwrap();
    let broken = albums[0].album.discs[0].tracks[1];
    control.fail(&broken.0);
    let albums = load(&control).await.unwrap();
    assert_eq!(albums.len(), 1);
    let numbers: Vec<_> = albums[0].tracks.iter().map(|t| t.number).collect();
    assert_eq!(numbers, [1]);
}

#[tokio::test]
async fn when_every_album_fails_the_first_error_is_the_answer() {
    let control = MemoryControlPlane::new();
    control.add_missing_album();
    control.add_missing_album();
    let error = load(&control).await.unwrap_err();
    assert!(matches!(error, FetchError::NotFound { .. }), "{error}");
}

#[tokio::test]
async fn an_empty_library_loads_as_nothing() {
    let control = MemoryControlPlane::new();
    assert!(load(&control).await.unwrap().is_empty());
}
