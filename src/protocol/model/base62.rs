//! Base62 ids and `spotify:` URIs (docs/protocol.md §7): the playlist endpoints name playlists and
//! tracks the way Spotify writes ids, not in the hex the rest of the protocol uses.
//!
//! A 16-byte gid is read as a big-endian 128-bit number and written with the digits
//! `0-9a-zA-Z` (in that order), left-padded with `0` to exactly 22 characters.

use super::{ModelError, PlaylistId, TrackId};

/// Digits of base62 in value order.
const DIGITS: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Length of a base62 gid: 62^22 is the first power of 62 above 2^128.
pub const BASE62_LEN: usize = 22;

/// Writes a 16-byte gid in base62, 22 characters.
pub fn gid_to_base62(gid: &[u8; 16]) -> String {
    let mut n = u128::from_be_bytes(*gid);
    let mut out = [b'0'; BASE62_LEN];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| b as char).collect()
}

/// Reads a 22-character base62 id back into a 16-byte gid. Anything else (another length, a
/// character outside `0-9a-zA-Z`, a value above 2^128 - 1) is an error, never a panic.
pub fn base62_to_gid(text: &str) -> Result<[u8; 16], ModelError> {
    let bad = || ModelError::BadBase62 {
        text: text.chars().take(80).collect(),
    };
    if text.len() != BASE62_LEN {
        return Err(bad());
    }
    let mut n: u128 = 0;
    for b in text.bytes() {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'z' => b - b'a' + 10,
            b'A'..=b'Z' => b - b'A' + 36,
            _ => return Err(bad()),
        };
        n = n
            .checked_mul(62)
            .and_then(|n| n.checked_add(u128::from(digit)))
            .ok_or_else(bad)?;
    }
    Ok(n.to_be_bytes())
}

macro_rules! base62_id {
    ($name:ident, $kind:expr) => {
        impl $name {
            /// The id in base62, as the playlist endpoints write it.
            pub fn to_base62(&self) -> String {
                gid_to_base62(&self.0)
            }

            pub fn from_base62(text: &str) -> Result<Self, ModelError> {
                base62_to_gid(text).map($name)
            }

            /// `spotify:<kind>:<base62>`.
            pub fn to_uri(&self) -> String {
                format!("spotify:{}:{}", $kind, self.to_base62())
            }
        }
    };
}

base62_id!(TrackId, "track");
base62_id!(PlaylistId, "playlist");

/// What an `Item.uri` of a playlist answer names. Kinds this protocol does not use
/// (`spotify:episode:…`, `spotify:local:…`) and malformed ids are `Other`, so a client skips them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpotifyUri {
    Track(TrackId),
    Playlist(PlaylistId),
    Other,
}

impl SpotifyUri {
    pub fn parse(uri: &str) -> SpotifyUri {
        let mut parts = uri.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("spotify"), Some("track"), Some(id)) => TrackId::from_base62(id)
                .map(SpotifyUri::Track)
                .unwrap_or(SpotifyUri::Other),
            (Some("spotify"), Some("playlist"), Some(id)) => PlaylistId::from_base62(id)
                .map(SpotifyUri::Playlist)
                .unwrap_or(SpotifyUri::Other),
            _ => SpotifyUri::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_examples_of_the_design() {
        let mut gid = [0u8; 16];
        assert_eq!(gid_to_base62(&gid), "0000000000000000000000");
        gid[15] = 1;
        assert_eq!(gid_to_base62(&gid), "0000000000000000000001");
        assert_eq!(base62_to_gid("0000000000000000000001").unwrap(), gid);
    }

    #[test]
    fn digit_order_is_numbers_then_lower_then_upper() {
        let id = |n: u128| gid_to_base62(&n.to_be_bytes());
        assert_eq!(id(10), "000000000000000000000a");
        assert_eq!(id(35), "000000000000000000000z");
        assert_eq!(id(36), "000000000000000000000A");
        assert_eq!(id(61), "000000000000000000000Z");
        assert_eq!(id(62), "0000000000000000000010");
        assert_eq!(id(u128::MAX), "7N42dgm5tFLK9N8MT7fHC7");
    }

    #[test]
    fn round_trips_and_rejects_bad_text() {
        for n in [
            0u128,
            1,
            61,
            62,
            12345678901234567890,
            u128::MAX - 1,
            u128::MAX,
        ] {
            let gid = n.to_be_bytes();
            assert_eq!(base62_to_gid(&gid_to_base62(&gid)).unwrap(), gid);
        }
        assert!(base62_to_gid("000000000000000000001").is_err(), "21 chars");
        assert!(
            base62_to_gid("00000000000000000000001").is_err(),
            "23 chars"
        );
        assert!(base62_to_gid("000000000000000000000-").is_err());
        assert!(base62_to_gid("00000000000000000000é").is_err());
        assert!(base62_to_gid("7N42dgm5tFLK9N8MT7fHC8").is_err(), "2^128");
        assert!(base62_to_gid("ZZZZZZZZZZZZZZZZZZZZZZ").is_err());
    }

    #[test]
    fn uris_name_their_kind() {
        let t = TrackId([7; 16]);
        assert_eq!(SpotifyUri::parse(&t.to_uri()), SpotifyUri::Track(t));
        let p = PlaylistId([9; 16]);
        assert!(p.to_uri().starts_with("spotify:playlist:"));
        assert_eq!(SpotifyUri::parse(&p.to_uri()), SpotifyUri::Playlist(p));
        assert_eq!(
            SpotifyUri::parse("spotify:episode:0000000000000000000001"),
            SpotifyUri::Other
        );
        assert_eq!(
            SpotifyUri::parse("spotify:local:a:b:c:1"),
            SpotifyUri::Other
        );
        assert_eq!(SpotifyUri::parse("spotify:track:nope"), SpotifyUri::Other);
        assert_eq!(SpotifyUri::parse(""), SpotifyUri::Other);
    }
}
