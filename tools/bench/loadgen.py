#!/usr/bin/python3
"""loadgen.py: ringkv-bench resp against redis-benchmark, as load generators.

Both clients drive the same server (Debian's redis-server, AOF off, pinned to
--server-cpu) from one client core (--client-cpu, one thread each): GET and
SET of --keyspace keys with --data-size values, 50 connections, at -P 16 and
-P 1.  Runs are interleaved in pairs, alternating which client goes first.

Two figures per run and client:
  rps         requests/s the server answered
  client_rps  requests per second of the client's own CPU time (utime + stime
              of the client process over the run): the rate one client core
              could drive if the server kept up
On a 2-CPU machine one redis-server core is the ceiling of both clients at
-P 16, so `rps` there says little about the clients; `client_rps` is the
capacity the issue asks about ("2x redis-benchmark's rate on one client
core").  The ratios are medians of the per-pair ratios.

    tools/bench/loadgen.py [--runs 5] [--requests 2000000] [--json]

Needs redis-server, redis-benchmark (redis-tools), taskset and a built
build/ringkv-bench.
"""
import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys

import resp

PROG = os.path.basename(sys.argv[0])
BENCH = os.path.join(resp.ROOT, "build", "ringkv-bench")


def children_cpu():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_client(kind, server, test, pipeline, requests, args):
    """One run of one client: requests/s, client CPU seconds, requests per client CPU second."""
    if kind == "redis-benchmark":
        cmd = ["redis-benchmark", "-p", str(server.port), "-c", "50", "-n", str(requests),
               "-r", str(args.keyspace), "-d", str(args.data_size), "-P", str(pipeline),
               "--threads", "1", "--csv", "-t", test]
    else:
        unit = "GET key:__rand_int__" if test == "get" else "SET key:__rand_int__ __value__"
        cmd = [BENCH, "resp", "--port", str(server.port), "--conns", "50", "--threads", "1",
               "--units", str(requests), "--keyspace", str(args.keyspace), "--value-size",
               str(args.data_size), "--pipeline", str(pipeline), "--unit", unit]
    cmd = ["taskset", "-c", str(args.client_cpu)] + cmd
    before = children_cpu()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    cpu = children_cpu() - before
    if out.returncode != 0:
        sys.exit(f"{PROG}: {kind} failed: {out.stdout.strip()} {out.stderr.strip()}")
    if kind == "redis-benchmark":
        m = re.search(r'^"[A-Z]+","([0-9.]+)"', out.stdout, re.M)
    else:
        m = re.search(r"units_per_s=(\S+)", out.stdout)
    if m is None:
        sys.exit(f"{PROG}: no figure from {kind}: {out.stdout.strip()} {out.stderr.strip()}")
    rps = float(m.group(1))
    return {"rps": rps, "client_cpu_s": cpu, "client_rps": requests / cpu if cpu > 0 else 0.0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="pairs of runs per test")
    ap.add_argument("--requests", type=int, default=2000000, help="per -P 16 run (-P 1: 1/8)")
    ap.add_argument("--keyspace", type=int, default=100000)
    ap.add_argument("--data-size", type=int, default=100)
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for tool in ("redis-server", "redis-benchmark", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{PROG}: {tool} not found: apt-get install redis-server redis-tools")
    if not os.access(BENCH, os.X_OK):
        sys.exit(f"{PROG}: {BENCH} is missing: run make first")
    work = os.path.join(resp.ROOT, "build", "loadgen")
    os.makedirs(work, exist_ok=True)
    server = resp.Server("redis", "off", args.server_cpu, 1, work)
    results = []
    try:
        run_client("ringkv-bench", server, "set", 16, args.requests, args)  # fill the keys
        for test in ("get", "set"):
            for pipeline in (16, 1):
                requests = args.requests if pipeline > 1 else args.requests // 8
                runs = {"ringkv-bench": [], "redis-benchmark": []}
                ratios, cpu_ratios = [], []
                for i in range(args.runs):
                    order = ["ringkv-bench", "redis-benchmark"]
                    if i % 2:
                        order.reverse()
                    pair = {}
                    for kind in order:
                        resp.settle([server])
                        pair[kind] = run_client(kind, server, test, pipeline, requests, args)
                        runs[kind].append(pair[kind])
                        print(f"{PROG}: {test} -P {pipeline} run {i + 1}/{args.runs} {kind}: "
                              f"{pair[kind]['rps']:.0f} req/s, "
                              f"{pair[kind]['client_rps']:.0f} req per client CPU s",
                              file=sys.stderr)
                    ours, theirs = pair["ringkv-bench"], pair["redis-benchmark"]
                    ratios.append(ours["rps"] / theirs["rps"])
                    cpu_ratios.append(ours["client_rps"] / theirs["client_rps"])
                results.append({
                    "test": test.upper(), "pipeline": pipeline,
                    "ringkv_bench": resp.median_of(runs["ringkv-bench"]),
                    "redis_benchmark": resp.median_of(runs["redis-benchmark"]),
                    "rps_ratio": statistics.median(ratios),
                    "client_rps_ratio": statistics.median(cpu_ratios),
                    "client_rps_ratio_range": [min(cpu_ratios), max(cpu_ratios)]})
    finally:
        server.stop()
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print("| test | -P | ringkv-bench req/s | redis-benchmark req/s | ratio |"
          " ringkv-bench req/client-CPU-s | redis-benchmark req/client-CPU-s | ratio (range) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        a, b = r["ringkv_bench"], r["redis_benchmark"]
        lo, hi = r["client_rps_ratio_range"]
        print(f"| {r['test']} | {r['pipeline']} | {a['rps']:.0f} | {b['rps']:.0f} |"
              f" {r['rps_ratio']:.2f}x | {a['client_rps']:.0f} | {b['client_rps']:.0f} |"
              f" {r['client_rps_ratio']:.2f}x ({lo:.2f}-{hi:.2f}) |")


if __name__ == "__main__":
    main()
