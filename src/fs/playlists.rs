//! `Playlists/<Name>.m3u8` (docs/protocol.md §7): the text of a playlist file, made from the
//! tracks the tree shows.
//!
//! UTF-8 without a BOM (mpd refuses the `#EXTM3U` header after one), `#EXTINF:<seconds>,<Artist>
//! - <Title>` before each path, paths relative to the `Playlists` folder and written as they are
//! (mpd does not decode `%20`), `\n` line ends. Tracks the tree does not show (unknown, or
//! hidden by `--format`) are left out; a track listed twice is listed twice.

use crate::protocol::model::Track;

/// One line pair of a playlist: the track as the tree shows it, at `path` (relative to the
/// mount's root, `/`-separated).
pub(crate) struct Entry<'a> {
    pub track: &'a Track,
    /// The album's artist, used when the track names none.
    pub album_artist: &'a str,
    pub path: String,
}

/// The `#EXTINF` duration: whole seconds, rounded; `-1` (unknown, as M3U says) for no duration.
fn seconds(duration_ms: u32) -> i64 {
    match duration_ms {
        0 => -1,
        ms => (i64::from(ms) + 500) / 1000,
    }
}

/// Tags on one line: a line break in a tag would end the `#EXTINF` line early.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub(crate) fn render(entries: &[Entry<'_>]) -> String {
    let mut out = String::from("#EXTM3U\n");
    for entry in entries {
        let artist = entry
            .track
            .artists
            .first()
            .map_or(entry.album_artist, String::as_str);
        out.push_str(&format!(
            "#EXTINF:{},{} - {}\n../{}\n",
            seconds(entry.track.duration_ms),
            one_line(artist),
            one_line(&entry.track.name),
            entry.path
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::model::TrackId;

    fn track(name: &str, artists: &[&str], duration_ms: u32) -> Track {
        Track {
            id: TrackId([1; 16]),
            name: name.into(),
            artists: artists.iter().map(|a| a.to_string()).collect(),
            number: 1,
            disc_number: 1,
            duration_ms,
            files: vec![],
        }
    }

    #[test]
    fn extinf_lines_and_relative_paths() {
        let (a, b) = (
            track("Hidden Place", &["Björk"], 6_499),
            track("Line\nbreak", &[], 0),
        );
        let text = render(&[
            Entry {
                track: &a,
                album_artist: "X",
                path: "Björk/Vespertine: \"Live\"?/01 - Hidden Place.ogg".into(),
            },
            Entry {
                track: &b,
                album_artist: "Album Artist",
                path: "Album Artist/A/01 - Line break.mp3".into(),
            },
        ]);
        assert_eq!(
            text,
            "#EXTM3U\n\
             #EXTINF:6,Björk - Hidden Place\n\
             ../Björk/Vespertine: \"Live\"?/01 - Hidden Place.ogg\n\
             #EXTINF:-1,Album Artist - Line break\n\
             ../Album Artist/A/01 - Line break.mp3\n"
        );
        assert_eq!(render(&[]), "#EXTM3U\n");
    }
}
