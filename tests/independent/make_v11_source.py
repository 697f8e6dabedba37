#!/usr/bin/env python3
"""Copy a music folder and add what protocol v1.1 publishes: covers and playlists.

    make_v11_source.py SRC DEST

DEST gets every file of SRC (hard links when possible) plus, for the albums in sorted
order: the first a `cover.jpg` (JPEG 500x500), the second a `Folder.PNG` (PNG 320x200, the
name in another case), the others nothing. At the top of DEST, playlists as a user's
player writes them (issue 17): `Road trip ♫ ünïcode: mix.m3u8` (UTF-8 BOM, CRLF line ends,
`#EXTINF` lines, relative paths, one absolute path, one entry that does not exist),
`Empty.m3u` (only `#EXTM3U`), `Everything.m3u` (every track, reverse order, no
`#EXTINF`). client_check.py derives what the origin must serve from these files.
"""

import os
import shutil
import sys

sys.dont_write_bytecode = True     # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import media  # noqa: E402

AUDIO_EXTS = (".ogg", ".mp3", ".flac", ".m4a")


def copy_tree(src, dest):
    for root, dirs, files in os.walk(src):
        dirs.sort()
        out = os.path.join(dest, os.path.relpath(root, src))
        os.makedirs(out, exist_ok=True)
        for name in sorted(files):
            try:
                os.link(os.path.join(root, name), os.path.join(out, name))
            except OSError:
                shutil.copy2(os.path.join(root, name), os.path.join(out, name))


def tracks_of(dest):
    found = []
    for root, dirs, files in os.walk(dest):
        dirs.sort()
        found += [os.path.join(root, n) for n in sorted(files) if os.path.splitext(n)[1].lower() in AUDIO_EXTS]
    return found


def main(argv):
    if len(argv) != 2:
        raise SystemExit(__doc__)
    src, dest = argv
    if os.path.exists(dest):
        raise SystemExit("make_v11_source.py: %s exists" % dest)
    copy_tree(src, dest)
    tracks = tracks_of(dest)
    albums = sorted({os.path.dirname(t) for t in tracks})
    if albums:
        with open(os.path.join(albums[0], "cover.jpg"), "wb") as f:
            f.write(media.jpeg(500, 500, "cover of " + os.path.basename(albums[0])))
    if len(albums) > 1:
        with open(os.path.join(albums[1], "Folder.PNG"), "wb") as f:
            f.write(media.png(320, 200, "folder of " + os.path.basename(albums[1])))
    rel = lambda p: os.path.relpath(p, dest)
    mixed = ["#EXTM3U"]
    picks = [tracks[-1], tracks[0], None, tracks[len(tracks) // 2]]
    for n, t in enumerate(picks):
        if t is None:
            mixed.append(os.path.join("Nobody", "Nowhere", "01 Missing.ogg"))
            continue
        mixed.append("#EXTINF:5,%s" % os.path.splitext(os.path.basename(t))[0])
        mixed.append(os.path.abspath(t) if n == 1 else rel(t))
    with open(os.path.join(dest, "Road trip ♫ ünïcode: mix.m3u8"), "wb") as f:
        f.write(b"\xef\xbb\xbf" + "\r\n".join(mixed).encode("utf-8") + b"\r\n")
    with open(os.path.join(dest, "Empty.m3u"), "w", encoding="utf-8") as f:
        f.write("#EXTM3U\n")
    with open(os.path.join(dest, "Everything.m3u"), "w", encoding="utf-8") as f:
        f.write("\n".join(rel(t) for t in reversed(tracks)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
