#!/usr/bin/python3
"""reclaim.py: the disk space of deleted and overwritten collections comes back.

One ringkv-server (1 proactor, durability write, the default config otherwise):

  1. one hash of --fields (1 M) fields is written, then DEL'd: the DEL's reply
     time, then the data directory's size (du), INFO storage's index_bytes,
     log_bytes, live_bytes and garbage_dropped every second until the garbage
     rows are all dropped (or --wait seconds).
  2. --keys (10 k) hashes of --elems (1 k) fields are written, then rewritten
     --rounds (5) times, each key by DEL + HSET of all its fields (so every
     round leaves a whole generation of elements behind): the same figures
     after each round, and after --wait seconds of idleness.

Prints Markdown tables.  Needs redis-cli, python3-redis (run it with
/usr/bin/python3) and a built build/ringkv-server.

    tools/bench/reclaim.py [--fields 1000000] [--keys 10000] [--elems 1000]
                           [--rounds 5] [--wait 120]
"""
import argparse
import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import coll  # noqa: E402
import resp  # noqa: E402


def du_mb(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass  # a file RocksDB or GC removed meanwhile
    return total / 2**20


def figures(srv):
    s = coll.info_storage(srv)
    data = os.path.join(srv.dir, "data")
    return {"du": du_mb(data), "index": s.get("index_bytes", 0) / 2**20,
            "log": s.get("log_bytes", 0) / 2**20, "live": s.get("live_bytes", 0) / 2**20,
            "dropped": s.get("garbage_dropped", 0), "gc": s.get("gc_segments_deleted", 0),
            "keys": s.get("keys", 0)}


def row(label, f, extra=""):
    return (f"| {label} | {f['du']:.0f} | {f['index']:.0f} | {f['log']:.0f} | {f['live']:.0f} |"
            f" {f['dropped']} | {f['gc']} |{extra}")


HEADER = ("| moment | data dir MiB (du) | index MiB | log MiB | live log MiB |"
          " garbage rows dropped | log segments deleted |")


def one_big_hash(srv, args):
    print(f"reclaim.py: writing a hash of {args.fields} fields", file=sys.stderr, flush=True)
    coll.fill_hash(srv, "big", args.fields)
    resp.settle([srv], quiet=1.0, limit=30)
    print(HEADER)
    print("|---|---|---|---|---|---|---|")
    before = figures(srv)
    print(row(f"hash of {args.fields} fields written", before))
    import redis  # python3-redis; only here, so that --help works without it
    c = redis.Redis(port=srv.port)
    c.ping()
    t0 = time.monotonic()
    reply = c.delete("big")
    dt = time.monotonic() - t0
    c.close()
    if reply != 1:
        sys.exit(f"reclaim.py: DEL big answered {reply!r}, expected 1")
    print(row(f"DEL answered in {dt * 1000:.1f} ms", figures(srv)))
    start = time.monotonic()
    while time.monotonic() - start < args.wait:
        time.sleep(1)
        f = figures(srv)
        if f["dropped"] - before["dropped"] >= args.fields:
            print(row(f"{time.monotonic() - start:.0f} s after the DEL: every element row"
                      f" dropped", f))
            return
    print(row(f"{args.wait} s after the DEL (not every row dropped yet)", figures(srv)))


def rewrite_rounds(srv, args):
    def chunks(first):
        for base in range(0, args.keys, 100):
            buf = []
            for k in range(base, min(base + 100, args.keys)):
                key = f"obj:{k:08d}"
                if not first:
                    buf.append(coll.resp_cmd("DEL", key))
                fields = [x for j in range(args.elems) for x in (f"field:{j:06d}", f"v{j:015d}")]
                buf.append(coll.resp_cmd("HSET", key, *fields))
            yield b"".join(buf)
    print()
    print(HEADER + " round time s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in range(args.rounds + 1):
        t0 = time.monotonic()
        coll.pipe(srv, chunks(r == 0), f"round {r}")
        dt = time.monotonic() - t0
        resp.settle([srv], quiet=1.0, limit=30)
        label = "first write" if r == 0 else f"rewrite {r}"
        print(row(f"{label}: {args.keys} x {args.elems}", figures(srv), f" {dt:.1f} |"),
              flush=True)
        print(f"reclaim.py: {label} done", file=sys.stderr, flush=True)
    time.sleep(args.wait)
    print(row(f"{args.wait} s idle", figures(srv), " |"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fields", type=int, default=1000000)
    ap.add_argument("--keys", type=int, default=10000)
    ap.add_argument("--elems", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--wait", type=int, default=120)
    ap.add_argument("--server", default=None)
    ap.add_argument("--workdir", default=None,
                    help="where the data directory goes (default: build/bench-reclaim)")
    args = ap.parse_args()
    if args.server is not None:
        resp.SERVER = os.path.abspath(args.server)
    if not os.access(resp.SERVER, os.X_OK):
        sys.exit(f"reclaim.py: {resp.SERVER} is missing: run make first (or pass --server)")
    work = args.workdir or os.path.join(resp.ROOT, "build", "bench-reclaim")
    os.makedirs(work, exist_ok=True)
    srv = resp.Server("ringkv", "write", None, 1, work)
    try:
        one_big_hash(srv, args)
        rewrite_rounds(srv, args)
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
