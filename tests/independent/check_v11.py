"""Protocol v1.1 checks of client_check.py (docs/protocol.md §6-§8): cover images, the
rootlist and playlists with base62 ids, and ETag / If-None-Match revalidation.

Runs after the v1 walk and reuses what it learned (albums, which source file each track
holds). Expectations from the source folder follow issue 17's `publish`: an album folder
holding `cover.*`, `folder.*` or `front.*` (jpg/jpeg/png, any case) must get exactly those
bytes as its largest image, and every `.m3u`/`.m3u8` file becomes a playlist named after the
file, listing the entries that resolve to source files, in order.

An origin without v1.1 answers 404 on the rootlist and sends no album images; with
`--v11 auto` these checks are then skipped with a loud banner, with `--v11 require` that is
a failure.
"""

import os
import re
import urllib.parse

import media
import pb
from check_support import NetError, Response, nfc
from origin_v11 import BASE62, base62, unbase62

COVER_NAME = re.compile(r"^(cover|folder|front)\.(jpe?g|png)$", re.IGNORECASE)
SIZE_NAMES = {0: "DEFAULT", 1: "SMALL", 2: "LARGE", 3: "XLARGE"}
SIZE_RANK = {3: 4, 2: 3, 0: 2, 1: 1}
BANNER = "!" * 6


def largest(images):
    """docs/protocol.md §6: most pixels when width/height are given, else by size."""
    if all(i["width"] and i["height"] for i in images):
        return max(images, key=lambda i: i["width"] * i["height"])
    return max(images, key=lambda i: SIZE_RANK.get(i["size"], 0))


class V11:
    def __init__(self, checker):
        self.c, self.r, self.args = checker, checker.r, checker.args
        self.track_source = {}      # track gid -> source path
        self.source_track = {}      # source path -> track gid
        self.library_tracks = set()

    # ---------------------------------------------------------- entry

    def run(self):
        self.map_sources()
        self.check_etags()
        if self.args.v11 == "off":
            return
        root = self.c.try_get(self.c.origin + self.rootlist_path(), self.auth())
        has_images = any(a.get("images") for a in self.c.albums)
        absent = isinstance(root, Response) and root.status == 404 and not has_images
        if absent and self.args.v11 == "auto":
            print("\n%s SKIPPING the v1.1 checks: the origin answers 404 on %s and sends no album "
                  "images (a v1 origin). Run with --v11 require once it speaks v1.1. %s\n"
                  % (BANNER, self.rootlist_path(), BANNER), flush=True)
            return
        self.check_images()
        self.check_playlists(root)

    def auth(self):
        return {"Authorization": "Bearer " + self.c.token}

    def rootlist_path(self):
        return "/playlist/v2/user/%s/rootlist" % urllib.parse.quote(self.c.user, safe="")

    def map_sources(self):
        for track, sha in self.c.track_results:
            paths = self.c.sources.get(sha, [])
            if paths:
                title = nfc(track["name"])
                pick = next((p for p in paths if title and title in nfc(os.path.basename(p))), paths[0])
                self.track_source[track["gid"]] = pick
                for p in paths:
                    self.source_track.setdefault(os.path.realpath(p), track["gid"])
            self.library_tracks.add(track["gid"])

    # ---------------------------------------------------------- covers

    def check_images(self):
        expected = self.expected_covers()
        for album in self.c.albums:
            label = "album %r" % album["name"]
            fetched = []
            for img in album["images"]:
                got = self.check_image(label, img)
                if got:
                    fetched.append((img, got))
            want = expected.get(album["gid"])
            if want:
                if not self.r.expect(fetched, "cover", "%s: its folder has %s, so it has images"
                                     % (label, os.path.basename(want))):
                    continue
                with open(want, "rb") as f:
                    data = f.read()
                best = largest([i for i, _ in fetched])
                body = next(b for i, b in fetched if i is best)
                self.r.expect(body == data, "cover", "%s: the largest image (%s %sx%s) has the bytes of %s"
                              % (label, SIZE_NAMES.get(best["size"], best["size"]), best["width"],
                                 best["height"], want))
            elif album["images"]:
                self.r.note("%s: %d image(s), no cover file in its folder (embedded art?)"
                            % (label, len(album["images"])))
        for probe, wanted in [("0" * 40, 404), (os.urandom(20).hex(), 404), ("../../etc/passwd", 404),
                              ("g" * 40, 404), ("00" * 16, 404)]:
            self.c.status_is("image-404", self.c.try_get(self.c.origin + "/image/" + probe), wanted,
                             "GET /image/%s" % probe)

    def check_image(self, label, img):
        fid = img["fid"]
        if not self.r.expect(len(fid) == 20, "image", "%s: image file_id is 20 bytes (got %d)" % (label, len(fid))):
            return None
        if img["size"] not in SIZE_NAMES:
            self.r.note("%s: image size %d is no known Image.Size (ignored)" % (label, img["size"]))
        url = self.c.origin + "/image/" + fid.hex()
        resp = self.c.try_get(url)          # unauthenticated on purpose
        if not self.c.status_is("image", resp, 200, "GET /image/%s without a token" % fid.hex()):
            return None
        body = resp.body
        seen = media.image_size(body)
        ctype = (resp.header("content-type") or "").split(";")[0].strip()
        length = resp.header("content-length")
        self.r.expect(seen is not None, "image", "%s: /image/%s is a JPEG or PNG" % (label, fid.hex()))
        self.r.expect(length == str(len(body)), "image", "%s: Content-Length %r equals the %d bytes sent"
                      % (label, length, len(body)))
        if seen:
            self.r.expect(ctype == seen[0], "image", "%s: Content-Type %r matches the magic bytes (%s)"
                          % (label, ctype, seen[0]))
            if img["width"] is not None or img["height"] is not None:
                self.r.expect((img["width"], img["height"]) == seen[1:], "image",
                              "%s: width/height %sx%s are the picture's (%dx%d)"
                              % (label, img["width"], img["height"], seen[1], seen[2]))
        return body

    def expected_covers(self):
        """album gid -> the cover file of its source folder, when there is one."""
        out = {}
        for album in self.c.albums:
            folders = {os.path.dirname(self.track_source[g]) for _, gids in album["discs"]
                       for g in gids if g in self.track_source}
            for folder in sorted(folders):
                names = sorted(n for n in os.listdir(folder) if COVER_NAME.match(n))
                # cover.* before folder.* before front.*, as publish looks for them
                names.sort(key=lambda n: ["cover", "folder", "front"].index(n.split(".")[0].lower()))
                if names:
                    out[album["gid"]] = os.path.join(folder, names[0])
                    break
        return out

    # ---------------------------------------------------------- playlists

    def check_playlists(self, root):
        path = self.rootlist_path()
        self.c.check_bearer_required([path])
        if isinstance(root, NetError):
            return self.r.fail("rootlist", str(root))
        expected = self.expected_playlists()
        if root.status == 404:
            self.r.expect(not expected, "rootlist", "GET %s -> 404 (no playlists), and the source has %d"
                          % (path, len(expected)))
            return
        if not self.c.status_is("rootlist", root, 200, "GET " + path):
            return
        ids = self.dec_list("rootlist", root.body, path, "spotify:playlist:")
        other = "/playlist/v2/user/%s/rootlist" % urllib.parse.quote(self.c.user + "-someone-else", safe="")
        self.c.status_is("rootlist", self.c.control(other), {403, 404}, "GET %s (another user)" % other)
        got = {}
        for pid in ids or []:
            ppath = "/playlist/v2/playlist/" + pid
            resp = self.c.control(ppath)
            if not self.c.status_is("playlist", resp, 200, "GET " + ppath):
                continue
            listed = self.dec_list("playlist", resp.body, ppath, None)
            if listed is not None:
                got.setdefault(listed[0], []).append(listed[1])
        self.c.check_bearer_required(["/playlist/v2/playlist/" + ids[0]] if ids else [])
        for probe in [base62(os.urandom(16)), "0" * 22, "!" * 22, "0" * 21, "../../etc/passwd"]:
            self.c.status_is("playlist-404", self.c.control("/playlist/v2/playlist/" + probe), 404,
                             "GET /playlist/v2/playlist/%s (valid token)" % probe)
        for name, tracks in expected.items():
            lists = got.get(name)
            if not self.r.expect(lists, "playlist-source", "playlist %r (from the source) is served" % name):
                continue
            # Unknown tracks may be served (the client leaves them out) or skipped by the origin.
            known = [[g for g in x if g in self.library_tracks] for x in lists]
            self.r.expect(tracks in known, "playlist-source", "playlist %r lists its %d resolvable entries in order"
                          " (got %s)" % (name, len(tracks), [len(x) for x in known]))
        if expected and not self.args.no_name_checks:
            extra = sorted(set(got) - set(expected))
            self.r.expect(not extra, "playlist-source", "no playlist beyond the source's (extra: %s)" % extra)

    def dec_list(self, check, body, path, prefix):
        """SelectedListContent -> rootlist: [playlist ids]; playlist: (name, [track gids])."""
        try:
            m = pb.Msg(body)
            attrs, contents = m.msg(3), m.msg(5)
            items = contents.repeated_msgs(3) if contents else []
            uris = [i.string(1) for i in items]
            length = m.int32(2)
            name = attrs.string(1) if attrs else None
        except (pb.DecodeError, UnicodeDecodeError) as e:
            return self.r.fail(check, "GET %s: bad protobuf: %s" % (path, e))
        if m.bytes(1) is None:
            self.r.note("GET %s: no revision" % path)
        if length is not None:
            self.r.expect(length == len(uris), check, "GET %s: length %d equals the %d items" % (path, length, len(uris)))
        if contents is not None and not (contents.has(1) and contents.has(2)):
            self.r.note("GET %s: ListItems without pos/truncated (Spotify declares them required)" % path)
        self.r.expect(all(u is not None for u in uris), check, "GET %s: every item has a uri" % path)
        if prefix:          # the rootlist
            ids = [u[len(prefix):] for u in uris if u and u.startswith(prefix)]
            self.r.expect(len(ids) == len(uris), check, "GET %s: every item is %s<id>" % (path, prefix))
            for pid in ids:
                self.check_base62(check, pid, path)
            self.r.expect(len(set(ids)) == len(ids), check, "GET %s: playlist ids are unique" % path)
            return ids
        self.r.expect(name, check, "GET %s: attributes.name is set (%r)" % (path, name))
        tracks = []
        for uri in uris:
            if uri and uri.startswith("spotify:track:"):
                tid = uri[len("spotify:track:"):]
                if self.check_base62(check, tid, path):
                    gid = unbase62(tid)
                    if gid not in self.library_tracks:
                        self.r.note("GET %s: %s is no track of the library (a client leaves it out)" % (path, uri))
                    tracks.append(gid)
            else:
                self.r.note("GET %s: item %r is not a track (a client skips it)" % (path, uri))
        return nfc(name or ""), tracks

    def check_base62(self, check, text, path):
        gid = unbase62(text)
        ok = gid is not None and base62(gid) == text
        return self.r.expect(ok, check, "GET %s: id %r is 22 base62 digits (%s) of a 16-byte gid"
                             % (path, text, BASE62[:3] + "..."))

    def expected_playlists(self):
        """name -> [track gids] from every .m3u/.m3u8 under --source."""
        out = {}
        for folder, dirs, files in os.walk(self.args.source):
            dirs.sort()
            for fname in sorted(files):
                stem, ext = os.path.splitext(fname)
                if ext.lower() not in (".m3u", ".m3u8"):
                    continue
                with open(os.path.join(folder, fname), "rb") as f:
                    text = f.read().decode("utf-8-sig", errors="replace")
                tracks = []
                for line in text.splitlines():
                    line = line.strip()
                    if not line or line.startswith("#"):
                        continue
                    target = os.path.realpath(os.path.join(folder, line))
                    if target in self.source_track:
                        tracks.append(self.source_track[target])
                out[nfc(stem)] = tracks
        return out

    # ---------------------------------------------------------- ETags

    def check_etags(self):
        paths = ["/library"]
        if self.c.albums:
            paths.append("/metadata/4/album/" + self.c.albums[0]["gid"].hex())
        if self.c.track_results:
            paths.append("/metadata/4/track/" + self.c.track_results[0][0]["gid"].hex())
        root = self.c.try_get(self.c.origin + self.rootlist_path(), self.auth())
        if isinstance(root, Response) and root.status == 200:
            paths.append(self.rootlist_path())
            ids = self.dec_list("rootlist", root.body, self.rootlist_path(), "spotify:playlist:") or []
            paths += ["/playlist/v2/playlist/" + ids[0]] if ids else []
        sent = 0
        for path in paths:
            sent += self.check_etag(path)
        if self.args.etags == "require":
            self.r.expect(sent and sent == len(paths), "etag", "ETags on %d of %d answers (%s)"
                          % (sent, len(paths), ", ".join(paths)))
        elif not sent:
            self.r.note("no ETags sent (allowed: docs/protocol.md §8); revalidation not checked")

    def check_etag(self, path):
        first = self.c.control(path)
        tag = first.header("etag") if first.status == 200 else None
        if tag is None:
            return 0
        self.r.expect(re.fullmatch(r'"[\x21\x23-\x7e]*"', tag), "etag", "GET %s: ETag %s is strong and quoted" % (path, tag))
        again = self.c.control(path)
        self.r.expect(again.header("etag") == tag and again.body == first.body, "etag",
                      "GET %s twice: same ETag, same body" % path)
        resp = self.c.get(self.c.origin + path, dict(self.auth(), **{"If-None-Match": tag}))
        self.r.expect(resp.status == 304 and resp.body == b"", "etag", "GET %s with If-None-Match: its ETag -> %d, "
                      "%d body bytes (want 304, none)" % (path, resp.status, len(resp.body)))
        if resp.status == 304 and resp.header("etag") is not None:
            self.r.expect(resp.header("etag") == tag, "etag", "GET %s: the 304 carries the same ETag" % path)
        # RFC 9110 allows a list; docs/protocol.md only has clients send one tag, so this is a note.
        resp = self.c.get(self.c.origin + path, dict(self.auth(), **{"If-None-Match": '"nope", ' + tag}))
        if resp.status != 304:
            self.r.note("GET %s with If-None-Match: a list holding its ETag -> %d (RFC 9110: 304)" % (path, resp.status))
        resp = self.c.get(self.c.origin + path, dict(self.auth(), **{"If-None-Match": '"not-' + tag.strip('"') + '"'}))
        self.r.expect(resp.status == 200 and resp.body == first.body, "etag",
                      "GET %s with another ETag -> %d and the body (want 200)" % (path, resp.status))
        resp = self.c.try_get(self.c.origin + path, {"If-None-Match": tag})
        self.c.status_is("etag", resp, 401, "GET %s with its ETag but no token (a 304 would leak)" % path)
        return 1
