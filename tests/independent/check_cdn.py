"""The CDN side of client_check.py (docs/protocol.md §4-§5): a whole file fetched in ranges
from the first cdnurl that works, every Range form and its edge cases (206 with the exact
Content-Range, 416 past the end) on a file whose bytes are known, and 403 for expired,
extended, tampered and unsigned URLs.

Kept apart from the catalogue walk so that each file stays readable; like the rest of
tests/independent it is written from docs/protocol.md alone and imports no trackfs code.
"""

import re
import time
import urllib.parse

from check_support import NetError, ctr_crypt, parse_expiry, with_query

CHUNK = 1 << 20


class Cdn:
    def __init__(self, checker):
        self.c, self.r, self.args = checker, checker.r, checker.args
        self.signed_forms = set()   # expiry forms already probed for 403s

    def ranged(self, url, spec):
        return self.c.get(url, {"Range": "bytes=" + spec})

    def check_206(self, resp, first, last, total, what):
        """206 with the exact Content-Range and body length; -> bool."""
        want = "bytes %d-%d/%d" % (first, last, total) if total is not None else None
        got = resp.header("content-range")
        ok = resp.status == 206 and (want is None or got == want) and len(resp.body) == last - first + 1
        return self.r.expect(ok, "cdn-range", "%s -> %d, Content-Range %r, %d body bytes (want 206, %r, %d)"
                             % (what, resp.status, got, len(resp.body), want, last - first + 1))

    def download(self, fid, urls):
        """Whole ciphertext in CHUNK ranges from the first cdnurl that works,
        re-resolving once on 403/404/410. -> (url, ciphertext) or None."""
        url = self.first_working_url(fid, urls)
        if not url:
            return None
        parts, total, pos, renewed = [], None, 0, False
        while total is None or pos < total:
            resp = self.ranged(url, "%d-%d" % (pos, pos + CHUNK - 1))
            if resp.status in (403, 404, 410) and not renewed:
                renewed, url = True, self.first_working_url(fid, self.c.resolve(fid) or [])
                if not url:
                    return None
                continue
            m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", resp.header("content-range") or "")
            total = int(m.group(3)) if m else total
            if total is None:
                return self.r.fail("cdn-range", "GET %s bytes=%d-%d -> %d without a readable Content-Range (%r)"
                                   % (fid, pos, pos + CHUNK - 1, resp.status, resp.header("content-range")))
            if not self.check_206(resp, pos, min(pos + CHUNK, total) - 1, total,
                                  "GET %s bytes=%d-%d" % (fid, pos, pos + CHUNK - 1)):
                return None
            parts.append(resp.body)
            pos += len(resp.body)
        self.r.ok("cdn-download", "%s: %d bytes" % (fid, total))
        return url, b"".join(parts)

    def first_working_url(self, fid, urls):
        for i, url in enumerate(urls):
            try:
                resp = self.ranged(url, "0-0")
            except NetError as e:
                self.r.note("%s: cdnurl #%d unusable (%s); trying the next" % (fid, i, e))
                continue
            if resp.status == 206:
                return url
            self.r.note("%s: cdnurl #%d answered %d; trying the next" % (fid, i, resp.status))
        self.r.fail("cdn", "%s: no cdnurl answers bytes=0-0 with 206 (%d urls)" % (fid, len(urls)))
        return None

    def check_ranges(self, url, cipher, key, plain):
        """Range forms and edge cases on a file whose bytes we already know."""
        total = len(cipher)
        a = min(total - 1, 13 + total // 3)                 # deliberately unaligned
        cases = [("%d-%d" % (a, min(total - 1, a + 4099)), a, min(total - 1, a + 4099)),
                 ("0-0", 0, 0), ("%d-%d" % (total - 1, total - 1), total - 1, total - 1),
                 ("%d-" % (total // 2 + 5), total // 2 + 5, total - 1),
                 ("-%d" % min(1000, total), total - min(1000, total), total - 1),
                 ("-%d" % (total + 100), 0, total - 1),
                 ("%d-%d" % (max(0, total - 5), total + 100), max(0, total - 5), total - 1)]
        for spec, first, last in cases:
            if first > last or first >= total:
                continue
            what = "bytes=%s of %d" % (spec, total)
            resp = self.ranged(url, spec)
            if self.check_206(resp, first, last, total, what):
                self.r.expect(resp.body == cipher[first:last + 1], "cdn-range", what + ": same ciphertext")
                self.r.expect(ctr_crypt(key, first, resp.body) == plain[first:last + 1], "decrypt",
                              what + ": decrypts at its offset to the same plaintext")
        for spec in ("%d-" % total, "%d-%d" % (total + 1000, total + 2000)):
            resp = self.ranged(url, spec)
            self.r.expect(resp.status == 416 and resp.header("content-range") == "bytes */%d" % total,
                          "cdn-416", "bytes=%s of %d -> %d, Content-Range %r (want 416, 'bytes */%d')"
                          % (spec, total, resp.status, resp.header("content-range"), total))

    def check_signatures(self, url):
        """403 on expired, extended, tampered and unsigned URLs, once per
        expiry form the origin uses."""
        self.c.sample.setdefault("url", url)
        parsed = parse_expiry(url)
        if parsed is None:
            if "unreadable" not in self.signed_forms:
                self.signed_forms.add("unreadable")
                self.r.note("cdnurl expiry form not readable, treated as non-expiring: %s" % url)
            return
        form, exp, (s, e), exp_span = parsed
        self.r.expect(exp > time.time(), "url-expiry", "%s: expiry %d (%s) is in the future" % (url, exp, form))
        if self.args.unsigned_cdn or form in self.signed_forms:
            return
        self.signed_forms.add(form)
        query = urllib.parse.urlsplit(url).query
        sig = query[s:e]
        flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
        cases = [("expired", self.replace(query, exp_span, str(int(time.time()) - 60))),
                 ("expiry extended", self.replace(query, exp_span, str(exp + 86400))),
                 ("signature tampered", self.replace(query, (s, e), flipped)),
                 ("no signature", "")]
        for label, q in cases:
            bad = with_query(url, q)
            self.c.status_is("cdn-403", self.c.try_get(bad, {"Range": "bytes=0-15"}), 403,
                           "%s URL (%s form) %s" % (label, form, bad))

    @staticmethod
    def replace(s, span, text):
        return s[:span[0]] + text + s[span[1]:]
