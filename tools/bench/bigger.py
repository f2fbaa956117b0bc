#!/usr/bin/python3
"""bigger.py: a dataset larger than the caches, served by one core, against the
device's own random reads; throughput and p99 against the cache size.

One data directory of --keys keys (key:%012d) with --value-size byte values is
written once by `ringkv-import --offline` (1 shard; reused with --keep, see
cold.py).  For each total cache size of --caches (half storage.cache_size, half
storage.index_cache_size), ringkv-server starts fresh (1 proactor pinned to
--server-cpu, durability write) and `ringkv-bench resp` (1 thread pinned to
--client-cpu, --conns connections) runs, after --warmup seconds of uniform GETs:

  get-uniform   GET of uniform keys, -P --pipeline, as fast as it answers
  get-zipf      GET of Zipf 0.99 keys (the hot keys scattered over the keyspace)
  get-set-90-10 90 % GET, 10 % SET of --value-size bytes, uniform keys
  get-p1        GET of uniform keys, -P 1, as fast as it answers: the most
                the server does with single requests (each iteration then
                handles a few, so a request costs about twice its -P 16 CPU)
  get-half-rate GET of uniform keys at half of get-p1's rate (fixed schedule,
                -P 1: latency counted from each unit's scheduled time)
  get-half-p16  the same at half of get-uniform's rate, as runs L2 and L3
                (RESULTS.md) measured it: single requests at nearly the most the server
                does with them (--half-p16 only)

Each row: units/s, p50/p99/p99.9 latency, INFO's index lookups off the loop and
reads still blocking it, and the server's peak RSS (VmHWM) against the budget
(the two caches).  fio reads 4 KiB at random offsets of the segments (O_DIRECT,
io_uring, --fio-qd deep) in the same run: the device's ceiling for the reads
cold GETs make.  --plot writes a gnuplot PNG of units/s and p99 against the
cache size.

    tools/bench/bigger.py [--keys 20000000] [--value-size 1024]
                          [--caches 64mb,256mb,1gb,4gb] [--duration 10]
                          [--work DIR --keep] [--plot tools/bench/bigger.png] [--json]
                          [--only get-zipf,...] [--half-p16] [--set section.key=value]

Needs built build/ringkv-server, build/ringkv-import and build/ringkv-bench, fio,
redis-cli and gnuplot (for --plot).  The data takes about keys x (value size +
100) bytes in --work.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cold  # noqa: E402
import resp  # noqa: E402

PROG = "bigger.py"
BENCH = os.path.join(resp.ROOT, "build", "ringkv-bench")
UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def progress(msg):
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def size_bytes(text):
    t = text.lower().rstrip("b")
    return int(t[:-1]) * UNITS[t[-1]] if t[-1] in UNITS else int(t)


class Server:
    """ringkv-server on the shared data directory, pinned, with both caches set."""

    def __init__(self, args, work, data, total_cache):
        half = total_cache // 2
        self.port = resp.free_port()
        self.log = open(os.path.join(work, "server.log"), "a")
        cmd = ["taskset", "-c", str(args.server_cpu), resp.SERVER, "--config",
               cold.write_config(work, data), "--port", str(self.port), "--set",
               "log.level=warn", "--set", f"storage.cache_size={half >> 10}kb", "--set",
               f"storage.index_cache_size={half >> 10}kb"]
        for setting in args.set:
            cmd += ["--set", setting]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        resp.wait_port(self.port, self.proc, "ringkv", seconds=300)
        self.kind = "ringkv"

    info = cold.Ringkv.info
    stop = cold.Ringkv.stop

    def peak_rss(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0


def load(args, srv, extra, seconds):
    cmd = ["taskset", "-c", str(args.client_cpu), BENCH, "resp", "--port", str(srv.port),
           "--threads", "1", "--conns", str(args.conns), "--keyspace", str(args.keys),
           "--value-size", str(args.value_size), "--duration", str(seconds), "--json"] + extra
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 300)
    if out.returncode != 0:
        sys.exit(f"{PROG}: ringkv-bench resp failed: {out.stdout.strip()} {out.stderr.strip()}")
    return json.loads(out.stdout)["run"]


WORKLOADS = [
    ("get-uniform", ["--unit", "GET key:__key__"]),
    ("get-zipf", ["--unit", "GET key:__key__", "--dist", "zipf:0.99"]),
    ("get-set-90-10", ["--get-set", "9:1"]),
]


def measure(args, srv, name, extra):
    before = srv.info()
    resp.settle([srv])
    run = load(args, srv, extra, args.duration)
    after = srv.info()
    lat = run["latency_ms"]
    row = {"workload": name, "units_per_s": run["units_per_s"], "errors": run["errors"],
           "p50_ms": lat["p50"], "p99_ms": lat["p99"], "p999_ms": lat["p999"]}
    for k in ("index_async_reads", "index_blocking_reads", "disk_reads"):
        row[k] = after.get(k, 0) - before.get(k, 0)
    progress(f"  {name}: {row['units_per_s']:.0f} units/s, p99 {row['p99_ms']:.2f} ms, "
             f"{row['index_async_reads']} lookups off the loop, "
             f"{row['index_blocking_reads']} blocking")
    return row


def run_cache(args, work, data, total):
    srv = Server(args, work, data, total)
    try:
        progress(f"caches {total >> 20} MiB: {args.warmup} s of uniform GETs to warm them")
        load(args, srv, ["--unit", "GET key:__key__", "--pipeline", str(args.pipeline)],
             args.warmup)
        only = args.only.split(",") if args.only else None
        rows = [measure(args, srv, name, extra + ["--pipeline", str(args.pipeline)])
                for name, extra in WORKLOADS
                if only is None or name in only or name == "get-uniform"]
        p1 = measure(args, srv, "get-p1", ["--unit", "GET key:__key__", "--pipeline", "1"])
        rows.append(p1)
        half = max(1, int(p1["units_per_s"] / 2))
        rows.append(measure(args, srv, "get-half-rate",
                            ["--unit", "GET key:__key__", "--pipeline", "1", "--rate",
                             str(half)]))
        if args.half_p16:
            half = max(1, int(rows[0]["units_per_s"] / 2))
            rows.append(measure(args, srv, "get-half-p16",
                                ["--unit", "GET key:__key__", "--pipeline", "1", "--rate",
                                 str(half)]))
        rss = srv.peak_rss()
        for r in rows:
            r["cache_bytes"] = total
            r["peak_rss"] = rss
        return rows
    finally:
        srv.stop()


def plot(args, rows, path):
    dat = path + ".dat"
    with open(dat, "w") as f:
        f.write("# cache_MiB get_uniform get_zipf get_set_90_10 p99_half_rate_ms\n")
        by = {}
        for r in rows:
            by.setdefault(r["cache_bytes"], {})[r["workload"]] = r
        for total in sorted(by):
            w = by[total]
            f.write(f"{total >> 20} {w['get-uniform']['units_per_s']:.0f} "
                    f"{w['get-zipf']['units_per_s']:.0f} "
                    f"{w['get-set-90-10']['units_per_s']:.0f} "
                    f"{w['get-half-rate']['p99_ms']:.3f}\n")
    script = f"""
set terminal png size 900,500
set output '{path}'
set title '{args.keys} keys of {args.value_size} B, 1 core: throughput and p99 against the caches'
set logscale x 2
set xlabel 'caches, MiB (half values, half index)'
set ylabel 'units/s (-P {args.pipeline}, {args.conns} connections)'
set y2label 'p99 at half rate, ms'
set y2tics
set ytics nomirror
set key outside bottom center horizontal
set yrange [0:*]
set y2range [0:*]
plot '{dat}' using 1:2 with linespoints title 'GET uniform', \\
     '{dat}' using 1:3 with linespoints title 'GET zipf 0.99', \\
     '{dat}' using 1:4 with linespoints title '90/10 GET/SET', \\
     '{dat}' using 1:5 axes x1y2 with linespoints dashtype 2 title 'p99 GET at half rate'
"""
    out = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{PROG}: gnuplot failed: {out.stderr.strip()}")
    progress(f"plot: {path} (data {dat})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cold.dataset_args(ap, 20000000, 1024)
    ap.add_argument("--caches", default="64mb,256mb,1gb,4gb",
                    help="total cache sizes, each split half values, half index")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per workload")
    ap.add_argument("--half-p16", action="store_true",
                    help="also GETs at half of the -P 16 rate (get-half-p16)")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--pipeline", type=int, default=16)
    ap.add_argument("--plot", default=None, help="write a gnuplot PNG here")
    ap.add_argument("--set", action="append", default=[],
                    help="a ringkv-server setting (section.key=value), repeatable")
    ap.add_argument("--only", default=None,
                    help="which of get-zipf, get-set-90-10 to run (comma-separated); "
                         "get-uniform, get-p1 and get-half-rate always run")
    args = ap.parse_args()
    tools = ["redis-cli", "fio", "taskset"] + (["gnuplot"] if args.plot else [])
    for tool in tools:
        if shutil.which(tool) is None:
            sys.exit(f"{PROG}: {tool} is not installed (apt-get install redis-tools fio gnuplot)")
    for binary in (resp.SERVER, cold.IMPORT, BENCH):
        if not os.access(binary, os.X_OK):
            sys.exit(f"{PROG}: {binary} is not built: run make first")
    caches = [size_bytes(c) for c in args.caches.split(",")]
    work = args.work or tempfile.mkdtemp(prefix="ringkv-bigger-")
    os.makedirs(work, exist_ok=True)
    try:
        t0 = time.monotonic()
        data = cold.build_dataset(args, work)
        progress(f"dataset ready ({time.monotonic() - t0:.0f} s)")
        rows = []
        for total in caches:
            rows += run_cache(args, work, data, total)
        fio = cold.fio_run(args, work, data)
        progress(f"fio 4 KiB randread QD {args.fio_qd}: {fio['iops']:.0f} IOPS")
        if args.plot:
            plot(args, rows, args.plot)
        if args.json:
            print(json.dumps({"keys": args.keys, "value_size": args.value_size, "rows": rows,
                              "fio_iops": fio["iops"], "fio_qd": args.fio_qd}, indent=1))
            return
        print("| caches | workload | units/s | / fio | p50 ms | p99 ms | p99.9 ms |"
              " lookups off the loop | blocking on the loop | peak RSS / caches |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['cache_bytes'] >> 20} MiB | {r['workload']} | {r['units_per_s']:.0f} |"
                  f" {r['units_per_s'] / fio['iops']:.2f} | {r['p50_ms']:.3f} |"
                  f" {r['p99_ms']:.3f} | {r['p999_ms']:.3f} | {r['index_async_reads']} |"
                  f" {r['index_blocking_reads']} | {r['peak_rss'] >> 20} / "
                  f"{r['cache_bytes'] >> 20} MiB |")
        print(f"\nfio 4 KiB randread, QD {args.fio_qd}, O_DIRECT io_uring: {fio['iops']:.0f} IOPS")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
