"""Tiny media files made in pure Python (no Pillow, no ffmpeg): covers and silent audio.

The independent origin's v1.1 sample needs pictures of known width and height in both
formats docs/protocol.md §6 names, and an album it can make without any source file. Keeping
them byte-exact and deterministic (a label is embedded, so two pictures of one size still
differ) lets tests compare a mounted cover.jpg with the file it must equal.

- JPEG: baseline, 8-bit greyscale, every 8x8 block mid-grey. With all DC differences 0 and
  all AC coefficients 0, each block is two Huffman codes of one bit, so the entropy-coded
  data is tiny and needs no byte stuffing. ffmpeg/ffprobe decode it.
- PNG: 8-bit RGB, one colour, a tEXt comment with the label.
- MP3: an ID3v2.4 tag (UTF-8 title, artist, album, track) and MPEG-1 Layer III frames whose
  side information is all zero (silence), 128 kbit/s, 44.1 kHz, mono.
"""

import struct
import zlib


def jpeg(width, height, label=""):
    """A valid baseline JPEG of width x height pixels (1..65535 each)."""
    if not (0 < width < 65536 and 0 < height < 65536):
        raise ValueError("jpeg: bad size %dx%d" % (width, height))

    def segment(marker, payload):
        return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload

    blocks = ((width + 7) // 8) * ((height + 7) // 8)
    bits = 2 * blocks                               # "0" (DC diff 0) + "0" (EOB) per block
    data = bytearray(b"\x00" * (bits // 8))
    if bits % 8:
        data.append((1 << (8 - bits % 8)) - 1)      # pad the last byte with 1 bits
    one_code = bytes([1] + [0] * 15)                # one code of length 1 ...
    out = [b"\xff\xd8",
           segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
           segment(0xFE, ("trackfs independent origin: %s %dx%d" % (label, width, height)).encode()),
           segment(0xDB, b"\x00" + b"\x01" * 64),
           segment(0xC0, b"\x08" + struct.pack(">HH", height, width) + b"\x01\x01\x11\x00"),
           segment(0xC4, b"\x00" + one_code + b"\x00"   # ... DC: category 0
                   + b"\x10" + one_code + b"\x00"),       # ... AC: EOB
           segment(0xDA, b"\x01\x01\x00\x00\x3f\x00"),
           bytes(data), b"\xff\xd9"]
    return b"".join(out)


def png(width, height, label="", rgb=(200, 40, 90)):
    """A valid 8-bit RGB PNG of width x height pixels, one colour."""
    if not (0 < width < 1 << 31 and 0 < height < 1 << 31):
        raise ValueError("png: bad size %dx%d" % (width, height))

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row = b"\x00" + bytes(rgb) * width
    return b"".join([b"\x89PNG\r\n\x1a\n",
                     chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)),
                     chunk(b"tEXt", b"Comment\x00" + ("trackfs independent origin: %s" % label).encode("latin-1", "replace")),
                     chunk(b"IDAT", zlib.compress(row * height, 9)),
                     chunk(b"IEND", b"")])


def image_size(data):
    """(mime, width, height) read from a JPEG's SOF or a PNG's IHDR; None if neither."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return "image/png", w, h
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if pos + 9 > len(data):
                return None
            h, w = struct.unpack(">HH", data[pos + 5:pos + 9])
            return "image/jpeg", w, h
        if marker == 0xDA:
            return None
        pos += 2 + length
    return None


def _syncsafe(n):
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def id3v24(title, artist, album, track):
    frames = b""
    for fid, text in ((b"TIT2", title), (b"TPE1", artist), (b"TALB", album), (b"TRCK", str(track))):
        body = b"\x03" + text.encode("utf-8")      # 3 = UTF-8
        frames += fid + _syncsafe(len(body)) + b"\x00\x00" + body
    return b"ID3\x04\x00\x00" + _syncsafe(len(frames)) + frames


MP3_FRAME_BYTES = 417        # 144 * 128000 / 44100, no padding
MP3_FRAME_SECONDS = 1152 / 44100


def silent_mp3(seconds, title, artist, album, track):
    """ID3v2.4 tag + silent MPEG-1 Layer III frames lasting about `seconds`."""
    frame = b"\xff\xfb\x90\xc0" + bytes(MP3_FRAME_BYTES - 4)   # 17-byte side info all zero
    count = max(1, int(seconds / MP3_FRAME_SECONDS))
    return id3v24(title, artist, album, track) + frame * count
