use super::*;

fn sample() -> Snapshot {
    let track = Track {
        id: TrackId([2; 16]),
        name: "Tëst \"quoted\"".into(),
        artists: vec!["A".into(), "B".into()],
        number: 3,
        disc_number: 1,
        duration_ms: 123_456,
        files: vec![
            AudioFile {
                id: FileId([5; 20]),
                format: AudioFormat::ALL[0],
            },
            AudioFile {
                id: FileId([6; 20]),
                format: AudioFormat::ALL[4],
            },
        ],
    };
    let album = Album {
        id: AlbumId([1; 16]),
        name: "Album".into(),
        artists: vec!["A".into()],
        date: Some(Date {
            year: 1999,
            month: 12,
            day: 31,
        }),
        discs: vec![Disc {
            number: 1,
            tracks: vec![TrackId([2; 16])],
        }],
        covers: vec![Image {
            file_id: FileId([9; 20]),
            size: ImageSize::XLarge,
            width: Some(640),
            height: None,
        }],
    };
    Snapshot {
        albums: vec![AlbumEntry {
            album,
            tracks: vec![track],
        }],
        sizes: [(FileId([5; 20]), 4_000_000)].into_iter().collect(),
        etags: crate::catalogue::refresh::Etags {
            library: Some("\"lib\"".into()),
            albums: [(AlbumId([1; 16]), "\"a\"".into())].into_iter().collect(),
            tracks: [(TrackId([2; 16]), "W/\"t\"".into())].into_iter().collect(),
        },
        extras: Extras {
            playlists: vec![
                Playlist {
                    id: PlaylistId([7; 16]),
                    name: "Mix \"één\"".into(),
                    revision: vec![1, 2, 3],
                    tracks: vec![TrackId([2; 16]), TrackId([2; 16])],
                },
                Playlist {
                    id: PlaylistId([8; 16]),
                    name: "Empty".into(),
                    revision: vec![],
                    tracks: vec![],
                },
            ],
            covers: [(
                FileId([9; 20]),
                CoverInfo {
                    size: 12_345,
                    picture: PictureKind::Png,
                },
            )]
            .into_iter()
            .collect(),
        },
        playlist_etags: [(PlaylistId([7; 16]), "\"p\"".into())]
            .into_iter()
            .collect(),
        last_change: 1_764_000_000_000_123,
    }
}

#[test]
fn a_snapshot_reads_back_as_it_was_saved() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(load(dir.path()), Err(SnapshotError::Io(_))));
    save(dir.path(), &sample()).unwrap();
    assert_eq!(load(dir.path()).unwrap(), sample());
    let empty = Snapshot::default();
    save(dir.path(), &empty).unwrap();
    assert_eq!(load(dir.path()).unwrap(), empty);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary left behind");
}

#[test]
fn a_damaged_snapshot_is_never_believed() {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), &sample()).unwrap();
    let path = dir.path().join(FILE_NAME);
    let good = std::fs::read(&path).unwrap();
    for at in (0..good.len()).step_by(7) {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        std::fs::write(&path, &bad).unwrap();
        // Either refused, or (a flip that only changes the header's spelling of the same
        // numbers, e.g. hex case) the same snapshot: never a different one.
        if let Ok(s) = load(dir.path()) {
            assert_eq!(s, sample(), "byte {at}");
        }
    }
    for cut in [0, 10, good.len() / 2, good.len() - 1] {
        std::fs::write(&path, &good[..cut]).unwrap();
        assert!(load(dir.path()).is_err(), "cut at {cut}");
    }
}

#[test]
fn another_version_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE_NAME), "trackfs-catalogue 4 0 0\n").unwrap();
    assert!(matches!(load(dir.path()), Err(SnapshotError::Version(4))));
}

/// Rewrites the saved snapshot in `dir` as an older `version` wrote it: without `fields`.
fn write_as_version(dir: &std::path::Path, version: u32, fields: &[&str]) {
    let path = dir.join(FILE_NAME);
    let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
    let body = text.split_once('\n').unwrap().1;
    let mut json: serde_json::Value = serde_json::from_str(body).unwrap();
    for field in fields {
        json.as_object_mut().unwrap().remove(*field).unwrap();
    }
    let body = serde_json::to_vec(&json).unwrap();
    let mut file = format!(
        "trackfs-catalogue {version} {:08x} {}\n",
        crc32c::crc32c(&body),
        body.len()
    )
    .into_bytes();
    file.extend_from_slice(&body);
    std::fs::write(&path, file).unwrap();
}

#[test]
fn a_version_1_snapshot_reads_as_one_without_etags_covers_or_playlists() {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), &sample()).unwrap();
    write_as_version(dir.path(), 1, &["etags", "covers", "playlists"]);
    let old = Snapshot {
        etags: Default::default(),
        extras: Default::default(),
        playlist_etags: Default::default(),
        ..sample()
    };
    assert_eq!(load(dir.path()).unwrap(), old);
}

#[test]
fn a_version_2_snapshot_reads_as_one_without_covers_or_playlists() {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), &sample()).unwrap();
    write_as_version(dir.path(), 2, &["covers", "playlists"]);
    let old = Snapshot {
        extras: Default::default(),
        playlist_etags: Default::default(),
        ..sample()
    };
    assert_eq!(load(dir.path()).unwrap(), old);
}

#[test]
fn a_picture_of_an_unknown_type_is_a_damaged_snapshot_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), &sample()).unwrap();
    let path = dir.path().join(FILE_NAME);
    let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
    let body = text
        .split_once('\n')
        .unwrap()
        .1
        .replace("\"png\"", "\"gif\"");
    let file = format!(
        "trackfs-catalogue 3 {:08x} {}\n{body}",
        crc32c::crc32c(body.as_bytes()),
        body.len()
    );
    std::fs::write(&path, file).unwrap();
    assert!(matches!(load(dir.path()), Err(SnapshotError::Malformed(_))));
}

#[test]
fn saves_at_once_from_several_threads_leave_a_snapshot_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    // Snapshots of different lengths, so that interleaved writes into one file would show.
    let snapshots: Vec<Snapshot> = (0..4)
        .map(|n| {
            let mut s = sample();
            for i in 0..n * 50 {
                s.sizes.insert(FileId([i as u8; 20]), i as u64);
            }
            s
        })
        .collect();
    let (all, dir_path) = (&snapshots, dir.path());
    std::thread::scope(|scope| {
        for snapshot in all {
            let dir = dir_path;
            scope.spawn(move || {
                for _ in 0..50 {
                    save(dir, snapshot).unwrap();
                    let loaded = load(dir).unwrap();
                    assert!(all.contains(&loaded));
                }
            });
        }
    });
    assert!(snapshots.contains(&load(dir.path()).unwrap()));
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "no temporary files left behind");
}

#[test]
fn the_change_feed_number_is_kept_and_a_snapshot_without_it_reads_as_none() {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), &sample()).unwrap();
    assert_eq!(load(dir.path()).unwrap().last_change, 1_764_000_000_000_123);
    write_as_version(dir.path(), 3, &["last_change"]);
    let old = Snapshot {
        last_change: 0,
        ..sample()
    };
    assert_eq!(load(dir.path()).unwrap(), old);
}

#[test]
fn a_save_given_up_on_leaves_the_snapshot_before_it_and_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let before = sample();
    save(dir.path(), &before).unwrap();
    let mut later = sample();
    later.last_change += 1;
    assert!(!save_unless(dir.path(), &later, || true).unwrap());
    assert_eq!(load(dir.path()).unwrap(), before);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "no temporary files left behind");
    assert!(save_unless(dir.path(), &later, || false).unwrap());
    assert_eq!(load(dir.path()).unwrap(), later);
}
