//! Playlists (docs/protocol.md §7): the rootlist of a user and the tracks of one playlist, read
//! from and written to the `SelectedListContent` answers of the playlist endpoints.
//!
//! The wire names tracks and playlists by `spotify:` URIs with base62 ids; here they are
//! typed ids, and items of kinds this protocol does not use are dropped on the way in.

use super::base62::SpotifyUri;
use super::{PlaylistId, TrackId};
use crate::protocol::proto::playlist4 as pb;

/// One playlist: its name, an opaque revision (changes whenever the playlist does) and its
/// tracks in order. A track may appear more than once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Playlist {
    pub id: PlaylistId,
    pub name: String,
    pub revision: Vec<u8>,
    pub tracks: Vec<TrackId>,
}

/// Wraps items the way the origin always sends them: `pos` 0, `truncated` false, so clients
/// built on Spotify's schema (where both are `required`) accept the answer.
fn list_items(uris: Vec<String>) -> pb::ListItems {
    pb::ListItems {
        pos: Some(0),
        truncated: Some(false),
        items: uris
            .into_iter()
            .map(|uri| pb::Item { uri: Some(uri) })
            .collect(),
    }
}

fn uris(content: &pb::SelectedListContent) -> impl Iterator<Item = SpotifyUri> + '_ {
    content
        .contents
        .iter()
        .flat_map(|c| c.items.iter())
        .filter_map(|i| i.uri.as_deref())
        .map(SpotifyUri::parse)
}

impl Playlist {
    /// Reads `GET /playlist/v2/playlist/<id>`'s answer. The id is the one asked for (the
    /// answer does not carry it). A missing name reads as the base62 id; items that are not
    /// tracks (episodes, local files, malformed URIs) are skipped. Never fails.
    pub fn from_wire(id: PlaylistId, content: &pb::SelectedListContent) -> Playlist {
        let tracks = uris(content)
            .filter_map(|u| match u {
                SpotifyUri::Track(t) => Some(t),
                _ => None,
            })
            .collect();
        let name = content
            .attributes
            .as_ref()
            .and_then(|a| a.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| id.to_base62());
        Playlist {
            id,
            name,
            revision: content.revision.clone().unwrap_or_default(),
            tracks,
        }
    }

    /// The answer the origin sends for this playlist.
    pub fn to_wire(&self) -> pb::SelectedListContent {
        pb::SelectedListContent {
            revision: Some(self.revision.clone()),
            length: Some(i32::try_from(self.tracks.len()).unwrap_or(i32::MAX)),
            attributes: Some(pb::ListAttributes {
                name: Some(self.name.clone()),
                description: None,
            }),
            contents: Some(list_items(self.tracks.iter().map(|t| t.to_uri()).collect())),
        }
    }
}

/// Reads `GET /playlist/v2/user/<username>/rootlist`'s answer: the playlists in order, each
/// once; other items (folders, malformed URIs) are skipped.
pub fn rootlist_from_wire(content: &pb::SelectedListContent) -> Vec<PlaylistId> {
    let mut out = Vec::new();
    for u in uris(content) {
        if let SpotifyUri::Playlist(p) = u {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// The rootlist answer the origin sends for these playlists.
pub fn rootlist_to_wire(playlists: &[PlaylistId], revision: &[u8]) -> pb::SelectedListContent {
    pb::SelectedListContent {
        revision: Some(revision.to_vec()),
        length: Some(i32::try_from(playlists.len()).unwrap_or(i32::MAX)),
        attributes: None,
        contents: Some(list_items(playlists.iter().map(|p| p.to_uri()).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn item(uri: &str) -> pb::Item {
        pb::Item {
            uri: Some(uri.into()),
        }
    }

    #[test]
    fn a_playlist_keeps_order_and_repeats_and_skips_other_kinds() {
        let (a, b) = (TrackId([1; 16]), TrackId([2; 16]));
        let content = pb::SelectedListContent {
            revision: Some(vec![7, 7]),
            attributes: Some(pb::ListAttributes {
                name: Some("Road: trip / 2".into()),
                description: None,
            }),
            contents: Some(pb::ListItems {
                pos: None,
                truncated: None,
                items: vec![
                    item(&b.to_uri()),
                    item("spotify:episode:0000000000000000000001"),
                    item("spotify:local:Artist:Album:Title:120"),
                    item("spotify:track:bad"),
                    pb::Item { uri: None },
                    item(&a.to_uri()),
                    item(&b.to_uri()),
                ],
            }),
            ..Default::default()
        };
        let p = Playlist::from_wire(PlaylistId([3; 16]), &content);
        assert_eq!(p.tracks, vec![b, a, b]);
        assert_eq!(p.name, "Road: trip / 2");
        assert_eq!(p.revision, vec![7, 7]);
    }

    #[test]
    fn an_empty_answer_is_an_empty_playlist_named_by_its_id() {
        let id = PlaylistId([0; 16]);
        let p = Playlist::from_wire(id, &pb::SelectedListContent::default());
        assert!(p.tracks.is_empty());
        assert_eq!(p.name, "0000000000000000000000");
    }

    #[test]
    fn the_origin_answer_round_trips_and_always_sends_pos_and_truncated() {
        let p = Playlist {
            id: PlaylistId([4; 16]),
            name: "Mix".into(),
            revision: vec![1, 2, 3],
            tracks: vec![TrackId([5; 16]), TrackId([6; 16])],
        };
        let wire = p.to_wire();
        let contents = wire.contents.as_ref().unwrap();
        assert_eq!((contents.pos, contents.truncated), (Some(0), Some(false)));
        assert_eq!(wire.length, Some(2));
        let decoded = pb::SelectedListContent::decode(&*wire.encode_to_vec()).unwrap();
        assert_eq!(Playlist::from_wire(p.id, &decoded), p);
    }

    #[test]
    fn a_rootlist_lists_playlists_once_in_order() {
        let (a, b) = (PlaylistId([1; 16]), PlaylistId([2; 16]));
        let mut wire = rootlist_to_wire(&[b, a], b"r");
        let items = &mut wire.contents.as_mut().unwrap().items;
        items.push(item(&b.to_uri()));
        items.push(item("spotify:start-group:x:Folder"));
        assert_eq!(rootlist_from_wire(&wire), vec![b, a]);
        assert!(rootlist_from_wire(&pb::SelectedListContent::default()).is_empty());
    }
}
