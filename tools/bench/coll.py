#!/usr/bin/python3
"""coll.py: hashes and sets per core, ringkv-server against Debian's
redis-server in the same run, with the same client and flags.

Per core (ringkv 1 proactor; each server pinned to --server-cpu, redis-benchmark
to --client-cpu), each durability pairing (ringkv write / redis AOF everysec,
ringkv fsync / redis AOF always), -P 1 and -P 16, -c 50:
  HSET, SADD, SPOP  redis-benchmark's own tests (-t hset: HSET myhash
                    element:__rand_int__ VALUE; -t spop pops myset, refilled
                    by 200 k unmeasured SADDs before every run)
  HINCRBY           hincrby key:__rand_int__ counter 1
  HGET              hget key:__rand_int__ f3
  SISMEMBER         sismember set:__rand_int__ m3
  HGETALL           hgetall key:__rand_int__
over -r 100000 keys, each filled first with a 10-field hash key:N (f0..f9)
and a 10-member set set:N (m0..m9).  The reads run in the write pairing only
(durability changes nothing of a read).  Runs of the two servers are
interleaved in pairs as in resp.py (which this script imports); the ratio is
the median of the pair ratios.

--big: ringkv alone (1 proactor pinned, durability write, storage.cache_size
and storage.index_cache_size 64 MiB): a hash of 10 M fields (--big-fields)
and one of 100 k, both in one server; HGET of a random field and HSET of a
random existing field of each, -P 1 and -P 16, interleaved; the ratio is
big / small.  Also the server's resident memory after the runs, and the
index block misses per request.

    tools/bench/coll.py [--runs 3] [--requests 100000] [--pipeline-requests 1000000]
                        [--only write,fsync,big] [--tests SPOP,HSET] [--big-fields 10000000]
                        [--quick]

Prints Markdown tables.  Needs redis-server, redis-benchmark and redis-cli
(redis-tools) and a built build/ringkv-server.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import resp  # noqa: E402

KEYS = 100000
WRITE_TESTS = {
    "HSET": ["-t", "hset"],
    "SADD": ["-t", "sadd"],
    "SPOP": ["-t", "spop"],
    "HINCRBY": ["hincrby", "key:__rand_int__", "counter", "1"],
}
READ_TESTS = {
    "HGET": ["hget", "key:__rand_int__", "f3"],
    "SISMEMBER": ["sismember", "set:__rand_int__", "m3"],
    "HGETALL": ["hgetall", "key:__rand_int__"],
}


def resp_cmd(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def pipe(server, commands, what):
    """Sends the RESP commands (an iterable of bytes chunks) with redis-cli --pipe."""
    p = subprocess.Popen(["redis-cli", "-p", str(server.port), "--pipe"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for chunk in commands:
            p.stdin.write(chunk)
        p.stdin.close()
    except BrokenPipeError:
        pass
    out = p.stdout.read().decode(errors="replace")
    if p.wait() != 0 or "errors: 0" not in out:
        sys.exit(f"coll.py: filling {what} into {server.kind} failed: {out.strip()}")


def fill_collections(server, args):
    def chunks():
        for base in range(0, KEYS, 1000):
            buf = []
            for i in range(base, base + 1000):
                fields = [x for j in range(10) for x in (f"f{j}", f"value-{j:04d}")]
                buf.append(resp_cmd("HSET", f"key:{i:012d}", *fields))
                buf.append(resp_cmd("SADD", f"set:{i:012d}", *[f"m{j}" for j in range(10)]))
            yield b"".join(buf)
    pipe(server, chunks(), f"{KEYS} hashes and sets")


def run_test(server, test, pipeline, args):
    requests = args.pipeline_requests if pipeline > 1 else args.requests
    if test == "spop":
        resp.redis_benchmark(server, ["-t", "sadd"], 200000, 16, args)
        resp.settle([server])
    return resp.redis_benchmark(server, ALL_TESTS[test.upper()], requests, pipeline, args)


ALL_TESTS = {**WRITE_TESTS, **READ_TESTS}


def info_storage(server):
    out = subprocess.run(["redis-cli", "-p", str(server.port), "info", "storage"],
                         capture_output=True, text=True, timeout=60).stdout
    total = {}
    for line in out.splitlines():
        if line.startswith("shard_"):
            for kv in line.split(":", 1)[1].split(","):
                k, v = kv.split("=")
                total[k] = total.get(k, 0) + int(v)
    return total


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def per_core(args, work, only):
    def chosen(tests):
        return [t for t in tests if args.tests is None or t in args.tests]
    pairings = []
    if "write" in only:
        pairings.append(("write", "everysec", chosen(list(WRITE_TESTS) + list(READ_TESTS))))
    if "fsync" in only:
        pairings.append(("fsync", "always", chosen(list(WRITE_TESTS))))
    resp.print_table(resp.per_core(args, work, pairings, fill_collections, run_test))


def fill_hash(server, key, n):
    def chunks():
        for base in range(0, n, 100000):
            buf = []
            for start in range(base, min(base + 100000, n), 1000):
                fields = [x for i in range(start, min(start + 1000, n))
                          for x in (f"f:{i:012d}", f"v{i % 1000:07d}")]
                buf.append(resp_cmd("HSET", key, *fields))
            if base % 1000000 == 0:
                print(f"coll.py: {key}: {base} of {n} fields sent", file=sys.stderr, flush=True)
            yield b"".join(buf)
    pipe(server, chunks(), f"hash {key} of {n} fields")


def big(args, work):
    settings = ("storage.cache_size=64mb", "storage.index_cache_size=64mb")
    srv = resp.Server("ringkv", "write", args.server_cpu, 1, work, settings)
    try:
        t0 = time.time()
        fill_hash(srv, "small", 100000)
        fill_hash(srv, "big", args.big_fields)
        print(f"coll.py: filled in {time.time() - t0:.0f} s; RSS {rss_mb(srv.proc.pid):.0f} MB,"
              f" index {info_storage(srv).get('index_bytes', 0) / 2**20:.0f} MiB",
              file=sys.stderr, flush=True)
        rows = []
        for cmd in ("hget", "hset"):
            for pipeline in (1, 16):
                requests = args.pipeline_requests if pipeline > 1 else args.requests
                runs = {"big": [], "small": []}
                misses = {"big": [], "small": []}
                ratios = []
                for i in range(args.runs):
                    for key in (("big", "small") if i % 2 == 0 else ("small", "big")):
                        n = args.big_fields if key == "big" else 100000
                        tail = [cmd, key, "f:__rand_int__"] + (["v0000000"] if cmd == "hset"
                                                               else [])
                        resp.settle([srv])
                        before = info_storage(srv)
                        runs[key].append(resp.redis_benchmark(srv, tail, requests, pipeline,
                                                              args, keyspace=n))
                        after = info_storage(srv)
                        misses[key].append((after.get("index_block_misses", 0) -
                                            before.get("index_block_misses", 0)) / requests)
                    ratios.append(runs["big"][-1]["rps"] / runs["small"][-1]["rps"])
                    print(f"coll.py: {cmd.upper()} P{pipeline} big / small: pair {i + 1}/"
                          f"{args.runs}: {runs['big'][-1]['rps']:.0f} /"
                          f" {runs['small'][-1]['rps']:.0f} req/s = {ratios[-1]:.2f}",
                          file=sys.stderr, flush=True)
                rows.append((f"{cmd.upper()} P{pipeline}", resp.median_of(runs["big"]),
                             resp.median_of(runs["small"]), ratios,
                             statistics.median(misses["big"]), statistics.median(misses["small"])))
        rss = rss_mb(srv.proc.pid)
        print(f"| test | {args.big_fields}-field hash req/s | 100k-field hash req/s |"
              " ratio (pair ratios) | p99 ms big/small | CPU µs/req big/small |"
              " index block misses/req big/small |")
        print("|---|---|---|---|---|---|---|")
        for name, b, s, ratios, mb, ms in rows:
            print(f"| {name} | {b['rps']:.0f} | {s['rps']:.0f} |"
                  f" **{statistics.median(ratios):.2f}×** ({min(ratios):.2f}–{max(ratios):.2f})"
                  f" | {b['p99_ms']:.3f} / {s['p99_ms']:.3f}"
                  f" | {b['cpu_us_per_req']:.2f} / {s['cpu_us_per_req']:.2f}"
                  f" | {mb:.2f} / {ms:.2f} |")
        print(f"\nServer RSS after the runs: {rss:.0f} MB (caches 64 MiB + 64 MiB).")
    finally:
        srv.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    resp.common_args(ap, 3, 100000, 1000000, "bench-coll")
    ap.add_argument("--big-fields", type=int, default=10000000)
    ap.add_argument("--only", default="write,fsync,big",
                    help="comma-separated parts: write, fsync, big")
    ap.add_argument("--tests", default=None,
                    help="comma-separated tests of the per-core parts (default: all), e.g. SPOP")
    args = ap.parse_args()
    if args.tests is not None:
        args.tests = set(args.tests.split(","))
    args.keyspace, args.data_size = KEYS, 10
    only = set(args.only.split(","))
    if only - {"write", "fsync", "big"}:
        sys.exit("coll.py: --only takes write, fsync and big")
    work = resp.setup(args, "bench-coll", tools=("redis-cli",))
    if only & {"write", "fsync"}:
        per_core(args, work, only)
    if "big" in only:
        big(args, work)


if __name__ == "__main__":
    main()
