#!/usr/bin/python3
"""test_bench_resp: ringkv-bench resp (the load generator) against ringkv-server.

What it sends is checked on the server afterwards: --fill writes every key of the keyspace
once with values of the sizes asked; --dist seq touches each key equally; zipf:0.99 puts
the share of the rank-1 and top-10 keys where Zipf's law does (wide bounds: 20000 draws);
uniform spreads evenly; --mix follows its weights; a MULTI/EXEC unit runs whole.  Its
report: --json holds the run's figures, consistent with each other; --rate starts exactly
rate x duration units.  Its errors: error replies are counted, the first printed and the
exit status is 1; usage errors exit 2 with a message; a server that is not there exits 1
saying so."""

import json
import os
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringkv_testlib as tl  # noqa: E402
from ringkv_testlib import check  # noqa: E402

BUILD = tl.BUILD if os.path.isabs(tl.BUILD) else os.path.join(tl.SRC_DIR, tl.BUILD)
BENCH = os.path.join(BUILD, "ringkv-bench")


def bench(srv, *args, port=None):
    cmd = [BENCH, "resp", "--port", str(port or srv.port)] + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def bench_ok(srv, *args):
    out = bench(srv, *args)
    check(out.returncode == 0, f"ringkv-bench resp {' '.join(map(str, args))}: exit "
                               f"{out.returncode}: {out.stdout} {out.stderr}")
    return out


def counters(c, prefix, n):
    keys = [f"{prefix}{i:012d}" for i in range(n)]
    vals = []
    for start in range(0, n, 500):
        vals += c.call("MGET", *keys[start:start + 500])
    return [int(v) if v is not None else 0 for v in vals]


def test_fill(srv, c):
    bench_ok(srv, "--fill", "--keyspace", 3000, "--value-size", "10-20", "--threads", 2,
             "--conns", 8)
    check(c.call("DBSIZE") == 3000, f"DBSIZE after --fill of 3000: {c.call('DBSIZE')}")
    lens = [c.call("STRLEN", f"key:{i:012d}") for i in range(0, 3000, 7)]
    check(all(10 <= n <= 20 for n in lens), f"value sizes outside 10-20: {sorted(set(lens))}")
    check(len(set(lens)) > 5, f"value sizes not drawn from the range: {sorted(set(lens))}")


def test_seq_touches_each_key_equally(srv, c):
    bench_ok(srv, "--unit", "INCR q:__key__", "--dist", "seq", "--keyspace", 1000, "--units",
             5000, "--threads", 1, "--conns", 10, "--pipeline", 4)
    vals = counters(c, "q:", 1000)
    check(vals == [5] * 1000, f"seq: each of 1000 keys 5 times, got {sorted(set(vals))}")


def test_zipf_and_uniform(srv, c):
    n, draws = 1000, 20000
    bench_ok(srv, "--unit", "INCR z:__key__", "--dist", "zipf:0.99", "--keyspace", n,
             "--units", draws, "--conns", 4)
    z = sorted(counters(c, "z:", n), reverse=True)
    check(sum(z) == draws, f"zipf: {sum(z)} increments, expected {draws}")
    # Zipf 0.99 over 1000 keys: rank 1 has ~13 % of the draws, the top 10 ~38 %.
    check(0.09 * draws <= z[0] <= 0.18 * draws, f"zipf: the top key has {z[0]} of {draws}")
    top10 = sum(z[:10])
    check(0.30 * draws <= top10 <= 0.46 * draws, f"zipf: the top 10 have {top10} of {draws}")
    bench_ok(srv, "--unit", "INCR u:__key__", "--keyspace", n, "--units", draws, "--conns", 4)
    u = counters(c, "u:", n)
    check(sum(u) == draws and max(u) <= 50 and min(u) >= 3,
          f"uniform: 20 per key expected, got sum {sum(u)} min {min(u)} max {max(u)}")


def test_mix_weights_and_multi(srv, c):
    bench_ok(srv, "--mix", "INCR m:a=3,INCR m:b=1", "--units", 8000, "--conns", 4)
    a, b = int(c.call("GET", "m:a")), int(c.call("GET", "m:b"))
    check(a + b == 8000 and 5700 <= a <= 6300, f"--mix 3:1 of 8000: a={a} b={b}")
    bench_ok(srv, "--unit", "MULTI;INCR t:x;INCR t:x;EXEC", "--units", 1000, "--conns", 5,
             "--pipeline", 3)
    check(c.call("GET", "t:x") == b"2000", f"MULTI unit x1000: t:x={c.call('GET', 't:x')}")


def test_json_report(srv, c):
    out = bench_ok(srv, "--get-set", "9:1", "--keyspace", 500, "--units", 4000, "--threads", 2,
                   "--json")
    try:
        r = json.loads(out.stdout)
    except ValueError:
        check(False, f"--json output is not JSON: {out.stdout!r}")
        return
    run = r.get("run", {})
    lat = run.get("latency_ms", {})
    check(run.get("units") == 4000 and run.get("errors") == 0, f"--json run: {run}")
    check(0 <= lat.get("min", -1) <= lat.get("p50", -1) <= lat.get("p99", -1)
          <= lat.get("max", -1), f"--json latencies out of order: {lat}")
    check(r.get("config", {}).get("threads") == 2, f"--json config: {r.get('config')}")


def test_rate_schedule(srv, c):
    out = bench_ok(srv, "--unit", "PING", "--rate", 2000, "--duration", 1.5, "--json")
    run = json.loads(out.stdout)["run"]
    check(abs(run["units"] - 3000) <= 30, f"--rate 2000 for 1.5 s started {run['units']} units")


def test_errors(srv, c):
    c.call("SET", "e:s", "abc")
    out = bench(srv, "--unit", "INCR e:s", "--units", 100, "--conns", 2)
    check(out.returncode == 1, f"error replies: exit {out.returncode}, expected 1")
    check("errors=100" in out.stdout, f"error replies not counted: {out.stdout!r}")
    check("not an integer" in out.stdout + out.stderr,
          f"the first error is not printed: {out.stdout!r} {out.stderr!r}")
    for args in (["--unit", "GET a", "--dist", "zipf:-1"], ["--keyspace", 10],
                 ["--unit", "GET a", "--pipeline", 0], ["--unit", ""]):
        out = bench(srv, *args)
        check(out.returncode == 2 and out.stderr.strip(),
              f"usage error {args}: exit {out.returncode}, stderr {out.stderr!r}")
    out = bench(srv, "--unit", "PING", "--units", 10, port=tl.free_port())
    check(out.returncode == 1 and "connect" in out.stderr.lower(),
          f"no server: exit {out.returncode}, stderr {out.stderr!r}")


if __name__ == "__main__":
    if not os.access(BENCH, os.X_OK):
        print(f"{BENCH} is not built (make {os.path.relpath(BENCH, tl.SRC_DIR)})")
        sys.exit(77)
    tl.main(globals(), threads=2)
