#!/usr/bin/env python3
"""merkle_hash.py - a second, independent implementation of the syncd
content hash, written from doc/HASH.md alone.

Usage: merkle_hash.py FILE... ('-' for stdin); prints one hash per file.
tests/test_hash.sh checks that it agrees with `syncctl hash` and the
daemon's ETag, which keeps doc/HASH.md exact.
"""
import hashlib
import json
import struct
import sys

FLAT_MAX = 64
CHUNK_MIN = 16
CHUNK_MAX = 256
CHUNK_MASK = 0x1F


def h(data):
    return hashlib.sha256(data).digest()


def real_text(d):
    for prec in range(1, 18):
        text = "%.*g" % (prec, d)
        if float(text) == d:
            break
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def chunk_end(items, start):
    for i in range(start, len(items)):
        size = i - start + 1
        if size == CHUNK_MAX or (size >= CHUNK_MIN and
                                 items[i][31] & CHUNK_MASK == 0):
            return i + 1
    return len(items)


def container(tag, items):
    while len(items) > FLAT_MAX:
        chunks, s = [], 0
        while s < len(items):
            e = chunk_end(items, s)
            chunks.append(h(b"C" + b"".join(items[s:e])))
            s = e
        items = chunks
    return h(tag + h(b"L" + b"".join(items)))


def value_hash(v):
    if v is None:
        return h(b"n")
    if v is True:
        return h(b"t")
    if v is False:
        return h(b"f")
    if isinstance(v, int):
        return h(b"i" + str(v).encode())
    if isinstance(v, float):
        return h(b"r" + real_text(v).encode())
    if isinstance(v, str):
        return h(b"s" + v.encode("utf-8", "surrogatepass"))
    if isinstance(v, list):
        return container(b"a", [value_hash(e) for e in v])
    members = sorted((k.encode("utf-8", "surrogatepass"), e)
                     for k, e in v.items())
    return container(b"o", [h(b"m" + struct.pack(">Q", len(k)) + k +
                              value_hash(e)) for k, e in members])


def main():
    for name in sys.argv[1:]:
        f = sys.stdin if name == "-" else open(name, encoding="utf-8")
        with f:
            print(value_hash(json.load(f)).hex())


if __name__ == "__main__":
    main()
