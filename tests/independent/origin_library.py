"""The library origin.py serves, rebuilt on every reload as one immutable snapshot.

A library changes while it is mounted (docs/protocol.md §8), so the origin rescans its source
folder and re-reads its catalogue description (README: "Changing the library") on SIGHUP or
when that file changes. Each reload builds a complete `Snapshot` (every answer body and its
ETag) and swaps it in with one assignment, so a client never sees half of a change.

Ids never change meaning: a track's gid is derived from its path (seed + relative path),
an album's from its folders, a playlist's from its name; a file id names one ciphertext
forever. Every file id and image ever served keeps answering (audiokey, CDN, head, image)
after it leaves the library, so open readers finish.
"""

import hashlib
import json
import os
import shutil

import origin_v11 as v11
from origin_catalogue import (
    FileEntry, Track, enc_album, enc_library, enc_track, encrypt_all, formats_for, make_header,
    number_missing_tracks, scan_sources)


class Snapshot:
    """Everything one generation of the library answers; never mutated once built."""

    def __init__(self):
        self.albums = []          # album dicts in library order
        self.tracks = []
        self.bodies = {}          # request path -> protobuf answer
        self.etags = {}           # request path -> strong ETag
        self.playlists = []       # dicts: gid, id, name, uris, track_gids
        self.album_images = {}    # album gid hex -> [image dicts]
        self.covers = {}          # album gid hex -> winning image dict or None


class Library:
    def __init__(self, args, work_dir, rng):
        self.args, self.work_dir, self.rng = args, work_dir, rng
        self.v11 = args.protocol == "v1.1"
        self.entries = {}         # (path, size, mtime_ns, inode, is_ogg) -> FileEntry
        self.files = {}           # file id hex -> FileEntry, every one ever served
        self.images = {}          # image file id hex -> (bytes, mime, path)
        self.track_state = {}     # relative path -> {"index", "decoy"}
        self.generation = 0
        self.sample_root = os.path.join(work_dir, "sample")

    # ---------------------------------------------------------- inputs

    def read_description(self):
        path = self.args.catalogue
        if not path:
            return {}
        with open(path, encoding="utf-8") as f:
            desc = json.load(f)
        if not isinstance(desc, dict):
            raise ValueError("%s: a JSON object is needed" % path)
        return desc

    def scan(self, desc):
        found = scan_sources(self.args.source)
        if self.v11 and desc.get("sample_album", True):
            artist = desc.get("sample_artist", v11.SAMPLE_ARTIST)
            sample_dir = os.path.join(self.sample_root, hashlib.sha1(artist.encode()).hexdigest())
            if not os.path.isdir(sample_dir):
                for rel, data in v11.sample_album_files(artist):
                    path = os.path.join(sample_dir, rel)
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with open(path, "wb") as f:
                        f.write(data)
            found += scan_sources(sample_dir)
        excluded = [e.strip("/") for e in desc.get("exclude", [])]
        found = [e for e in found if not any(e["rel"] == x or e["rel"].startswith(x + "/") for x in excluded)]
        if not found:
            raise ValueError("no audio files in the library (source %s, %d excluded)"
                             % (self.args.source, len(excluded)))
        return found

    def file_entry(self, path, is_ogg, new):
        st = os.stat(path)
        key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino, is_ogg)
        entry = self.entries.get(key)
        if entry is None:
            header = make_header(self.rng, self.args.ogg_header) if is_ogg else b""
            entry = self.entries[key] = FileEntry(path, header, self.rng.randbytes(16))
            new.append(entry)
        return entry

    # ---------------------------------------------------------- one generation

    def load(self):
        """Builds the next snapshot from the source folder and the description."""
        desc = self.read_description()
        seed = self.args.seed
        replace = desc.get("replace", {})
        artists, albums, tracks, new = {}, {}, [], []
        for e in self.scan(desc):
            served = replace.get(e["rel"])
            path = os.path.join(self.args.source, served) if served else e["path"]
            ext = os.path.splitext(path)[1].lower() if served else e["ext"]
            state = self.track_state.get(e["rel"])
            if state is None:
                index = len(self.track_state)
                state = self.track_state[e["rel"]] = {
                    "index": index, "decoy": self.rng.randbytes(20) if index % 3 == 1 else None}
            artist = artists.setdefault(e["artist"], {
                "gid": v11.derived_gid(seed, "artist", e["artist"]), "name": e["artist"]})
            key = e["artist"] + "/" + e["album"]
            album = albums.setdefault(key, {
                "gid": v11.derived_gid(seed, "album", key), "name": e["album"], "artist": artist,
                "key": key, "folder": os.path.dirname(e["path"]), "tracks": []})
            i = state["index"]
            track = Track(gid=v11.derived_gid(seed, "track", e["rel"]), rel=e["rel"], title=e["title"],
                          number=e["number"], disc=e["disc"], ext=ext, artist=artist, album=album,
                          index=i, file=self.file_entry(path, ext == ".ogg", new),
                          formats=formats_for(ext, i), decoy_fid=state["decoy"])
            album["tracks"].append(track)
            tracks.append(track)
        encrypt_all(new, self.work_dir, self.rng)
        for entry in new:
            self.files[entry.fid.hex()] = entry
        for album in albums.values():
            number_missing_tracks(album["tracks"])
            album["tracks"].sort(key=lambda t: (t.disc, t.number, t.title))
        snap = Snapshot()
        snap.albums, snap.tracks = list(albums.values()), tracks
        if self.v11:
            self.add_covers(snap, desc)
            self.add_playlists(snap, desc)
        self.encode(snap)
        self.generation += 1
        return snap

    def add_covers(self, snap, desc):
        specs = desc["covers"] if "covers" in desc else v11.sample_covers([a["key"] for a in snap.albums])
        if specs == "source":
            specs = v11.covers_from_folders(snap.albums)
        for album in snap.albums:
            images = []
            for n, spec in enumerate(specs.get(album["key"], [])):
                data, mime, width, height = v11.make_image(spec, "%s #%d" % (album["key"], n))
                fid = hashlib.sha1(data).hexdigest()
                if fid not in self.images:
                    ext = {"image/jpeg": ".jpg", "image/png": ".png"}.get(mime, ".bin")
                    path = os.path.join(self.work_dir, "images", fid + ext)
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with open(path, "wb") as f:
                        f.write(data)
                    self.images[fid] = (data, mime, path)
                size = spec.get("size", "DEFAULT")
                images.append({"fid": bytes.fromhex(fid), "size": size, "size_code": v11.SIZES[size],
                               "width": width, "height": height, "dims": spec.get("dimensions", True),
                               "mime": mime})
            snap.album_images[album["gid"].hex()] = images
            snap.covers[album["gid"].hex()] = v11.largest(images)

    def add_playlists(self, snap, desc):
        seed = self.args.seed
        lists = desc["playlists"] if "playlists" in desc else v11.sample_playlists([t.rel for t in snap.tracks], seed)
        if lists == "source":
            lists = v11.playlists_from_m3u(self.args.source)
        in_library = {t.gid for t in snap.tracks}
        seen = {}
        for pl in lists:
            name = pl["name"]
            seen[name] = seen.get(name, 0) + 1
            gid = bytes.fromhex(pl["gid"]) if "gid" in pl else v11.derived_gid(seed, "playlist", name, str(seen[name]))
            uris = [item if item.startswith("spotify:") else
                    "spotify:track:" + v11.base62(v11.derived_gid(seed, "track", item)) for item in pl["items"]]
            wanted = []
            for uri in uris:
                if uri.startswith("spotify:track:"):
                    tgid = v11.unbase62(uri[len("spotify:track:"):])
                    if tgid in in_library:
                        wanted.append(tgid.hex())
            snap.playlists.append({"gid": gid, "id": v11.base62(gid), "name": name, "uris": uris,
                                   "track_gids": wanted})

    # ---------------------------------------------------------- answers

    def encode(self, snap):
        form = self.args.cover_field
        owner = self.args.user
        for n, album in enumerate(snap.albums):
            images = snap.album_images.get(album["gid"].hex(), [])
            album_form = form if form != "alternate" else ("group", "cover")[n % 2]
            body = enc_album(album, len(album["tracks"]), images, album_form)
            path = "/metadata/4/album/" + album["gid"].hex()
            snap.bodies[path] = body
            track_bodies = []
            for t in album["tracks"]:
                tpath = "/metadata/4/track/" + t.gid.hex()
                snap.bodies[tpath] = enc_track(t)
                snap.etags[tpath] = v11.etag(snap.bodies[tpath])
                track_bodies.append(snap.bodies[tpath])
            # An album's ETag stands for its tracks too: a track's new file changes it.
            snap.etags[path] = v11.etag(body, *track_bodies)
        if snap.playlists:
            root = v11.enc_selected_list(None, ["spotify:playlist:" + p["id"] for p in snap.playlists],
                                         v11.revision([p["id"] for p in snap.playlists]), owner)
            rpath = "/playlist/v2/user/%s/rootlist" % owner
            snap.bodies[rpath], snap.etags[rpath] = root, v11.etag(root)
            for p in snap.playlists:
                body = v11.enc_selected_list(p["name"], p["uris"], v11.revision(p["uris"], p["name"]), owner)
                ppath = "/playlist/v2/playlist/" + p["id"]
                snap.bodies[ppath], snap.etags[ppath] = body, v11.etag(body)
        lib = enc_library(snap.albums)
        snap.bodies["/library"] = lib
        # The /library ETag stands for the whole library (docs/protocol.md §8).
        snap.etags["/library"] = v11.etag(lib, *[p.encode() + snap.bodies[p] for p in sorted(snap.bodies)])

    # ---------------------------------------------------------- manifest

    def manifest(self, snap, port):
        args = self.args

        def image(i):
            if i is None:
                return None
            fid = i["fid"].hex()
            return {"file_id": fid, "size": i["size"], "width": i["width"], "height": i["height"],
                    "dimensions_sent": i["dims"], "mime": i["mime"], "path": self.images[fid][2],
                    "ext": os.path.splitext(self.images[fid][2])[1]}

        albums = []
        for a in snap.albums:
            gid = a["gid"].hex()
            images = snap.album_images.get(gid, [])
            albums.append({"gid": gid, "artist": a["artist"]["name"], "name": a["name"], "key": a["key"],
                           "track_gids": [t.gid.hex() for t in a["tracks"]],
                           "images": [image(i) for i in images], "cover": image(snap.covers.get(gid)),
                           "cover_ambiguous": bool(images) and snap.covers.get(gid) is None})
        return {
            "origin": "http://127.0.0.1:%d" % port,
            "credentials": {"user": args.user, "password": args.password},
            "seed": args.seed, "protocol": args.protocol, "etags": args.etags,
            "cover_field": args.cover_field, "generation": self.generation,
            "library_etag": snap.etags["/library"] if args.etags else None,
            "albums": albums,
            "playlists": [{"id": p["id"], "gid": p["gid"].hex(), "name": p["name"], "uris": p["uris"],
                           "track_gids": p["track_gids"]} for p in snap.playlists],
            "tracks": [{
                "artist": t.artist["name"], "album": t.album["name"], "title": t.title,
                "number": t.number, "disc": t.disc, "ext": t.ext, "rel": t.rel,
                "source": os.path.abspath(t.file.source), "sha256": t.file.sha256,
                "file_id": t.file.fid.hex(), "key": t.file.key.hex(),
                "track_gid": t.gid.hex(), "album_gid": t.album["gid"].hex(),
                "duration_ms": t.file.duration_ms,
                "formats": t.formats, "stored_size": t.file.size, "header_len": len(t.file.header),
                "head_len": 0 if args.no_head_files else t.file.head_len,
                "decoy_file_id": t.decoy_fid.hex() if t.decoy_fid else None,
            } for t in snap.tracks],
        }

    def cleanup(self):
        shutil.rmtree(self.sample_root, ignore_errors=True)
