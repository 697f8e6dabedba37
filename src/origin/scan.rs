//! What a source file is: its format (from magic bytes, not its name), bitrate and tags.
//!
//! Tags come from `lofty`; files without tags (ffmpeg-made ones have none) fall back to the
//! folder layout `Artist/Album/NN Title.ext` (with an optional `CD1`/`Disc 2` level), so a
//! plain folder of rips still publishes with sensible names.

use crate::protocol::model::AudioFormat;
use lofty::file::{AudioFile, TaggedFileExt};
use lofty::probe::Probe;
use lofty::tag::{Accessor, ItemKey, Tag};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path};

/// Why a file is not published (the warning names the file and says this).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot read it: {0}")]
    Unreadable(#[from] io::Error),
    #[error("not Ogg Vorbis, MP3 or FLAC (by its first bytes)")]
    NotAudio,
    #[error("{0} is not supported (only Ogg Vorbis, MP3 and FLAC are)")]
    Unsupported(&'static str),
    #[error("looks like {0} but cannot be parsed: {1}")]
    Corrupt(&'static str, String),
}

/// A container recognised by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// Ogg Vorbis, with the id header's nominal bitrate (bits/s) when it is set.
    Vorbis {
        nominal_bitrate: Option<u32>,
    },
    Mp3,
    Flac,
}

/// Everything `publish` needs to know about one source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    pub format: AudioFormat,
    pub title: String,
    pub artist: String,
    pub album: String,
    pub album_artist: String,
    pub number: u32,
    pub disc: u32,
    pub year: Option<i32>,
    pub duration_ms: u32,
}

const SNIFF_LEN: usize = 4096;

/// Identifies `path` by content, then reads its tags and properties.
pub fn scan(path: &Path, rel: &Path) -> Result<SourceInfo, ScanError> {
    let sniffed = sniff_file(path)?;
    let label = match sniffed {
        Sniffed::Vorbis { .. } => "Ogg Vorbis",
        Sniffed::Mp3 => "MP3",
        Sniffed::Flac => "FLAC",
    };
    let corrupt = |e: lofty::error::LoftyError| ScanError::Corrupt(label, e.to_string());
    let tagged = Probe::open(path)
        .map_err(corrupt)?
        .guess_file_type()?
        .read()
        .map_err(corrupt)?;
    let props = tagged.properties();
    let format = match sniffed {
        Sniffed::Vorbis { nominal_bitrate } => {
            let bps = nominal_bitrate.or(props.audio_bitrate().map(|k| k * 1000));
            vorbis_format(bps.unwrap_or(160_000))
        }
        Sniffed::Mp3 => mp3_format(props.audio_bitrate().unwrap_or(320)),
        Sniffed::Flac => AudioFormat::Flac,
    };
    let duration_ms = u32::try_from(props.duration().as_millis()).unwrap_or(u32::MAX);
    let tag = tagged.primary_tag().or_else(|| tagged.first_tag());
    Ok(describe(format, duration_ms, tag, rel))
}

/// Merges tags with the folder layout: tags win, the layout fills the gaps.
fn describe(format: AudioFormat, duration_ms: u32, tag: Option<&Tag>, rel: &Path) -> SourceInfo {
    let layout = Layout::from_path(rel);
    let text = |s: Option<std::borrow::Cow<'_, str>>| {
        s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    };
    let tag_artist = tag.and_then(|t| text(t.artist()));
    let artist = tag_artist.clone().or(layout.artist.clone());
    let album_artist = tag
        .and_then(|t| text(t.get_string(&ItemKey::AlbumArtist).map(Into::into)))
        .or(tag_artist)
        .or(layout.artist);
    SourceInfo {
        format,
        title: tag.and_then(|t| text(t.title())).unwrap_or(layout.title),
        artist: artist.unwrap_or_else(|| "Unknown Artist".into()),
        album: tag
            .and_then(|t| text(t.album()))
            .or(layout.album)
            .unwrap_or_else(|| "Unknown Album".into()),
        album_artist: album_artist.unwrap_or_else(|| "Unknown Artist".into()),
        number: tag.and_then(|t| t.track()).or(layout.number).unwrap_or(0),
        disc: tag.and_then(|t| t.disk()).or(layout.disc).unwrap_or(1),
        year: tag
            .and_then(|t| t.year())
            .and_then(|y| i32::try_from(y).ok())
            .filter(|y| *y > 0),
        duration_ms,
    }
}

/// Ogg Vorbis nominal bitrate → the nearest of 96/160/320 kbit/s.
pub fn vorbis_format(bits_per_second: u32) -> AudioFormat {
    match bits_per_second / 1000 {
        0..=127 => AudioFormat::OggVorbis96,
        128..=239 => AudioFormat::OggVorbis160,
        _ => AudioFormat::OggVorbis320,
    }
}

/// MP3 bitrate (kbit/s) → the nearest of 96/160/256/320.
pub fn mp3_format(kbps: u32) -> AudioFormat {
    match kbps {
        0..=127 => AudioFormat::Mp3_96,
        128..=207 => AudioFormat::Mp3_160,
        208..=287 => AudioFormat::Mp3_256,
        _ => AudioFormat::Mp3_320,
    }
}

fn sniff_file(path: &Path) -> Result<Sniffed, ScanError> {
    let mut file = File::open(path)?;
    let mut head = Vec::with_capacity(SNIFF_LEN);
    (&mut file).take(SNIFF_LEN as u64).read_to_end(&mut head)?;
    if let Some(tag_len) = id3v2_len(&head) {
        // An ID3v2 tag may precede MP3 frames or (rarely) a FLAC stream: look past it.
        let mut after = [0u8; 4];
        file.seek(SeekFrom::Start(tag_len))?;
        let n = file.read(&mut after)?;
        return Ok(if after[..n].starts_with(b"fLaC") {
            Sniffed::Flac
        } else {
            Sniffed::Mp3
        });
    }
    sniff(&head)
}

/// Recognises a container from the first bytes of a file (no ID3 handling: see `sniff_file`).
pub fn sniff(head: &[u8]) -> Result<Sniffed, ScanError> {
    if head.starts_with(b"fLaC") {
        return Ok(Sniffed::Flac);
    }
    if head.starts_with(b"OggS") {
        return sniff_ogg(head);
    }
    if is_mp3_frame_header(head) {
        return Ok(Sniffed::Mp3);
    }
    Err(ScanError::NotAudio)
}

/// The first Ogg page holds the codec's identification packet.
fn sniff_ogg(head: &[u8]) -> Result<Sniffed, ScanError> {
    let segments = *head.get(26).ok_or(ScanError::NotAudio)? as usize;
    let packet = head.get(27 + segments..).ok_or(ScanError::NotAudio)?;
    if packet.starts_with(b"\x01vorbis") {
        let nominal = packet
            .get(20..24)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(i32::from_le_bytes)
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v > 0);
        return Ok(Sniffed::Vorbis {
            nominal_bitrate: nominal,
        });
    }
    if packet.starts_with(b"OpusHead") {
        return Err(ScanError::Unsupported("Ogg Opus"));
    }
    if packet.starts_with(b"\x7fFLAC") {
        return Err(ScanError::Unsupported("Ogg FLAC"));
    }
    Err(ScanError::Unsupported("an Ogg stream of an unknown codec"))
}

/// Total length of a leading ID3v2 tag (header, syncsafe size, optional footer).
fn id3v2_len(head: &[u8]) -> Option<u64> {
    if head.len() < 10 || !head.starts_with(b"ID3") {
        return None;
    }
    let size = head[6..10]
        .iter()
        .fold(0u64, |acc, b| (acc << 7) | u64::from(b & 0x7f));
    let footer = if head[5] & 0x10 != 0 { 10 } else { 0 };
    Some(10 + size + footer)
}

/// An MPEG audio Layer III frame header with no reserved field values.
fn is_mp3_frame_header(head: &[u8]) -> bool {
    let [b0, b1, b2, ..] = *head else {
        return false;
    };
    let sync = b0 == 0xff && b1 & 0xe0 == 0xe0;
    let version_ok = (b1 >> 3) & 3 != 1;
    let layer3 = (b1 >> 1) & 3 == 1;
    let bitrate_ok = b2 >> 4 != 0xf && b2 >> 4 != 0;
    let rate_ok = (b2 >> 2) & 3 != 3;
    sync && version_ok && layer3 && bitrate_ok && rate_ok
}

/// Names from the folder layout `[Artist/]Album/[CD1/]NN Title.ext`, relative to the source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Layout {
    artist: Option<String>,
    album: Option<String>,
    disc: Option<u32>,
    number: Option<u32>,
    title: String,
}

impl Layout {
    fn from_path(rel: &Path) -> Layout {
        let mut dirs: Vec<String> = rel
            .parent()
            .into_iter()
            .flat_map(Path::components)
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        let disc = dirs.last().and_then(|d| disc_folder_number(d));
        if disc.is_some() {
            dirs.pop();
        }
        let stem = rel
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (file_disc, number, title) = split_track_number(&stem);
        Layout {
            album: dirs.pop(),
            artist: dirs.pop(),
            disc: disc.or(file_disc),
            number,
            title,
        }
    }
}

/// Whether a folder's name is a disc folder's (`CD1`, `Disc 2`).
pub(crate) fn is_disc_folder(name: &str) -> bool {
    disc_folder_number(name).is_some()
}

/// `CD1`, `cd 2`, `Disc 3`, `disk04` → the number.
fn disc_folder_number(name: &str) -> Option<u32> {
    let lower = name.trim().to_lowercase();
    let rest = ["disc", "disk", "cd"]
        .iter()
        .find_map(|p| lower.strip_prefix(p))?;
    rest.trim_start_matches([' ', '_', '-', '.']).parse().ok()
}

/// `NN Title`, `NN - Title` and `D-NN Title` → (disc, number, title); a stem without that
/// shape is the title as it is (`03.Title`, `Intro`, `1984`).
fn split_track_number(stem: &str) -> (Option<u32>, Option<u32>, String) {
    let whole = || (None, None, stem.to_string());
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let n = digits(stem);
    if n == 0 {
        return whole();
    }
    let (mut disc, mut number, mut rest) = (None, stem[..n].parse().ok(), &stem[n..]);
    if let Some(after) = rest.strip_prefix('-') {
        let m = digits(after);
        if m > 0 {
            (disc, number, rest) = (number, after[..m].parse().ok(), &after[m..]);
        }
    }
    if !rest.starts_with(char::is_whitespace) {
        return whole();
    }
    let rest = rest.trim_start();
    let title = match rest.strip_prefix('-') {
        Some(t) if t.starts_with(char::is_whitespace) => t.trim_start(),
        _ => rest,
    };
    if title.is_empty() || number.is_none() {
        return whole();
    }
    (disc, number, title.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_gives_artist_album_disc_number_title() {
        let l = Layout::from_path(Path::new("Björk/Début: \"live\"?/CD2/07 - Big Time?.ogg"));
        assert_eq!(l.artist.as_deref(), Some("Björk"));
        assert_eq!(l.album.as_deref(), Some("Début: \"live\"?"));
        assert_eq!((l.disc, l.number), (Some(2), Some(7)));
        assert_eq!(l.title, "Big Time?");
        let l = Layout::from_path(Path::new("song.mp3"));
        assert_eq!((l.artist, l.album, l.number), (None, None, None));
        assert_eq!(l.title, "song");
        let split = |s: &str| split_track_number(s);
        assert_eq!(split("1984"), (None, None, "1984".into()));
        assert_eq!(split("03.Title"), (None, None, "03.Title".into()));
        assert_eq!(split("03 - A - B"), (None, Some(3), "A - B".into()));
        assert_eq!(split("2-07 Song"), (Some(2), Some(7), "Song".into()));
        assert_eq!(split("12 -"), (None, Some(12), "-".into()));
    }

    #[test]
    fn magic_bytes_decide_the_format() {
        assert_eq!(sniff(b"fLaC\0\0\0\x22").unwrap(), Sniffed::Flac);
        assert_eq!(sniff(&[0xff, 0xfb, 0x90, 0x64]).unwrap(), Sniffed::Mp3);
        assert!(sniff(&[0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(sniff(b"just some text, not audio").is_err());
        let mut ogg = b"OggS".to_vec();
        ogg.extend([0; 22]);
        ogg.push(1); // one segment
        ogg.push(30);
        ogg.extend(b"\x01vorbis\0\0\0\0\x01\x44\xac\0\0\0\0\0\0\x00\xe2\x04\0\0\0\0\0");
        let nominal = Some(320_000);
        assert_eq!(
            sniff(&ogg).unwrap(),
            Sniffed::Vorbis {
                nominal_bitrate: nominal
            }
        );
        assert_eq!(vorbis_format(320_000), AudioFormat::OggVorbis320);
        assert_eq!(vorbis_format(112_000), AudioFormat::OggVorbis96);
        assert_eq!(mp3_format(256), AudioFormat::Mp3_256);
        assert_eq!(mp3_format(192), AudioFormat::Mp3_160);
    }
}
