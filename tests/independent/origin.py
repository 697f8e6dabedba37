#!/usr/bin/env python3
"""Independent trackfs origin, written from docs/protocol.md only (stdlib + openssl).

The Rust test suite runs the trackfs client against this server (and
client_check.py against the Rust origin) so that client and origin are each
checked against the contract instead of against each other. It is deliberately
less friendly than the Rust origin: it sends unknown protobuf fields, unknown
enum values, duplicate formats, fields out of order, all four URL-expiry forms
and, on request, seeded CDN faults.

Usage: see --help and README.md in this directory.
"""

import argparse
import base64
import hashlib
import hmac
import http.server
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True     # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# Catalogue, encryption and protobuf encoding live next to this file.
from origin_catalogue import enc_resolve  # noqa: E402
from origin_library import Library  # noqa: E402

DEFAULT_USER = "trackfs"
# A colon (Basic auth splits on the first one only), a quote and a '?', all
# ASCII so every Basic-auth implementation agrees on the bytes.
DEFAULT_PASSWORD = 'pa:ss"w0rd?'


ID_FID = re.compile(r"[0-9a-f]{40}")
ID_GID = re.compile(r"[0-9a-f]{32}")
ID_B62 = re.compile(r"[0-9a-zA-Z]{22}")


def etag_matches(header, tag):
    """If-None-Match (RFC 9110 §13.1.2): '*' or a list of tags, compared weakly."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    strip = lambda t: t.strip()[2:] if t.strip().startswith("W/") else t.strip()
    return strip(tag) in [strip(t) for t in header.split(",")]


# ================================================================ URL signing

class Signer:
    """Signs CDN URLs with an HMAC over (file id, expiry), in the four expiry
    forms docs/protocol.md lists; verification accepts any of them."""

    FORMS = ("plain", "verify", "akamai", "expires")

    def __init__(self, secret, ttl):
        self.secret, self.ttl = secret, ttl

    def _sig(self, fid_hex, exp):
        return hmac.new(self.secret, ("%s/%d" % (fid_hex, exp)).encode(), hashlib.sha256).hexdigest()[:40]

    def query(self, fid_hex, form):
        exp = int(time.time()) + self.ttl
        sig = self._sig(fid_hex, exp)
        return {"plain": "%d_%s" % (exp, sig),
                "verify": "verify=%d-%s" % (exp, sig),
                "akamai": "__token__=exp=%d~hmac=%s" % (exp, sig),
                "expires": "Expires=%d~Key-Pair-Id=trackfs~Signature=%s" % (exp, sig)}[form]

    @staticmethod
    def parse(query):
        """-> (expiry, signature) or None."""
        m = re.fullmatch(r"(\d+)_([0-9a-f]+)", query)
        if m:
            return int(m.group(1)), m.group(2)
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        if m := re.fullmatch(r"(\d+)-([0-9a-f]+)", params.get("verify", "")):
            return int(m.group(1)), m.group(2)
        if m := re.fullmatch(r"exp=(\d+)~hmac=([0-9a-f]+)", params.get("__token__", "")):
            return int(m.group(1)), m.group(2)
        if "Expires" in params:
            parts = params["Expires"].split("~")
            kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
            if parts[0].isdigit() and "Signature" in kv:
                return int(parts[0]), kv["Signature"]
        return None

    def verify(self, fid_hex, query):
        """True when the signature matches and has not expired."""
        parsed = self.parse(query)
        if not parsed:
            return False
        exp, sig = parsed
        return hmac.compare_digest(sig, self._sig(fid_hex, exp)) and time.time() <= exp


# ================================================================ faults

class Faults:
    """Seeded choice of a fault (or None) for each CDN request."""

    KINDS = ("500", "503", "reset", "truncate", "stall", "no-range")

    def __init__(self, rate, kinds, seed):
        bad = [k for k in kinds if k not in self.KINDS]
        if bad:
            raise SystemExit("origin.py: unknown fault kind(s): %s" % ",".join(bad))
        self.rate, self.kinds = rate, kinds
        self.rng = random.Random(seed)
        self.lock = threading.Lock()

    def pick(self):
        with self.lock:
            if self.rate <= 0 or not self.kinds or self.rng.random() >= self.rate:
                return None
            return self.rng.choice(self.kinds)

    def cut(self, length):
        """Where a faulty body stops (always before its end when non-empty)."""
        with self.lock:
            return self.rng.randrange(length) if length > 0 else 0


def parse_range(header, total):
    """RFC 9110 single byte range -> None (ignore: serve 200), "unsat" (416)
    or (first, last) clamped to the file."""
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not m or not (m.group(1) or m.group(2)):
        return None                         # invalid or multi-range: ignore
    first, last = m.group(1), m.group(2)
    if not first:                           # suffix: the last n bytes
        n = int(last)
        return "unsat" if n == 0 or total == 0 else (max(0, total - n), total - 1)
    first = int(first)
    if last and int(last) < first:
        return None                         # invalid: ignore
    if first >= total:
        return "unsat"
    return first, min(int(last), total - 1) if last else total - 1


# ================================================================ HTTP

class Origin:
    """Everything the request handler needs, shared by all threads."""

    def __init__(self, args, library):
        self.args = args
        self.library = library
        self.snap = library.load()          # replaced whole on every reload
        self.files = library.files          # every file id ever served (grows only)
        self.signer = Signer(secrets.token_bytes(32), args.url_ttl)
        self.faults = Faults(args.fault_rate, args.fault_kinds, args.seed)
        self.tokens = {}                    # access token -> expiry (unix s)
        self.lock = threading.Lock()
        self.resolves = 0                   # rotates signature forms
        self.dead_port = None               # a bound, never-listening socket

    def new_token(self):
        token = secrets.token_urlsafe(24)
        with self.lock:
            now = time.time()
            self.tokens = {k: v for k, v in self.tokens.items() if v > now}
            self.tokens[token] = now + self.args.token_ttl
        return token

    def token_valid(self, token):
        with self.lock:
            exp = self.tokens.get(token)
        return exp is not None and time.time() < exp

    def next_resolve(self):
        with self.lock:
            self.resolves += 1
            return self.resolves


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"          # keep-alive, as a CDN would
    server_version = "trackfs-independent-origin"
    timeout = 60                           # idle keep-alive connections die
    # Headers and body go out in separate writes; with Nagle on, the body
    # waits for a delayed ACK (~40 ms), which would swamp --latency-ms.
    disable_nagle_algorithm = True
    origin = None                          # set in main()

    # ---------------------------------------------------------- plumbing

    def log_message(self, fmt, *args):
        if self.origin.args.verbose:
            sys.stderr.write("origin.py: %s %s\n" % (self.address_string(), fmt % args))

    def reply(self, status, body=b"", ctype="text/plain; charset=utf-8", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def not_found(self):
        self.reply(404, b"not found\n")

    def dispatch(self, routes):
        if self.origin.args.latency_ms:
            time.sleep(self.origin.args.latency_ms / 1000)
        url = urllib.parse.urlsplit(self.path)
        for pattern, fn in routes:
            m = re.fullmatch(pattern, url.path)
            if m:
                return fn(*m.groups(), query=url.query)
        return self.not_found()

    def do_GET(self):
        self.dispatch([
            (r"/library", self.get_library),
            (r"/metadata/4/album/([^/]*)", self.get_album),
            (r"/metadata/4/track/([^/]*)", self.get_track),
            (r"/storage-resolve/files/audio/interactive/([^/]*)", self.get_resolve),
            (r"/audiokey/([^/]*)", self.get_key),
            (r"/head/([^/]*)", self.get_head),
            (r"/image/([^/]*)", self.get_image),
            (r"/playlist/v2/user/([^/]*)/rootlist", self.get_rootlist),
            (r"/playlist/v2/playlist/([^/]*)", self.get_playlist),
            (r"/audio/([^/]*)", self.get_cdn),
            (r"/keymaster/token", lambda query: self.reply(405, b"use POST\n", headers=[("Allow", "POST")])),
        ])

    do_HEAD = do_GET

    def do_POST(self):
        # Drain any body so the keep-alive connection stays in sync.
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.dispatch([(r"/keymaster/token", self.post_token)])

    # ---------------------------------------------------------- control plane

    def post_token(self, query):
        if not self.basic_auth_ok():
            return self.reply(401, b"bad credentials\n", headers=[("WWW-Authenticate", 'Basic realm="trackfs"')])
        body = json.dumps({"accessToken": self.origin.new_token(), "tokenType": "Bearer",
                           "expiresIn": self.origin.args.token_ttl}).encode()
        self.reply(200, body, "application/json")

    def basic_auth_ok(self):
        scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except ValueError:
            return False
        user, sep, password = decoded.partition(":")   # password may hold ':'
        args = self.origin.args
        return bool(sep) and hmac.compare_digest(user.encode(), args.user.encode()) \
            and hmac.compare_digest(password.encode(), args.password.encode())

    def bearer_ok(self):
        """Sends 401 and returns False unless a live Bearer token is present."""
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and self.origin.token_valid(token.strip()):
            return True
        self.reply(401, b"missing, wrong or expired token\n", headers=[("WWW-Authenticate", "Bearer")])
        return False

    def proto(self, body):
        self.reply(200, body, "application/x-protobuf")

    def answer(self, path):
        """A control-plane answer of the current snapshot, with its ETag and 304 when the
        client already has it (--etags); 404 when the snapshot has no such path."""
        snap = self.origin.snap
        body = snap.bodies.get(path)
        if body is None:
            return self.not_found()
        if not self.origin.args.etags:
            return self.proto(body)
        tag = snap.etags[path]
        if etag_matches(self.headers.get("If-None-Match"), tag):
            self.send_response(304)
            self.send_header("ETag", tag)
            self.end_headers()
            return None
        return self.reply(200, body, "application/x-protobuf", headers=[("ETag", tag)])

    def get_library(self, query):
        if self.bearer_ok():
            self.answer("/library")

    def get_album(self, gid, query):
        if self.bearer_ok():
            self.answer("/metadata/4/album/" + gid) if ID_GID.fullmatch(gid) else self.not_found()

    def get_track(self, gid, query):
        if self.bearer_ok():
            self.answer("/metadata/4/track/" + gid) if ID_GID.fullmatch(gid) else self.not_found()

    def get_rootlist(self, user, query):
        # Only the credentials' own user has a rootlist; 404 = no playlists (also in v1).
        if self.bearer_ok():
            name = urllib.parse.unquote(user)
            ok = name == self.origin.args.user
            self.answer("/playlist/v2/user/%s/rootlist" % name) if ok else self.not_found()

    def get_playlist(self, pid, query):
        if self.bearer_ok():
            self.answer("/playlist/v2/playlist/" + pid) if ID_B62.fullmatch(pid) else self.not_found()

    def get_image(self, fid, query):
        # Unauthenticated and unencrypted, like a CDN for pictures (docs/protocol.md §6).
        image = self.origin.library.images.get(fid) if ID_FID.fullmatch(fid) else None
        if not image:
            return self.not_found()
        self.reply(200, image[0], image[1])

    def lookup_file(self, fid):
        return self.origin.files.get(fid) if ID_FID.fullmatch(fid) else None

    def get_resolve(self, fid, query):
        if not self.bearer_ok():
            return
        if not self.lookup_file(fid):
            return self.not_found()
        n = self.origin.next_resolve()
        forms = Signer.FORMS
        urls = [self.cdn_base() + "/audio/%s?%s" % (fid, self.origin.signer.query(fid, forms[(n + k) % 4]))
                for k in range(2)]
        if self.origin.dead_port:
            urls.insert(0, "http://127.0.0.1:%d/audio/%s?%s" % (
                self.origin.dead_port, fid, self.origin.signer.query(fid, "plain")))
        self.proto(enc_resolve(urls, bytes.fromhex(fid), explicit_result=n % 2 == 0))

    def cdn_base(self):
        if self.origin.args.cdn_base:
            return self.origin.args.cdn_base.rstrip("/")
        host = self.headers.get("Host") or "127.0.0.1:%d" % self.server.server_address[1]
        return "http://" + host

    def get_key(self, fid, query):
        if self.bearer_ok():
            entry = self.lookup_file(fid)
            if entry:
                self.reply(200, entry.key, "application/octet-stream")
            else:
                self.not_found()

    def get_head(self, fid, query):
        entry = self.lookup_file(fid)
        if not entry or self.origin.args.no_head_files:
            return self.not_found()
        # "stored": the stored plaintext's first bytes (an Ogg file's hidden header first);
        # "mounted": the file as a player sees it (docs/protocol.md does not say which).
        skip = len(entry.header) if self.origin.args.head_layout == "mounted" else 0
        head = entry.prefix[skip:skip + entry.head_len]
        self.reply(200, head, "application/octet-stream")

    # ---------------------------------------------------------- CDN

    def get_cdn(self, fid, query):
        entry = self.lookup_file(fid)
        if not entry:
            return self.not_found()
        if not self.origin.signer.verify(fid, query):
            return self.reply(403, b"expired or bad signature\n")
        fault = self.origin.faults.pick()
        if fault in ("500", "503"):
            return self.reply(int(fault), b"injected fault\n", headers=[("Retry-After", "0")])
        rng = None if fault == "no-range" else parse_range(self.headers.get("Range") or "", entry.size)
        if rng == "unsat":
            return self.reply(416, b"range not satisfiable\n", headers=[("Content-Range", "bytes */%d" % entry.size)])
        first, last = rng if rng else (0, entry.size - 1)
        self.send_response(206 if rng else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(last - first + 1))
        self.send_header("Accept-Ranges", "bytes")
        if rng:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (first, last, entry.size))
        self.end_headers()
        if self.command != "HEAD":
            self.send_file_range(entry.cipher_path, first, last - first + 1, fault)

    def send_file_range(self, path, offset, length, fault):
        with open(path, "rb") as f:
            if fault not in ("reset", "truncate", "stall"):
                self.connection.sendfile(f, offset, length)   # zero-copy, fast
                return
            cut = self.origin.faults.cut(length)
            self.connection.sendfile(f, offset, cut)
            if fault == "stall":
                time.sleep(self.origin.args.stall_ms / 1000)
                self.connection.sendfile(f, offset + cut, length - cut)
                return
        self.close_connection = True
        if fault == "reset":   # SO_LINGER 0: close() sends RST, not FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.close()


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True                  # never wait for stalled clients
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128               # default 5 drops bursts of connects

    def handle_error(self, request, client_address):
        # Clients hanging up mid-body are routine (faults, cancelled reads).
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            super().handle_error(request, client_address)


# ================================================================ main

def parse_args(argv):
    p = argparse.ArgumentParser(description="Independent trackfs origin (docs/protocol.md), stdlib + openssl.")
    p.add_argument("--source", required=True, help="music folder: Artist/Album/NN Title.ext")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0 = any free port)")
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("--manifest", help="write a JSON manifest (credentials, tracks, keys) here")
    p.add_argument("--user", default=DEFAULT_USER)
    p.add_argument("--password", default=DEFAULT_PASSWORD)
    p.add_argument("--url-ttl", type=int, default=300, help="seconds a signed CDN URL stays valid")
    p.add_argument("--token-ttl", type=int, default=3600, help="seconds an access token stays valid")
    p.add_argument("--latency-ms", type=float, default=0, help="added before every response")
    p.add_argument("--fault-rate", type=float, default=0.0, help="probability of a fault per CDN request")
    p.add_argument("--fault-kinds", default="500,503,reset,truncate,stall,no-range",
                   type=lambda s: [k for k in s.split(",") if k])
    p.add_argument("--stall-ms", type=float, default=2000)
    p.add_argument("--seed", type=int, default=None, help="seed for ids, keys and faults (default: random)")
    p.add_argument("--dead-first-cdn", action="store_true", help="first cdnurl points at a closed port")
    p.add_argument("--no-head-files", action="store_true", help="answer 404 on every /head/")
    p.add_argument("--head-layout", choices=["stored", "mounted"], default="stored",
                   help="head files start at the stored plaintext (Ogg header first) or the mounted file")
    p.add_argument("--ogg-header", choices=["opaque", "page"], default="opaque",
                   help="the 167 bytes before an Ogg file's audio: random, or an Ogg page")
    p.add_argument("--cdn-dir", help="write ciphertext to DIR/audio/<file id> (kept on exit)")
    p.add_argument("--cdn-base", help="storage-resolve returns <cdn-base>/audio/<file id>?<sig>")
    p.add_argument("--protocol", choices=["v1", "v1.1"], default="v1",
                   help="v1.1 adds covers, /image/, playlists and a sample album (docs/protocol.md §6-§7)")
    p.add_argument("--cover-field", choices=["group", "cover", "both", "alternate"], default="group",
                   help="album images in Album.cover_group (17), Album.cover (9), both, or alternating")
    p.add_argument("--etags", action="store_true",
                   help="strong ETags on /library, /metadata/4/..., /playlist/... and 304 on If-None-Match")
    p.add_argument("--catalogue", help="JSON description (exclude, replace, covers, playlists); "
                   "re-read with a rescan of --source on SIGHUP or when it changes")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = secrets.randbits(32)
    if bool(args.cdn_base) and not args.cdn_dir:
        p.error("--cdn-base needs --cdn-dir (the folder the external CDN serves)")
    return args


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def reserve_dead_port():
    """A bound socket that never listens: connecting to it is refused, and
    holding it keeps the port from being reused while we run."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


def control_stamp(path):
    """What changes when the catalogue description is rewritten (or replaced)."""
    try:
        st = os.stat(path)
        return st.st_mtime_ns, st.st_size, st.st_ino
    except OSError:
        return None


def main(argv=None):
    args = parse_args(argv)
    rng = random.Random(args.seed)
    work_dir = args.cdn_dir or tempfile.mkdtemp(prefix="trackfs-origin-")
    stop, reload = threading.Event(), threading.Event()
    library = Library(args, work_dir, rng)
    try:
        try:
            origin = Origin(args, library)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit("origin.py: %s" % e)
        dead = reserve_dead_port() if args.dead_first_cdn else None
        origin.dead_port = dead.getsockname()[1] if dead else None
        Handler.origin = origin
        host, _, port = args.listen.rpartition(":")
        server = Server((host or "127.0.0.1", int(port)), Handler)
        bound = server.server_address[1]

        def write_manifest(error=None):
            if args.manifest:
                doc = library.manifest(origin.snap, bound)
                doc["reload_error"] = error
                write_atomic(args.manifest, json.dumps(doc, indent=2, ensure_ascii=False))

        write_manifest()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        signal.signal(signal.SIGHUP, lambda *_: reload.set())
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        thread.start()
        if args.port_file:                 # last: readers take it as "ready"
            write_atomic(args.port_file, "%d\n" % bound)
        snap = origin.snap
        sys.stderr.write("origin.py: %d tracks in %d albums, %d playlists, protocol %s, listening on %s:%d (seed %d)\n"
                         % (len(snap.tracks), len(snap.albums), len(snap.playlists), args.protocol,
                            host or "127.0.0.1", bound, args.seed))
        stamp = control_stamp(args.catalogue) if args.catalogue else None
        while not stop.wait(0.2):
            if args.catalogue and control_stamp(args.catalogue) != stamp:
                stamp = control_stamp(args.catalogue)
                reload.set()
            if not reload.is_set():
                continue
            reload.clear()
            try:
                origin.snap = library.load()   # one assignment: clients see all of it or none
                error = None
                sys.stderr.write("origin.py: reloaded (generation %d): %d tracks in %d albums, %d playlists\n"
                                 % (library.generation, len(origin.snap.tracks), len(origin.snap.albums),
                                    len(origin.snap.playlists)))
            except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
                library.generation += 1        # so a waiting test sees the failed attempt
                error = "%s: %s" % (type(e).__name__, e)
                sys.stderr.write("origin.py: reload failed, still serving the previous library: %s\n" % error)
            write_manifest(error)
        server.shutdown()
        server.server_close()
    finally:
        library.cleanup()
        if not args.cdn_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
