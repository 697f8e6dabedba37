//! Domain types shared by the origin and the client: ids, formats, tracks and albums, and
//! (protocol v1.1) cover images and playlists in the submodules.
//!
//! Everything that comes off the wire passes through `TryFrom` here, so the rest of the crate
//! never touches generated protobuf types and a malformed message becomes one clear error.

mod base62;
mod image;
mod playlist;

pub use base62::{base62_to_gid, gid_to_base62, SpotifyUri, BASE62_LEN};
pub use image::{Image, ImageSize, PictureKind};
pub use playlist::{rootlist_from_wire, rootlist_to_wire, Playlist};

use crate::protocol::proto::metadata as pb;
use std::fmt;

/// Bytes of the Ogg Vorbis formats' stored header that the mount hides (docs/protocol.md).
pub const OGG_HEADER_LEN: u64 = 0xa7;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("{what} must be {expected} bytes, got {got}")]
    BadIdLength {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{what} is not {expected} lowercase hex characters: {text:?}")]
    BadHex {
        what: &'static str,
        expected: usize,
        text: String,
    },
    #[error("not a 22-character base62 id: {text:?}")]
    BadBase62 { text: String },
    #[error("{message} has no {field}")]
    MissingField {
        message: &'static str,
        field: &'static str,
    },
}

macro_rules! hex_id {
    ($name:ident, $len:expr, $what:expr) => {
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length of the id in lowercase hex.
            pub const HEX_LEN: usize = $len * 2;

            pub fn from_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
                <[u8; $len]>::try_from(bytes)
                    .map($name)
                    .map_err(|_| ModelError::BadIdLength {
                        what: $what,
                        expected: $len,
                        got: bytes.len(),
                    })
            }

            /// Parses lowercase hex as used on the wire; anything else (upper case, `..`,
            /// wrong length) is rejected, which also keeps ids safe to use in paths.
            pub fn from_hex(text: &str) -> Result<Self, ModelError> {
                let bad = || ModelError::BadHex {
                    what: $what,
                    expected: $len * 2,
                    text: text.chars().take(80).collect(),
                };
                let lower = text
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if text.len() != $len * 2 || !lower {
                    return Err(bad());
                }
                let bytes = hex::decode(text).map_err(|_| bad())?;
                Self::from_bytes(&bytes)
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }
    };
}

hex_id!(TrackId, 16, "a track gid");
hex_id!(AlbumId, 16, "an album gid");
hex_id!(FileId, 20, "a file id");
hex_id!(PlaylistId, 16, "a playlist gid");

/// What a player needs to know about a stored format's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Container {
    OggVorbis,
    Mp3,
    Flac,
    Aac,
}

impl Container {
    pub fn extension(self) -> &'static str {
        match self {
            Container::OggVorbis => "ogg",
            Container::Mp3 => "mp3",
            Container::Flac => "flac",
            Container::Aac => "m4a",
        }
    }

    /// Bytes at the start of the stored plaintext that the mount hides.
    pub fn hidden_header_len(self) -> u64 {
        match self {
            Container::OggVorbis => OGG_HEADER_LEN,
            _ => 0,
        }
    }
}

/// The formats of docs/protocol.md §9, as the wire numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioFormat {
    OggVorbis96,
    OggVorbis160,
    OggVorbis320,
    Mp3_256,
    Mp3_320,
    Mp3_160,
    Mp3_96,
    Mp3_160Enc,
    Aac24,
    Aac48,
    Flac,
    XheAac24,
    XheAac16,
    XheAac12,
    Flac24Bit,
}

impl AudioFormat {
    pub const ALL: [AudioFormat; 15] = [
        AudioFormat::OggVorbis96,
        AudioFormat::OggVorbis160,
        AudioFormat::OggVorbis320,
        AudioFormat::Mp3_256,
        AudioFormat::Mp3_320,
        AudioFormat::Mp3_160,
        AudioFormat::Mp3_96,
        AudioFormat::Mp3_160Enc,
        AudioFormat::Aac24,
        AudioFormat::Aac48,
        AudioFormat::Flac,
        AudioFormat::XheAac24,
        AudioFormat::XheAac16,
        AudioFormat::XheAac12,
        AudioFormat::Flac24Bit,
    ];

    pub fn from_wire(value: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.wire() == value)
    }

    pub fn wire(self) -> i32 {
        use pb::audio_file::Format as W;
        let w = match self {
            AudioFormat::OggVorbis96 => W::OggVorbis96,
            AudioFormat::OggVorbis160 => W::OggVorbis160,
            AudioFormat::OggVorbis320 => W::OggVorbis320,
            AudioFormat::Mp3_256 => W::Mp3256,
            AudioFormat::Mp3_320 => W::Mp3320,
            AudioFormat::Mp3_160 => W::Mp3160,
            AudioFormat::Mp3_96 => W::Mp396,
            AudioFormat::Mp3_160Enc => W::Mp3160Enc,
            AudioFormat::Aac24 => W::Aac24,
            AudioFormat::Aac48 => W::Aac48,
            AudioFormat::Flac => W::FlacFlac,
            AudioFormat::XheAac24 => W::XheAac24,
            AudioFormat::XheAac16 => W::XheAac16,
            AudioFormat::XheAac12 => W::XheAac12,
            AudioFormat::Flac24Bit => W::FlacFlac24bit,
        };
        w as i32
    }

    /// The wire name, e.g. `OGG_VORBIS_320`; also what `--format` accepts.
    pub fn name(self) -> &'static str {
        match self {
            AudioFormat::OggVorbis96 => "OGG_VORBIS_96",
            AudioFormat::OggVorbis160 => "OGG_VORBIS_160",
            AudioFormat::OggVorbis320 => "OGG_VORBIS_320",
            AudioFormat::Mp3_256 => "MP3_256",
            AudioFormat::Mp3_320 => "MP3_320",
            AudioFormat::Mp3_160 => "MP3_160",
            AudioFormat::Mp3_96 => "MP3_96",
            AudioFormat::Mp3_160Enc => "MP3_160_ENC",
            AudioFormat::Aac24 => "AAC_24",
            AudioFormat::Aac48 => "AAC_48",
            AudioFormat::Flac => "FLAC_FLAC",
            AudioFormat::XheAac24 => "XHE_AAC_24",
            AudioFormat::XheAac16 => "XHE_AAC_16",
            AudioFormat::XheAac12 => "XHE_AAC_12",
            AudioFormat::Flac24Bit => "FLAC_FLAC_24BIT",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        let upper = name.trim().to_ascii_uppercase();
        Self::ALL.into_iter().find(|f| f.name() == upper)
    }

    pub fn container(self) -> Container {
        use AudioFormat::*;
        match self {
            OggVorbis96 | OggVorbis160 | OggVorbis320 => Container::OggVorbis,
            Mp3_256 | Mp3_320 | Mp3_160 | Mp3_96 | Mp3_160Enc => Container::Mp3,
            Aac24 | Aac48 | XheAac24 | XheAac16 | XheAac12 => Container::Aac,
            Flac | Flac24Bit => Container::Flac,
        }
    }

    /// Rough quality rank for "best available": lossless first, then by bitrate.
    pub fn quality(self) -> u32 {
        use AudioFormat::*;
        match self {
            Flac24Bit => 2000,
            Flac => 1411,
            OggVorbis320 | Mp3_320 => 320,
            Mp3_256 => 256,
            OggVorbis160 | Mp3_160 => 160,
            Mp3_160Enc => 159,
            OggVorbis96 | Mp3_96 => 96,
            Aac48 => 48,
            XheAac24 | Aac24 => 24,
            XheAac16 => 16,
            XheAac12 => 12,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFile {
    pub id: FileId,
    pub format: AudioFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Date {
    pub year: i32,
    pub month: i32,
    pub day: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub id: TrackId,
    pub name: String,
    pub artists: Vec<String>,
    pub number: u32,
    pub disc_number: u32,
    pub duration_ms: u32,
    /// Files in known formats; unknown formats are dropped, not fatal.
    pub files: Vec<AudioFile>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disc {
    pub number: u32,
    pub tracks: Vec<TrackId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Album {
    pub id: AlbumId,
    pub name: String,
    pub artists: Vec<String>,
    pub date: Option<Date>,
    pub discs: Vec<Disc>,
    /// Cover images (v1.1), from `cover_group` then `cover`; [`Image::largest`] picks one.
    pub covers: Vec<Image>,
}

fn clamp_u32(v: Option<i32>) -> u32 {
    v.map(|v| v.max(0) as u32).unwrap_or(0)
}

fn artist_names(artists: &[pb::Artist]) -> Vec<String> {
    artists
        .iter()
        .filter_map(|a| a.name.clone())
        .filter(|n| !n.is_empty())
        .collect()
}

impl TryFrom<pb::Track> for Track {
    type Error = ModelError;

    /// Requires a gid; a missing name falls back to the gid, missing numbers to 0.
    fn try_from(t: pb::Track) -> Result<Self, ModelError> {
        let gid = t.gid.ok_or(ModelError::MissingField {
            message: "Track",
            field: "gid",
        })?;
        let id = TrackId::from_bytes(&gid)?;
        let files = t
            .file
            .iter()
            .filter_map(|f| {
                let id = FileId::from_bytes(f.file_id.as_deref()?).ok()?;
                // proto2: an unset enum field reads as its first value (OGG_VORBIS_96).
                let format = AudioFormat::from_wire(f.format.unwrap_or_default())?;
                Some(AudioFile { id, format })
            })
            .collect();
        Ok(Track {
            name: t
                .name
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| id.to_hex()),
            artists: artist_names(&t.artist),
            number: clamp_u32(t.number),
            disc_number: clamp_u32(t.disc_number),
            duration_ms: clamp_u32(t.duration),
            files,
            id,
        })
    }
}

impl TryFrom<pb::Album> for Album {
    type Error = ModelError;

    /// Requires a gid; a track entry without a valid gid is an error (the album is unusable
    /// as published), a missing name falls back to the gid.
    fn try_from(a: pb::Album) -> Result<Self, ModelError> {
        let gid = a.gid.as_deref().ok_or(ModelError::MissingField {
            message: "Album",
            field: "gid",
        })?;
        let id = AlbumId::from_bytes(gid)?;
        let covers = image::album_images(&a);
        let discs = a
            .disc
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let tracks = d
                    .track
                    .iter()
                    .map(|t| {
                        let gid = t.gid.as_deref().ok_or(ModelError::MissingField {
                            message: "Disc.track",
                            field: "gid",
                        })?;
                        TrackId::from_bytes(gid)
                    })
                    .collect::<Result<_, _>>()?;
                let number = d.number.map(|n| n.max(0) as u32).unwrap_or(i as u32 + 1);
                Ok(Disc { number, tracks })
            })
            .collect::<Result<_, ModelError>>()?;
        Ok(Album {
            name: a
                .name
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| id.to_hex()),
            artists: artist_names(&a.artist),
            date: a.date.map(|d| Date {
                year: d.year.unwrap_or(0),
                month: d.month.unwrap_or(0),
                day: d.day.unwrap_or(0),
            }),
            discs,
            covers,
            id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_only_lowercase_hex_of_the_right_length() {
        let id = FileId::from_hex(&"ab".repeat(20)).unwrap();
        assert_eq!(id.to_hex(), "ab".repeat(20));
        assert!(FileId::from_hex(&"AB".repeat(20)).is_err());
        assert!(FileId::from_hex(&"ab".repeat(16)).is_err());
        assert!(TrackId::from_hex("../../etc/passwd").is_err());
        assert!(TrackId::from_bytes(&[0; 15]).is_err());
    }

    #[test]
    fn formats_round_trip_their_wire_numbers() {
        for f in AudioFormat::ALL {
            assert_eq!(AudioFormat::from_wire(f.wire()), Some(f));
            assert_eq!(AudioFormat::from_name(f.name()), Some(f));
        }
        assert_eq!(AudioFormat::from_wire(16), Some(AudioFormat::Flac));
        assert_eq!(AudioFormat::from_wire(99), None);
    }

    #[test]
    fn track_conversion_drops_unknown_formats_and_needs_a_gid() {
        let t = pb::Track {
            gid: Some(vec![1; 16]),
            file: vec![
                pb::AudioFile {
                    file_id: Some(vec![2; 20]),
                    format: Some(99),
                },
                pb::AudioFile {
                    file_id: Some(vec![3; 20]),
                    format: Some(2),
                },
                pb::AudioFile {
                    file_id: Some(vec![4; 20]),
                    format: None,
                },
            ],
            ..Default::default()
        };
        let track = Track::try_from(t).unwrap();
        assert_eq!(track.files.len(), 2);
        assert_eq!(track.files[0].format, AudioFormat::OggVorbis320);
        assert_eq!(
            track.files[1].format,
            AudioFormat::OggVorbis96,
            "the proto2 default"
        );
        assert_eq!(track.name, "01".repeat(16));
        assert!(Track::try_from(pb::Track::default()).is_err());
    }

    #[test]
    fn album_conversion_carries_its_covers() {
        let a = pb::Album {
            gid: Some(vec![1; 16]),
            cover_group: Some(pb::ImageGroup {
                image: vec![pb::Image {
                    file_id: Some(vec![2; 20]),
                    size: Some(3),
                    width: Some(640),
                    height: Some(480),
                }],
            }),
            ..Default::default()
        };
        let album = Album::try_from(a).unwrap();
        let cover = Image::largest(&album.covers).unwrap();
        assert_eq!(cover.file_id, FileId([2; 20]));
        assert_eq!(
            (cover.size, cover.pixels()),
            (ImageSize::XLarge, Some(640 * 480))
        );
    }
}
