#!/usr/bin/env python3
"""Independent trackfs client that checks an origin against docs/protocol.md.

Written from docs/protocol.md only (stdlib + the openssl CLI), so that the Rust origin
is judged by the contract and not by the Rust client it was developed with.
It walks the whole catalogue (token -> library -> albums -> tracks ->
storage-resolve -> audiokey -> head -> CDN), decrypts every file with openssl,
matches the plaintext against the source folder, and probes the error paths
(401, 403, 404, 416).

Exit status 0 when every check passed; 1 with one "FAIL ..." line per failed
check otherwise; 2 on bad usage.
"""

import argparse
import base64
import collections
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.parse

sys.dont_write_bytecode = True     # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_cdn  # noqa: E402
import check_change  # noqa: E402
import check_v11  # noqa: E402
import pb  # noqa: E402
from check_support import (  # noqa: E402
    FORMAT_EXT, OGG_FORMATS, NetError, Report, Response, ctr_crypt, dec_album, dec_resolve,
    dec_track, expected_names, http_request, index_library, index_sources, nfc, parse_expiry)

OGG_HEADER_LEN = 167
HEAD_MIN = 64 * 1024


# ================================================================ the checker

class Fatal(Exception):
    """A failure after which nothing else can be checked (no token, ...)."""


def basic(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode("utf-8")).decode()


def random_id(n):
    return os.urandom(n).hex()


class Checker:
    def __init__(self, args, report):
        self.args = args
        self.r = report
        self.origin = args.origin.rstrip("/")
        self.user, self.password = read_credentials(args)
        self.token, self.token_expiry, self.expires_in = None, 0.0, None
        self.sources = index_sources(args.source)
        self.library_files = index_library(args.library)
        self.file_results = {}      # file id hex -> (content sha256, is_ogg) or None
        self.track_results = []     # (track dict, content sha256)
        self.sample = {}            # ids and a signed URL for the 404 probes
        self.heads = collections.Counter()
        self.albums = []            # decoded albums, with "gid" the id asked for
        self.seen = {}              # catalogue path -> ETag and body hash (check_change)
        self.cdn = check_cdn.Cdn(self)

    # ---------------------------------------------------------- HTTP helpers

    def get(self, url, headers=None):
        return http_request("GET", url, headers, timeout=self.args.timeout)

    def status_is(self, check, resp_or_err, wanted, what):
        """Expect an HTTP status (int or set); network errors are failures."""
        wanted = {wanted} if isinstance(wanted, int) else wanted
        if isinstance(resp_or_err, NetError):
            return self.r.fail(check, "%s: %s" % (what, resp_or_err))
        return self.r.expect(resp_or_err.status in wanted, check, "%s -> %d (want %s)" % (
            what, resp_or_err.status, "/".join(map(str, sorted(wanted)))))

    def try_get(self, url, headers=None):
        try:
            return self.get(url, headers)
        except NetError as e:
            return e

    # ---------------------------------------------------------- token

    def post_token(self, auth):
        headers = {"Authorization": auth} if auth else {}
        return http_request("POST", self.origin + "/keymaster/token", headers, b"", timeout=self.args.timeout)

    def check_token_errors(self):
        u, p = self.user, self.password
        cases = [("no Authorization", None), ("wrong password", basic(u, p + "x")),
                 ("wrong user", basic(u + "x", p)), ("Bearer instead of Basic", "Bearer " + p)]
        if ":" in p:   # a server splitting user:password on the last ':' fails here
            cases.append(("password cut at its first ':'", basic(u, p.split(":")[0])))
        for label, auth in cases:
            try:
                resp = self.post_token(auth)
            except NetError as e:
                resp = e
            self.status_is("token-401", resp, 401, "POST /keymaster/token with " + label)

    def renew_token(self):
        try:
            resp = self.post_token(basic(self.user, self.password))
        except NetError as e:
            raise Fatal("token: %s" % e)
        if resp.status != 200:
            raise Fatal("token: POST /keymaster/token with the right credentials -> %d" % resp.status)
        try:
            doc = json.loads(resp.body)
        except ValueError:
            raise Fatal("token: answer is not JSON: %r" % resp.body[:200])
        token, kind, ttl = doc.get("accessToken"), doc.get("tokenType"), doc.get("expiresIn")
        self.r.expect(isinstance(token, str) and token, "token", "accessToken is a non-empty string")
        self.r.expect(kind == "Bearer", "token", "tokenType is \"Bearer\" (got %r)" % kind)
        good_ttl = isinstance(ttl, (int, float)) and not isinstance(ttl, bool) and ttl > 0
        self.r.expect(good_ttl, "token", "expiresIn is a positive number (got %r)" % ttl)
        if not (isinstance(token, str) and token):
            raise Fatal("token: no usable accessToken in %r" % doc)
        self.token, self.expires_in = token, ttl if good_ttl else 3600
        self.token_expiry = time.time() + self.expires_in

    def control(self, path):
        """Authenticated GET. Renews the token shortly before expiresIn, and
        once on a 401 (which is then a failure if the token was still fresh)."""
        margin = min(30.0, self.expires_in / 4)
        if time.time() > self.token_expiry - margin:
            self.renew_token()
        resp = self.get(self.origin + path, {"Authorization": "Bearer " + self.token})
        if resp.status == 401:
            left = self.token_expiry - time.time()
            self.renew_token()
            resp = self.get(self.origin + path, {"Authorization": "Bearer " + self.token})
            if resp.status != 401 and left > 1:
                self.r.fail("token", "GET %s: 401 with a token %.0fs before its expiresIn" % (path, left))
        check_change.record(self.seen, path, resp)
        return resp

    def check_bearer_required(self, paths):
        for path in paths:
            for label, headers in [("no token", {}), ("a wrong token", {"Authorization": "Bearer x" + (self.token or "")}),
                                   ("Basic credentials", {"Authorization": basic(self.user, self.password)})]:
                self.status_is("bearer-401", self.try_get(self.origin + path, headers), 401,
                               "GET %s with %s" % (path, label))

    # ---------------------------------------------------------- catalogue

    def fetch_proto(self, check, path, decoder):
        try:
            resp = self.control(path)
        except NetError as e:
            return self.r.fail(check, str(e))
        if not self.status_is(check, resp, 200, "GET " + path):
            return None
        try:
            return decoder(resp.body)
        except (pb.DecodeError, UnicodeDecodeError) as e:
            return self.r.fail(check, "GET %s: bad protobuf: %s" % (path, e))

    def walk(self):
        lib = self.fetch_proto("library", "/library", lambda b: pb.Msg(b).repeated_bytes(1))
        if lib is None:
            raise Fatal("no library")
        self.r.expect(lib, "library", "library lists %d albums" % len(lib))
        self.r.expect(len(set(lib)) == len(lib), "library", "album gids are unique")
        seen_tracks = set()
        for gid in lib:
            if not self.r.expect(len(gid) == 16, "library", "album gid %s is 16 bytes" % gid.hex()):
                continue
            album = self.check_album(gid)
            for disc_no, tgids in (album or {}).get("discs", []):
                for tgid in tgids:
                    if not tgid or len(tgid) != 16:
                        continue                  # reported by check_album
                    if tgid in seen_tracks:
                        self.r.fail("album", "track %s listed twice" % tgid.hex())
                        continue
                    seen_tracks.add(tgid)
                    self.check_track(tgid, album, disc_no)

    def check_album(self, gid):
        album = self.fetch_proto("album", "/metadata/4/album/" + gid.hex(), dec_album)
        if album is None:
            return None
        self.sample.setdefault("album", gid.hex())
        self.albums.append(dict(album, gid=gid))
        self.r.expect(album["gid"] in (None, gid), "album", "album %s answers its own gid" % gid.hex())
        self.r.expect(album["name"], "album", "album %s has a name (%r)" % (gid.hex(), album["name"]))
        ntracks = sum(len(t) for _, t in album["discs"])
        self.r.expect(ntracks, "album", "album %r lists %d tracks" % (album["name"], ntracks))
        for _, tgids in album["discs"]:
            for tgid in tgids:
                self.r.expect(tgid and len(tgid) == 16, "album", "Disc.track entry carries a 16-byte gid")
        return album

    def check_track(self, gid, album, disc_no):
        track = self.fetch_proto("track", "/metadata/4/track/" + gid.hex(), dec_track)
        if track is None:
            return
        self.sample.setdefault("track", gid.hex())
        label = "track %r" % track["name"]
        self.r.expect(track["gid"] in (None, gid), "track", "%s answers its own gid" % label)
        self.r.expect(track["name"], "track", "%s has a name" % label)
        if track["disc"] is not None and disc_no is not None:
            self.r.expect(track["disc"] == disc_no, "track", "%s disc_number %s matches its album Disc %s"
                          % (label, track["disc"], disc_no))
        known = [(fid, fmt) for fid, fmt in track["files"] if fmt in FORMAT_EXT]
        unknown = len(track["files"]) - len(known)
        if unknown:
            self.r.note("%s: ignored %d AudioFile(s) of unknown format" % (label, unknown))
        if not self.r.expect(known, "track", "%s has an AudioFile of a known format" % label):
            return
        track["album_name"], track["album_artists2"] = album["name"], album["artists"]
        track["gid"] = gid
        shas = set()
        for fid, fmt in known:
            if self.r.expect(len(fid) == 20, "track", "%s file id is 20 bytes" % label):
                result = self.check_file(fid.hex(), fmt)
                if result:
                    shas.add(result[0])
        self.r.expect(len(shas) <= 1, "track", "%s: all its formats hold the same audio" % label)
        if len(shas) == 1:
            self.track_results.append((track, shas.pop()))
        elif not shas:
            self.r.fail("track", "%s: no file could be verified" % label)

    # ---------------------------------------------------------- one file

    def check_file(self, fid, fmt):
        """Everything about one file id; cached, as several tracks/formats
        may share it. -> (sha256 of the audio as the mount shows it, is_ogg)."""
        is_ogg = fmt in OGG_FORMATS
        if fid in self.file_results:
            cached = self.file_results[fid]
            if cached and cached[1] != is_ogg:
                self.r.fail("file", "%s advertised both as Ogg Vorbis and as a non-Ogg format" % fid)
            return cached
        self.file_results[fid] = None
        self.sample.setdefault("file", fid)
        try:
            return self._check_file(fid, is_ogg)
        except NetError as e:
            self.r.fail("file", "%s: %s" % (fid, e))
        except subprocess.SubprocessError as e:
            self.r.fail("decrypt", "%s: openssl failed: %s" % (fid, e))
        return None

    def _check_file(self, fid, is_ogg):
        urls = self.resolve(fid)
        key = self.audio_key(fid)
        got = self.cdn.download(fid, urls) if urls else None
        if not (got and key):
            return None
        url, cipher = got
        plain = ctr_crypt(key, 0, cipher)
        self.check_layout(fid, plain, is_ogg)
        self.cdn.check_ranges(url, cipher, key, plain)
        self.check_head(fid, plain)
        self.cdn.check_signatures(url)
        self.check_library_copy(fid, cipher)
        audio = plain[OGG_HEADER_LEN:] if is_ogg else plain
        self.file_results[fid] = (hashlib.sha256(audio).hexdigest(), is_ogg)
        return self.file_results[fid]

    def resolve(self, fid):
        res = self.fetch_proto("resolve", "/storage-resolve/files/audio/interactive/" + fid, dec_resolve)
        if res is None:
            return None
        self.r.expect(res["result"] == 0, "resolve", "%s: result is CDN (got %d)" % (fid, res["result"]))
        self.r.expect(res["fileid"] in (b"", bytes.fromhex(fid)), "resolve",
                      "%s: fileid, when present, is the requested one" % fid)
        urls = res["cdnurl"]
        self.r.expect(urls, "resolve", "%s: at least one cdnurl" % fid)
        for u in urls:
            p = urllib.parse.urlsplit(u)
            self.r.expect(p.scheme in ("http", "https") and p.netloc, "resolve", "cdnurl %s is absolute" % u)
        return [u for u in urls if urllib.parse.urlsplit(u).netloc] or None

    def audio_key(self, fid):
        try:
            resp = self.control("/audiokey/" + fid)
        except NetError as e:
            return self.r.fail("audiokey", str(e))
        if not self.status_is("audiokey", resp, 200, "GET /audiokey/" + fid):
            return None
        ctype = (resp.header("content-type") or "").split(";")[0].strip()
        self.r.expect(ctype == "application/octet-stream", "audiokey",
                      "%s: Content-Type application/octet-stream (got %r)" % (fid, ctype))
        return resp.body if self.r.expect(len(resp.body) == 16, "audiokey",
                                          "%s: key is 16 bytes (got %d)" % (fid, len(resp.body))) else None

    def check_layout(self, fid, plain, is_ogg):
        if is_ogg:
            # The 167-byte header is opaque (it may itself be an Ogg page, as Spotify's
            # are); the audio's first page starts right after it.
            self.r.expect(plain[OGG_HEADER_LEN:OGG_HEADER_LEN + 4] == b"OggS", "ogg-header",
                          "%s: an OggS page at byte 167 (found %r)"
                          % (fid, plain[OGG_HEADER_LEN:OGG_HEADER_LEN + 4]))

    def check_head(self, fid, plain):
        resp = self.try_get(self.origin + "/head/" + fid)
        if isinstance(resp, Response) and resp.status == 404:
            self.heads["absent"] += 1
            return
        if not self.status_is("head", resp, 200, "GET /head/" + fid):
            return
        self.heads["present"] += 1
        n, total = len(resp.body), len(plain)
        self.r.expect(min(HEAD_MIN, total) <= n <= total, "head",
                      "%s: head file is %d bytes (want >= %d, <= %d)" % (fid, n, min(HEAD_MIN, total), total))
        self.r.expect(resp.body == plain[:n], "head", "%s: head file equals the plaintext prefix" % fid)

    def check_library_copy(self, fid, cipher):
        """With --library: a file there named by this id holds this ciphertext."""
        path = self.library_files.get(fid)
        if path:
            with open(path, "rb") as f:
                self.r.expect(f.read() == cipher, "library-copy", "%s equals what the CDN served" % path)

    # ---------------------------------------------------------- error paths

    def check_not_found(self):
        """404 for unknown and malformed ids on every endpoint; the CDN may
        answer 403 instead (a made-up id has no valid signature)."""
        album, track, fid = self.sample.get("album"), self.sample.get("track"), self.sample.get("file")
        bad = ["../../etc", "..%2F..%2Fetc%2Fpasswd", "g" * 32, "g" * 40, "0" * 30, ""]
        control = ["/metadata/4/album/" + random_id(16), "/metadata/4/track/" + random_id(16),
                   "/storage-resolve/files/audio/interactive/" + random_id(20), "/audiokey/" + random_id(20)]
        control += ["/metadata/4/album/" + track] if track else []     # a track gid is no album
        control += ["/metadata/4/track/" + album] if album else []
        control += ["/audiokey/" + album] if album else []            # 16 bytes is no file id
        for prefix in ("/metadata/4/album/", "/metadata/4/track/", "/storage-resolve/files/audio/interactive/",
                       "/audiokey/"):
            control += [prefix + b for b in bad]
        for path in control:
            try:
                resp = self.control(path)
            except NetError as e:
                resp = e
            self.status_is("not-found", resp, 404, "GET %s (valid token)" % path)
        for path in ["/head/" + random_id(20)] + ["/head/" + b for b in bad]:
            self.status_is("not-found", self.try_get(self.origin + path), 404, "GET " + path)
        url = self.sample.get("url")
        if url:
            u = urllib.parse.urlsplit(url)
            base = urllib.parse.urlunsplit(u._replace(path=u.path.rsplit("/", 1)[0], query=""))
            # Traversal probes may also get 400 (nginx as external CDN does).
            for other, wanted in [(random_id(20), {403, 404})] + [(b, {400, 403, 404}) for b in bad[:4]]:
                probe = "%s/%s?%s" % (base, other, u.query)
                self.status_is("cdn-not-found", self.try_get(probe, {"Range": "bytes=0-15"}), wanted,
                               "GET %s (unknown id, another file's signature)" % probe)
        if fid:
            self.check_bearer_required(["/library", "/metadata/4/album/" + (album or ""),
                                        "/metadata/4/track/" + (track or ""),
                                        "/storage-resolve/files/audio/interactive/" + fid, "/audiokey/" + fid])

    def check_expiry_waits(self):
        """With short TTLs (<= --max-wait s), wait them out: an expired token
        gets 401, an expired cdnurl 403, and renewing fixes both."""
        wait = self.args.max_wait
        if self.expires_in <= wait:
            old = self.token
            time.sleep(max(0.0, self.token_expiry - time.time()) + 1.5)
            self.status_is("token-expiry", self.try_get(self.origin + "/library", {"Authorization": "Bearer " + old}),
                           401, "GET /library with a token past its expiresIn")
            self.renew_token()
            self.status_is("token-expiry", self.control("/library"), 200, "GET /library with a renewed token")
        else:
            self.r.note("token expiresIn %ss > --max-wait %ss: token expiry not waited for" % (self.expires_in, wait))
        fid = self.sample.get("file")
        urls = self.resolve(fid) if fid else None
        parsed = parse_expiry(urls[-1]) if urls else None
        if parsed and parsed[1] - time.time() <= wait and not self.args.unsigned_cdn:
            time.sleep(max(0.0, parsed[1] - time.time()) + 1.5)
            self.status_is("url-expiry", self.try_get(urls[-1], {"Range": "bytes=0-15"}), 403,
                           "GET on a cdnurl past its expiry %d" % parsed[1])
            fresh = self.resolve(fid) or []
            self.status_is("url-expiry", self.try_get(fresh[-1], {"Range": "bytes=0-15"}) if fresh else NetError("no url"),
                           206, "GET on a re-resolved cdnurl")
        elif parsed:
            self.r.note("cdnurl expires in %.0fs > --max-wait: URL expiry not waited for" % (parsed[1] - time.time()))

    # ---------------------------------------------------------- coverage

    def check_coverage(self):
        """Every source file is in the library exactly once, with the names
        and numbers its path gives."""
        by_sha = collections.defaultdict(list)
        for track, sha in self.track_results:
            by_sha[sha].append(track)
        for sha, tracks in by_sha.items():
            paths = sorted(self.sources.get(sha, []))
            if not paths:
                for t in tracks:
                    self.r.fail("coverage", "track %r: its audio matches no source file" % t["name"])
                continue
            self.r.expect(len(tracks) == len(paths), "coverage", "%d source file(s) %s appear as %d track(s) %s"
                          % (len(paths), paths, len(tracks), [t["name"] for t in tracks]))
            for path, track in zip(paths, self.pair_by_name(paths, tracks)):
                if not self.args.no_name_checks:
                    self.check_names(path, track)
        for sha, paths in self.sources.items():
            if sha not in by_sha:
                for path in paths:
                    self.r.fail("coverage", "source file %s is missing from the library" % path)

    def pair_by_name(self, paths, tracks):
        """Order tracks to pair with paths (identical contents: match titles)."""
        left, ordered = list(tracks), []
        for path in paths:
            title = nfc(expected_names(self.args.source, path)["title"])
            pick = next((t for t in left if nfc(t["name"]) == title), left[0] if left else None)
            if pick:
                left.remove(pick)
            ordered.append(pick)
        return ordered

    def check_names(self, path, t):
        if t is None:
            return
        want = expected_names(self.args.source, path)
        rel = os.path.relpath(path, self.args.source)
        artists = [nfc(a) for a in t["artists"] + t["album_artists"] + t["album_artists2"]]
        checks = [("title", nfc(t["name"]), nfc(want["title"])),
                  ("album", nfc(t["album_name"]), nfc(want["album"])),
                  ("number", t["number"], want["number"]), ("disc", t["disc"] or 1, want["disc"])]
        for what, got, expected in checks:
            if expected is not None:
                self.r.expect(got == expected, "names", "%s: %s %r (want %r)" % (rel, what, got, expected))
        if want["artist"] is not None:
            self.r.expect(nfc(want["artist"]) in artists, "names", "%s: artists %r include %r" % (rel, artists, want["artist"]))
        exts = {FORMAT_EXT[fmt] for _, fmt in t["files"] if fmt in FORMAT_EXT}
        self.r.expect(exts == {want["ext"]}, "names", "%s: formats are %s files" % (rel, "/".join(sorted(exts))))


# ================================================================ main

def read_credentials(args):
    """`user:password` (split at the first ':'), or origin.py's manifest."""
    path = args.credentials or os.path.join(args.library or ".", "credentials")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("{"):
        creds = json.loads(text)["credentials"]
        return creds["user"], creds["password"]
    user, sep, password = text.rstrip("\r\n").partition(":")
    if not sep:
        raise SystemExit("client_check.py: %s is not user:password" % path)
    return user, password


def parse_args(argv):
    p = argparse.ArgumentParser(description="Check a trackfs origin against docs/protocol.md, independently.")
    p.add_argument("--origin", required=True, help="origin base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--credentials", help="file with user:password (or origin.py's --manifest JSON); "
                   "default LIBRARY/credentials")
    p.add_argument("--source", required=True, help="the music folder the origin was published from")
    p.add_argument("--library", help="the published library folder (credentials; ciphertext named by file id)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per socket operation")
    p.add_argument("--max-wait", type=float, default=20.0,
                   help="wait out token/URL expiry when their TTL is at most this many seconds")
    p.add_argument("--unsigned-cdn", action="store_true", help="CDN does not check signatures (e.g. nginx)")
    p.add_argument("--no-name-checks", action="store_true", help="do not compare names with source paths")
    p.add_argument("--v11", choices=["auto", "require", "off"], default="auto",
                   help="protocol v1.1 checks (covers, playlists): auto = skip, loudly, when the origin "
                   "answers 404 on the rootlist and sends no album images")
    p.add_argument("--etags", choices=["auto", "require"], default="auto",
                   help="ETag/304 checks where ETags are sent; require = /library must send one")
    p.add_argument("--state-out", help="save the ETags and body hashes seen, for a later --state-in")
    p.add_argument("--state-in", help="after the library changed: compare with a --state-out file")
    p.add_argument("--wait-for-change", type=float, default=0, metavar="SECONDS",
                   help="with --state-in: first wait (up to SECONDS) until /library differs from before")
    p.add_argument("-v", "--verbose", action="store_true", help="print every passed check")
    args = p.parse_args(argv)
    if not args.credentials and not args.library:
        p.error("give --credentials or --library")
    return args


def main(argv=None):
    args = parse_args(argv)
    report = Report(args.verbose)
    checker = Checker(args, report)
    if not checker.sources:
        report.fail("coverage", "no audio files under %s" % args.source)
    try:
        checker.check_token_errors()
        checker.renew_token()
        if args.state_in and args.wait_for_change:
            check_change.wait_for_change(checker, args.state_in, args.wait_for_change)
        checker.walk()
        checker.check_not_found()
        checker.check_coverage()
        check_v11.V11(checker).run()
        if args.state_in:
            check_change.compare(checker, args.state_in)
        if args.state_out:
            check_change.save(checker, args.state_out)
        if report.verbose or checker.heads:
            report.note("head files: %d present, %d absent (404)" % (checker.heads["present"], checker.heads["absent"]))
        checker.check_expiry_waits()
    except Fatal as e:
        report.fail("fatal", str(e))
    except NetError as e:
        report.fail("fatal", "network: %s" % e)
    return report.summary()


if __name__ == "__main__":
    sys.exit(main())
