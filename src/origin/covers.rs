//! Cover art for `publish` (docs/protocol.md §6): which picture is an album's cover, and how it is
//! stored. A `cover.*`, `folder.*` or `front.*` (jpg/jpeg/png, any case) beside the tracks wins;
//! else a track's embedded front cover. Pictures are stored as they are, unencrypted, under
//! `images/<SHA-1 of the bytes>`, with width and height read from their header.

use super::library::{write_atomic, Library, LibraryError};
use crate::protocol::model::{FileId, Image, ImageSize, PictureKind};
use sha1::{Digest, Sha1};
use std::io::Write;
use std::path::Path;

/// Names a cover file may have (before the extension), most telling first.
const COVER_STEMS: [&str; 3] = ["cover", "folder", "front"];
const COVER_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Whether `name` is a cover file's name, and its rank (lower wins).
pub(crate) fn cover_rank(name: &str) -> Option<usize> {
    let lower = name.to_lowercase();
    let (stem, ext) = lower.rsplit_once('.')?;
    if !COVER_EXTENSIONS.contains(&ext) {
        return None;
    }
    COVER_STEMS.iter().position(|s| *s == stem)
}

/// Why a picture is not used as a cover.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CoverError {
    #[error("not a JPEG or PNG picture (by its first bytes)")]
    NotAPicture,
    #[error("cannot read its width and height: {0}")]
    NoSize(String),
    #[error(transparent)]
    Library(#[from] LibraryError),
}

/// The size class of a picture from its larger side, roughly as Spotify sizes them
/// (64, 300, 640 px and larger).
fn size_class(width: u32, height: u32) -> ImageSize {
    match width.max(height) {
        0..=150 => ImageSize::Small,
        151..=450 => ImageSize::Default,
        451..=900 => ImageSize::Large,
        _ => ImageSize::XLarge,
    }
}

/// Describes a picture from its bytes: its id (SHA-1), kind and size.
pub(crate) fn describe(bytes: &[u8]) -> Result<Image, CoverError> {
    PictureKind::sniff(bytes).ok_or(CoverError::NotAPicture)?;
    let size = imagesize::blob_size(bytes).map_err(|e| CoverError::NoSize(e.to_string()))?;
    let (width, height) = (
        u32::try_from(size.width).unwrap_or(u32::MAX),
        u32::try_from(size.height).unwrap_or(u32::MAX),
    );
    Ok(Image {
        file_id: FileId(Sha1::digest(bytes).into()),
        size: size_class(width, height),
        width: Some(width).filter(|&w| w > 0),
        height: Some(height).filter(|&h| h > 0),
    })
}

/// Describes a picture and stores it in the library unless it is there already (its name is
/// its content, so a file of that name holds these bytes). `dry_run` only describes.
pub(crate) fn store(lib: &Library, bytes: &[u8], dry_run: bool) -> Result<Image, CoverError> {
    let image = describe(bytes)?;
    let path = lib.image(&image.file_id);
    if !dry_run && !path.is_file() {
        write_atomic(&path, 0o644, |f| f.write_all(bytes))?;
    }
    Ok(image)
}

/// A stored picture's description from what the catalog remembers of it (for covers of
/// unchanged files, which are not read again); `None` when the picture is no longer stored.
pub(crate) fn stored(lib: &Library, id: &FileId, width: u32, height: u32) -> Option<Image> {
    lib.image(id).is_file().then_some(Image {
        file_id: *id,
        size: size_class(width, height),
        width: Some(width).filter(|&w| w > 0),
        height: Some(height).filter(|&h| h > 0),
    })
}

/// The front cover embedded in an audio file's tags, when it has a JPEG or PNG one.
pub(crate) fn embedded_front(path: &Path) -> Option<Vec<u8>> {
    use lofty::file::TaggedFileExt;
    use lofty::picture::PictureType;
    let tagged = lofty::read_from_path(path).ok()?;
    let pictures = tagged.tags().iter().flat_map(|t| t.pictures().iter());
    let mut fallback = None;
    for p in pictures {
        if PictureKind::sniff(p.data()).is_none() {
            continue;
        }
        if p.pic_type() == PictureType::CoverFront {
            return Some(p.data().to_vec());
        }
        fallback.get_or_insert_with(|| p.data().to_vec());
    }
    // Many taggers write the cover as "other": with no front cover, the only picture is it.
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cover_names_rank_cover_folder_front_in_any_case() {
        assert_eq!(cover_rank("cover.jpg"), Some(0));
        assert_eq!(cover_rank("Folder.JPEG"), Some(1));
        assert_eq!(cover_rank("FRONT.png"), Some(2));
        assert_eq!(cover_rank("cover.gif"), None);
        assert_eq!(cover_rank("back.jpg"), None);
        assert_eq!(cover_rank("cover"), None);
    }

    #[test]
    fn pictures_are_described_by_their_bytes() {
        // A 1x1 PNG.
        let png = hex::decode(
            "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489\
             0000000d4944415478da63f8cfc0f01f0005000201a0e1d5a70000000049454e44ae426082",
        )
        .unwrap();
        let image = describe(&png).unwrap();
        assert_eq!((image.width, image.height), (Some(1), Some(1)));
        assert_eq!(image.size, ImageSize::Small);
        assert_eq!(PictureKind::sniff(&png), Some(PictureKind::Png));
        assert!(matches!(
            describe(b"GIF89a...."),
            Err(CoverError::NotAPicture)
        ));
        assert!(describe(&png[..12]).is_err(), "a cut header");
        assert_eq!(size_class(640, 640), ImageSize::Large);
        assert_eq!(size_class(1200, 1000), ImageSize::XLarge);
        assert_eq!(size_class(300, 300), ImageSize::Default);
    }
}
