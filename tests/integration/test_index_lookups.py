#!/usr/bin/python3
"""test_index_lookups: index entries not in the block cache are read by the lookup threads,
never on a proactor's loop.  Each test fills a server (storage.index_cache_size=1mb, the
smallest, and cache_size=1mb) with more keys than the cache holds, restarts it so that the
index is on disk and the caches are cold, and then:

- test_cold_gets_off_the_loop: pipelined GETs of every key in random order (values in the
  index and in the log) answer right; INFO counts lookups sent to the threads
  (index_async_reads > 0) and none read blocking on the loop (index_blocking_reads = 0);
- test_probes_follow_the_cache: while the block cache answers few of the loop's tries
  (cold), lookups go to the threads without one (index_probes_skipped grows); once it holds
  the index (64 MiB), the tries come back and answer (the count stops growing);
- test_order_per_key: pipelines of GET, SET, APPEND, INCR, DEL, EXISTS, TYPE on cold keys,
  several commands per key in one pipeline, answer as a model says (a command never overtakes
  an earlier one on its key while that one waits for its lookup);
- test_calls_on_cold_keys: commands on several cold keys at once (MSET with a key twice,
  SMOVE, SINTERSTORE of a set with itself, RENAME, HSET/HGETALL, MULTI/EXEC) — one lookup per
  key even when a command names it twice;
- test_cold_collection_elements: fields and members of big hashes and sets read and written
  on a cold cache answer as a model says, and none of their index reads blocks the loop (the
  store looks a command's elements up before its call runs);
- test_shutdown_with_lookups_in_flight: connections pipeline thousands of cold GETs without
  reading and the server gets SIGTERM meanwhile: it exits with status 0, and the data is
  whole after the next start;
- test_index_read_errors: the index's SST files are truncated under the running server:
  cold GETs answer their value or an error (never a wrong value), the server stays up, and
  the errors are logged."""

import glob
import os
import random
import socket
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringkv_testlib as tl  # noqa: E402
from ringkv_testlib import OK, Err, expect  # noqa: E402

KEYS = 40000  # not scaled: fewer keys would fit the 1 MiB block cache
PIPE = 500
SEED = int(os.environ.get("RINGKV_TEST_SEED", "11"))
SETS = {"storage.index_cache_size": "1mb", "storage.cache_size": "1mb"}


def value_of(i):
    """Key i's value: in the index (up to 64 bytes) or in the log."""
    size = (8, 40, 100, 700)[i % 4]
    return (b"v%d:" % i + b"x" * size)[:size]


def key(i):
    return f"lk:{i}"


def fill(srv, n=KEYS):
    c = srv.client()
    for start in range(0, n, PIPE):
        cmds = [["SET", key(i), value_of(i)] for i in range(start, min(n, start + PIPE))]
        tl.expect_pipeline(c, cmds, [OK] * len(cmds))
    c.close()


def restart(srv):
    rc = srv.stop()
    tl.check(rc == 0, f"exit status after SIGTERM: expected 0, got {rc}")
    srv.start()
    return srv.client()


def lookups(c):
    shards = tl.info_shards(c)
    return (sum(s["index_async_reads"] for s in shards),
            sum(s["index_blocking_reads"] for s in shards))


def test_cold_gets_off_the_loop():
    with tl.Server(threads=2, durability="write", sets=SETS) as srv:
        fill(srv)
        c = restart(srv)
        order = list(range(KEYS))
        random.Random(SEED).shuffle(order)
        bad = 0
        for start in range(0, KEYS, PIPE):
            idx = order[start:start + PIPE]
            got = c.pipeline([["GET", key(i)] for i in idx])
            for i, g in zip(idx, got):
                if g != value_of(i):
                    bad += 1
                    if bad <= 5:
                        tl.check(False, f"GET {key(i)}: {tl.fmt(g)}, want {tl.fmt(value_of(i))}")
        tl.check(bad == 0, f"{bad} of {KEYS} cold GETs answered wrong")
        async_reads, blocking = lookups(c)
        tl.check(async_reads > KEYS // 10,
                 f"index_async_reads is {async_reads} after {KEYS} cold GETs with a 1 MiB cache")
        tl.check(blocking == 0, f"index_blocking_reads is {blocking}: lookups ran on the loop")
        c.close()


PROBE_KEYS = 150000  # of 60-byte values, in their index rows: an index of ~15 MiB


def test_probes_follow_the_cache():
    def val(i):
        return (b"p%d:" % i).ljust(60, b"y")

    with tl.Server(threads=1, durability="write", sets=SETS) as srv:
        c = srv.client()
        for start in range(0, PROBE_KEYS, PIPE):
            cmds = [["SET", key(i), val(i)] for i in range(start, min(PROBE_KEYS, start + PIPE))]
            tl.expect_pipeline(c, cmds, [OK] * len(cmds))
        c.close()
        order = list(range(PROBE_KEYS))
        skipped = []
        for rnd, index_cache in enumerate(("1mb", "64mb", "64mb")):
            if rnd < 2:  # cold again, with this block cache
                srv.sets["storage.index_cache_size"] = index_cache
                c = restart(srv)
            random.Random(SEED + rnd).shuffle(order)
            for start in range(0, PROBE_KEYS, PIPE):
                idx = order[start:start + PIPE]
                got = c.pipeline([["GET", key(i)] for i in idx])
                tl.check(got == [val(i) for i in idx],
                         f"round {rnd}: GETs of cold keys answered wrong")
            shard = tl.info_shards(c)[0]
            skipped.append(shard["index_probes_skipped"])
            tl.check(shard["index_blocking_reads"] == 0, "a lookup read blocking on the loop")
            if rnd < 2:
                c.close()
        # Round 0: a 1 MiB block cache answers few of the loop's tries, and most lookups
        # go straight to the threads.  Round 1 starts cold with 64 MiB, which the threads'
        # reads fill with the whole index; by round 2 the loop's tries answer again, and at
        # most a few windows' worth of lookups skip them.
        tl.check(skipped[0] > PROBE_KEYS // 2,
                 f"{skipped[0]} of {PROBE_KEYS} lookups skipped the try of a 1 MiB block cache")
        tl.check(skipped[2] - skipped[1] < PROBE_KEYS // 16,
                 f"round 2 skipped {skipped[2] - skipped[1]} tries with the index cached "
                 f"(skipped, cumulative per round: {skipped})")
        c.close()


def test_order_per_key():
    with tl.Server(threads=1, durability="write", sets=SETS) as srv:
        fill(srv)
        for i in range(0, KEYS, 97):
            srv_c = srv.client()
            srv_c.call("SET", f"n:{i}", i)
            srv_c.close()
        c = restart(srv)
        rnd = random.Random(SEED)
        model = {}  # key -> bytes or None, for keys touched; others are value_of / n:i
        cmds, want = [], []

        def cur(k):
            if k in model:
                return model[k]
            if k.startswith("n:"):
                return k[2:].encode()
            return value_of(int(k[3:]))

        picks = rnd.sample(range(KEYS), min(KEYS, 3000))
        for i in picks:
            k = key(i)
            for _ in range(rnd.randrange(1, 5)):
                op = rnd.randrange(7)
                v = cur(k)
                if op == 0:
                    cmds.append(["GET", k])
                    want.append(v)
                elif op == 1:
                    nv = b"new%d" % rnd.randrange(10**6)
                    cmds.append(["SET", k, nv])
                    want.append(OK)
                    model[k] = nv
                elif op == 2:
                    cmds.append(["APPEND", k, b"+"])
                    nv = (v or b"") + b"+"
                    want.append(len(nv))
                    model[k] = nv
                elif op == 3:
                    cmds.append(["DEL", k])
                    want.append(0 if v is None else 1)
                    model[k] = None
                elif op == 4:
                    cmds.append(["EXISTS", k])
                    want.append(0 if v is None else 1)
                elif op == 5:
                    cmds.append(["TYPE", k])
                    want.append(tl.S("none" if v is None else "string"))
                else:
                    cmds.append(["STRLEN", k])
                    want.append(0 if v is None else len(v))
        for i in range(0, KEYS, 97):
            k = f"n:{i}"
            cmds.append(["INCR", k])
            want.append(i + 1)
            cmds.append(["INCRBY", k, 10])
            want.append(i + 11)
            model[k] = b"%d" % (i + 11)
            cmds.append(["GET", k])
            want.append(model[k])
        for start in range(0, len(cmds), PIPE):
            tl.expect_pipeline(c, cmds[start:start + PIPE], want[start:start + PIPE])
        async_reads, blocking = lookups(c)
        tl.check(async_reads > 0, "no lookup went to the lookup threads")
        tl.check(blocking == 0, f"index_blocking_reads is {blocking}")
        c.close()
        c = restart(srv)  # what the pipelines wrote is what a restart reads
        for k in sorted(model)[:2000]:
            expect(c, ["GET", k], model[k])
        c.close()


def test_calls_on_cold_keys():
    with tl.Server(threads=1, durability="write", sets=SETS) as srv:
        fill(srv)
        c = srv.client()
        for i in range(200):
            tl.expect_pipeline(c, [["SADD", f"s:{i}", "a", "b", f"m{i}"],
                                   ["HSET", f"h:{i}", "f", i, "g", "x"]], [3, 2])
        c.close()
        c = restart(srv)
        k0, k1, k2 = key(1), key(2), key(3)
        expect(c, ["MSET", k0, "one", k1, "two", k0, "three"], OK)
        expect(c, ["MGET", k0, k1, k2], [b"three", b"two", value_of(3)])
        expect(c, ["SMOVE", "s:1", "s:2", "m1"], 1)
        expect(c, ["SMEMBERS", "s:2"], tl.UNORDERED([b"a", b"b", b"m2", b"m1"]))
        expect(c, ["SINTERSTORE", "s:3", "s:3", "s:3"], 3)
        expect(c, ["SINTERSTORE", "dst", "s:4", "s:4"], 3)
        expect(c, ["RENAME", key(4), "renamed"], OK)
        expect(c, ["GET", "renamed"], value_of(4))
        expect(c, ["EXISTS", key(4)], 0)
        expect(c, ["HINCRBY", "h:5", "f", 1], 6)
        expect(c, ["HGETALL", "h:6"], tl.UNORDERED([b"f", b"6", b"g", b"x"]))
        tl.expect_pipeline(c, [["MULTI"], ["GET", key(7)], ["SET", key(7), "t"],
                               ["SADD", "s:7", "new"], ["GET", key(7)], ["EXEC"]],
                           [OK, tl.S("QUEUED"), tl.S("QUEUED"), tl.S("QUEUED"), tl.S("QUEUED"),
                            [value_of(7), OK, 1, b"t"]])
        # many calls at once, on keys looked up for each other
        cmds, want = [], []
        for i in range(20, 180, 2):
            cmds.append(["SMOVE", f"s:{i}", f"s:{i + 1}", f"m{i}"])
            want.append(1)
            cmds.append(["SCARD", f"s:{i + 1}"])
            want.append(4)
            cmds.append(["MSETNX", key(1000 + i), "a", f"fresh:{i}", "b"])
            want.append(0)
        tl.expect_pipeline(c, cmds, want)
        async_reads, _ = lookups(c)
        tl.check(async_reads > 0, "no call's key went to the lookup threads")
        c.close()


def test_cold_collection_elements():
    """Fields and members of big collections (more than the 64 elements that are read whole)
    read and written by HGET, HMGET, HEXISTS, HSTRLEN, HINCRBY, HSET, HDEL, SISMEMBER,
    SMISMEMBER, SADD and SREM on a cold cache: the commands' elements are looked up before
    their calls run, so nothing reads on the loop."""
    nh, nf = 200, 300
    with tl.Server(threads=1, durability="write", sets=SETS) as srv:
        fill(srv)
        c = srv.client()
        hashes = {f"bh:{h}": {f"f{j}": f"v{h}.{j}" for j in range(nf)} for h in range(nh)}
        sets = {f"bs:{h}": {f"m{j}" for j in range(nf)} for h in range(nh)}
        for k, fields in hashes.items():
            tl.expect_pipeline(c, [["HSET", k] + [x for kv in fields.items() for x in kv]], [nf])
        for k, members in sets.items():
            tl.expect_pipeline(c, [["SADD", k] + sorted(members)], [nf])
        c.close()
        c = restart(srv)
        before = lookups(c)
        rnd = random.Random(SEED)
        cmds, want = [], []
        for _ in range(3000):
            h = rnd.randrange(nh)
            hk, sk = f"bh:{h}", f"bs:{h}"
            hf, sf = hashes[hk], sets[sk]
            f = f"f{rnd.randrange(nf + 20)}"
            m = f"m{rnd.randrange(nf + 20)}"
            op = rnd.randrange(11)
            if op == 0:
                cmds.append(["HGET", hk, f])
                want.append(hf[f].encode() if f in hf else None)
            elif op == 1:
                fs = [f, f"f{rnd.randrange(nf)}", f"f{rnd.randrange(nf)}"]
                cmds.append(["HMGET", hk] + fs)
                want.append([hf[x].encode() if x in hf else None for x in fs])
            elif op == 2:
                cmds.append(["HEXISTS", hk, f])
                want.append(1 if f in hf else 0)
            elif op == 3:
                cmds.append(["HSTRLEN", hk, f])
                want.append(len(hf[f]) if f in hf else 0)
            elif op == 4:
                n = int(hf[f]) if f in hf and hf[f].isdigit() else None
                if f in hf and n is None:
                    cmds.append(["HINCRBY", hk, f, 1])
                    want.append(tl.E("ERR hash value is not an integer"))
                else:
                    hf[f] = str((n or 0) + 1)
                    cmds.append(["HINCRBY", hk, f, 1])
                    want.append((n or 0) + 1)
            elif op == 5:
                cmds.append(["HSET", hk, f, "w", f"f{rnd.randrange(nf)}", "z"])
                g = cmds[-1][4]
                want.append((0 if f in hf else 1) + (0 if g in hf or g == f else 1))
                hf[f] = "w"
                hf[g] = "z"
            elif op == 6:
                cmds.append(["HDEL", hk, f])
                want.append(1 if hf.pop(f, None) is not None else 0)
            elif op == 7:
                cmds.append(["SISMEMBER", sk, m])
                want.append(1 if m in sf else 0)
            elif op == 8:
                ms = [m, f"m{rnd.randrange(nf)}"]
                cmds.append(["SMISMEMBER", sk] + ms)
                want.append([1 if x in sf else 0 for x in ms])
            elif op == 9:
                cmds.append(["SADD", sk, m])
                want.append(0 if m in sf else 1)
                sf.add(m)
            else:
                cmds.append(["SREM", sk, m])
                want.append(1 if m in sf else 0)
                sf.discard(m)
        for start in range(0, len(cmds), PIPE):
            tl.expect_pipeline(c, cmds[start:start + PIPE], want[start:start + PIPE])
        after = lookups(c)
        tl.check(after[0] - before[0] > 500,
                 f"only {after[0] - before[0]} lookups went to the lookup threads")
        tl.check(after[1] == before[1],
                 f"{after[1] - before[1]} index reads blocked the loop")
        # The elements a call pinned are let go once it settled: the cache
        # comes back to its budget (1 MiB, soft) as soon as nothing is busy.
        cached = sum(s["cache_bytes"] for s in tl.info_shards(c))
        tl.check(cached <= 2 << 20, f"{cached} bytes cached with a 1 MiB budget: pins kept?")
        c.close()
        c = restart(srv)
        for hk, hf in list(hashes.items())[:10]:
            expect(c, ["HLEN", hk], len(hf))
            for fld in list(hf)[:50]:
                expect(c, ["HGET", hk, fld], hf[fld].encode())
        for sk, sf in list(sets.items())[:10]:
            expect(c, ["SCARD", sk], len(sf))
        c.close()


def test_shutdown_with_lookups_in_flight():
    with tl.Server(threads=2, durability="write", sets=SETS) as srv:
        fill(srv)
        c = restart(srv)
        socks = []
        req = b"".join(tl.resp_cmd("GET", key(i)) for i in range(0, KEYS, 3))
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.setblocking(False)
            try:
                s.send(req)
            except BlockingIOError:
                pass
            socks.append(s)
        time.sleep(0.05)  # some lookups are on their way
        rc = srv.stop()
        tl.check(rc == 0, f"exit status after SIGTERM with lookups in flight: {rc}")
        for s in socks:
            s.close()
        c.close()
        srv.start()
        c = srv.client()
        for i in range(0, KEYS, 101):
            expect(c, ["GET", key(i)], value_of(i))
        c.close()


def test_index_read_errors():
    srv = tl.Server(threads=1, durability="write", sets=SETS)
    srv.start()
    try:
        fill(srv)
        c = restart(srv)
        ssts = glob.glob(os.path.join(srv.data_dir, "shard-*", "index", "*.sst"))
        tl.check(len(ssts) > 0, f"no SST files under {srv.data_dir}")
        for p in ssts:
            os.truncate(p, os.path.getsize(p) // 3)
        errors = wrong = 0
        for start in range(0, KEYS, PIPE):
            got = c.pipeline([["GET", key(i)] for i in range(start, min(KEYS, start + PIPE))])
            for i, g in zip(range(start, KEYS), got):
                if isinstance(g, Err):
                    errors += 1
                elif g != value_of(i):
                    wrong += 1
        tl.check(wrong == 0, f"{wrong} GETs answered a wrong value from a truncated index")
        tl.check(errors > 0, "no GET failed with the index's files truncated")
        expect(c, ["PING"], tl.S("PONG"))
        tl.check("read failed" in srv.log(2000), "the index's read errors are not logged")
        c.close()
    finally:
        srv.kill9()  # its index is corrupt: nothing more to stop cleanly
        srv.cleanup()


if __name__ == "__main__":
    tl.main(globals(), shared_server=False)
