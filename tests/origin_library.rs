//! Protocol v1.1 of `trackfs serve` over HTTP (docs/protocol.md §6, §7): cover pictures from
//! folder files and embedded tags, served by `/image/<id>` byte for byte, and playlists from
//! `.m3u`/`.m3u8` files, served as Spotify-shaped answers with base62 ids.

#[macro_use]
#[path = "common/origin_fixture.rs"]
mod fixture;

use fixture::*;
use prost::Message;
use std::collections::BTreeMap;
use std::path::Path;
use tempfile::TempDir;
use trackfs::protocol::model::{self, Image, Playlist, PlaylistId, SpotifyUri, TrackId};
use trackfs::protocol::proto::library::Library;
use trackfs::protocol::proto::metadata as pb;
use trackfs::protocol::proto::playlist4::SelectedListContent;

/// Every album, by name.
async fn albums(f: &Fixture, token: &str) -> BTreeMap<String, model::Album> {
    let library: Library = f.get_pb(token, "/library").await;
    let mut out = BTreeMap::new();
    for gid in library.album_gid {
        let path = format!("/metadata/4/album/{}", hex::encode(&gid));
        let album = model::Album::try_from(f.get_pb::<pb::Album>(token, &path).await).unwrap();
        out.insert(album.name.clone(), album);
    }
    out
}

async fn track(f: &Fixture, token: &str, id: &TrackId) -> model::Track {
    let path = format!("/metadata/4/track/{id}");
    model::Track::try_from(f.get_pb::<pb::Track>(token, &path).await).unwrap()
}

fn mp3(path: &Path) {
    make_audio(path, "libmp3lame", &["-b:a", "128k"]);
}

#[tokio::test]
async fn covers_come_from_folder_files_or_tags_and_are_served_as_they_are() {
    if !have_ffmpeg() {
        return;
    }
    let src = TempDir::new().unwrap();
    let s = src.path();
    // A: cover.jpg beats front.png (by name), whatever their sizes.
    mp3(&s.join("Art/A/01 One.mp3"));
    make_picture(&s.join("Art/A/cover.jpg"), 640, 480);
    make_picture(&s.join("Art/A/front.png"), 1000, 1000);
    // B: a PNG in any case above the disc folders.
    mp3(&s.join("Art/B/CD1/01 One.mp3"));
    mp3(&s.join("Art/B/CD2/01 Two.mp3"));
    make_picture(&s.join("Art/B/Folder.PNG"), 300, 300);
    // C: only an embedded front cover.
    let work = TempDir::new().unwrap();
    mp3(&work.path().join("plain.mp3"));
    make_picture(&work.path().join("front.png"), 200, 100);
    std::fs::create_dir_all(s.join("Art/C")).unwrap();
    embed_cover(
        &work.path().join("plain.mp3"),
        &work.path().join("front.png"),
        &s.join("Art/C/01 One.mp3"),
    );
    // D: no picture at all.
    mp3(&s.join("Art/D/01 One.mp3"));

    let lib = TempDir::new().unwrap();
    let summary = publish(s, lib.path());
    assert_eq!((summary.albums, summary.covers), (4, 3), "{summary}");
    assert!(summary.to_string().contains("3 covers"), "{summary}");
    assert_eq!(summary.ignored, vec![s.join("Art/A/front.png")]);
    // Published again unchanged: nothing is read again, and the covers stay as they were
    // (the embedded one from what the catalog remembers of it).
    let again = publish(s, lib.path());
    assert_eq!((again.covers, again.changes.len()), (3, 0), "{again}");
    let f = Fixture::over(src, lib).await;
    let s = f.src.path();
    let token = f.token().await;
    let albums = albums(&f, &token).await;
    let expect = [
        (
            "A",
            Some((s.join("Art/A/cover.jpg"), "image/jpeg", (640, 480))),
        ),
        (
            "B",
            Some((s.join("Art/B/Folder.PNG"), "image/png", (300, 300))),
        ),
        (
            "C",
            Some((work.path().join("front.png"), "image/png", (200, 100))),
        ),
        ("D", None),
    ];
    for (name, want) in expect {
        let album = &albums[name];
        let Some((picture, content_type, (w, h))) = want else {
            assert!(album.covers.is_empty(), "{name}: {:?}", album.covers);
            continue;
        };
        let cover = Image::largest(&album.covers).expect(name);
        assert_eq!((cover.width, cover.height), (Some(w), Some(h)), "{name}");
        // Unauthenticated, unencrypted, exactly the bytes published.
        let resp = f
            .http
            .get(f.url(&format!("/image/{}", cover.file_id)))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{name}");
        let headers = resp.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{name}");
        let bytes = resp.bytes().await.unwrap();
        assert_eq!(headers["content-length"], bytes.len().to_string().as_str());
        assert!(bytes[..] == std::fs::read(&picture).unwrap()[..], "{name}");
    }
    let unknown = format!("/image/{}", "ab".repeat(20));
    for path in [unknown.as_str(), "/image/nope", "/image/../keys"] {
        let resp = f.http.get(f.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
    }
}

/// Every playlist of the rootlist, by name, checking the answer's shape on the way.
async fn playlists(f: &Fixture, token: &str) -> BTreeMap<String, Playlist> {
    let (status, body) = f.get(token, "/playlist/v2/user/trackfs/rootlist").await;
    assert_eq!(status, 200);
    let root = SelectedListContent::decode(body.as_slice()).unwrap();
    let contents = root.contents.as_ref().unwrap();
    assert_eq!((contents.pos, contents.truncated), (Some(0), Some(false)));
    let mut out = BTreeMap::new();
    for item in &contents.items {
        let uri = item.uri.as_deref().unwrap();
        let SpotifyUri::Playlist(id) = SpotifyUri::parse(uri) else {
            panic!("not a playlist: {uri}");
        };
        assert_eq!(uri, format!("spotify:playlist:{}", id.to_base62()));
        let (status, body) = f
            .get(token, &format!("/playlist/v2/playlist/{}", id.to_base62()))
            .await;
        assert_eq!(status, 200);
        let answer = SelectedListContent::decode(body.as_slice()).unwrap();
        let items = answer.contents.as_ref().unwrap();
        assert_eq!((items.pos, items.truncated), (Some(0), Some(false)));
        assert_eq!(answer.length, Some(items.items.len() as i32));
        assert!(items.items.iter().all(|i| i
            .uri
            .as_deref()
            .unwrap()
            .starts_with("spotify:track:")));
        let playlist = Playlist::from_wire(id, &answer);
        assert!(!playlist.revision.is_empty());
        out.insert(playlist.name.clone(), playlist);
    }
    out
}

#[tokio::test]
async fn playlists_are_read_from_m3u_files_and_served_with_base62_ids() {
    if !have_ffmpeg() {
        return;
    }
    let src = TempDir::new().unwrap();
    let s = src.path();
    sample_source(s);
    let lists = s.join("Lists");
    std::fs::create_dir_all(&lists).unwrap();
    // A BOM, CRLF, #EXTINF, relative and absolute entries, one that is not there, a URL.
    let road = format!(
        "\u{feff}#EXTM3U\r\n#EXTINF:3,Björk - Hello\r\n../{OGG}\r\n{}\r\n../nope/gone.mp3\r\n\
         http://radio.example/live\r\n\r\n#EXTINF:3,x\r\n../{MP3}\r\n../{OGG}\r\n",
        s.join(FLAC).display()
    );
    std::fs::write(lists.join("Road: trip.m3u8"), road).unwrap();
    std::fs::write(lists.join("Leer.m3u"), "#EXTM3U\n").unwrap();
    std::fs::write(s.join("Über mix.M3U"), format!("{MP3}\n")).unwrap();

    let lib = TempDir::new().unwrap();
    let summary = publish(s, lib.path());
    assert_eq!(summary.playlists, 3, "{summary}");
    assert!(summary.to_string().contains("3 playlists"), "{summary}");
    let f = Fixture::over(src, lib).await;
    let token = f.token().await;
    let lists = playlists(&f, &token).await;
    assert_eq!(
        lists.keys().collect::<Vec<_>>(),
        ["Leer", "Road: trip", "Über mix"]
    );
    let mut names = Vec::new();
    for id in &lists["Road: trip"].tracks {
        names.push(track(&f, &token, id).await.name);
    }
    assert_eq!(
        names,
        [
            "Hello: \"World\"?",
            "Svefn-g-englar",
            "What's up?",
            "Hello: \"World\"?"
        ],
        "order kept, the unknown entry and the URL left out"
    );
    assert!(lists["Leer"].tracks.is_empty());
    assert_eq!(lists["Über mix"].tracks.len(), 1);

    // Another user's rootlist, unknown or malformed ids: 404; no token: 401.
    let (status, _) = f.get(&token, "/playlist/v2/user/someone/rootlist").await;
    assert_eq!(status, 404);
    let unknown = PlaylistId([0; 16]).to_base62();
    for path in [
        format!("/playlist/v2/playlist/{unknown}"),
        "/playlist/v2/playlist/short".into(),
        format!("/playlist/v2/playlist/{}", "ab".repeat(16)),
    ] {
        assert_eq!(f.get(&token, &path).await.0, 404, "{path}");
    }
    let (status, _) = f.get("nope", "/playlist/v2/user/trackfs/rootlist").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_library_without_playlists_has_no_rootlist() {
    let f = fixture!(|_| {});
    let token = f.token().await;
    let (status, _) = f.get(&token, "/playlist/v2/user/trackfs/rootlist").await;
    assert_eq!(status, 404);
}
