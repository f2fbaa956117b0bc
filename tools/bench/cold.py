#!/usr/bin/python3
"""cold.py: GETs of a dataset whose index does not fit its cache, against the same
dataset with the index cached, and against the device's random reads (fio).

One data directory of --keys keys (key:%012d, the form redis-benchmark -r uses)
with --value-size byte values (in the log: larger than storage.inline_max) is
written once by `ringkv-import --offline` (1 shard).  Then, interleaved --runs
times, ringkv-server (1 proactor pinned to --server-cpu, storage.cache_size 1mb so
every GET reads its value from the log) serves redis-benchmark -t get -P 16 -c 50
-r KEYS (pinned to --client-cpu) with:

  cold    storage.index_cache_size = the index's size / --ratio (at least 1 MiB):
          most index entries are read from files, by the lookup threads
  cached  storage.index_cache_size 4gb, after one unmeasured pass over every key:
          every index entry is in the block cache

and fio reads 4 KiB at random offsets of the log's segment files (O_DIRECT,
io_uring, --fio-qd deep, read-only, pinned to --server-cpu): the device's rate
for the reads the GETs make.  Each run starts the server fresh; INFO's
index_async_reads and index_blocking_reads are read after each run.

Reported: the medians of requests/s, p50/p99 and server CPU µs per request of each
case, the median of the per-run ratios cold/cached and cold/fio, and the lookups.

    tools/bench/cold.py [--keys 2000000] [--value-size 1000] [--ratio 10] [--runs 3]
                        [--requests 400000] [--fio-qd 32] [--work DIR] [--json]

Needs a built build/ringkv-server and build/ringkv-import, redis-benchmark and fio.
The data directory (about keys x (value size + 100) bytes) stays in --work
between invocations when --keep is given.
"""
import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import resp  # noqa: E402

PROG = "cold.py"
ROOT = resp.ROOT
IMPORT = os.path.join(ROOT, "build", "ringkv-import")


def progress(msg):
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def write_config(work, data_dir):
    path = os.path.join(work, "config.yaml")
    with open(path, "w") as f:
        f.write(f"server:\n  threads: 1\nstorage:\n  dir: {data_dir}\n  durability: write\n")
    return path


def build_dataset(args, work):
    """Imports the keys offline (once; reused with --keep); returns the data directory."""
    data = os.path.join(work, f"data-{args.keys}-{args.value_size}")
    if os.path.exists(os.path.join(data, "LAYOUT")):
        progress(f"reusing {data}")
        return data
    cfg = write_config(work, data)
    progress(f"importing {args.keys} keys of {args.value_size} bytes into {data}")
    imp = subprocess.Popen([IMPORT, "--offline", "--config", cfg, "--dir", data, "--format",
                            "tsv", "-"], stdin=subprocess.PIPE, stderr=sys.stderr)
    value = b"v" * args.value_size
    chunk = 10000
    for start in range(0, args.keys, chunk):
        rows = b"".join(b"key:%012d\t%s\n" % (i, value)
                        for i in range(start, min(args.keys, start + chunk)))
        imp.stdin.write(rows)
    imp.stdin.close()
    if imp.wait() != 0:
        sys.exit(f"{PROG}: ringkv-import failed (status {imp.returncode})")
    return data


class Ringkv:
    """ringkv-server on the shared data directory, pinned."""

    def __init__(self, args, work, data, index_cache):
        self.port = resp.free_port()
        self.log = open(os.path.join(work, "server.log"), "a")
        cmd = ["taskset", "-c", str(args.server_cpu), resp.SERVER, "--config",
               write_config(work, data), "--port", str(self.port), "--set", "log.level=warn",
               "--set", "storage.cache_size=1mb", "--set",
               f"storage.index_cache_size={index_cache}"]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        resp.wait_port(self.port, self.proc, "ringkv", seconds=300)
        self.kind = "ringkv"

    def info(self):
        out = subprocess.run(["redis-cli", "-p", str(self.port), "INFO", "storage"],
                             capture_output=True, text=True, timeout=60).stdout
        fields = {}
        for line in out.splitlines():
            if line.startswith("shard_"):
                for kv in line.split(":", 1)[1].split(","):
                    k, _, v = kv.partition("=")
                    fields[k] = fields.get(k, 0) + int(v)
        return fields

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def get_run(args, server, requests):
    return resp.redis_benchmark(server, ["-t", "get"], requests, 16, args, keyspace=args.keys)


def run_case(args, work, data, case, index_cache):
    srv = Ringkv(args, work, data, index_cache)
    try:
        if case == "cached":  # every index entry into the block cache, unmeasured
            get_run(args, srv, 3 * args.keys)
        before = srv.info()
        resp.settle([srv])
        r = get_run(args, srv, args.requests)
        after = srv.info()
        for k in ("index_async_reads", "index_blocking_reads", "index_block_misses"):
            r[k] = after.get(k, 0) - before.get(k, 0)
        r["index_bytes"] = after.get("index_bytes", 0)
        return r
    finally:
        srv.stop()


def fio_run(args, work, data):
    segs = sorted(glob.glob(os.path.join(data, "shard-*", "log", "*.seg")))
    if not segs:
        sys.exit(f"{PROG}: no log segments under {data}")
    # fio takes at most 4096 bytes of file names: an evenly spread subset of
    # the segments then (the device's random-read rate is the same).
    while len(":".join(segs)) > 4000:
        segs = segs[::2]
    cmd = ["taskset", "-c", str(args.server_cpu), "fio", "--name=randread", "--readonly",
           "--rw=randread", "--bs=4k", "--direct=1", "--ioengine=io_uring",
           f"--iodepth={args.fio_qd}", "--time_based", f"--runtime={args.fio_seconds}",
           "--output-format=json", "--filename=" + ":".join(segs)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        sys.exit(f"{PROG}: fio failed: {out.stderr.strip()}")
    return {"iops": json.loads(out.stdout)["jobs"][0]["read"]["iops"]}


def index_size(args, work, data):
    srv = Ringkv(args, work, data, "1mb")
    try:
        return srv.info().get("index_bytes", 0)
    finally:
        srv.stop()


def dataset_args(ap, keys, value_size):
    """The options of a benchmark on an imported dataset (this one and bigger.py)."""
    ap.add_argument("--keys", type=int, default=keys)
    ap.add_argument("--value-size", type=int, default=value_size)
    ap.add_argument("--fio-qd", type=int, default=32)
    ap.add_argument("--fio-seconds", type=int, default=10)
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--work", default=None, help="directory for the data (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    ap.add_argument("--json", action="store_true")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    dataset_args(ap, 2000000, 1000)
    ap.add_argument("--ratio", type=float, default=10.0, help="index size / its cache (cold)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--requests", type=int, default=400000)
    args = ap.parse_args()
    args.data_size = args.value_size  # (resp.redis_benchmark's -d: unused by GETs)
    for tool in ("redis-benchmark", "redis-cli", "fio", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{PROG}: {tool} is not installed (apt-get install redis-tools fio)")
    for binary in (resp.SERVER, IMPORT):
        if not os.access(binary, os.X_OK):
            sys.exit(f"{PROG}: {binary} is not built: run make first")
    work = args.work or tempfile.mkdtemp(prefix="ringkv-cold-")
    os.makedirs(work, exist_ok=True)
    try:
        data = build_dataset(args, work)
        isize = index_size(args, work, data)
        cold_cache = max(1 << 20, int(isize / args.ratio))
        progress(f"index {isize / 2**20:.1f} MiB; cold runs with a {cold_cache / 2**20:.1f} MiB"
                 " block cache")
        got = {"cold": [], "cached": [], "fio": []}
        for run in range(args.runs):
            order = ["cold", "cached"] if run % 2 == 0 else ["cached", "cold"]
            for case in order:
                cache = f"{cold_cache // 1024}kb" if case == "cold" else "4gb"
                got[case].append(run_case(args, work, data, case, cache))
                progress(f"run {run + 1}/{args.runs} {case}: {got[case][-1]['rps']:.0f} req/s")
            got["fio"].append(fio_run(args, work, data))
            progress(f"run {run + 1}/{args.runs} fio: {got['fio'][-1]['iops']:.0f} IOPS")
        ratio_cached = statistics.median(c["rps"] / w["rps"]
                                         for c, w in zip(got["cold"], got["cached"]))
        ratio_fio = statistics.median(c["rps"] / f["iops"] for c, f in zip(got["cold"], got["fio"]))
        med = {k: resp.median_of(v) for k, v in got.items()}
        result = {"keys": args.keys, "value_size": args.value_size, "index_bytes": isize,
                  "cold_index_cache": cold_cache, "fio_qd": args.fio_qd, "runs": args.runs,
                  "cold": med["cold"], "cached": med["cached"], "fio": med["fio"],
                  "ratio_cold_cached": ratio_cached, "ratio_cold_fio": ratio_fio}
        if args.json:
            print(json.dumps(result, indent=1))
            return
        print(f"| case | req/s | p50 ms | p99 ms | server CPU µs/req | lookups off the loop"
              f" | blocking on the loop |")
        print("|---|---|---|---|---|---|---|")
        for case in ("cold", "cached"):
            m = med[case]
            print(f"| {case} | {m['rps']:.0f} | {m['p50_ms']:.3f} | {m['p99_ms']:.3f} |"
                  f" {m['cpu_us_per_req']:.2f} | {m['index_async_reads']:.0f} |"
                  f" {m['index_blocking_reads']:.0f} |")
        print(f"| fio 4 KiB randread, QD {args.fio_qd} | {med['fio']['iops']:.0f} IOPS |"
              " | | | | |")
        print(f"\ncold / cached: {ratio_cached:.3f}; cold / fio: {ratio_fio:.3f}"
              f" (medians of {args.runs} run ratios); index {isize / 2**20:.1f} MiB,"
              f" cold cache {cold_cache / 2**20:.1f} MiB")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
