#!/usr/bin/python3
"""jp.py - the Python jsonpatch peer of the patch benchmark (Debian's
python3-jsonpatch, so run with /usr/bin/python3).

  jp.py bench A.json B.json RUNS   one JSON line of results
  jp.py once A.json B.json OUT     load, make_patch(), write the patch
"""
import json
import statistics
import sys
import time

import jsonpatch


def main():
    mode, a_path, b_path, arg = sys.argv[1:5]
    with open(a_path) as f:
        a = json.load(f)
    with open(b_path) as f:
        b = json.load(f)
    if mode == "once":
        with open(arg, "w") as f:
            f.write(jsonpatch.make_patch(a, b).to_string())
        return
    times = []
    for _ in range(int(arg)):
        t0 = time.perf_counter()
        patch = jsonpatch.make_patch(a, b)
        times.append((time.perf_counter() - t0) * 1000)
    ops = list(patch)
    try:
        reproduces = jsonpatch.apply_patch(a, ops) == b
    except Exception:
        reproduces = False
    print(json.dumps({
        "tool": "python jsonpatch", "runs": len(times),
        "diff_ms": statistics.median(times), "ops": len(ops),
        "patch_bytes": len(json.dumps(ops, separators=(",", ":")).encode()),
        "reproduces": reproduces}))


if __name__ == "__main__":
    main()
