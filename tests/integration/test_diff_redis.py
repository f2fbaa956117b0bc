#!/usr/bin/python3
"""test_diff_redis: seeded random command sequences sent to ringkv and to redis-server 7.0
(/usr/bin/redis-server, no persistence, 16 databases), every reply compared (ringkv_diff.py:
exactly, types included, unless Redis leaves the order unspecified or the reply is random).

Families (ringkv_diff_families.py): strings (strings and keyspace), hashes, sets, types
(the WRONGTYPE matrix, OBJECT ENCODING, SCAN TYPE, random mixing), databases.  Each runs its
deterministic edge cases under RESP2 and RESP3, then one random run per seed (RESP2 and RESP3
alternate).  A family whose probe command ringkv does not know is SKIPPED (loudly).

Environment:
  RINGKV_DIFF_FAMILIES=strings,hashes,...  the families to run (default: all)
  RINGKV_DIFF_SEED=N       one seed (default: the fixed list SEEDS)
  RINGKV_DIFF_PROTO=2|3    one protocol (default: alternate over the seeds; both for one seed)
  RINGKV_DIFF_OPS=N        operations per random run (default OPS x RINGKV_TEST_SCALE);
                           0 runs the edge cases only
  RINGKV_DIFF_EDGES=0      skip the edge cases
  RINGKV_DIFF_MAX_MISMATCHES=N  mismatches reported per run before it stops (default 5);
                           after each, both servers are emptied and the run goes on
  RINGKV_DIFF_STRICT=1     documented differences (docs/COMMANDS.md) count as mismatches
  RINGKV_DIFF_SKIP_CMDS=A,B  leave out the operations whose command is A or B (to look past a
                           known bug; random runs still draw them, so seeds stay comparable)
  RINGKV_TEST_TARGET=redis the server under test is a second redis-server: the harness checks
                           itself (every family must report no difference)
Exit: 0 no mismatch, 1 mismatches (each printed with its seed, reproduction and the commands
before it), 77 every family skipped.
"""

import collections
import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringkv_diff as rd  # noqa: E402
import ringkv_diff_families as fam  # noqa: E402
import ringkv_testlib as tl  # noqa: E402

SEEDS = [1, 2, 3, 4]
OPS = 1500  # per random run, before RINGKV_TEST_SCALE


def env_int(name, default):
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else default


def runs_of(seeds, proto_env):
    """(seed, proto) pairs: one protocol if asked, both for a single seed, else alternating."""
    if proto_env:
        return [(s, int(proto_env)) for s in seeds]
    if len(seeds) == 1:
        return [(seeds[0], 2), (seeds[0], 3)]
    return [(s, 2 if i % 2 == 0 else 3) for i, s in enumerate(seeds)]


def start_servers():
    ref = tl.Server(target="redis", redis_args=fam.REDIS_ARGS)
    if tl.IS_REDIS:
        sut = tl.Server(target="redis", redis_args=fam.REDIS_ARGS)
    else:
        sut = tl.Server(durability="write")
    return ref, sut


class Settings:
    """The run's settings, from the environment (see the module doc)."""

    def __init__(self):
        selected = os.environ.get("RINGKV_DIFF_FAMILIES", "").replace(" ", "")
        self.families = [n for n in selected.split(",") if n] or list(fam.FAMILIES)
        seed = os.environ.get("RINGKV_DIFF_SEED")
        self.seeds = [int(seed)] if seed else SEEDS
        self.proto = os.environ.get("RINGKV_DIFF_PROTO", "")
        scale = float(os.environ.get("RINGKV_TEST_SCALE", "1"))
        self.ops = env_int("RINGKV_DIFF_OPS", max(1, int(OPS * scale)))
        self.edges = os.environ.get("RINGKV_DIFF_EDGES", "1") != "0"
        self.max_mismatches = env_int("RINGKV_DIFF_MAX_MISMATCHES", 5)
        self.strict = os.environ.get("RINGKV_DIFF_STRICT") == "1"
        self.skip_cmds = [c for c in os.environ.get("RINGKV_DIFF_SKIP_CMDS", "").split(",") if c]
        self.target_env = "RINGKV_TEST_TARGET=redis " if tl.IS_REDIS else ""

    def repro(self, family, seed=None, proto=2):
        """The command line that repeats one run."""
        if seed is None:
            what = f"RINGKV_DIFF_PROTO={proto} RINGKV_DIFF_OPS=0"
        else:
            what = (f"RINGKV_DIFF_SEED={seed} RINGKV_DIFF_PROTO={proto} RINGKV_DIFF_OPS={self.ops} "
                    f"RINGKV_DIFF_EDGES=0")
        return (f"{self.target_env}RINGKV_DIFF_FAMILIES={family} {what} "
                f"tests/integration/test_diff_redis.py")


def run_family(ctx, cfg, family, available):
    """The edge cases under each protocol, then the random runs; (summary line, mismatches)."""
    t = time.monotonic()
    runs = []
    if cfg.edges:
        for proto in [int(cfg.proto)] if cfg.proto else [2, 3]:
            runs.append(ctx.run(family, None, proto, 0, available,
                                cfg.repro(family.name, None, proto)))
    if cfg.ops > 0:
        for seed, proto in runs_of(cfg.seeds, cfg.proto):
            runs.append(ctx.run(family, seed, proto, cfg.ops, available,
                                cfg.repro(family.name, seed, proto)))
    mismatches = [m for r in runs for m in r.mismatches]
    documented = sum((r.documented for r in runs), start=collections.Counter())
    line = (f"{family.name:10} {'FAIL' if mismatches else 'ok':4} {len(runs)} runs, "
            f"{sum(r.commands for r in runs)} commands, {len(mismatches)} mismatches, "
            f"{time.monotonic() - t:.1f} s")
    if documented:
        line += "; documented differences accepted: " + ", ".join(
            f"{n}x {rd.DOCUMENTED[k]}" for k, n in documented.items())
    if mismatches:
        line += f" (commands: {' '.join(sorted({m.cmd_name for m in mismatches}))})"
    return line, mismatches


def main():
    cfg = Settings()
    unknown = [n for n in cfg.families if n not in fam.FAMILIES]
    if unknown:
        print(f"unknown families {unknown}; known: {', '.join(fam.FAMILIES)}")
        return 1
    sut_name = "redis2" if tl.IS_REDIS else "ringkv"
    ref, sut = start_servers()
    t0 = time.monotonic()
    failed = skipped = 0
    summary = []
    try:
        ref.start()
        sut.start()
        ctx = fam.Context(ref.port, sut.port, ("redis", sut_name),
                          max_mismatches=cfg.max_mismatches, strict=cfg.strict,
                          skip_cmds=cfg.skip_cmds)
        # every family is probed: which ones exist decides what the databases family draws
        skips = {name: fam.probe(sut.port, f) for name, f in fam.FAMILIES.items()}
        available = [n for n in ("hashes", "sets") if skips[n] is None]
        for name in cfg.families:
            family = fam.FAMILIES[name]
            why = skips[name] or next((f"needs {n}: {skips[n]}" for n in family.needs if skips[n]),
                                      None)
            if why:
                skipped += 1
                bar = "!" * 78
                print(f"{bar}\n!!! SKIPPED family '{name}': {sut_name} does not implement it yet "
                      f"({why})\n{bar}", flush=True)
                summary.append(f"{name:10} SKIPPED ({why})")
                continue
            line, mismatches = run_family(ctx, cfg, family, available)
            failed += len(mismatches)
            summary.append(line)
            print(line, flush=True)
    except AssertionError as e:  # a server did not start
        failed += 1
        print(f"FAIL: {e}")
    except rd.ServerGone as e:
        failed += 1
        print(f"FAIL: a connection broke: {e}")
    finally:
        for srv, label in ((ref, "redis"), (sut, sut_name)):
            alive = srv.alive()
            rc = srv.stop()
            if not alive or rc != 0:
                failed += 1
                print(f"FAIL: {label} exit status {rc} (running until the end: {alive}); "
                      f"its log ({srv.log_path}):\n{srv.log()}\n----")
            srv.cleanup()
    print(f"test_diff_redis [{sut_name} vs redis], {cfg.ops} operations per random run, "
          f"seeds {cfg.seeds}:")
    print("\n".join("  " + x for x in summary))
    print(f"test_diff_redis: {failed} mismatches, {skipped} families skipped "
          f"({time.monotonic() - t0:.1f} s)")
    if failed:
        return 1
    return 77 if skipped == len(cfg.families) else 0


if __name__ == "__main__":
    sys.exit(main())
