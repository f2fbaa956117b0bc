#!/usr/bin/python3
"""test_transactions_crash: after kill -9, every transaction is there whole or not at all, and
every acknowledged one is there — EXEC, scripts and multi-key commands, on one shard and across
both (docs/COMMANDS.md, "Transactions"; store.h, "transactions").

Each round, connections loop over keys of their own, each with one kind of transaction:
  exec1   MULTI; INCR a; INCRBY b 2; SADD s n; EXEC     keys on one shard (a {hash tag})
  exec2   the same with a and s on shard 0, b on shard 1 (holds)
  eval2   EVAL "INCR a; INCRBY b 2; SADD s n" over a, b, s on both shards
  mset2   MSET a n b n s n across both shards (an isolated multi-key command)
and counts the ones acknowledged.  At a random moment the server is killed (the durability
alternates between fsync and write across rounds); on restart each connection's keys must show
n whole transactions with acknowledged <= n <= acknowledged + 1 — never a part of one (a = n,
b = 2n, SCARD s = n; for MSET all three equal).  RINGKV_CRASH_SEED picks the random sequence
(printed)."""

import os
import random
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringkv_testlib as tl  # noqa: E402

KINDS = ["exec1", "exec2", "eval2", "mset2"]
PER_KIND = tl.scaled(2, 1)
THREADS = len(KINDS) * PER_KIND
RUN_S = (0.3, 1.2 * float(os.environ.get("RINGKV_TEST_SCALE", "1")) + 0.2)
SCRIPT = ("redis.call('INCR', KEYS[1]) redis.call('INCRBY', KEYS[2], 2) "
          "redis.call('SADD', KEYS[3], ARGV[1]) return 1")


def kind_of(t):
    return KINDS[t % len(KINDS)]


def keys_of(t):
    if kind_of(t) == "exec1":
        tag = f"{{tx{t}}}"
        return [f"{tag}a", f"{tag}b", f"{tag}s"]
    return [tl.key_on_shard(f"tx{t}a:", 0), tl.key_on_shard(f"tx{t}b:", 1),
            tl.key_on_shard(f"tx{t}s:", 0)]


def one(c, kind, keys, n):
    """Runs transaction number n (0-based) of a connection; True if acknowledged."""
    a, b, s = keys
    if kind.startswith("exec"):
        got = c.pipeline([["MULTI"], ["INCR", a], ["INCRBY", b, "2"], ["SADD", s, str(n)],
                          ["EXEC"]])
        return isinstance(got[-1], list)
    if kind == "eval2":
        return c.call("EVAL", SCRIPT, "3", a, b, s, str(n)) == 1
    v = str(n + 1)
    return c.call("MSET", a, v, b, v, s, v) in ("OK", b"OK")


def worker(t, port, acked, stop):
    c = tl.Client(port, timeout=5)
    n = acked[t]
    try:
        while not stop.is_set():
            if not one(c, kind_of(t), keys_of(t), n):
                break
            n += 1
            acked[t] = n
    except Exception:  # the kill: the connection breaks mid-way
        pass
    finally:
        try:
            c.close()
        except Exception:
            pass


def survived(c, t):
    """How many whole transactions connection t's keys hold, or None for a part of one."""
    a, b, s = keys_of(t)
    if kind_of(t) == "mset2":
        vals = [int(c.call("GET", k) or 0) for k in (a, b, s)]
        return vals[0] if len(set(vals)) == 1 else None
    va = int(c.call("GET", a) or 0)
    vb = int(c.call("GET", b) or 0)
    vs = c.call("SCARD", s)
    return va if vb == 2 * va and vs == va else None


def reset(c, t, n):
    """Writes connection t's keys as n whole transactions (outside any transaction: the next
    round starts from a consistent state whatever the kill left)."""
    a, b, s = keys_of(t)
    c.call("DEL", s)
    if kind_of(t) == "mset2":
        for k in (a, b, s):
            c.call("SET", k, str(n))
        return
    c.call("SET", a, str(n))
    c.call("SET", b, str(2 * n))
    if n > 0:
        c.call("SADD", s, *[str(m) for m in range(n)])


def crash_rounds(rounds, rng):
    acked = [0] * THREADS
    inflight_kept = 0
    with tl.Server(durability="fsync") as srv:
        for rnd in range(rounds):
            durability = "fsync" if rnd % 2 == 0 else "write"
            if rnd > 0 and srv.opts["durability"] != durability:
                srv.stop()
                srv.opts["durability"] = durability
                srv.start()
            stop = threading.Event()
            ws = [threading.Thread(target=worker, args=(t, srv.port, acked, stop))
                  for t in range(THREADS)]
            for w in ws:
                w.start()
            time.sleep(rng.uniform(*RUN_S))
            srv.kill9()
            stop.set()
            for w in ws:
                w.join(30)
                tl.check(not w.is_alive(), f"round {rnd}: a connection hangs after the kill")
            srv.start()
            c = srv.client()
            for t in range(THREADS):
                n = acked[t]
                got = survived(c, t)
                tl.check(got is not None,
                         f"round {rnd} ({durability}) connection {t} ({kind_of(t)}): a part of a"
                         f" transaction survived the kill: {[c.call('GET', k) if i < 2 else c.call('TYPE', k) for i, k in enumerate(keys_of(t))]}")
                if got is None:
                    got = n
                tl.check(n <= got <= n + 1,
                         f"round {rnd} ({durability}) connection {t} ({kind_of(t)}): {n}"
                         f" acknowledged, {got} survived")
                inflight_kept += got > n
                acked[t] = got
                reset(c, t, got)
            c.close()
            print(f"  round {rnd} ({durability}): {sum(acked)} transactions survived so far;"
                  f" in flight at a kill and kept whole: {inflight_kept}", flush=True)
    tl.check(sum(acked) > THREADS * rounds, f"too few transactions ran to mean anything: {acked}")


def test_kill9_transactions_whole():
    crash_rounds(tl.scaled(6, 3), random.Random(SEED))


SEED = int(os.environ.get("RINGKV_CRASH_SEED") or random.randrange(1 << 30))

if __name__ == "__main__":
    print(f"RINGKV_CRASH_SEED={SEED}")
    tl.main(globals(), shared_server=False)
