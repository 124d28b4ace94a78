#!/usr/bin/env python3
"""gen.py - generate a volume-collection-like document pair for the patch
benchmark.

Usage: gen.py N OUTDIR [SEED]

Writes OUTDIR/a-N.json (N entries in an array of objects, each with nested
labels and a list of layers), OUTDIR/b-N.json (a copy with ~1% of the
entries changed in one field, 0.5% removed and 0.5% new entries inserted in
the middle) and OUTDIR/meta-N.json with the counts and the minimal number
of operations (one per changed field, removed or inserted entry).
"""
import hashlib
import json
import random
import sys


def digest(rng):
    return "sha256:" + hashlib.sha256(rng.randbytes(16)).hexdigest()


def entry(rng, i):
    return {
        "name": "vol-%06d" % i,
        "path": "volumes/team-%d/vol-%06d" % (i % 37, i),
        "digest": digest(rng),
        "size": rng.randrange(1 << 20, 1 << 40),
        "files": rng.randrange(1, 5000),
        "labels": {
            "tier": rng.choice(["hot", "warm", "cold"]),
            "team": "team-%d" % (i % 37),
            "region": rng.choice(["eu-west", "us-east", "ap-south"]),
            "owner": {"group": "genomics", "contact": "ops@example.org"},
        },
        "layers": [{"digest": digest(rng), "size": rng.randrange(1, 1 << 30)}
                   for _ in range(4)],
        "updated": "2026-11-%02dT%02d:00:00Z" % (1 + i % 28, i % 24),
    }


def main():
    n = int(sys.argv[1])
    out = sys.argv[2]
    rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 42)
    a = {"kind": "VolumeCollection", "name": "bench",
         "entries": [entry(rng, i) for i in range(n)]}
    b = json.loads(json.dumps(a))
    picks = rng.sample(range(n), n // 100 + n // 200)
    changed, removed = picks[:n // 100], sorted(picks[n // 100:])
    for i in changed:
        e = b["entries"][i]
        if rng.random() < 0.5:
            e["size"] += 1
        else:
            e["labels"]["tier"] = "archive"
    for i in reversed(removed):
        del b["entries"][i]
    inserted = n // 200
    for k in range(inserted):
        pos = rng.randrange(len(b["entries"]) // 4, 3 * len(b["entries"]) // 4)
        b["entries"].insert(pos, entry(rng, n + k))
    meta = {"entries": n, "changed": len(changed), "removed": len(removed),
            "inserted": inserted,
            "minimal_ops": len(changed) + len(removed) + inserted}
    for name, doc in (("a", a), ("b", b), ("meta", meta)):
        with open("%s/%s-%d.json" % (out, name, n), "w") as f:
            json.dump(doc, f)


if __name__ == "__main__":
    main()
