#!/usr/bin/env python3
"""Regenerate assets/demo/: the sample library that `trackfs demo` embeds and mounts.

Usage: scripts/make-demo-assets.py [OUT_DIR]     (default: assets/demo next to this script)

Why: the demo must ship real, playable audio in several formats without needing ffmpeg at
run time, so the files are made once, here, with ffmpeg's synthesizer (aevalsrc: a swelling
chord pad plus a plucked arpeggio, a touch of echo) and committed. Nothing is sampled or
recorded, so the result is public domain (assets/demo/LICENSE).

Writes, under OUT_DIR:
  <Artist>/<Album>/<NN> <Title>.<ext>   Ogg Vorbis, MP3 and FLAC, most with tags
  index.txt                             the relative paths, one per line, sorted (UTF-8)
  files.rs                              a Rust expression for `include!`:
                                        &[(&str, &[u8])] = (relative path, file bytes)
  LICENSE
The output is deterministic for a given ffmpeg build (-fflags +bitexact, no encoder tags).
"""

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

# (semitones of a chord relative to the key's tonic, chord quality) -> notes
MAJOR, MINOR = (0, 4, 7), (0, 3, 7)

# A progression is a list of (root semitone, quality). Keys are tonic frequencies in Hz.
C4, D4, E4, F4, G4, A3, Bb3 = 261.63, 293.66, 329.63, 349.23, 392.00, 220.00, 233.08
POP = [(0, MAJOR), (7, MAJOR), (9, MINOR), (5, MAJOR)]  # I  V  vi IV
JAZZ = [(2, MINOR), (7, MAJOR), (0, MAJOR), (9, MINOR)]  # ii V  I  vi
MINOR_PROG = [(0, MINOR), (8, MAJOR), (3, MAJOR), (10, MAJOR)]  # i VI III VII
DREAM = [(0, MAJOR), (5, MAJOR), (0, MAJOR), (7, MAJOR)]  # I IV I V

ARTIST_1 = "Élodie Ondes"
ARTIST_2 = "The Sine Collective"
ALBUMS = {
    (ARTIST_1, "Première Lumière"): "2021-03-20",
    (ARTIST_1, "Night Drones"): "2022-11-02",
    (ARTIST_2, "Don't Stop the Chords"): "2023-06-09",
}

# artist, album, track no, file title, tag title (None: same), ext, key, progression,
# seconds per chord, arpeggio notes per second, duration s, tagged?
TRACKS = [
    (ARTIST_1, "Première Lumière", 1, "Aube", None, "ogg", C4, POP, 2.0, 4, 8, True),
    (ARTIST_1, "Première Lumière", 2, "Café au Lait", None, "ogg", F4 / 2, JAZZ, 2.0, 6, 8, True),
    (ARTIST_1, "Première Lumière", 3, "Interlude - Dusk", "Interlude: Dusk", "ogg", A3, MINOR_PROG, 1.5, 4, 6, True),
    (ARTIST_1, "Première Lumière", 4, "Rêverie", None, "ogg", E4 / 2, DREAM, 2.5, 3, 10, True),
    (ARTIST_1, "Night Drones", 1, "Low Tide", None, "mp3", D4 / 2, MINOR_PROG, 2.5, 2, 10, True),
    (ARTIST_1, "Night Drones", 2, "Satellite's Lullaby", None, "mp3", G4 / 2, DREAM, 2.0, 4, 8, True),
    (ARTIST_1, "Night Drones", 3, "Streetlights", None, "mp3", Bb3, JAZZ, 1.5, 6, 6, False),
    (ARTIST_2, "Don't Stop the Chords", 1, "Opening Chord", None, "flac", C4, DREAM, 1.5, 4, 6, True),
    (ARTIST_2, "Don't Stop the Chords", 2, "Arpeggio Étude", None, "flac", A3, POP, 1.5, 8, 6, True),
    (ARTIST_2, "Don't Stop the Chords", 3, "Coda (Don't Look Back)", None, "mp3", F4 / 2, POP, 2.0, 4, 8, True),
]

CODEC_ARGS = {
    # Mono keeps the library small; quality is plenty for sine tones.
    "ogg": ["-ar", "44100", "-c:a", "libvorbis", "-q:a", "4"],
    "mp3": ["-ar", "44100", "-c:a", "libmp3lame", "-b:a", "96k", "-id3v2_version", "3"],
    "flac": ["-ar", "22050", "-sample_fmt", "s16", "-c:a", "flac", "-compression_level", "8"],
}


def note(key, semis):
    return key * 2 ** (semis / 12)


def expression(key, prog, seg, rate):
    """An aevalsrc expression: a chord pad that swells once per chord (so chord changes never
    click) and a plucked arpeggio over the same chord (attack from 0, exponential decay)."""
    k = f"mod(floor(t/{seg}),{len(prog)})"
    pad_terms, arp_terms = [], []
    for i, (root, quality) in enumerate(prog):
        notes = [root + q for q in quality]
        pad = "+".join(f"sin(2*PI*{note(key, n):.3f}*t)" for n in notes)
        pad_terms.append(f"eq({k},{i})*({pad})")
        # Arpeggio an octave up: root, third, fifth, octave, fifth, third...
        arp_notes = [n + 12 for n in notes] + [notes[0] + 24, notes[2] + 12, notes[1] + 12]
        j = f"mod(floor(t*{rate}),{len(arp_notes)})"
        arp = "+".join(
            f"eq({j},{a})*sin(2*PI*{note(key, n):.3f}*t)" for a, n in enumerate(arp_notes)
        )
        arp_terms.append(f"eq({k},{i})*({arp})")
    swell = f"(0.5-0.5*cos(2*PI*mod(t,{seg})/{seg}))"
    period = 1 / rate
    x = f"mod(t,{period:.6f})"
    # Starts and ends at zero (3 ms attack, 3 ms release), so note changes never click.
    pluck = f"(1-exp(-300*{x}))*exp(-7*{x})*(1-exp(-300*({period:.6f}-{x})))"
    return f"0.27*{swell}*({'+'.join(pad_terms)})+0.66*{pluck}*({'+'.join(arp_terms)})"


def render(out, track):
    artist, album, no, title, tag_title, ext, key, prog, seg, rate, dur, tagged = track
    path = out / artist / album / f"{no:02d} {title}.{ext}"
    path.parent.mkdir(parents=True, exist_ok=True)
    expr = expression(key, prog, seg, rate)
    filters = (
        f"aecho=0.8:0.6:90|180:0.25|0.12,"
        f"afade=t=in:d=0.05,afade=t=out:st={dur - 1.2}:d=1.2"
    )
    # An untagged MP3 starts straight with a frame sync (no ID3 header at all): publish
    # must recognise MP3 by either.
    tags = [] if tagged or ext != "mp3" else ["-id3v2_version", "0"]
    if tagged:
        meta = {
            "artist": artist,
            "album_artist": artist,
            "album": album,
            "title": tag_title or title,
            "track": f"{no}/{sum(1 for t in TRACKS if t[1] == album)}",
            "date": ALBUMS[(artist, album)][:4],
            "genre": "Electronic",
            "comment": "Synthesized with ffmpeg for the trackfs demo; public domain",
        }
        for name, value in meta.items():
            tags += ["-metadata", f"{name}={value}"]
            if ext == "ogg":
                # Ogg keeps tags in the stream's Vorbis comment, not at container level.
                tags += ["-metadata:s:a:0", f"{name}={value}"]
    cmd = [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"aevalsrc=exprs='{expr}':s=44100:d={dur}",
        "-af", filters, "-ac", "1",
        "-map_metadata", "-1",
        "-fflags", "+bitexact", "-flags:a", "+bitexact",
        *CODEC_ARGS[ext], *tags, str(path),
    ]
    subprocess.run(cmd, check=True)
    return path


def main():
    here = Path(__file__).resolve().parent
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else here.parent / "assets" / "demo"
    if shutil.which("ffmpeg") is None:
        sys.exit("make-demo-assets: ffmpeg not found (apt-get install -y ffmpeg)")
    # Start clean so renamed tracks do not linger; keep nothing but what we write.
    for artist in {t[0] for t in TRACKS}:
        shutil.rmtree(out / artist, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    paths = [render(out, t).relative_to(out).as_posix() for t in TRACKS]
    paths.sort()
    (out / "index.txt").write_text("".join(p + "\n" for p in paths), encoding="utf-8")
    # A Rust expression; include_bytes! paths resolve relative to this file (assets/demo/).
    rs = [
        "// Generated by scripts/make-demo-assets.py; do not edit.",
        "// The demo library: (path relative to assets/demo, file bytes).",
        "// Use: static DEMO: &[(&str, &[u8])] = include!(\"../assets/demo/files.rs\");",
        "&[",
    ]
    for p in paths:
        lit = p.replace("\\", "\\\\").replace('"', '\\"')
        rs.append(f'    ("{lit}", include_bytes!("{lit}")),')
    rs.append("]")
    (out / "files.rs").write_text("\n".join(rs) + "\n", encoding="utf-8")
    (out / "LICENSE").write_text(
        "The audio files in this folder were synthesized from sine waves with ffmpeg\n"
        "(scripts/make-demo-assets.py); nothing in them is recorded or sampled.\n"
        "They, index.txt and files.rs are dedicated to the public domain (CC0 1.0:\n"
        "https://creativecommons.org/publicdomain/zero/1.0/). The artist, album and track\n"
        "names are invented.\n",
        encoding="utf-8",
    )
    total = sum((out / p).stat().st_size for p in paths)
    for p in paths:
        print(f"{(out / p).stat().st_size:>8}  {p}")
    print(f"{total:>8}  total ({len(paths)} tracks)")


if __name__ == "__main__":
    main()
