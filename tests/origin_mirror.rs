//! `publish` mirrors the music folder and a running `serve` follows it (docs/protocol.md §8):
//! retag + delete + add show exactly the new state without a restart, `--dry-run` changes
//! nothing, a publish stopped before its commit leaves the library as it was, ETags and 304s,
//! and what left stays fetchable (key, ciphertext) for the grace period.

#[macro_use]
#[path = "common/origin_fixture.rs"]
mod fixture;

use fixture::*;
use prost::Message;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use trackfs::origin::publish::PublishError;
use trackfs::protocol::model::{self, FileId, TrackId};
use trackfs::protocol::proto::library::Library;
use trackfs::protocol::proto::metadata as pb;

/// GET with a bearer token and maybe `If-None-Match`: (status, ETag, body).
async fn get_tagged(
    f: &Fixture,
    token: &str,
    path: &str,
    etag: Option<&str>,
) -> (u16, Option<String>, Vec<u8>) {
    let mut req = f.http.get(f.url(path)).bearer_auth(token);
    if let Some(etag) = etag {
        req = req.header("If-None-Match", etag);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let tag = resp
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string());
    (status, tag, resp.bytes().await.unwrap().to_vec())
}

/// What a client sees: every (album, track) name pair, track ids and file ids.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    names: BTreeSet<(String, String)>,
    tracks: BTreeSet<(TrackId, FileId, String)>,
    albums: BTreeSet<String>,
    etag: String,
}

async fn seen(f: &Fixture, token: &str) -> Seen {
    let (status, etag, body) = get_tagged(f, token, "/library", None).await;
    assert_eq!(status, 200);
    let mut out = Seen {
        names: BTreeSet::new(),
        tracks: BTreeSet::new(),
        albums: BTreeSet::new(),
        etag: etag.expect("an ETag on /library"),
    };
    for gid in Library::decode(body.as_slice()).unwrap().album_gid {
        let path = format!("/metadata/4/album/{}", hex::encode(&gid));
        let (status, _, body) = get_tagged(f, token, &path, None).await;
        assert_eq!(status, 200, "every album of the library is there");
        let album = model::Album::try_from(pb::Album::decode(body.as_slice()).unwrap()).unwrap();
        out.albums.insert(album.name.clone());
        for id in album.discs.iter().flat_map(|d| d.tracks.clone()) {
            let path = format!("/metadata/4/track/{id}");
            let (status, _, body) = get_tagged(f, token, &path, None).await;
            assert_eq!(status, 200, "every track of an album is there");
            let t = model::Track::try_from(pb::Track::decode(body.as_slice()).unwrap()).unwrap();
            assert!(
                out.names.insert((album.name.clone(), t.name.clone())),
                "no duplicates: {}",
                t.name
            );
            out.tracks.insert((t.id, t.files[0].id, t.name));
        }
    }
    out
}

/// Rewrites an MP3 in place with a title tag (a retag: new bytes, same path).
fn retag(path: &Path, title: &str) {
    let tmp = path.with_extension("tmp.mp3");
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(path)
        .args(["-c", "copy", "-metadata"])
        .arg(format!("title={title}"))
        .arg(&tmp)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn retag_delete_and_add_show_exactly_the_new_state_without_a_restart() {
    let f = fixture!(|_| {});
    let token = f.token().await;
    let before = seen(&f, &token).await;
    assert_eq!(before.tracks.len(), 3);
    let src = f.src.path();
    let what = |seen: &Seen, name: &str| {
        seen.tracks
            .iter()
            .find(|t| t.2 == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {seen:?}"))
    };
    let (old_mp3_track, old_mp3_file, _) = what(&before, "What's up?");
    let (_, flac_file, _) = what(&before, "Svefn-g-englar");

    retag(&src.join(MP3), "Renamed");
    std::fs::remove_dir_all(src.join("Sigur Rós")).unwrap();
    make_audio(
        &src.join("New Artist/Fresh Album/01 Fresh.ogg"),
        "libvorbis",
        &["-b:a", "96k"],
    );

    // A dry run says what would change and changes nothing.
    let files_before = snapshot(f.lib.path());
    let dry = publish_with(src, f.lib.path(), |o| o.dry_run = true).unwrap();
    assert_eq!(
        snapshot(f.lib.path()),
        files_before,
        "a dry run writes nothing"
    );
    assert_eq!(seen(&f, &token).await, before);
    let counts = |s: &trackfs::origin::PublishSummary| {
        let c = (s.new_tracks, s.changed_tracks, s.removed_tracks);
        (c, s.new_albums, s.removed_albums, s.tracks)
    };
    assert_eq!(counts(&dry), ((1, 1, 1), 1, 1, 3), "{dry}");
    let text = dry.to_string();
    assert!(
        text.starts_with("would publish 3 tracks in 2 albums"),
        "{text}"
    );
    assert!(text.contains(&format!("\n  ~ {MP3}")), "{text}");
    assert!(text.contains(&format!("\n  - {FLAC}")), "{text}");
    assert!(
        text.contains("\n  + New Artist/Fresh Album/01 Fresh.ogg"),
        "{text}"
    );

    let summary = publish(src, f.lib.path());
    assert_eq!(counts(&summary), counts(&dry), "{summary}");

    // The running origin answers the new state, whole, with no restart.
    let after = seen(&f, &token).await;
    assert_ne!(after.etag, before.etag);
    let mut names: Vec<_> = after.names.iter().map(|n| n.1.as_str()).collect();
    names.sort();
    assert_eq!(names, ["Fresh", "Hello: \"World\"?", "Renamed"]);
    let (track, file, _) = what(&after, "Renamed");
    assert_eq!(
        track, old_mp3_track,
        "a file retagged in place keeps its track"
    );
    assert_ne!(file, old_mp3_file, "and gets a new file id");
    assert!(!after.albums.contains("Ágætis byrjun"));

    // What left is still readable for the grace period: key and ciphertext.
    let (status, _, key) = get_tagged(&f, &token, &format!("/audiokey/{flac_file}"), None).await;
    assert_eq!((status, key.len()), (200, 16));
    let path = format!("/storage-resolve/files/audio/interactive/{flac_file}");
    assert_eq!(get_tagged(&f, &token, &path, None).await.0, 200);

    // Publishing the same folder again changes nothing, not even an ETag.
    let again = publish(src, f.lib.path());
    assert_eq!(counts(&again), ((0, 0, 0), 0, 0, 3), "{again}");
    assert_eq!(again.bytes_encrypted, 0);
    assert_eq!(seen(&f, &token).await, after);
}

#[tokio::test]
async fn etags_answer_304_and_the_library_one_stands_for_everything() {
    let f = fixture!(|_| {});
    let token = f.token().await;
    let (_, etag, body) = get_tagged(&f, &token, "/library", None).await;
    let etag = etag.unwrap();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "{etag}"
    );
    let (status, again, empty) = get_tagged(&f, &token, "/library", Some(&etag)).await;
    assert_eq!(
        (status, again.as_deref(), empty.len()),
        (304, Some(etag.as_str()), 0)
    );
    let listed = format!("\"other\", {etag}");
    assert_eq!(
        get_tagged(&f, &token, "/library", Some(&listed)).await.0,
        304
    );
    assert_eq!(
        get_tagged(&f, &token, "/library", Some("\"x\"")).await.0,
        200
    );

    let gid = Library::decode(body.as_slice()).unwrap().album_gid[0].clone();
    let album_path = format!("/metadata/4/album/{}", hex::encode(&gid));
    let (_, album_tag, body) = get_tagged(&f, &token, &album_path, None).await;
    let album_tag = album_tag.unwrap();
    assert_ne!(album_tag, etag);
    assert_eq!(
        get_tagged(&f, &token, &album_path, Some(&album_tag))
            .await
            .0,
        304
    );
    let album = pb::Album::decode(body.as_slice()).unwrap();
    let track = hex::encode(album.disc[0].track[0].gid.as_ref().unwrap());
    let track_path = format!("/metadata/4/track/{track}");
    let (_, track_tag, _) = get_tagged(&f, &token, &track_path, None).await;
    let track_tag = track_tag.unwrap();
    assert_eq!(
        get_tagged(&f, &token, &track_path, Some(&track_tag))
            .await
            .0,
        304
    );

    // A playlist added to the folder changes the library's ETag, not the album's.
    std::fs::write(f.src.path().join("mix.m3u8"), format!("{MP3}\n")).unwrap();
    publish(f.src.path(), f.lib.path());
    let (status, new_tag, _) = get_tagged(&f, &token, "/library", Some(&etag)).await;
    assert_eq!(status, 200, "the library changed");
    assert_ne!(new_tag.unwrap(), etag);
    assert_eq!(
        get_tagged(&f, &token, &album_path, Some(&album_tag))
            .await
            .0,
        304
    );
    let rootlist = "/playlist/v2/user/trackfs/rootlist";
    let (status, list_tag, _) = get_tagged(&f, &token, rootlist, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        get_tagged(&f, &token, rootlist, list_tag.as_deref())
            .await
            .0,
        304
    );
}

#[tokio::test]
async fn a_publish_stopped_before_its_commit_leaves_the_library_as_it_was() {
    let f = fixture!(|_| {});
    let token = f.token().await;
    let before = seen(&f, &token).await;
    let catalog = std::fs::read(f.lib.path().join("catalog.pb")).unwrap();
    let src = f.src.path();
    std::fs::remove_file(src.join(OGG)).unwrap();
    make_audio(&src.join("Other/Album/01 New.mp3"), "libmp3lame", &[]);
    // Debris of an earlier crash, half a catalog under its temporary name, changes nothing.
    std::fs::write(
        f.lib.path().join(".catalog.pb.tmp"),
        &catalog[..catalog.len() / 2],
    )
    .unwrap();
    let stopped = publish_with(src, f.lib.path(), |o| o.stop_before_commit = true);
    assert!(matches!(stopped, Err(PublishError::Stopped)), "{stopped:?}");
    assert_eq!(
        std::fs::read(f.lib.path().join("catalog.pb")).unwrap(),
        catalog
    );
    assert_eq!(seen(&f, &token).await, before);
    // The next publish completes it (the new file was stored already: nothing to encrypt).
    let summary = publish(src, f.lib.path());
    assert_eq!(
        (summary.new_tracks, summary.removed_tracks),
        (1, 1),
        "{summary}"
    );
    assert_eq!(summary.bytes_encrypted, 0);
    let after = seen(&f, &token).await;
    assert!(after.names.iter().any(|n| n.1 == "New"));
    assert!(!after.names.iter().any(|n| n.1 == "Hello: \"World\"?"));
}

#[test]
fn what_left_is_deleted_after_the_grace_period_and_not_before() {
    if !have_ffmpeg() {
        return;
    }
    let (src, lib) = (
        tempfile::TempDir::new().unwrap(),
        tempfile::TempDir::new().unwrap(),
    );
    sample_source(src.path());
    publish(src.path(), lib.path());
    let gone = file_id_of(&src.path().join(FLAC));
    std::fs::remove_dir_all(src.path().join("Sigur Rós")).unwrap();
    let kept = publish(src.path(), lib.path());
    assert_eq!((kept.removed_tracks, kept.purged), (1, 0));
    let stored = |dir: &str| lib.path().join(dir).join(gone.to_hex()).exists();
    assert!(stored("audio") && stored("heads"));
    let expired = publish_with(src.path(), lib.path(), |o| {
        o.grace = Some(Default::default())
    });
    let expired = expired.unwrap();
    assert_eq!((expired.removed_tracks, expired.purged), (0, 1));
    assert!(!stored("audio") && !stored("heads"));
    let keys = std::fs::read_to_string(lib.path().join("keys")).unwrap();
    assert!(!keys.contains(&gone.to_hex()), "its key is gone too");
    assert_eq!(keys.lines().count(), 2);
}

#[test]
fn a_dry_run_into_a_new_folder_creates_nothing() {
    if !have_ffmpeg() {
        return;
    }
    let src = tempfile::TempDir::new().unwrap();
    sample_source(src.path());
    let parent = tempfile::TempDir::new().unwrap();
    let lib = parent.path().join("library");
    let dry = publish_with(src.path(), &lib, |o| o.dry_run = true).unwrap();
    assert_eq!((dry.tracks, dry.new_tracks, dry.albums), (3, 3, 2));
    assert!(dry.bytes_encrypted > 0, "what it would encrypt");
    assert!(!lib.exists());
}

#[tokio::test]
async fn a_publish_killed_half_way_leaves_one_library_or_the_other_never_a_mix() {
    let f = fixture!(|_| {});
    let token = f.token().await;
    let before = seen(&f, &token).await;
    let src = f.src.path();
    std::fs::remove_file(src.join(MP3)).unwrap();
    for i in 1..=12 {
        // Each at its own volume, so each has its own content.
        let volume = format!("volume={}", 0.3 + f64::from(i) * 0.05);
        let path = src.join(format!("Noise/Many/{i:02} N{i}.flac"));
        make_audio(&path, "flac", &["-af", &volume]);
    }
    let audio = f.lib.path().join("audio");
    let count = || std::fs::read_dir(&audio).unwrap().count();
    let stored = count();
    let mut child = Command::new(env!("CARGO_BIN_EXE_trackfs"))
        .args(["publish", "--no-progress"])
        .arg(src)
        .arg(f.lib.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed as soon as it has stored its first new file (or after it finished, if it was
    // quicker than this loop): either way the origin must show one whole library.
    while count() == stored && child.try_wait().unwrap().is_none() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let now = seen(&f, &token).await;
    let finished = now != before;
    eprintln!("killed after the commit: {finished}");
    if finished {
        assert_eq!(now.tracks.len(), 2 + 12, "{now:?}");
        assert!(!now.names.iter().any(|n| n.1 == "What's up?"));
    } else {
        assert_eq!(now, before);
    }
    // The next publish completes it, whatever the kill left behind.
    let summary = publish(src, f.lib.path());
    let after = seen(&f, &token).await;
    assert_eq!(after.tracks.len(), 14, "{summary}");
    assert!(!after.names.iter().any(|n| n.1 == "What's up?"));
}
