"""Catalogue side of origin.py: scan the source folder, encrypt every file
with the openssl CLI, and encode the protobufs of docs/protocol.md §9 by hand.

The encoders are deliberately awkward (unknown fields of every wire type,
unknown enum values, fields out of order, duplicate formats) because clients
must cope with all of that.
"""

import concurrent.futures
import hashlib
import os
import random
import re
import shutil
import subprocess
import tempfile

import pb

IV_HEX = "72e067fbddcbcf77ebe8bc643f630d93"
OGG_HEADER_LEN = 167
AUDIO_EXTS = (".ogg", ".mp3", ".flac", ".m4a")
HEAD_MAX = 65536 + 65536   # the longest head file served

# AudioFile.Format values (docs/protocol.md §9).
OGG_VORBIS_160, OGG_VORBIS_320 = 1, 2
MP3_256, MP3_320 = 3, 4
AAC_48 = 9
FLAC_FLAC, FLAC_FLAC_24BIT = 16, 22
UNKNOWN_FORMAT = 77  # not in the enum: clients must ignore such files


# ================================================================ catalogue

class FileEntry:
    """One encrypted file: stored plaintext = header + source bytes."""

    def __init__(self, source, header, key):
        self.source = source
        self.header = header          # b"" or 167 bytes for Ogg Vorbis
        self.key = key                # 16 random bytes
        self.fid = None               # 20 bytes, set after encryption
        self.cipher_path = None
        self.size = None              # stored (= ciphertext) size
        self.sha256 = None            # of the source file
        self.head_len = None
        self.prefix = None            # stored plaintext, first HEAD_MAX + len(header) bytes
        self.duration_ms = None       # from ffprobe, when it is installed


class Track:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def parse_name(stem):
    """'NN Title', 'NN - Title' or 'D-NN Title' -> (disc, number, title).
    Without a leading number, number is None (assigned from order later)."""
    m = re.match(r"^(?:(\d+)-)?(\d+)\s+(?:-\s+)?(.+)$", stem)
    if not m:
        return 1, None, stem
    disc = int(m.group(1)) if m.group(1) else 1
    return disc, int(m.group(2)), m.group(3)


def scan_sources(source_dir):
    """All audio files as dicts with artist/album/disc/number/title/ext/path,
    taking Artist and Album from the two enclosing folders."""
    found = []
    for root, dirs, files in os.walk(source_dir):
        dirs.sort()
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in AUDIO_EXTS:
                continue
            path = os.path.join(root, name)
            parts = os.path.relpath(path, source_dir).split(os.sep)
            artist = parts[-3] if len(parts) >= 3 else (parts[0] if len(parts) == 2 else "Unknown Artist")
            album = parts[-2] if len(parts) >= 2 else "Unknown Album"
            disc, number, title = parse_name(stem)
            found.append(dict(artist=artist, album=album, disc=disc, number=number,
                              title=title, ext=ext.lower(), path=path, rel="/".join(parts)))
    return found


def formats_for(ext, index):
    """Known formats advertised for a file: alternate between qualities, and
    every third track advertises the same bytes under two known formats."""
    base = {".ogg": [OGG_VORBIS_320, OGG_VORBIS_160], ".mp3": [MP3_320, MP3_256],
            ".flac": [FLAC_FLAC, FLAC_FLAC_24BIT], ".m4a": [AAC_48, AAC_48]}[ext]
    if index % 3 == 2 and base[0] != base[1]:
        return list(base)
    return [base[index % 2]]


def make_header(rng, kind="opaque"):
    """The 167 bytes before an Ogg file's first page. "opaque": random bytes that do not
    look like an Ogg page. "page": one Ogg page of exactly 167 bytes (27-byte page header,
    one lacing value, a 139-byte packet starting 0x81), the shape Spotify's files have."""
    if kind == "page":
        body = bytes([0x81]) + rng.randbytes(138)
        page = (b"OggS" + bytes([0, 2]) + bytes(8) + rng.randbytes(4) + bytes(4) + bytes(4)
                + bytes([1, len(body)]) + body)
        assert len(page) == OGG_HEADER_LEN
        return page
    header = bytearray(rng.randbytes(OGG_HEADER_LEN))
    if header[:4] == b"OggS":
        header[0] ^= 0xFF
    return bytes(header)


def number_missing_tracks(album_tracks):
    used = {t.number for t in album_tracks if t.number is not None}
    n = 1
    for t in album_tracks:
        if t.number is None:
            while n in used:
                n += 1
            t.number = n
            used.add(n)


# ================================================================ encryption

def encrypt_file(entry, out_dir, rng_seed):
    """Encrypt header+source with openssl into out_dir/audio/<file id>.
    The file id is content-addressed: SHA-1 of the ciphertext. The stored
    plaintext's first bytes are kept in memory for /head/, so a source file
    changed or deleted later cannot change what an old file id answers."""
    audio_dir = os.path.join(out_dir, "audio")
    fd, tmp = tempfile.mkstemp(dir=audio_dir, prefix=".enc-")
    os.close(fd)
    cmd = ["openssl", "enc", "-aes-128-ctr", "-K", entry.key.hex(), "-iv", IV_HEX,
           "-nosalt", "-out", tmp]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    sha = hashlib.sha256()
    prefix = bytearray(entry.header)
    read = 0
    try:
        proc.stdin.write(entry.header)
        with open(entry.source, "rb") as src:
            while chunk := src.read(1 << 20):
                sha.update(chunk)
                read += len(chunk)
                if len(prefix) < HEAD_MAX + len(entry.header):
                    prefix += chunk[:HEAD_MAX + len(entry.header) - len(prefix)]
                proc.stdin.write(chunk)
        proc.stdin.close()
    finally:
        if proc.wait() != 0:
            raise RuntimeError("openssl failed on %s" % entry.source)
    digest = hashlib.sha1()
    with open(tmp, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    entry.fid = digest.digest()
    entry.cipher_path = os.path.join(audio_dir, entry.fid.hex())
    os.replace(tmp, entry.cipher_path)
    os.chmod(entry.cipher_path, 0o644)   # mkstemp's 0600 would lock out nginx
    entry.size = os.path.getsize(entry.cipher_path)
    entry.sha256 = sha.hexdigest()
    entry.prefix = bytes(prefix)
    if entry.size != len(entry.header) + read:
        raise RuntimeError("ciphertext size mismatch for %s" % entry.source)
    entry.duration_ms = probe_duration_ms(entry.source)
    # Head files are 64 KiB..128 KiB (or the whole file when shorter).
    entry.head_len = min(entry.size, 65536 + random.Random(rng_seed).randrange(65537))


def probe_duration_ms(path):
    """Track.duration (ms) by ffprobe; None (field not sent) without ffprobe."""
    if not shutil.which("ffprobe"):
        return None
    try:
        out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                              "-of", "default=nw=1:nk=1", path], capture_output=True, timeout=60)
        return int(float(out.stdout.decode().strip()) * 1000)
    except (ValueError, subprocess.SubprocessError):
        return None


def encrypt_all(entries, out_dir, rng):
    os.makedirs(os.path.join(out_dir, "audio"), exist_ok=True)
    workers = max(2, os.cpu_count() or 2)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        jobs = [pool.submit(encrypt_file, e, out_dir, rng.random()) for e in entries]
        for job in jobs:
            job.result()


# ================================================================ protobuf

def unknown_fields(seed):
    """Fields no schema defines, of every wire type: clients must skip them."""
    return (pb.f_varint(99, 150 + seed) + pb.f_bytes(100, b"\x00unknown\xff" + bytes([seed & 0xFF]))
            + pb.f_fixed64(101, 0x0123456789ABCDEF) + pb.f_fixed32(102, 0xDEADBEEF))


def enc_artist(artist):
    return pb.f_bytes(1, artist["gid"]) + pb.f_bytes(2, artist["name"])


def enc_audio_file(fid, fmt, seed):
    body = pb.f_bytes(1, fid) + pb.f_varint(2, fmt)
    # Unknowns before the known fields on every other file: order is free.
    return unknown_fields(seed) + body if seed % 2 else body + unknown_fields(seed)


def enc_track_files(t):
    files = [pb.f_bytes(12, enc_audio_file(t.file.fid, fmt, t.index + k))
             for k, fmt in enumerate(t.formats)]
    if t.decoy_fid:     # unknown format listed *first*, with an unserved id
        files.insert(0, pb.f_bytes(12, enc_audio_file(t.decoy_fid, UNKNOWN_FORMAT, t.index)))
    if len(t.formats) > 1:  # the same bytes again under an unknown format
        files.append(pb.f_bytes(12, enc_audio_file(t.file.fid, UNKNOWN_FORMAT, t.index)))
    return b"".join(files)


def enc_album_stub(album):
    """Album as embedded in a Track: identity only, no discs."""
    return pb.f_bytes(1, album["gid"]) + pb.f_bytes(2, album["name"]) + pb.f_bytes(3, enc_artist(album["artist"]))


def enc_track(t):
    head = pb.f_bytes(1, t.gid) + pb.f_bytes(2, t.title)
    rest = (pb.f_bytes(3, enc_album_stub(t.album)) + pb.f_bytes(4, enc_artist(t.artist))
            + pb.f_sint(5, t.number) + pb.f_sint(6, t.disc))
    if t.file.duration_ms is not None:
        rest += pb.f_sint(7, t.file.duration_ms)
    files = enc_track_files(t)
    # Odd tracks put the file list first and unknown fields in between.
    if t.index % 2:
        return files + unknown_fields(t.index) + head + rest
    return head + rest + files + unknown_fields(t.index)


def enc_image(img):
    """Image (docs/protocol.md §9): file_id 1, size 2 (enum), width 3 / height 4 (sint32, optional)."""
    out = pb.f_bytes(1, img["fid"]) + pb.f_varint(2, img["size_code"])
    if img["dims"]:
        out += pb.f_sint(3, img["width"]) + pb.f_sint(4, img["height"])
    return out


def enc_covers(images, form):
    """The album's images as Album.cover (9, repeated Image), Album.cover_group
    (17, ImageGroup { repeated Image image = 1; }) or both."""
    if not images:
        return b"", b""
    cover = b"".join(pb.f_bytes(9, enc_image(i)) for i in images) if form in ("cover", "both") else b""
    group = pb.f_bytes(17, b"".join(pb.f_bytes(1, enc_image(i)) for i in images)) if form in ("group", "both") else b""
    return cover, group


def enc_album(album, seed, images=(), cover_form="group"):
    cover, group = enc_covers(list(images), cover_form)
    discs = {}
    for t in album["tracks"]:
        # Disc.track entries carry the gid only (docs/protocol.md §9); the client
        # must fetch each Track for its name and files.
        discs.setdefault(t.disc, []).append(pb.f_bytes(3, pb.f_bytes(1, t.gid)))
    out = [pb.f_bytes(1, album["gid"]), pb.f_bytes(2, album["name"]),
           pb.f_bytes(3, enc_artist(album["artist"])),
           pb.f_bytes(6, pb.f_sint(1, 2024) + pb.f_sint(2, 2) + pb.f_sint(3, 29)),
           cover, unknown_fields(seed)]
    for number in sorted(discs):
        out.append(pb.f_bytes(11, pb.f_sint(1, number) + b"".join(discs[number])))
    out.append(group)           # after the discs: field order is free
    return b"".join(out)


def enc_library(albums):
    return b"".join(pb.f_bytes(1, a["gid"]) for a in albums) + unknown_fields(len(albums))


def enc_resolve(urls, fid, explicit_result):
    # proto3 omits result=CDN(0); send it explicitly only sometimes so clients
    # must treat "absent" as CDN.
    out = pb.f_varint(1, 0) if explicit_result else b""
    return out + b"".join(pb.f_bytes(2, u) for u in urls) + pb.f_bytes(4, fid)
