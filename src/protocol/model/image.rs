//! Cover art (docs/protocol.md §6): the images of an album and the rule that picks the one the
//! mount shows as `cover.jpg`/`cover.png`.
//!
//! The bytes themselves come unencrypted from `GET /image/<file id>`; here is only what the
//! album metadata says about them.

use super::{FileId, ModelError};
use crate::protocol::proto::metadata as pb;

/// `Image.size` of the wire. Unknown values read as `Default`, never as an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageSize {
    Default,
    Small,
    Large,
    XLarge,
}

impl ImageSize {
    pub fn from_wire(value: i32) -> Self {
        match pb::image::Size::try_from(value) {
            Ok(pb::image::Size::Small) => ImageSize::Small,
            Ok(pb::image::Size::Large) => ImageSize::Large,
            Ok(pb::image::Size::Xlarge) => ImageSize::XLarge,
            Ok(pb::image::Size::Default) | Err(_) => ImageSize::Default,
        }
    }

    pub fn wire(self) -> i32 {
        let w = match self {
            ImageSize::Default => pb::image::Size::Default,
            ImageSize::Small => pb::image::Size::Small,
            ImageSize::Large => pb::image::Size::Large,
            ImageSize::XLarge => pb::image::Size::Xlarge,
        };
        w as i32
    }

    /// Larger is bigger: XLARGE, LARGE, DEFAULT (about 300 px at Spotify), SMALL.
    fn rank(self) -> u8 {
        match self {
            ImageSize::Small => 0,
            ImageSize::Default => 1,
            ImageSize::Large => 2,
            ImageSize::XLarge => 3,
        }
    }
}

/// The picture formats `/image/<file id>` answers, told apart by their magic bytes (not by
/// the `Content-Type`, which a CDN may get wrong): the mount names a cover `cover.jpg` or
/// `cover.png` by this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PictureKind {
    Jpeg,
    Png,
}

impl PictureKind {
    pub fn sniff(bytes: &[u8]) -> Option<PictureKind> {
        if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            Some(PictureKind::Jpeg)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(PictureKind::Png)
        } else {
            None
        }
    }

    /// `image/jpeg` or `image/png`.
    pub fn content_type(self) -> &'static str {
        match self {
            PictureKind::Jpeg => "image/jpeg",
            PictureKind::Png => "image/png",
        }
    }

    /// `jpg` or `png`, as in `cover.jpg`.
    pub fn extension(self) -> &'static str {
        match self {
            PictureKind::Jpeg => "jpg",
            PictureKind::Png => "png",
        }
    }
}

/// One picture of an album, in one size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Image {
    pub file_id: FileId,
    pub size: ImageSize,
    /// Pixels, when the origin says (a zero or negative value on the wire reads as unknown).
    pub width: Option<u32>,
    pub height: Option<u32>,
}

impl Image {
    /// Width times height, when both are known.
    pub fn pixels(&self) -> Option<u64> {
        Some(u64::from(self.width?) * u64::from(self.height?))
    }

    /// The image the mount shows (docs/protocol.md §6): most pixels when every image gives its
    /// width and height, else the largest `size` (XLARGE first), pixels breaking ties; the
    /// first of equals wins, so the choice is stable. `None` for no images.
    pub fn largest(images: &[Image]) -> Option<&Image> {
        let all_sized = images.iter().all(|i| i.pixels().is_some());
        let key = |i: &Image| {
            if all_sized {
                (i.pixels().unwrap_or(0), u64::from(i.size.rank()))
            } else {
                (u64::from(i.size.rank()), i.pixels().unwrap_or(0))
            }
        };
        images
            .iter()
            .fold(None, |best: Option<&Image>, i| match best {
                Some(b) if key(b) >= key(i) => Some(b),
                _ => Some(i),
            })
    }
}

impl TryFrom<&pb::Image> for Image {
    type Error = ModelError;

    /// Needs a 20-byte file id; everything else is optional.
    fn try_from(i: &pb::Image) -> Result<Self, ModelError> {
        let id = i.file_id.as_deref().ok_or(ModelError::MissingField {
            message: "Image",
            field: "file_id",
        })?;
        let positive = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok()).filter(|&v| v > 0);
        Ok(Image {
            file_id: FileId::from_bytes(id)?,
            size: ImageSize::from_wire(i.size.unwrap_or_default()),
            width: positive(i.width),
            height: positive(i.height),
        })
    }
}

impl From<&Image> for pb::Image {
    fn from(i: &Image) -> Self {
        let wire = |v: Option<u32>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
        pb::Image {
            file_id: Some(i.file_id.0.to_vec()),
            size: Some(i.size.wire()),
            width: wire(i.width),
            height: wire(i.height),
        }
    }
}

/// The images of an album: `cover_group` first, then the older `cover` field, each file id
/// once. An image without a usable file id is skipped (a bad picture never hides an album).
pub(crate) fn album_images(a: &pb::Album) -> Vec<Image> {
    let group = a.cover_group.iter().flat_map(|g| g.image.iter());
    let mut out: Vec<Image> = Vec::new();
    for image in group.chain(a.cover.iter()) {
        if let Ok(image) = Image::try_from(image) {
            if !out.iter().any(|o| o.file_id == image.file_id) {
                out.push(image);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: u8, size: ImageSize, dims: Option<(u32, u32)>) -> Image {
        Image {
            file_id: FileId([id; 20]),
            size,
            width: dims.map(|d| d.0),
            height: dims.map(|d| d.1),
        }
    }

    #[test]
    fn largest_is_most_pixels_when_all_are_sized() {
        let images = [
            image(1, ImageSize::XLarge, Some((300, 300))),
            image(2, ImageSize::Small, Some((640, 640))),
            image(3, ImageSize::Large, Some((600, 600))),
        ];
        assert_eq!(Image::largest(&images).unwrap().file_id, FileId([2; 20]));
    }

    #[test]
    fn largest_is_by_size_class_when_some_are_unsized() {
        let images = [
            image(1, ImageSize::Small, Some((2000, 2000))),
            image(2, ImageSize::Default, None),
            image(3, ImageSize::XLarge, None),
            image(4, ImageSize::Large, None),
        ];
        assert_eq!(Image::largest(&images).unwrap().file_id, FileId([3; 20]));
        let no_xlarge = [images[0], images[1], images[3]];
        assert_eq!(Image::largest(&no_xlarge).unwrap().file_id, FileId([4; 20]));
        let default_beats_small = [images[0], images[1]];
        assert_eq!(
            Image::largest(&default_beats_small).unwrap().file_id,
            FileId([2; 20])
        );
    }

    #[test]
    fn largest_keeps_the_first_of_equals_and_none_for_none() {
        let images = [
            image(1, ImageSize::Large, None),
            image(2, ImageSize::Large, None),
        ];
        assert_eq!(Image::largest(&images).unwrap().file_id, FileId([1; 20]));
        assert!(Image::largest(&[]).is_none());
    }

    #[test]
    fn album_images_read_both_fields_once_and_skip_bad_ones() {
        let wire = |id: Vec<u8>, size: i32, w: Option<i32>| pb::Image {
            file_id: Some(id),
            size: Some(size),
            width: w,
            height: w,
        };
        let album = pb::Album {
            cover_group: Some(pb::ImageGroup {
                image: vec![wire(vec![1; 20], 3, Some(640)), wire(vec![9; 3], 3, None)],
            }),
            cover: vec![
                wire(vec![1; 20], 3, Some(640)),
                wire(vec![2; 20], 77, Some(-5)),
                pb::Image::default(),
            ],
            ..Default::default()
        };
        let images = album_images(&album);
        assert_eq!(images.len(), 2, "{images:?}");
        assert_eq!(images[0].width, Some(640));
        assert_eq!(images[1].size, ImageSize::Default, "unknown size value");
        assert_eq!(images[1].width, None, "negative width");
        let back = pb::Image::from(&images[0]);
        assert_eq!(Image::try_from(&back).unwrap(), images[0]);
    }

    #[test]
    fn pictures_are_told_apart_by_magic_bytes() {
        let jpeg = PictureKind::sniff(&[0xff, 0xd8, 0xff, 0xe0]).unwrap();
        assert_eq!(
            (jpeg.extension(), jpeg.content_type()),
            ("jpg", "image/jpeg")
        );
        let png = PictureKind::sniff(b"\x89PNG\r\n\x1a\n....").unwrap();
        assert_eq!((png.extension(), png.content_type()), ("png", "image/png"));
        assert_eq!(PictureKind::sniff(b"GIF89a"), None);
        assert_eq!(PictureKind::sniff(&[]), None);
    }

    #[test]
    fn older_origins_put_covers_only_in_field_9() {
        let album = pb::Album {
            cover: vec![pb::Image {
                file_id: Some(vec![5; 20]),
                ..Default::default()
            }],
            ..Default::default()
        };
        let images = album_images(&album);
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].size, ImageSize::Default);
    }
}
