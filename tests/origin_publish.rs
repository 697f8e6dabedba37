//! `trackfs publish` on folders made with ffmpeg: the library layout, encryption, metadata from
//! tags and folder names, idempotence, growth, and bad inputs.

#[path = "common/origin_fixture.rs"]
mod fixture;

use fixture::*;
use prost::Message;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tempfile::TempDir;
use trackfs::origin::publish::PublishError;
use trackfs::origin::{self, PublishOptions};
use trackfs::protocol::crypto::AudioKey;
use trackfs::protocol::model::{self, AudioFormat, FileId, OGG_HEADER_LEN};
use trackfs::protocol::proto::library::Catalog;
use trackfs::protocol::proto::metadata as pb;

fn read_pb<M: Message + Default>(path: &Path) -> M {
    M::decode(std::fs::read(path).unwrap().as_slice()).unwrap()
}

/// Every track of the library's catalog, with its album.
fn tracks_on_disk(lib: &Path) -> Vec<(model::Album, model::Track)> {
    let catalog: Catalog = read_pb(&lib.join("catalog.pb"));
    let tracks: BTreeMap<_, _> = catalog
        .track
        .iter()
        .map(|b| model::Track::try_from(pb::Track::decode(b.as_slice()).unwrap()).unwrap())
        .map(|t| (t.id, t))
        .collect();
    let mut out = Vec::new();
    for bytes in &catalog.album {
        let album = model::Album::try_from(pb::Album::decode(bytes.as_slice()).unwrap()).unwrap();
        for id in album.discs.iter().flat_map(|d| d.tracks.clone()) {
            out.push((album.clone(), tracks[&id].clone()));
        }
    }
    assert_eq!(out.len(), tracks.len(), "every track is on a disc");
    out
}

fn track_named<'a>(
    tracks: &'a [(model::Album, model::Track)],
    name: &str,
) -> &'a (model::Album, model::Track) {
    tracks
        .iter()
        .find(|(_, t)| t.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no track {name:?} in {:?}",
                tracks.iter().map(|t| &t.1.name).collect::<Vec<_>>()
            )
        })
}

fn keys(lib: &Path) -> BTreeMap<FileId, AudioKey> {
    trackfs::protocol::keyfile::parse(&std::fs::read_to_string(lib.join("keys")).unwrap()).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn publishing_twice_changes_nothing() {
    if !have_ffmpeg() {
        return;
    }
    let (src, lib) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    sample_source(src.path());
    let first = publish(src.path(), lib.path());
    assert_eq!(
        (
            first.tracks,
            first.new_tracks,
            first.albums,
            first.new_albums
        ),
        (3, 3, 2, 2)
    );
    assert!(first.bytes_encrypted > 0);
    let before = snapshot(lib.path());
    let second = publish(src.path(), lib.path());
    assert_eq!(
        (second.tracks, second.new_tracks, second.new_albums),
        (3, 0, 0)
    );
    assert_eq!(second.bytes_encrypted, 0);
    let after = snapshot(lib.path());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &before {
        assert!(
            after[path] == *bytes,
            "{} changed on re-publish",
            path.display()
        );
    }
    let line = second.to_string();
    assert!(line.starts_with("published 3 tracks in 2 albums"), "{line}");
    assert!(!line.contains('\n'));
}

#[test]
fn a_grown_folder_adds_tracks_and_a_different_folder_replaces_the_library() {
    if !have_ffmpeg() {
        return;
    }
    let (src, lib) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    sample_source(src.path());
    publish(src.path(), lib.path());
    let before = snapshot(lib.path());
    let old_keys = keys(lib.path());
    let old_tracks = tracks_on_disk(lib.path());
    make_audio(
        &src.path().join("Björk/Début: \"Live\"?/04 Four.mp3"),
        "libmp3lame",
        &["-b:a", "128k"],
    );
    let summary = publish(src.path(), lib.path());
    assert_eq!(
        (summary.tracks, summary.new_tracks, summary.new_albums),
        (4, 1, 0)
    );
    assert_eq!((summary.changed_tracks, summary.removed_tracks), (0, 0));
    let after = snapshot(lib.path());
    for (path, bytes) in &before {
        if !["keys", "catalog.pb"].contains(&path.to_str().unwrap()) {
            assert!(after[path] == *bytes, "{} changed", path.display());
        }
    }
    let added: Vec<_> = after.keys().filter(|p| !before.contains_key(*p)).collect();
    let count = |dir: &str| added.iter().filter(|p| p.starts_with(dir)).count();
    assert_eq!((count("audio"), count("heads"), added.len()), (1, 1, 2));
    let tracks = tracks_on_disk(lib.path());
    assert_eq!(tracks.len(), 4);
    let album_of_four = &track_named(&old_tracks, "What's up?").0;
    let (album, four) = track_named(&tracks, "Four");
    assert_eq!(album.id, album_of_four.id);
    assert_eq!(
        album.date, album_of_four.date,
        "the first publish date is kept"
    );
    assert_eq!(album.discs[0].tracks.len(), 3);
    assert_eq!(
        (four.number, four.files[0].format),
        (4, AudioFormat::Mp3_160)
    );

    // The library mirrors the folder it is published from: another folder replaces it.
    let more = TempDir::new().unwrap();
    make_audio(
        &more.path().join("New Artist/New: Album?/01 One.ogg"),
        "libvorbis",
        &["-b:a", "96k"],
    );
    let summary = publish(more.path(), lib.path());
    assert_eq!(
        (summary.tracks, summary.new_tracks, summary.new_albums),
        (1, 1, 1)
    );
    assert_eq!((summary.removed_tracks, summary.removed_albums), (4, 2));
    let line = summary.to_string();
    assert!(
        line.starts_with("published 1 track in 1 album to "),
        "{line}"
    );
    assert!(
        line.contains("4 removed; 1 new album, 2 albums removed"),
        "{line}"
    );
    let tracks = tracks_on_disk(lib.path());
    assert_eq!(tracks.len(), 1);
    let (album, one) = track_named(&tracks, "One");
    assert_eq!(
        (album.name.as_str(), album.artists[0].as_str()),
        ("New: Album?", "New Artist")
    );
    assert_eq!(one.files[0].format, AudioFormat::OggVorbis96);
    // What left stays on disk, key included, for the grace period.
    let new_keys = keys(lib.path());
    assert!(
        old_keys
            .iter()
            .all(|(id, key)| new_keys.get(id) == Some(key)),
        "keys are kept"
    );
    assert_eq!(new_keys.len(), 5);
    for id in old_keys.keys() {
        assert!(lib.path().join("audio").join(id.to_hex()).is_file());
    }
}

#[test]
fn stored_files_are_ciphertext_heads_are_plaintext_and_secrets_are_private() {
    if !have_ffmpeg() {
        return;
    }
    let (src, lib) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let sources = sample_source(src.path());
    std::fs::write(lib.path().join("credentials"), "trackfs:mine\n").unwrap();
    publish(src.path(), lib.path());
    let lib = lib.path();
    assert_eq!(
        std::fs::read_to_string(lib.join("credentials")).unwrap(),
        "trackfs:mine\n"
    );
    for name in ["secret", "keys"] {
        assert_eq!(mode(&lib.join(name)), 0o600, "{name}");
    }
    let keys = keys(lib);
    for source in &sources {
        let id = file_id_of(source);
        let cipher = std::fs::read(lib.join("audio").join(id.to_hex())).unwrap();
        let ogg = is_ogg(source);
        let plain = decrypt_stored(&cipher, &keys[&id], ogg);
        let header = if ogg { OGG_HEADER_LEN as usize } else { 0 };
        assert_eq!(
            plain.len(),
            header + std::fs::metadata(source).unwrap().len() as usize
        );
        assert!(plain[header..] == std::fs::read(source).unwrap()[..]);
        for magic in [&b"OggS"[..], b"fLaC", b"ID3"] {
            assert!(
                !cipher.starts_with(magic),
                "{} is stored in plaintext",
                source.display()
            );
        }
        let head = std::fs::read(lib.join("heads").join(id.to_hex())).unwrap();
        assert_eq!(head.len(), plain.len().min(128 * 1024));
        assert!(head[..] == plain[..head.len()]);
    }
    // A fresh library gets random credentials.
    let (src2, lib2) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    make_audio(&src2.path().join("a.flac"), "flac", &[]);
    publish(src2.path(), lib2.path());
    let creds = lib2.path().join("credentials");
    assert_eq!(mode(&creds), 0o600);
    let text = std::fs::read_to_string(&creds).unwrap();
    let password = text.trim_end().strip_prefix("trackfs:").unwrap();
    assert!(password.len() >= 16 && password.chars().all(|c| c.is_ascii_alphanumeric()));
}

#[test]
fn tags_win_over_folder_names_and_magic_bytes_over_extensions() {
    if !have_ffmpeg() {
        return;
    }
    let (src, lib) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let tags = [
        "-metadata",
        "title=Tagged: Title?",
        "-metadata",
        "artist=Tag Artist",
        "-metadata",
        "album=Tag Album",
        "-metadata",
        "date=1999",
        "-metadata",
        "track=5",
        "-metadata",
        "disc=2",
        "-b:a",
        "320k",
    ];
    make_audio(
        &src.path().join("Folder Artist/Folder Album/07 Name.mp3"),
        "libmp3lame",
        &tags,
    );
    make_audio(
        &src.path()
            .join("Folder Artist/Folder Album/08 Misnamed.flac"),
        "flac",
        &[],
    );
    let dir = src.path().join("Folder Artist/Folder Album");
    std::fs::rename(dir.join("08 Misnamed.flac"), dir.join("08 Misnamed.ogg")).unwrap();
    publish(src.path(), lib.path());
    let tracks = tracks_on_disk(lib.path());
    let (album, tagged) = track_named(&tracks, "Tagged: Title?");
    assert_eq!((tagged.number, tagged.disc_number), (5, 2));
    assert_eq!(tagged.artists, ["Tag Artist"]);
    assert_eq!(
        (album.name.as_str(), album.artists[0].as_str()),
        ("Tag Album", "Tag Artist")
    );
    assert_eq!(album.date.map(|d| d.year), Some(1999));
    assert_eq!(album.discs[0].number, 2);
    assert_eq!(tagged.files[0].format, AudioFormat::Mp3_320);
    let (album, misnamed) = track_named(&tracks, "Misnamed");
    assert_eq!(
        misnamed.files[0].format,
        AudioFormat::Flac,
        "FLAC bytes in a .ogg"
    );
    assert_eq!((album.name.as_str(), misnamed.number), ("Folder Album", 8));
    let id = misnamed.files[0].id;
    let cipher = std::fs::read(lib.path().join("audio").join(id.to_hex())).unwrap();
    let size = std::fs::metadata(dir.join("08 Misnamed.ogg"))
        .unwrap()
        .len();
    assert_eq!(cipher.len() as u64, size, "no Ogg header in front of FLAC");
}

#[test]
fn bad_files_are_skipped_with_a_warning_naming_them() {
    if !have_ffmpeg() {
        return;
    }
    let (src, lib) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let album = src.path().join("Artist/Album");
    make_audio(&album.join("01 Good.flac"), "flac", &[]);
    std::fs::write(album.join("02 Fake.ogg"), "this is text, not Vorbis").unwrap();
    std::os::unix::fs::symlink("/nonexistent/track", album.join("03 Gone.mp3")).unwrap();
    std::fs::create_dir(album.join("04 Folder.mp3")).unwrap();
    std::fs::write(album.join("cover.jpg"), [0xff, 0xd8, 0xff, 0xe0]).unwrap();
    std::fs::write(album.join("notes.txt"), "liner notes").unwrap();
    let summary = publish(src.path(), lib.path());
    assert_eq!(summary.tracks, 1);
    let skipped: BTreeMap<String, String> = summary
        .skipped
        .iter()
        .map(|s| {
            (
                s.path.file_name().unwrap().to_string_lossy().into_owned(),
                s.reason.clone(),
            )
        })
        .collect();
    assert_eq!(
        skipped.keys().collect::<Vec<_>>(),
        ["02 Fake.ogg", "03 Gone.mp3", "cover.jpg"]
    );
    assert!(skipped["02 Fake.ogg"].contains("not Ogg Vorbis, MP3 or FLAC"));
    assert!(skipped["03 Gone.mp3"].contains("cannot read"));
    assert!(
        skipped["cover.jpg"].contains("width and height"),
        "a cut JPEG"
    );
    assert_eq!(summary.ignored, vec![album.join("notes.txt")]);
    assert_eq!(summary.covers, 0);
    assert!(
        summary
            .to_string()
            .ends_with("; 3 files skipped; 1 other file not published"),
        "{summary}"
    );
}

#[test]
fn an_empty_or_missing_source_is_an_error() {
    let lib = TempDir::new().unwrap();
    let empty = TempDir::new().unwrap();
    let options = PublishOptions {
        no_progress: true,
        ..Default::default()
    };
    let err = origin::publish(empty.path(), lib.path(), &options).unwrap_err();
    assert!(
        matches!(err, PublishError::NothingToPublish { .. }),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains(&empty.path().display().to_string()));
    std::fs::write(empty.path().join("fake.mp3"), "not audio").unwrap();
    let err = origin::publish(empty.path(), lib.path(), &options).unwrap_err();
    assert!(
        matches!(err, PublishError::NothingToPublish { skipped: 1, .. }),
        "{err}"
    );
    let missing = empty.path().join("missing");
    let err = origin::publish(&missing, lib.path(), &options).unwrap_err();
    assert!(matches!(err, PublishError::MissingSource(_)), "{err}");
    assert!(err.to_string().contains("missing"));
    let file = empty.path().join("fake.mp3");
    let err = origin::publish(&file, lib.path(), &options).unwrap_err();
    assert!(matches!(err, PublishError::NotAFolder(_)), "{err}");
}

#[test]
fn a_library_inside_the_music_folder_is_not_published_as_music() {
    if !have_ffmpeg() {
        return;
    }
    let src = TempDir::new().unwrap();
    sample_source(src.path());
    let lib = src.path().join("library");
    let first = publish(src.path(), &lib);
    let second = publish(src.path(), &lib);
    assert_eq!(
        (second.tracks, second.new_tracks, second.new_albums),
        (first.tracks, 0, 0)
    );
    assert!(
        second.skipped.iter().any(|s| s.path == lib),
        "{:?}",
        second.skipped
    );
}

#[test]
fn publishing_into_a_folder_of_other_things_is_refused() {
    if !have_ffmpeg() {
        return;
    }
    let (src, dst) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    sample_source(src.path());
    std::fs::write(dst.path().join("notes.txt"), "mine").unwrap();
    let options = PublishOptions {
        no_progress: true,
        ..Default::default()
    };
    let err = origin::publish(src.path(), dst.path(), &options).unwrap_err();
    assert!(matches!(err, PublishError::NotALibrary(_)), "{err}");
    assert_eq!(
        std::fs::read_dir(dst.path()).unwrap().count(),
        1,
        "nothing written"
    );
}

#[test]
fn a_second_publish_into_a_library_being_written_is_refused() {
    if !have_ffmpeg() {
        return;
    }
    let (src, lib) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    sample_source(src.path());
    let library = trackfs::origin::library::Library::new(lib.path());
    let held = library
        .lock_for_writing()
        .unwrap()
        .expect("the lock is free");
    let options = PublishOptions {
        no_progress: true,
        ..Default::default()
    };
    let err = origin::publish(src.path(), lib.path(), &options).unwrap_err();
    assert!(matches!(err, PublishError::Busy(_)), "{err}");
    drop(held);
    publish(src.path(), lib.path());
}
