//! A small music folder made with ffmpeg once per test binary: Ogg Vorbis, MP3 and FLAC, names
//! with unicode, quotes, colons and `?`, a two-disc album, and one multi-megabyte track; and
//! five-minute tracks for library scans.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const TRACKS: &[(&str, &str)] = &[
    (
        "Björk/Vespertine: \"Live\"?/01 Hidden Place.ogg",
        "sine=f=440:d=6",
    ),
    (
        "Björk/Vespertine: \"Live\"?/02 Cocoon?.mp3",
        "sine=f=330:d=5",
    ),
    (
        "Björk/Vespertine: \"Live\"?/03 Noise Study.flac",
        "anoisesrc=d=12:c=pink:r=44100:a=0.5",
    ),
    (
        "Ensemble l'Été/Suite: Part \"One\"/1-01 Prélude.ogg",
        "sine=f=523:d=4",
    ),
    (
        "Ensemble l'Été/Suite: Part \"One\"/1-02 Allemande?.mp3",
        "sine=f=587:d=3",
    ),
    (
        "Ensemble l'Été/Suite: Part \"One\"/2-01 Courante.flac",
        "sine=f=659:d=3",
    ),
];

fn codec_args(path: &str) -> &'static [&'static str] {
    if path.ends_with(".ogg") {
        &["-c:a", "libvorbis", "-q:a", "4"]
    } else if path.ends_with(".mp3") {
        &["-c:a", "libmp3lame", "-b:a", "320k"]
    } else {
        &["-c:a", "flac"]
    }
}

/// The folder, made once and shared by every test process (nextest runs each test in its own
/// process): built under a temporary name, then renamed into place atomically.
pub fn music() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let fingerprint: u64 = TRACKS
            .iter()
            .flat_map(|(p, s)| p.bytes().chain(s.bytes()))
            .fold(0xcbf29ce484222325, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100000001b3)
            });
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("music-{fingerprint:016x}"));
        if dir.exists() {
            return dir;
        }
        let building = dir.with_extension(format!("building-{}", std::process::id()));
        for (relative, source) in TRACKS {
            let path = building.join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let status = Command::new("ffmpeg")
                .args(["-v", "error", "-y", "-f", "lavfi", "-i", source, "-ac", "2"])
                .args(codec_args(relative))
                .arg(&path)
                .status()
                .expect("ffmpeg runs");
            assert!(status.success(), "ffmpeg failed for {relative}");
        }
        // Another process may have won the race; either way `dir` is complete afterwards.
        if std::fs::rename(&building, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&building);
        }
        dir
    })
}

/// Five-minute tracks, one per format (Ogg Vorbis, MP3, FLAC), made once: what a library
/// scan meets, long enough that fetching a whole file would show.
pub fn long_tracks() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("long-tracks-v1");
    if dir.exists() {
        return dir;
    }
    let building = dir.with_extension(format!("building-{}", std::process::id()));
    let album = building.join("Long Player/Five Minutes");
    std::fs::create_dir_all(&album).unwrap();
    let noise = "anoisesrc=d=300:c=pink:r=44100:a=0.1";
    for (name, input, codec) in [
        (
            "01 Noise.ogg",
            noise,
            &["-c:a", "libvorbis", "-q:a", "2"][..],
        ),
        (
            "02 Tone.mp3",
            "sine=f=440:d=300",
            &["-c:a", "libmp3lame", "-b:a", "192k"][..],
        ),
        ("03 Noise.flac", noise, &["-c:a", "flac"][..]),
    ] {
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-f", "lavfi", "-i", input, "-ac", "2"])
            .args(codec)
            .arg(album.join(name))
            .status()
            .expect("ffmpeg runs");
        assert!(status.success(), "ffmpeg failed for {name}");
    }
    if std::fs::rename(&building, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&building);
    }
    dir
}
