#!/usr/bin/python3
"""resp.py: redis-benchmark against ringkv-server and Debian's redis-server in
the same run, with the same client and flags, and the ratios between them.

For each durability pairing (ringkv none / write / fsync against redis AOF off /
everysec / always) and each test (SET and GET, without and with -P 16), both
servers are started fresh on a data directory on the same file system, pinned
to one CPU (default cpu 1) with the client on another (default cpu 0); ringkv
runs 1 proactor.  Then ringkv runs again with 2 proactors (unpinned: on this
2-CPU machine they share the CPUs with the client).

The two servers of a pairing run side by side and their runs are interleaved
in pairs, alternating which goes first (ringkv then redis, redis then ringkv,
...), each run starting once both servers have gone quiet (no CPU time used
for 0.3 s, at most 10 s): on a shared machine whose speed drifts by tens of
per cent over minutes, a ratio between runs seconds apart is steadier than one
between runs minutes apart.  The ratio reported is the median of the --runs
pair ratios (their range is printed too); the other figures are medians of
each server's runs.  Reported per run: requests/s, p50 and p99 latency (from
redis-benchmark --csv) and the server's CPU time per request (utime + stime
from /proc/PID/stat over the run, divided by the requests).

    tools/bench/resp.py [--runs 5] [--requests 200000] [--pipeline-requests 2000000]
                        [--keyspace 100000] [--data-size 100] [--json] [--quick]
                        [--server build-x/ringkv-server] [--only fsync,2px]
                        [--tests ping_mbulk,set,get,incr,mset]

--tests runs those redis-benchmark tests instead, per core (1 proactor) at -P 1
and -P 16, for the pairings write/everysec and fsync/always (or --only's).

Prints a Markdown table (or JSON with --json).  Needs redis-server, redis-benchmark
(redis-tools) and a built build/ringkv-server.
"""
import argparse
import csv
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAIRS = [("none", "off"), ("write", "everysec"), ("fsync", "always")]
SERVER = os.path.join(ROOT, "build", "ringkv-server")  # --server replaces it
PROG = os.path.basename(sys.argv[0])  # for messages: resp.py, or a script importing it


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{PROG}: {what} exited with status {proc.returncode} at start-up;"
                     f" see its log in the work directory")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{PROG}: {what} does not accept connections on port {port} after {seconds} s")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, every thread's


def cpu_seconds(pid):
    return cpu_ticks(pid) / CLK_TCK


class Server:
    """A server process on a fresh data directory."""

    def __init__(self, kind, mode, cpu, threads, work, settings=()):
        """settings: ringkv --set options ("section.key=value") for this run."""
        self.kind, self.mode = kind, mode
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix=f"{kind}-", dir=work)
        self.log = open(os.path.join(self.dir, "server.log"), "w")
        if kind == "ringkv":
            cmd = [SERVER, "--config",
                   os.path.join(ROOT, "config.yaml"), "--port", str(self.port), "--dir",
                   os.path.join(self.dir, "data"), "--threads", str(threads), "--set",
                   f"storage.durability={mode}", "--set", "log.level=warn"]
            for setting in settings:
                cmd += ["--set", setting]
        else:
            cmd = ["redis-server", "--port", str(self.port), "--dir", self.dir, "--save", "",
                   "--appendonly", "no" if mode == "off" else "yes", "--appendfsync",
                   "everysec" if mode == "off" else mode, "--logfile", "",
                   "--daemonize", "no"]
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu)] + cmd
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc, kind)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_benchmark(server, tail, requests, pipeline, args, keyspace=None):
    """One redis-benchmark run of `tail` (-t TEST, or a command line) against
    server: its requests/s, p50 and p99 latency and the server's CPU time per
    request."""
    cmd = ["redis-benchmark", "-p", str(server.port), "-c", "50", "-n", str(requests), "-r",
           str(keyspace or args.keyspace), "-d", str(args.data_size), "-P", str(pipeline),
           "--csv"] + list(tail)
    if args.client_cpu is not None:
        cmd = ["taskset", "-c", str(args.client_cpu)] + cmd
    before = cpu_seconds(server.proc.pid)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    after = cpu_seconds(server.proc.pid)
    if out.returncode != 0:
        sys.exit(f"{PROG}: redis-benchmark failed against"
                 f" {server.kind}: {out.stderr.strip()}")
    rows = [r for r in csv.reader(io.StringIO(out.stdout)) if r and r[0] != "test"]
    if not rows:
        sys.exit(f"{PROG}: no result from redis-benchmark against"
                 f" {server.kind}: {out.stdout.strip()} {out.stderr.strip()}")
    row = rows[0]
    return {"rps": float(row[1]), "p50_ms": float(row[4]), "p99_ms": float(row[6]),
            "cpu_us_per_req": (after - before) * 1e6 / requests}


def run_benchmark(server, test, pipeline, args):
    requests = args.pipeline_requests if pipeline > 1 else args.requests
    return redis_benchmark(server, ["-t", test], requests, pipeline, args)


def median_of(results):
    return {k: statistics.median(r[k] for r in results) for k in results[0]}


def settle(servers, quiet=0.3, limit=10.0):
    """Waits until no server used CPU time for `quiet` seconds (at most `limit`):
    a server's background work (RocksDB flushes, log zeroing, GC) must not run
    on the shared CPU during the other's measurement."""
    deadline = time.time() + limit
    last = [cpu_ticks(s.proc.pid) for s in servers]
    while time.time() < deadline:
        time.sleep(quiet)
        now = [cpu_ticks(s.proc.pid) for s in servers]
        if now == last:
            return
        last = now


def fill_strings(server, args):
    """GETs read what the SETs wrote: fills the keyspace first."""
    run_benchmark(server, "set", 16, args)


def measure_pair(spec_a, spec_b, tests, args, work, fill=fill_strings, run=run_benchmark):
    """Both servers side by side (a spec: kind, mode, cpu, threads[, settings]),
    each filled by fill(server, args); for each (test, pipeline), args.runs
    pairs of run(server, test, pipeline, args) in alternating order.  Returns
    {name: (a_runs, b_runs, ratios)}."""
    a = Server(*spec_a[:4], work, *spec_a[4:])
    try:
        b = Server(*spec_b[:4], work, *spec_b[4:])
    except BaseException:
        a.stop()
        raise
    try:
        for server in (a, b):
            fill(server, args)
        out = {}
        for test, pipeline in tests:
            a_runs, b_runs, ratios = [], [], []
            for i in range(args.runs):
                for server in ((a, b) if i % 2 == 0 else (b, a)):
                    settle((a, b))
                    (a_runs if server is a else b_runs).append(run(server, test, pipeline, args))
                ratios.append(a_runs[-1]["rps"] / b_runs[-1]["rps"])
                print(f"{PROG}: {test.upper()} P{pipeline}, {a.kind} {a.mode} / {b.kind}"
                      f" {b.mode}: pair {i + 1}/{args.runs}: {a_runs[-1]['rps']:.0f} /"
                      f" {b_runs[-1]['rps']:.0f} req/s = {ratios[-1]:.2f}", file=sys.stderr,
                      flush=True)
            out[f"{test.upper()} P{pipeline}"] = (a_runs, b_runs, ratios)
        return out
    finally:
        a.stop()
        b.stop()


def common_args(ap, runs, requests, pipeline_requests, work_name):
    """The options every benchmark script takes, with its defaults."""
    ap.add_argument("--runs", type=int, default=runs, help="pairs of runs per test")
    ap.add_argument("--requests", type=int, default=requests, help="per -P 1 run")
    ap.add_argument("--pipeline-requests", type=int, default=pipeline_requests,
                    help="per -P 16 run")
    ap.add_argument("--server", default=None,
                    help="the ringkv-server binary to run (default: build/ringkv-server)")
    ap.add_argument("--server-cpu", type=int, default=1)
    ap.add_argument("--client-cpu", type=int, default=0)
    ap.add_argument("--workdir", default=None,
                    help=f"where the data directories go (default: build/{work_name}); must"
                         f" not be tmpfs for the fsync comparisons to mean anything")
    ap.add_argument("--quick", action="store_true", help="1 run, 10x fewer requests")


def setup(args, work_name, tools=(), binaries=()):
    """What every benchmark script does first: --quick makes the run 1 pair with
    10x fewer requests; redis-server, redis-benchmark, taskset and `tools` must
    be installed and the ringkv-server (--server) and `binaries` built, else it
    exits saying what to do; the work directory (--workdir, default
    build/WORK_NAME) is made.  Returns it."""
    global SERVER
    if args.quick:
        args.runs, args.requests = 1, args.requests // 10
        args.pipeline_requests //= 10
    for tool in ("redis-server", "redis-benchmark", "taskset") + tuple(tools):
        if shutil.which(tool) is None:
            sys.exit(f"{PROG}: {tool} not found: apt-get install redis-server redis-tools"
                     f" util-linux")
    if args.server is not None:
        SERVER = os.path.abspath(args.server)
    for binary in (SERVER,) + tuple(binaries):
        if not os.access(binary, os.X_OK):
            sys.exit(f"{PROG}: {binary} is missing: run make first (or pass its option)")
    work = args.workdir or os.path.join(ROOT, "build", work_name)
    os.makedirs(work, exist_ok=True)
    return work


def per_core(args, work, pairings, fill, run):
    """Each pairing (ringkv durability, redis appendfsync, test names) at -P 1 and
    -P 16: ringkv with 1 proactor against redis, both on --server-cpu
    (measure_pair).  Returns the rows print_table takes."""
    results = []
    for ringkv_mode, redis_mode, names in pairings:
        tests = [(n.lower(), p) for n in names for p in (1, 16)]
        got = measure_pair(("ringkv", ringkv_mode, args.server_cpu, 1),
                           ("redis", redis_mode, args.server_cpu, 1), tests, args, work,
                           fill=fill, run=run)
        for name, (r, d, ratios) in got.items():
            results.append({"test": name, "ringkv": f"1 proactor, durability {ringkv_mode}",
                            "redis": f"AOF {redis_mode}", "ringkv_r": median_of(r),
                            "redis_r": median_of(d), "ratio": statistics.median(ratios),
                            "ratios": ratios})
    return results


def print_table(results):
    """The Markdown table of results (dicts as main and coll.py build them)."""
    print("| test | ringkv | redis | ringkv req/s | redis req/s | ratio (pair ratios) |"
          " p50 ms ringkv/redis | p99 ms ringkv/redis | CPU µs/req ringkv/redis |")
    print("|---|---|---|---|---|---|---|---|---|")
    for x in results:
        a, b = x["ringkv_r"], x["redis_r"]
        lo, hi = min(x["ratios"]), max(x["ratios"])
        print(f"| {x['test']} | {x['ringkv']} | {x['redis']} | {a['rps']:.0f} | {b['rps']:.0f}"
              f" | **{x['ratio']:.2f}×** ({lo:.2f}–{hi:.2f}) | {a['p50_ms']:.3f} / {b['p50_ms']:.3f}"
              f" | {a['p99_ms']:.3f} / {b['p99_ms']:.3f}"
              f" | {a['cpu_us_per_req']:.2f} / {b['cpu_us_per_req']:.2f} |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common_args(ap, 5, 200000, 2000000, "bench-resp")
    ap.add_argument("--keyspace", type=int, default=100000)
    ap.add_argument("--data-size", type=int, default=100)
    ap.add_argument("--only", default=None,
                    help="comma-separated pairings to run, of none, write, fsync and 2px"
                         " (default: all)")
    ap.add_argument("--tests", default=None,
                    help="redis-benchmark -t tests (e.g. ping_mbulk,set,get,incr,mset) at -P 1"
                         " and -P 16 per core, durability write against AOF everysec and fsync"
                         " against AOF always, instead of the default table")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = setup(args, "bench-resp")
    if args.tests:
        names = args.tests.split(",")
        only = args.only.split(",") if args.only else ["write", "fsync"]
        results = per_core(args, work, [(m, r, names) for m, r in PAIRS if m in only],
                           fill_strings, run_benchmark)
        print(json.dumps(results, indent=1) if args.json else "", end="")
        if not args.json:
            print_table(results)
        return

    only = set(args.only.split(",")) if args.only else {m for m, _ in PAIRS} | {"2px"}
    unknown = only - ({m for m, _ in PAIRS} | {"2px"})
    if unknown:
        sys.exit(f"resp.py: --only: unknown pairing {', '.join(sorted(unknown))}: use none,"
                 f" write, fsync or 2px")
    tests = [("set", 1), ("set", 16), ("get", 1), ("get", 16)]
    cpu = args.server_cpu
    pairings = []
    for ringkv_mode, redis_mode in PAIRS:
        if ringkv_mode not in only:
            continue
        # SET depends on durability; GET only once, with the first pair.
        t = tests if ringkv_mode == "none" else [x for x in tests if x[0] == "set"]
        pairings.append((("ringkv", ringkv_mode, cpu, 1), ("redis", redis_mode, cpu, 1), t,
                         f"1 proactor, durability {ringkv_mode}", f"AOF {redis_mode}"))
    if "2px" in only:
        pairings.append((("ringkv", "none", None, 2), ("redis", "off", cpu, 1), tests,
                         "2 proactors, durability none", "AOF off"))
    results = []
    for spec_r, spec_d, t, label_r, label_d in pairings:
        for name, (r, d, ratios) in measure_pair(spec_r, spec_d, t, args, work).items():
            results.append({"test": name, "ringkv": label_r, "redis": label_d,
                            "ringkv_r": median_of(r), "redis_r": median_of(d),
                            "ratio": statistics.median(ratios), "ratios": ratios})

    if args.json:
        print(json.dumps(results, indent=1))
        return
    print_table(results)


if __name__ == "__main__":
    main()
