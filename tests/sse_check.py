#!/usr/bin/env python3
"""sse_check.py - reads syncd watch streams saved by curl (test_cluster.sh).

  sse_check.py last FILE             id of the last change event (0: none)
  sse_check.py reached SEQ FILE...   exit 0 when every FILE got up to SEQ
  sse_check.py same SEQ A B          exit 0 when A and B hold the change
                                     events 1..SEQ, contiguous, identical
A stream argument "F1+F2" is F1 followed by F2 (a resumed watcher).
"""
import sys

CHANGES = ("create", "update", "delete")


def events(arg):
    """Complete change events of the streams in arg, as (id, op, data)."""
    out = []
    for path in arg.split("+"):
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for block in text.split("\n\n")[:-1]:
            fields = {}
            for line in block.split("\n"):
                key, _, value = line.partition(": ")
                fields[key] = value
            if fields.get("event") in CHANGES and "id" in fields:
                out.append((int(fields["id"]), fields["event"], fields.get("data")))
    return out


def main():
    cmd = sys.argv[1]
    if cmd == "last":
        evs = events(sys.argv[2])
        print(evs[-1][0] if evs else 0)
        return 0
    seq = int(sys.argv[2])
    if cmd == "reached":
        return 0 if all(e and e[-1][0] >= seq
                        for e in map(events, sys.argv[3:])) else 1
    a, b = events(sys.argv[3]), events(sys.argv[4])
    want = list(range(1, seq + 1))
    for name, evs in ((sys.argv[3], a), (sys.argv[4], b)):
        ids = [e[0] for e in evs]
        if ids != want:
            print(f"{name}: ids are not 1..{seq}: {len(ids)} events, "
                  f"first mismatch at {next((i for i, (x, y) in enumerate(zip(ids, want)) if x != y), len(ids))}",
                  file=sys.stderr)
            return 1
    if a != b:
        print("streams differ in content", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
