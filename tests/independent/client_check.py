#!/usr/bin/env python3
"""Independent trackfs client that checks an origin against DESIGN.md.

Written from DESIGN.md only (stdlib + the openssl CLI), so that the Rust origin
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
import http.client
import json
import os
import re
import subprocess
import sys
import time
import unicodedata
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pb  # noqa: E402

IV = 0x72E067FBDDCBCF77EBE8BC643F630D93
OGG_HEADER_LEN = 167
HEAD_MIN = 64 * 1024
CHUNK = 1 << 20
AUDIO_EXTS = (".ogg", ".mp3", ".flac", ".m4a")
# AudioFile.Format (DESIGN.md §2) -> extension. Anything else is unknown and
# must be ignored.
FORMAT_EXT = {0: ".ogg", 1: ".ogg", 2: ".ogg", 3: ".mp3", 4: ".mp3", 5: ".mp3", 6: ".mp3",
              7: ".mp3", 8: ".m4a", 9: ".m4a", 16: ".flac", 18: ".m4a", 19: ".m4a",
              20: ".m4a", 22: ".flac"}
OGG_FORMATS = {0, 1, 2}


# ================================================================ reporting

class Report:
    """Counts passes per check; prints each failure as it happens."""

    def __init__(self, verbose):
        self.verbose = verbose
        self.passed = collections.Counter()
        self.failed = []

    def ok(self, check, detail=""):
        self.passed[check] += 1
        if self.verbose:
            print("ok   %-22s %s" % (check, detail))

    def fail(self, check, message):
        self.failed.append((check, message))
        print("FAIL %-22s %s" % (check, message), flush=True)

    def expect(self, cond, check, message):
        """ok() when cond holds, fail(message) otherwise; returns cond."""
        if cond:
            self.ok(check, message)
        else:
            self.fail(check, message)
        return bool(cond)

    def note(self, message):
        print("note %s" % message)

    def summary(self):
        total = sum(self.passed.values())
        print("\n%d checks passed (%s)" % (total, ", ".join(
            "%s %d" % kv for kv in sorted(self.passed.items()))))
        if self.failed:
            print("%d checks FAILED:" % len(self.failed))
            for check, message in self.failed:
                print("  %s: %s" % (check, message))
        return 0 if not self.failed else 1


# ================================================================ HTTP

class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def header(self, name):
        return self.headers.get(name.lower())


class NetError(Exception):
    pass


def http(method, url, headers=None, body=None, timeout=10.0):
    """One request on a fresh connection; the raw path is sent unnormalised
    (so '../' probes reach the server). Every socket operation has `timeout`,
    and the whole exchange a deadline of 6x that, so nothing can hang."""
    u = urllib.parse.urlsplit(url)
    conn_cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(u.hostname, u.port, timeout=timeout)
    target = (u.path or "/") + ("?" + u.query if u.query else "")
    deadline = time.monotonic() + 6 * timeout
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        chunks = []
        while chunk := resp.read1(1 << 16):     # b"" at the end (and for HEAD)
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise NetError("%s %s: body not complete after %.0fs" % (method, url, 6 * timeout))
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        return Response(resp.status, hdrs, b"".join(chunks))
    except (OSError, http.client.HTTPException) as e:
        raise NetError("%s %s: %s: %s" % (method, url, type(e).__name__, e)) from e
    finally:
        conn.close()


# ================================================================ crypto

def ctr_crypt(key, offset, data):
    """AES-128-CTR via the openssl CLI, starting at byte `offset` of the file:
    counter IV + offset/16 (128-bit big-endian), skipping offset%16 bytes of
    keystream by prepending that many dummy bytes."""
    pad = offset % 16
    counter = (IV + offset // 16) % (1 << 128)
    cmd = ["openssl", "enc", "-d", "-aes-128-ctr", "-K", key.hex(),
           "-iv", "%032x" % counter, "-nosalt"]
    out = subprocess.run(cmd, input=b"\0" * pad + data, capture_output=True, timeout=120, check=True)
    return out.stdout[pad:]


# ================================================================ URL expiry

EXPIRY_FORMS = [  # (name, regex over the query); group 1 expiry, group 2 signature
    ("<exp>_<token>", re.compile(r"^(\d+)_([^&]+)$")),
    ("verify=<exp>-<sig>", re.compile(r"(?:^|&)verify=(\d+)-([^&]+)")),
    ("__token__=exp=<exp>~hmac=", re.compile(r"(?:^|&)__token__=(?:[^&]*~)?exp=(\d+)~(?:[^&]*~)?hmac=([^&~]+)")),
    ("Expires=<exp>~...", re.compile(r"(?:^|&)Expires=(\d+)(~[^&]*)")),
]


def parse_expiry(url):
    """-> (form name, expiry, (start, end) of the signature in the query) or
    None when no form is readable (DESIGN.md: treat as non-expiring)."""
    query = urllib.parse.urlsplit(url).query
    for name, rx in EXPIRY_FORMS:
        m = rx.search(query)
        if m:
            return name, int(m.group(1)), m.span(2)
    return None


def with_query(url, query):
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(query=query))


# ================================================================ protobuf

def dec_artists(msg, field):
    return [a.string(2, "") for a in msg.repeated_msgs(field)]


def dec_track(buf):
    m = pb.Msg(buf)
    files = []
    for f in m.repeated_msgs(12):
        # proto2: an absent enum reads as its first value (OGG_VORBIS_96).
        files.append((f.bytes(1, b""), f.int32(2, 0)))
    album = m.msg(3)
    return {"gid": m.bytes(1), "name": m.string(2), "artists": dec_artists(m, 4),
            "album": album.string(2) if album else None,
            "album_artists": dec_artists(album, 3) if album else [],
            "number": m.sint32(5), "disc": m.sint32(6), "files": files}


def dec_album(buf):
    m = pb.Msg(buf)
    discs = [(d.sint32(1), [t.bytes(1) for t in d.repeated_msgs(3)]) for d in m.repeated_msgs(11)]
    return {"gid": m.bytes(1), "name": m.string(2), "artists": dec_artists(m, 3), "discs": discs}


def dec_resolve(buf):
    m = pb.Msg(buf)
    return {"result": m.int32(1, 0), "cdnurl": m.repeated_strings(2), "fileid": m.bytes(4, b"")}


# ================================================================ sources

def nfc(s):
    return unicodedata.normalize("NFC", s) if s is not None else None


def expected_names(source_dir, path):
    """What Artist/Album/[D-]NN Title.ext says about a source file."""
    parts = os.path.relpath(path, source_dir).split(os.sep)
    stem, ext = os.path.splitext(parts[-1])
    m = re.match(r"^(?:(\d+)-)?(\d+)\s+(?:-\s+)?(.+)$", stem)
    return {"artist": parts[-3] if len(parts) >= 3 else None,
            "album": parts[-2] if len(parts) >= 2 else None,
            "disc": int(m.group(1)) if m and m.group(1) else (1 if m else None),
            "number": int(m.group(2)) if m else None,
            "title": m.group(3) if m else stem, "ext": ext.lower()}


def index_sources(source_dir):
    """sha256 -> [path] for every audio file under source_dir."""
    index = collections.defaultdict(list)
    for root, dirs, files in os.walk(source_dir):
        for name in files:
            if os.path.splitext(name)[1].lower() in AUDIO_EXTS:
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    index[hashlib.sha256(f.read()).hexdigest()].append(path)
    return index


def index_library(lib_dir):
    """file id hex -> path, for files in a published library named by id."""
    found = {}
    for root, _, files in os.walk(lib_dir or ""):
        for name in files:
            m = re.match(r"^([0-9a-f]{40})(\.\w+)?$", name)
            if m:
                found[m.group(1)] = os.path.join(root, name)
    return found


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
        self.signed_forms = set()   # expiry forms already probed for 403s
        self.sample = {}            # ids and a signed URL for the 404 probes
        self.heads = collections.Counter()

    # ---------------------------------------------------------- HTTP helpers

    def get(self, url, headers=None):
        return http("GET", url, headers, timeout=self.args.timeout)

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
        return http("POST", self.origin + "/keymaster/token", headers, b"", timeout=self.args.timeout)

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

