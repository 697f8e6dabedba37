"""ETags across a change of the library (docs/protocol.md §8), for client_check.py.

One run saves what it saw (`--state-out FILE`: per control-plane path, the ETag and a hash of
the body); the library is changed (publish again, reload the origin); a second run
(`--state-in FILE`) compares: a strong ETag must change when its answer's bytes change, the
`/library` ETag whenever anything in the library changed, and an old ETag sent in
`If-None-Match` must get `304` only where the answer is still the same.
"""

import hashlib
import json
import time

CATALOGUE = ("/library", "/metadata/4/", "/playlist/")


def record(seen, path, resp):
    """Called by Checker.control for every answer; keeps the catalogue's 200s."""
    if resp.status == 200 and path.startswith(CATALOGUE):
        seen[path] = {"etag": resp.header("etag"), "sha": hashlib.sha256(resp.body).hexdigest()}


def save(checker, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(checker.seen, f, indent=1, sort_keys=True)


def compare(checker, path):
    r = checker.r
    with open(path, encoding="utf-8") as f:
        old = json.load(f)
    new = dict(checker.seen)
    common = sorted((set(old) & set(new)) - {"/library"})
    changed = [p for p in common if old[p]["sha"] != new[p]["sha"]]
    moved = sorted((set(old) ^ set(new)) - {"/library"})
    print("note change: %d answers compared, %d changed, %d only before or after"
          % (len(common), len(changed), len(moved)))
    for p in common:
        a, b = old[p]["etag"], new[p]["etag"]
        if a and b and p in changed:
            r.expect(a != b, "etag-change", "GET %s: new bytes, new ETag (%s -> %s)" % (p, a, b))
        elif a and b and a != b:
            r.note("GET %s: same bytes, new ETag (allowed, costs a transfer)" % p)
    lib_old, lib_new = old.get("/library", {}).get("etag"), new.get("/library", {}).get("etag")
    if lib_old and lib_new:
        if changed or moved:
            r.expect(lib_old != lib_new, "etag-change", "/library ETag changes when the library does "
                     "(%d answers changed, %d came or went)" % (len(changed), len(moved)))
        elif lib_old != lib_new:
            r.note("/library ETag changed although no answer seen did")
    for p in ["/library"] + common:
        tag = old.get(p, {}).get("etag")
        if not tag:
            continue
        same = old[p]["sha"] == new.get(p, {}).get("sha") and new[p]["etag"] == tag
        resp = checker.get(checker.origin + p, {"Authorization": "Bearer " + checker.token, "If-None-Match": tag})
        r.expect(resp.status == (304 if same else 200), "etag-change", "GET %s with the ETag of before -> %d "
                 "(want %d: the answer %s)" % (p, resp.status, 304 if same else 200,
                                                "is the same" if same else "changed"))
    # docs/protocol.md §8 does not say whether an album's ETag covers its tracks; a client that
    # revalidates only albums needs it to.
    for p in changed:
        if p.startswith("/metadata/4/track/"):
            owners = [a for a in checker.albums for _, gids in a["discs"] if p.rsplit("/", 1)[1] in [g.hex() for g in gids]]
            for a in owners:
                ap = "/metadata/4/album/" + a["gid"].hex()
                if ap in common and ap not in changed and old[ap]["etag"] == new[ap]["etag"]:
                    r.note("%s changed but its album's ETag did not (%s)" % (p, ap))


def wait_for_change(checker, path, seconds):
    """Polls /library until its ETag or body differs from the saved one (an origin picks a
    publish up by itself); a failure after `seconds`."""
    with open(path, encoding="utf-8") as f:
        before = json.load(f).get("/library", {})
    deadline = time.monotonic() + seconds
    while True:
        resp = checker.control("/library")
        now = checker.seen.get("/library", {})
        if resp.status == 200 and (now.get("sha"), now.get("etag")) != (before.get("sha"), before.get("etag")):
            return
        if time.monotonic() > deadline:
            checker.r.fail("etag-change", "/library unchanged %.0fs after the library changed" % seconds)
            return
        time.sleep(0.2)
