"""Building blocks of client_check.py: reporting, HTTP with timeouts, AES-CTR
through the openssl CLI, URL-expiry parsing, protobuf decoding (docs/protocol.md §9)
and indexing of the source folder. No knowledge of what "correct" means here;
the checks themselves are in client_check.py.
"""

import collections
import hashlib
import http.client
import os
import re
import subprocess
import time
import unicodedata
import urllib.parse

import pb

IV = 0x72E067FBDDCBCF77EBE8BC643F630D93
AUDIO_EXTS = (".ogg", ".mp3", ".flac", ".m4a")
# AudioFile.Format (docs/protocol.md §9) -> extension. Anything else is unknown and
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


def http_request(method, url, headers=None, body=None, timeout=10.0):
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
        body = b"".join(chunks)
        # read1() ends quietly when the server closes early; say so instead
        # of leaving a short body to be misread.
        length = hdrs.get("content-length")
        if method != "HEAD" and length and length.isdigit() and int(length) != len(body):
            raise NetError("%s %s: body truncated at %d of %s bytes" % (method, url, len(body), length))
        return Response(resp.status, hdrs, body)
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
    """-> (form name, expiry, span of the signature, span of the expiry),
    spans being (start, end) in the query; None when no form is readable
    (docs/protocol.md: such a URL is treated as non-expiring)."""
    query = urllib.parse.urlsplit(url).query
    for name, rx in EXPIRY_FORMS:
        m = rx.search(query)
        if m:
            return name, int(m.group(1)), m.span(2), m.span(1)
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


def dec_image(msg, field):
    """Image (v1.1): file_id 1, size 2 (enum, proto2 default DEFAULT = 0), width 3 and
    height 4 (sint32, None when absent); `field` says where it came from (9 or 17)."""
    return {"fid": msg.bytes(1, b""), "size": msg.int32(2, 0), "width": msg.sint32(3),
            "height": msg.sint32(4), "field": field}


def dec_album(buf):
    m = pb.Msg(buf)
    discs = [(d.sint32(1), [t.bytes(1) for t in d.repeated_msgs(3)]) for d in m.repeated_msgs(11)]
    images = [dec_image(i, 9) for i in m.repeated_msgs(9)]
    for group in m.repeated_msgs(17):
        images += [dec_image(i, 17) for i in group.repeated_msgs(1)]
    return {"gid": m.bytes(1), "name": m.string(2), "artists": dec_artists(m, 3), "discs": discs,
            "images": images}


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
