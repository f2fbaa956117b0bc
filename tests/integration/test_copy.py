#!/usr/bin/python3
"""test_copy: RENAME, RENAMENX, COPY (DB, REPLACE) and MOVE for strings, hashes and sets.

Semantics against redis-server 7.0.15 (the same commands on both, every reply compared; the
elements of HGETALL/SMEMBERS compared as sets, since ringkv's order is its hash order): every
type as source and destination, keys on one shard and on two, expiries carried over, a string
whose value is in the log (larger than storage.inline_max), a hash and a set past their small
encodings, an expired source, the same key, RENAMENX/COPY/MOVE onto an existing key, COPY
REPLACE over another type, COPY DB and MOVE between databases, and every error (no such key,
source and destination the same, DB index out of range, not an integer, syntax, arity).

Isolation across shards: a key renamed back and forth between two keys on different shards
(and a hash copied over another with REPLACE) while readers check that exactly one of the two
exists (EXISTS of both, itself isolated) and that a hash is never seen half copied.  Inside
MULTI/EXEC and scripts; WATCH fails on a rename of either key.  Persistence: everything is
there after a restart.  Crash: kill -9 while hashes are renamed in loops (fsync): a rename
within one shard is all or nothing (exactly one of its keys, whole); across shards at least
one of them, whole."""

import os
import random
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringkv_testlib as tl  # noqa: E402
from ringkv_testlib import OK, E, check, expect  # noqa: E402

A0 = tl.key_on_shard("cp:a:", 0)
A1 = tl.key_on_shard("cp:b:", 1)
B0 = tl.key_on_shard("cp:c:", 0)
B1 = tl.key_on_shard("cp:d:", 1)
NOKEY = E("ERR no such key")
SAME = E("ERR source and destination objects are the same")
BIG = "v" * 20000  # a value kept in the log, not inline in the index
UNORDERED = {"HGETALL", "SMEMBERS", "HKEYS", "HVALS"}


def normalize(cmd, reply):
    name = cmd[0].upper()
    if name in UNORDERED and isinstance(reply, list):
        if name == "HGETALL":
            return sorted(zip(reply[0::2], reply[1::2]))
        return sorted(reply)
    if name in ("TTL", "PTTL") and isinstance(reply, int) and reply > 0:
        return "positive"  # (the clocks differ by the time between the two calls)
    return reply


def fill(keys):
    """Commands creating one key of each kind on each of `keys` (4 of them)."""
    s, h, st, big = keys
    fields = [x for i in range(200) for x in (f"f{i}", f"v{i}")]
    return [["SET", s, "str"], ["PEXPIRE", s, "100000"],
            ["HSET", h, "a", "1", "b", "2"], ["HSET", h] + fields,
            ["SADD", st, "1", "2", "3"], ["SET", big, BIG]]


def reads(keys, db=None):
    out = []
    if db is not None:
        out.append(["SELECT", str(db)])
    for k in keys:
        out += [["TYPE", k], ["PTTL", k], ["OBJECT", "ENCODING", k]]
    s, h, st, big = keys
    out += [["GET", s], ["HGETALL", h], ["HLEN", h], ["SMEMBERS", st], ["STRLEN", big]]
    if db is not None:
        out.append(["SELECT", "0"])
    return out


def scenario():
    k = [A0, A1, B0, B1]
    cmds = []
    cmds += fill(k)
    # errors first: every one, as Redis orders its checks
    cmds += [["RENAME", "nosuch", A0], ["RENAMENX", "nosuch", A0], ["RENAME", A0],
             ["RENAME", A0, A1, A1], ["COPY", A0], ["COPY", A0, A0], ["COPY", A0, A0, "DB", "0"],
             ["COPY", A0, B0, "DB", "16"], ["COPY", A0, B0, "DB", "-1"],
             ["COPY", A0, B0, "DB", "x"], ["COPY", A0, B0, "DB"], ["COPY", A0, B0, "FOO"],
             ["COPY", "nosuch", B0], ["MOVE", A0, "0"], ["MOVE", A0, "x"], ["MOVE", A0, "16"],
             ["MOVE", A0, "99999999999"], ["MOVE", "nosuch", "1"], ["MOVE", A0],
             ["RENAME", "nosuch", "nosuch"], ["RENAME", A0, A0], ["RENAMENX", A0, A0]]
    cmds += reads(k)
    # every kind renamed across shards and back within one, TTL carried
    for src, dst in ((A0, B1), (B1, B0), (A1, "cp:e"), ("cp:e", A1), (B0, A0), (B1, "cp:f")):
        cmds += [["RENAME", src, dst], ["EXISTS", src], ["TYPE", dst], ["PTTL", dst]]
    cmds += reads(k)
    # RENAMENX onto an existing key, then onto a free one
    cmds += [["RENAMENX", A0, A1], ["RENAMENX", A0, B0], ["RENAMENX", B0, A0]]
    # RENAME over a key of another type (each kind over each kind)
    for src, dst in ((A0, A1), (A1, B0), (B0, B1), (B1, A0)):
        cmds += fill(k) + [["RENAME", src, dst], ["TYPE", dst], ["HLEN", dst], ["SCARD", dst],
                           ["GET", dst] if src != B1 else ["STRLEN", dst]]
    cmds += reads(k)
    # COPY: onto nothing, onto an existing key (0), with REPLACE over each kind, to other dbs
    cmds += fill(k)
    cmds += [["COPY", A0, "cp:g"], ["COPY", A1, "cp:h"], ["COPY", B0, "cp:i"],
             ["COPY", B1, "cp:j"], ["COPY", A0, A1], ["COPY", A0, A1, "REPLACE"],
             ["TYPE", A1], ["GET", A1], ["PTTL", A1], ["COPY", "cp:h", B0, "REPLACE"],
             ["HGETALL", B0], ["OBJECT", "ENCODING", B0], ["COPY", "cp:i", B1, "REPLACE"],
             ["SMEMBERS", B1], ["OBJECT", "ENCODING", B1], ["COPY", A0, A0, "DB", "3"],
             ["COPY", "cp:h", "cp:h", "DB", "3", "REPLACE"], ["COPY", "cp:i", "cp:x", "DB", "3"],
             ["COPY", "cp:j", "cp:y", "REPLACE", "DB", "3"], ["COPY", A0, A0, "DB", "3"]]
    cmds += reads(["cp:g", "cp:h", "cp:i", "cp:j"])
    cmds += reads([A0, "cp:h", "cp:x", "cp:y"], db=3)
    cmds += [["DBSIZE"], ["SELECT", "3"], ["DBSIZE"], ["SELECT", "0"]]
    # MOVE: onto an existing key in the other db (0), then onto a free one; and back
    cmds += [["MOVE", A0, "3"], ["MOVE", "cp:g", "3"], ["EXISTS", "cp:g"], ["MOVE", "cp:j", "5"],
             ["SELECT", "5"], ["STRLEN", "cp:j"], ["MOVE", "cp:j", "0"], ["SELECT", "0"],
             ["STRLEN", "cp:j"], ["MOVE", "cp:h", "3"]]
    # an expired source is no key
    cmds += [["SET", "cp:exp", "x", "PX", "1"], ["HSET", "cp:exph", "f", "v"],
             ["PEXPIRE", "cp:exph", "1"], ["DEBUG-SLEEP"], ["RENAME", "cp:exp", "cp:z"],
             ["COPY", "cp:exph", "cp:z"], ["MOVE", "cp:exph", "2"], ["EXISTS", "cp:z"]]
    # a set of integers stays an intset; a hash of small fields a listpack
    cmds += [["DEL", A0, A1], ["SADD", A0, "1", "2"], ["HSET", A1, "x", "y"],
             ["RENAME", A0, B1], ["OBJECT", "ENCODING", B1], ["RENAME", A1, B0],
             ["OBJECT", "ENCODING", B0], ["HGETALL", B0]]
    return cmds


def run_on(port, cmds):
    c = tl.Client(port)
    out = []
    for cmd in cmds:
        if cmd == ["DEBUG-SLEEP"]:
            time.sleep(0.05)
            continue
        out.append(normalize(cmd, c.call(*cmd)))
    c.close()
    return out


def test_semantics_vs_redis():
    cmds = scenario()
    with tl.Server(target="redis", databases=16) as r, tl.Server(databases=16) as k:
        want = run_on(r.port, cmds)
        got = run_on(k.port, cmds)
    plain = [c for c in cmds if c != ["DEBUG-SLEEP"]]
    bad = [(c, w, g) for c, w, g in zip(plain, want, got) if w != g]
    for c, w, g in bad[:10]:
        check(False, f"{tl.fmt_cmd(c)}: redis {tl.fmt(w)}, ringkv {tl.fmt(g)}")
    check(len(plain) > 150, f"only {len(plain)} commands compared")
    print(f"     {len(plain)} commands compared, {len(bad)} mismatches", flush=True)


def test_transactions_and_scripts():
    with tl.Server(databases=16) as srv:
        c = srv.client()
        c.call("HSET", A0, "f", "v")
        got = c.pipeline([["MULTI"], ["RENAME", A0, A1], ["HGET", A1, "f"], ["COPY", A1, B0],
                          ["MOVE", B0, "2"], ["EXEC"]])
        expect(c, ["EXISTS", A0, A1, B0], 1)
        check(got[-1] == [OK, b"v", 1, 1], f"EXEC: {got[-1]!r}")
        script = "redis.call('RENAME', KEYS[1], KEYS[2]) return redis.call('HGET', KEYS[2], 'f')"
        expect(c, ["EVAL", script, "2", A1, B1], b"v")
        # undeclared keys: the script starts over holding them
        expect(c, ["EVAL", "return redis.call('COPY', ARGV[1], ARGV[2])", "0", B1, A0], 1)
        expect(c, ["HGET", A0, "f"], b"v")
        # WATCH: a rename changes both of its keys for a watcher
        for watched in (A0, B0):
            other = srv.client()
            c.call("WATCH", watched)
            other.call("RENAME", A0, B0) if watched == A0 else other.call("RENAME", B0, A0)
            got = c.pipeline([["MULTI"], ["PING"], ["EXEC"]])
            check(got[-1] is None, f"EXEC after a RENAME of watched {watched}: {got[-1]!r}")
            other.close()
        c.close()


def test_isolation_across_shards():
    with tl.Server() as srv:
        c = srv.client()
        fields = [x for i in range(50) for x in (f"f{i}", str(i))]
        c.call("HSET", A0, *fields)
        c.call("HSET", "cp:src{x}", *fields)
        stop = threading.Event()
        bad = []
        counts = {"renames": 0, "reads": 0}

        def renamer():
            r = srv.client()
            src, dst = A0, A1
            while not stop.is_set():
                got = r.call("RENAME", src, dst)
                if got == NOKEY:  # (the other renamer moved it first)
                    src, dst = dst, src
                    continue
                if got != OK:
                    bad.append(f"RENAME {src} {dst}: {got!r}")
                    return
                src, dst = dst, src
                counts["renames"] += 1
            r.close()

        def copier():
            r = srv.client()
            i = 0
            while not stop.is_set():
                r.call("DEL", B0)
                r.call("HSET", B0, "f0", "x", "other", "y")  # a different hash, then replaced
                got = r.call("COPY", "cp:src{x}", B0, "REPLACE")
                if got != 1:
                    bad.append(f"COPY ... REPLACE: {got!r}")
                    return
                i += 1
            r.close()

        def reader():
            r = srv.client()
            while not stop.is_set():
                n = r.call("EXISTS", A0, A1)
                if n != 1:
                    bad.append(f"EXISTS of the renamed pair: {n!r}")
                    return
                got = r.call("HGETALL", B0)
                if got and len(got) != 100 and len(got) != 4:
                    bad.append(f"HGETALL of the copied hash: {len(got) // 2} fields")
                    return
                counts["reads"] += 1
            r.close()

        threads = [threading.Thread(target=f) for f in (renamer, renamer, copier, reader, reader)]
        for t in threads:
            t.start()
        time.sleep(2.0 * float(os.environ.get("RINGKV_TEST_SCALE", "1")))
        stop.set()
        for t in threads:
            t.join()
        check(not bad, "; ".join(bad[:3]))
        check(counts["renames"] > 10 and counts["reads"] > 10, f"too few operations: {counts}")
        expect(c, ["EXISTS", A0, A1], 1)
        key = A0 if c.call("EXISTS", A0) else A1
        expect(c, ["HLEN", key], 50)
        c.close()


def test_restart():
    with tl.Server(databases=16) as srv:
        c = srv.client()
        for cmd in fill([A0, A1, B0, B1]):
            c.call(*cmd)
        expect(c, ["RENAME", A0, "cp:s"], OK)
        expect(c, ["RENAME", A1, "cp:h"], OK)
        expect(c, ["COPY", B0, "cp:t", "DB", "4"], 1)
        expect(c, ["MOVE", B1, "7"], 1)
        c.close()
        srv.stop()
        srv.start()
        c = srv.client()
        expect(c, ["EXISTS", A0, A1, B1], 0)
        expect(c, ["GET", "cp:s"], b"str")
        check(c.call("PTTL", "cp:s") > 0, "the expiry of a renamed string is lost")
        expect(c, ["HLEN", "cp:h"], 202)
        expect(c, ["SCARD", B0], 3)
        c.call("SELECT", "4")
        expect(c, ["SMEMBERS", "cp:t"], tl.UNORDERED([b"1", b"2", b"3"]))
        c.call("SELECT", "7")
        expect(c, ["STRLEN", B1], len(BIG))
        c.close()


def crash_worker(port, pair, fields, stop, acked, i):
    c = tl.Client(port, timeout=5)
    src, dst = pair
    try:
        if not c.call("EXISTS", src):
            src, dst = dst, src
        while not stop.is_set():
            if c.call("RENAME", src, dst) != OK:
                break
            acked[i] = dst
            src, dst = dst, src
    except Exception:  # the kill
        pass
    finally:
        try:
            c.close()
        except Exception:
            pass


def test_crash():
    rng = random.Random(int(os.environ.get("RINGKV_CRASH_SEED", random.randrange(1 << 30))))
    pairs = [("{cp1}a", "{cp1}b"), (A0, A1), ("{cp2}a", "{cp2}b"), (B0, B1)]
    one_shard = [True, tl.shard_of(A0) == tl.shard_of(A1), True,
                 tl.shard_of(B0) == tl.shard_of(B1)]
    fields = [x for i in range(100) for x in (f"f{i}", f"v{i}")]
    with tl.Server(durability="fsync") as srv:
        c = srv.client()
        for a, _ in pairs:
            c.call("HSET", a, *fields)
        c.close()
        for rnd in range(tl.scaled(4, 2)):
            stop = threading.Event()
            acked = [None] * len(pairs)
            threads = [threading.Thread(target=crash_worker,
                                        args=(srv.port, p, fields, stop, acked, i))
                       for i, p in enumerate(pairs)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.2, 0.8))
            srv.kill9()
            stop.set()
            for t in threads:
                t.join()
            srv.start()
            c = srv.client()
            for (a, b), one, last in zip(pairs, one_shard, acked):
                there = [k for k in (a, b) if c.call("EXISTS", k)]
                whole = all(c.call("HLEN", k) == 100 for k in there)
                if one:
                    check(len(there) == 1 and whole,
                          f"round {rnd}: one-shard pair {a},{b}: keys {there}, whole {whole}")
                else:
                    check(len(there) >= 1 and whole,
                          f"round {rnd}: pair {a},{b} on two shards: keys {there}, whole {whole}")
                if len(there) == 2:  # (a cross-shard rename caught between its two records)
                    c.call("DEL", there[1])
                check(last is None or there, f"round {rnd}: acknowledged rename to {last} lost")
            c.close()


if __name__ == "__main__":
    tl.main(globals(), shared_server=False)
