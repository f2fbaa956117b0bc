#!/usr/bin/python3
"""txn.py: transactions per core, ringkv-server against Debian's redis-server
in the same run, with the same client and flags.

Per core (ringkv 1 proactor; each server pinned to --server-cpu, the client to
--client-cpu), each durability pairing (ringkv write / redis AOF everysec,
ringkv fsync / redis AOF always), -P 1 and -P 16, 50 connections:
  MULTI 2 SET    MULTI; SET key:R v; SET key:R v; EXEC      (ringkv-bench resp)
  MULTI 10 INCR  MULTI; INCR counter:R (x10); EXEC           (ringkv-bench resp)
  MSET 10        redis-benchmark's own MSET test (10 keys)
  EVALSHA GET+SET  EVALSHA of a script doing redis.call GET and SET of its one
                 declared key: EVALSHA <sha> 1 key:R v  (ringkv-bench resp;
                 SCRIPT LOAD first, on each server)
  FCALL GET+SET  the same as a function: FCALL getset 1 key:R v (FUNCTION
                 LOAD first, on each server)
R is a random number below 100000 drawn per key, v 100 bytes.  A unit (one
MULTI ... EXEC) counts as one request; the CPU time per request is the
server's per unit.  Runs of the two servers are interleaved in pairs as in
resp.py (which this script imports); the ratio is the median of the pair
ratios.

--only cross: ringkv alone with 2 proactors (2 shards, unpinned: they share
the 2 CPUs with the client), durability write: MULTI; SET {a}k:R v; SET
{b}k:R v; EXEC with the tags {a} {b} on different shards, against the same
two SETs without MULTI, interleaved; the cost ratio is plain units/s over
transaction units/s (the target: at most 2).

    tools/bench/txn.py [--runs 3] [--requests 100000] [--pipeline-requests 1000000]
                       [--only write,fsync,cross] [--tests "EVALSHA GET+SET,MSET 10"]
                       [--quick]

Prints Markdown tables.  Needs redis-server, redis-benchmark (redis-tools) and
a built build/ringkv-server and build/ringkv-bench.
"""
import argparse
import hashlib
import os
import re
import statistics
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tests", "integration"))
import resp  # noqa: E402
from ringkv_testlib import tag_on_shard  # noqa: E402 (the key -> shard rule, once)

PROG = "txn.py"
KEYS = 100000
VALUE = "v" * 100
UNITS = {
    "MULTI 2 SET": f"MULTI;SET key:__rand_int__ {VALUE};SET key:__rand_int__ {VALUE};EXEC",
    "MULTI 10 INCR": "MULTI;" + ";".join(["INCR counter:__rand_int__"] * 10) + ";EXEC",
}
SCRIPT = "redis.call('get', KEYS[1]) return redis.call('set', KEYS[1], ARGV[1])"
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
UNITS["EVALSHA GET+SET"] = f"EVALSHA {SCRIPT_SHA} 1 key:__rand_int__ {VALUE}"
LIBRARY = ("#!lua name=bench\nredis.register_function('getset', function(keys, args) "
           "redis.call('get', keys[1]) return redis.call('set', keys[1], args[1]) end)")
UNITS["FCALL GET+SET"] = f"FCALL getset 1 key:__rand_int__ {VALUE}"
BENCHMARK_TESTS = {"MSET 10": ["-t", "mset"]}
BENCH = os.path.join(resp.ROOT, "build", "ringkv-bench")


def bench_resp(server, unit, units, pipeline, args):
    cmd = [BENCH, "resp", "--port", str(server.port), "--unit", unit, "--units", str(units),
           "--pipeline", str(pipeline), "--conns", "50", "--keyspace", str(KEYS)]
    if args.client_cpu is not None:
        cmd = ["taskset", "-c", str(args.client_cpu)] + cmd
    before = resp.cpu_seconds(server.proc.pid)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    after = resp.cpu_seconds(server.proc.pid)
    m = re.search(r"units_per_s=(\S+) p50_ms=(\S+) p99_ms=(\S+)", out.stdout)
    if out.returncode != 0 or m is None:
        sys.exit(f"{PROG}: ringkv-bench resp failed against {server.kind}: "
                 f"{out.stdout.strip()} {out.stderr.strip()}")
    return {"rps": float(m.group(1)), "p50_ms": float(m.group(2)),
            "p99_ms": float(m.group(3)), "cpu_us_per_req": (after - before) * 1e6 / units}


def run_test(server, test, pipeline, args):
    requests = args.pipeline_requests if pipeline > 1 else args.requests
    name = test.upper()
    if name.startswith("EVALSHA"):
        load = subprocess.run(["redis-cli", "-p", str(server.port), "SCRIPT", "LOAD", SCRIPT],
                              capture_output=True, text=True, timeout=60)
        if load.stdout.strip() != SCRIPT_SHA:
            sys.exit(f"{PROG}: SCRIPT LOAD on {server.kind} answered {load.stdout.strip()!r} "
                     f"{load.stderr.strip()}; is the server up?")
    if name.startswith("FCALL"):
        load = subprocess.run(["redis-cli", "-p", str(server.port), "FUNCTION", "LOAD",
                               "REPLACE", LIBRARY], capture_output=True, text=True, timeout=60)
        if load.stdout.strip() != "bench":
            sys.exit(f"{PROG}: FUNCTION LOAD on {server.kind} answered {load.stdout.strip()!r} "
                     f"{load.stderr.strip()}; is the server up?")
    if name in UNITS:
        return bench_resp(server, UNITS[name], requests // 4, pipeline, args)
    return resp.redis_benchmark(server, BENCHMARK_TESTS[name], requests // 4, pipeline, args)


def no_fill(server, args):
    pass


def per_core(args, work, only):
    names = [n for n in list(UNITS) + list(BENCHMARK_TESTS)
             if args.tests is None or n in args.tests]
    pairings = [(r, d, names) for r, d in (("write", "everysec"), ("fsync", "always"))
                if r in only]
    resp.print_table(resp.per_core(args, work, pairings, no_fill, run_test))


def cross(args, work):
    a, b = tag_on_shard(0, 2), tag_on_shard(1, 2)  # ("{tN}")
    keys = f"SET {a}k:__rand_int__ {VALUE};SET {b}k:__rand_int__ {VALUE}"
    units = {"multi": f"MULTI;{keys};EXEC", "plain": keys}
    server = resp.Server("ringkv", "write", None, 2, work)
    rows = []
    try:
        for pipeline in (1, 16):
            n = (args.pipeline_requests if pipeline > 1 else args.requests) // 4
            got = {"multi": [], "plain": []}
            for i in range(args.runs):
                for kind in (("multi", "plain") if i % 2 == 0 else ("plain", "multi")):
                    resp.settle([server])
                    got[kind].append(bench_resp(server, units[kind], n, pipeline, args))
                print(f"{PROG}: cross-shard P{pipeline} pair {i + 1}/{args.runs}: "
                      f"{got['multi'][-1]['rps']:.0f} / {got['plain'][-1]['rps']:.0f} units/s",
                      file=sys.stderr, flush=True)
            costs = [p["rps"] / m["rps"] for m, p in zip(got["multi"], got["plain"])]
            rows.append((pipeline, resp.median_of(got["multi"]), resp.median_of(got["plain"]),
                         costs))
    finally:
        server.stop()
    print("\n| test | ringkv | MULTI units/s | plain units/s | cost MULTI/plain (pairs) |"
          " CPU µs/unit MULTI / plain |")
    print("|---|---|---|---|---|---|")
    for pipeline, m, p, costs in rows:
        print(f"| 2 SETs on 2 shards P{pipeline} | 2 proactors, durability write |"
              f" {m['rps']:.0f} | {p['rps']:.0f} | **{statistics.median(costs):.2f}×**"
              f" ({min(costs):.2f}–{max(costs):.2f}) | {m['cpu_us_per_req']:.2f} /"
              f" {p['cpu_us_per_req']:.2f} |", flush=True)


def main():
    global BENCH
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    resp.common_args(ap, 3, 400000, 2000000, "bench-txn")  # (units: a quarter of them)
    ap.add_argument("--bench", default=None, help="the ringkv-bench binary")
    ap.add_argument("--only", default="write,fsync,cross",
                    help="comma-separated parts: write, fsync, cross")
    ap.add_argument("--tests", default=None,
                    help="comma-separated rows of the per-core parts (default all): "
                         + ", ".join(list(UNITS) + list(BENCHMARK_TESTS)))
    args = ap.parse_args()
    args.keyspace, args.data_size = KEYS, 100
    only = set(args.only.split(","))
    if args.tests is not None:
        args.tests = set(args.tests.split(","))
        unknown = args.tests - set(UNITS) - set(BENCHMARK_TESTS)
        if unknown:
            sys.exit(f"{PROG}: --tests: unknown rows {sorted(unknown)}")
    if only - {"write", "fsync", "cross"}:
        sys.exit(f"{PROG}: --only takes write, fsync and cross")
    if args.bench is not None:
        BENCH = os.path.abspath(args.bench)
    work = resp.setup(args, "bench-txn", binaries=(BENCH,))
    if only & {"write", "fsync"}:
        per_core(args, work, only)
    if "cross" in only:
        cross(args, work)


if __name__ == "__main__":
    main()
