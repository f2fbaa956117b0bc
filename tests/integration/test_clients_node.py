#!/usr/bin/python3
"""test_clients_node: Node.js clients' transactions — ioredis multi().exec() (replies, a
run-time error inside EXEC, WATCH with a concurrent writer giving null, EXECABORT after an
unknown command) and node-redis multi().exec() (typed replies, WatchError) — run by
tests/integration/node/txn.js against ringkv and against redis-server 7.0; both must print
the same.  The clients come from the npm registry (npm install into the build directory,
once); without node, npm or the registry the test is skipped, loudly."""

import json
import os
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringkv_testlib as tl  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGES = ["ioredis@5", "redis@4"]


def node_modules():
    """The directory holding ioredis and redis (installed on first use), or None."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return None, "node or npm is not installed (apt-get install nodejs npm)"
    # one install for every build of the tree (the sanitizer passes run this test too)
    prefix = os.path.join(os.path.dirname(os.path.dirname(HERE)), "build", "node-clients")
    mods = os.path.join(prefix, "node_modules")
    if not (os.path.isdir(os.path.join(mods, "ioredis")) and
            os.path.isdir(os.path.join(mods, "redis"))):
        os.makedirs(prefix, exist_ok=True)
        try:
            r = subprocess.run(["npm", "install", "--prefix", prefix, "--no-audit", "--no-fund",
                                "--silent", "--fetch-timeout=20000", "--fetch-retries=1"] +
                               PACKAGES, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            return None, f"npm install {' '.join(PACKAGES)} took over 120 s (no registry?)"
        if r.returncode != 0:
            return None, f"npm install {' '.join(PACKAGES)} failed: {r.stderr.strip()[-300:]}"
    return mods, None


def run_js(mods, port):
    env = dict(os.environ, NODE_PATH=mods)
    r = subprocess.run(["node", os.path.join(HERE, "node", "txn.js"), str(port)],
                       capture_output=True, text=True, timeout=120, env=env)
    tl.check(r.returncode == 0, f"txn.js against port {port}: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout) if r.returncode == 0 else None


def main():
    mods, why = node_modules()
    if mods is None:
        bar = "!" * 78
        print(f"{bar}\n!!! SKIPPED: {why}\n{bar}")
        sys.exit(77)
    got = {}
    for target in ("ringkv", "redis"):
        with tl.Server(target=target, databases=16) as s:
            got[target] = run_js(mods, s.port)
    a, b = got["ringkv"], got["redis"]
    if a is not None and b is not None:
        for k in sorted(set(a) | set(b)):
            tl.check(a.get(k) == b.get(k), f"{k}: ringkv {a.get(k)!r}, redis {b.get(k)!r}")
        print(json.dumps(a))
    failures = len(tl.CHECKER.failures)
    print(f"test_clients_node: {len(a or {})} results compared, {failures} failed checks")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
