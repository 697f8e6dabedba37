"""Protocol v1.1 pieces of origin.py (docs/protocol.md §6-§8): base62 ids, cover images,
playlist protobufs, strong ETags, and the built-in sample of covers and playlists.

Like the v1 encoders these are deliberately awkward where the contract allows it: the
largest cover is listed neither first nor last, one album's images carry no width/height
(the client must fall back to `size`), playlists hold episodes, local files, unknown
tracks, a duplicate entry, and unknown fields (and Spotify's item attributes, which the subset does not declare).
"""

import hashlib
import os
import re

import media
import pb
from origin_catalogue import unknown_fields

BASE62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
SIZES = {"DEFAULT": 0, "SMALL": 1, "LARGE": 2, "XLARGE": 3}
# Without width/height, the largest by `size`: XLARGE, LARGE, DEFAULT, SMALL.
SIZE_RANK = {3: 4, 2: 3, 0: 2, 1: 1}
COVER_NAME = re.compile(r"^(cover|folder|front)\.(jpe?g|png)$", re.IGNORECASE)
SAMPLE_ARTIST, SAMPLE_ALBUM = "trackfs sample", "Silence (no cover)"


def base62(gid):
    """16-byte gid -> 22 characters, big-endian, digits 0-9a-zA-Z, left-padded with '0'."""
    if len(gid) != 16:
        raise ValueError("base62: gid must be 16 bytes")
    n, out = int.from_bytes(gid, "big"), []
    while n:
        n, d = divmod(n, 62)
        out.append(BASE62[d])
    return "".join(reversed(out)).rjust(22, "0")


def unbase62(text):
    """22 characters of 0-9a-zA-Z -> 16-byte gid, or None."""
    if len(text) != 22 or any(c not in BASE62 for c in text):
        return None
    n = 0
    for c in text:
        n = n * 62 + BASE62.index(c)
    return n.to_bytes(16, "big") if n < 1 << 128 else None


def derived_gid(seed, *parts):
    """A stable 16-byte id for a named thing, so ids survive reloads."""
    return hashlib.sha256(("%d\0" % seed + "\0".join(parts)).encode("utf-8")).digest()[:16]


def etag(*bodies):
    """Strong ETag over one or more answers' bytes."""
    h = hashlib.sha256()
    for b in bodies:
        h.update(len(b).to_bytes(8, "big") + b)
    return '"%s"' % h.hexdigest()[:32]


# ================================================================ covers

def make_image(spec, label):
    """A cover spec (see README) -> (bytes, mime, width, height)."""
    if "file" in spec:
        with open(spec["file"], "rb") as f:
            data = f.read()
    elif spec.get("type") == "png":
        data = media.png(int(spec["width"]), int(spec["height"]), label)
    elif spec.get("type", "jpeg") == "jpeg":
        data = media.jpeg(int(spec["width"]), int(spec["height"]), label)
    else:
        raise ValueError("cover type must be jpeg or png, not %r" % spec.get("type"))
    seen = media.image_size(data)
    mime = seen[0] if seen else "application/octet-stream"
    width = int(spec.get("width") or (seen[1] if seen else 0))
    height = int(spec.get("height") or (seen[2] if seen else 0))
    return data, mime, width, height


def largest(images):
    """docs/protocol.md §6: most pixels when width/height are given, else by size (XLARGE first).
    -> the winning image, or None when there is none or the rule is ambiguous (some with
    dimensions and some without, or a tie)."""
    if not images:
        return None
    dims = [i["dims"] for i in images]
    if all(dims):
        key = lambda i: i["width"] * i["height"]
    elif not any(dims):
        key = lambda i: SIZE_RANK.get(i["size_code"], 0)
    else:
        return None
    ranked = sorted(images, key=key, reverse=True)
    if len(ranked) > 1 and key(ranked[0]) == key(ranked[1]):
        return None
    return ranked[0]


def sample_covers(album_keys):
    """Covers of the built-in sample: real albums alternate between a JPEG in three sizes
    (the largest in the middle) and a PNG pair without dimensions (XLARGE wins by size);
    the synthetic album has none."""
    covers = {}
    real = [k for k in album_keys if not k.endswith("/" + SAMPLE_ALBUM)]
    for n, key in enumerate(real):
        if n % 2 == 0:
            covers[key] = [{"type": "jpeg", "width": 64, "height": 64, "size": "SMALL"},
                           {"type": "jpeg", "width": 640, "height": 640, "size": "LARGE"},
                           {"type": "jpeg", "width": 300, "height": 300, "size": "DEFAULT"}]
        else:
            covers[key] = [{"type": "png", "width": 120, "height": 120, "size": "DEFAULT", "dimensions": False},
                           {"type": "png", "width": 400, "height": 400, "size": "XLARGE", "dimensions": False},
                           {"type": "png", "width": 60, "height": 60, "size": "SMALL", "dimensions": False}]
    return covers


def covers_from_folders(albums):
    """"covers": "source": an album folder's cover.*, folder.* or front.* (jpg/jpeg/png, any
    case, in that order) as its LARGE image, plus a generated 32x32 SMALL JPEG."""
    covers = {}
    for album in albums:
        try:
            names = [n for n in os.listdir(album["folder"]) if COVER_NAME.match(n)]
        except OSError:
            continue
        names.sort(key=lambda n: (["cover", "folder", "front"].index(n.split(".")[0].lower()), n))
        if names:
            covers[album["key"]] = [{"type": "jpeg", "width": 32, "height": 32, "size": "SMALL"},
                                    {"file": os.path.join(album["folder"], names[0]), "size": "LARGE"}]
    return covers


def playlists_from_m3u(source):
    """"playlists": "source": every .m3u/.m3u8 under the source folder, named after the file;
    entries are paths relative to the playlist's folder or absolute; `#` lines are skipped;
    an entry outside the source folder is kept as a track path nobody has (so: unknown)."""
    found = []
    root = os.path.realpath(source)
    for folder, dirs, files in os.walk(source):
        dirs.sort()
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in (".m3u", ".m3u8"):
                continue
            with open(os.path.join(folder, name), "rb") as f:
                text = f.read().decode("utf-8-sig", errors="replace")
            items = []
            for line in text.splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    target = os.path.realpath(os.path.join(folder, line))
                    items.append(os.path.relpath(target, root).replace(os.sep, "/"))
            found.append({"name": stem, "items": items})
    return found


# ================================================================ sample album and playlists

def sample_album_files(artist=SAMPLE_ARTIST):
    """(relative path, bytes) of the synthetic album: two silent MP3s with ID3 tags, by
    `artist` (e.g. "Playlists", to make the mount's playlist folder clash with it)."""
    out = []
    for n, (title, seconds) in enumerate([("Quiet Start", 3), ("Quiet Ending", 4)], 1):
        data = media.silent_mp3(seconds, title, artist, SAMPLE_ALBUM, n)
        out.append(("%s/%s/%02d %s.mp3" % (artist, SAMPLE_ALBUM, n, title), data))
    return out


def sample_playlists(track_rels, seed):
    """Playlists of the built-in sample, by track path: a mixed one whose name has unicode,
    ':' and '/', holding an episode, a local file, an unknown track and a duplicate; an empty
    one; every track in reverse order."""
    t = list(track_rels)
    if not t:
        return []
    episode = "spotify:episode:" + base62(derived_gid(seed, "episode"))
    unknown = "spotify:track:" + base62(derived_gid(seed, "unknown track"))
    local = "spotify:local:Some+Artist:Some+Album:A+Local+File:187"
    mixed = [t[-1], t[0], episode, t[len(t) // 2], unknown, local, t[1 % len(t)], t[-1]]
    return [{"name": "Road trip ♫: Björk/Été — mix", "items": mixed},
            {"name": "Empty", "items": []},
            {"name": "Everything, reversed", "items": list(reversed(t))}]


# ================================================================ playlist protobufs

def enc_selected_list(name, uris, revision, owner):
    """SelectedListContent (playlist4_external.proto numbers): revision 1, length 2,
    attributes 3 { name 1 }, contents 5 { pos 1, truncated 2, items 3 { uri 1 } }.
    Spotify declares uri, pos and truncated required, so they are always sent."""
    items = b""
    for n, uri in enumerate(uris):
        item = pb.f_bytes(1, uri)
        if n % 2:   # Spotify's ItemAttributes (2): added_by, timestamp; unknown here
            item += pb.f_bytes(2, pb.f_bytes(1, owner) + pb.f_varint(2, 1700000000000 + n))
        items += pb.f_bytes(3, item)
    contents = pb.f_varint(1, 0) + pb.f_varint(2, 0) + items + unknown_fields(len(uris))
    out = pb.f_bytes(1, revision) + pb.f_varint(2, len(uris))
    if name is not None:
        out += pb.f_bytes(3, pb.f_bytes(1, name) + pb.f_bytes(2, "made by the independent origin"))
    # 99..102 are nobody's fields: clients skip them.
    return out + unknown_fields(7) + pb.f_bytes(5, contents)


def revision(uris, name=""):
    """Opaque revision: a 4-byte count and a 20-byte hash, as Spotify's look."""
    digest = hashlib.sha1(("\n".join([name] + list(uris))).encode("utf-8")).digest()
    return len(uris).to_bytes(4, "big") + digest
