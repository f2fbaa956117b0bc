#!/usr/bin/python3
"""test_collections_reclaim: whole-key operations on collections stay O(1) and their space
comes back.  A hash or set of N elements (200k, scaled; RINGKV_RECLAIM_N overrides) removed by
DEL, by active expiry, by a SET over it, or by FLUSHDB replies at once (loosely: under 1 s) and
leaves nothing visible (a new key of that name holds only its new elements); then, with the
server idle, the index drops the N garbage rows (INFO storage garbage_dropped grows by N on
that shard) and shrinks (index_bytes falls to an eighth of its peak, or 1.5 MiB) within
RINGKV_RECLAIM_WAIT_S (60) seconds.  Keys of 200 elements deleted and rewritten for 8 rounds
keep index_bytes, once idle, within 3x of one round's size.  A start whose indexes hold 4 L0
files (so RocksDB compacts, and runs the garbage filter, while they open) serves.  ringkv only
(INFO storage, RocksDB's LOG)."""

import os
import re
import shutil
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringkv_testlib as tl  # noqa: E402
from ringkv_testlib import OK, S, expect  # noqa: E402

N = int(os.environ.get("RINGKV_RECLAIM_N") or tl.scaled(200_000, 1000))
WAIT_S = float(os.environ.get("RINGKV_RECLAIM_WAIT_S", "60"))
SHARDS = 4  # one whole-key operation per shard, so each is measured on its own
CHUNK = 1000  # elements per HSET / SADD
FAST_S = 1.0  # "O(1)": a whole-key operation's reply, measured loosely
ARENA = 3 << 19  # 1.5 MiB: a memtable's arena, what an index holding (almost) nothing weighs


def fill_hash(c, key, n, tag="v"):
    cmds = [["HSET", key] + [x for j in range(i, min(i + CHUNK, n)) for x in (f"f{j}", f"{tag}{j}")]
            for i in range(0, n, CHUNK)]
    got = c.pipeline(cmds)
    tl.check(sum(g for g in got if type(g) is int) == n and all(type(g) is int for g in got),
             f"HSET {key}: {n} new fields expected, replies {tl.fmt(got[:5])}...")
    expect(c, ["HLEN", key], n)


def fill_set(c, key, n):
    cmds = [["SADD", key] + [f"m{j}" for j in range(i, min(i + CHUNK, n))]
            for i in range(0, n, CHUNK)]
    got = c.pipeline(cmds)
    tl.check(sum(g for g in got if type(g) is int) == n and all(type(g) is int for g in got),
             f"SADD {key}: {n} new members expected, replies {tl.fmt(got[:5])}...")
    expect(c, ["SCARD", key], n)


def timed(c, args, expected):
    """Runs args, checks the reply and that it came within FAST_S; returns the seconds."""
    t0 = time.monotonic()
    expect(c, args, expected)
    dt = time.monotonic() - t0
    tl.check(dt < FAST_S, f"{tl.fmt_cmd(args)} took {dt:.2f} s (a whole-key operation on {N} "
                          f"elements should not walk them; limit {FAST_S} s)")
    return dt


def settled(c):
    """Waits until every write reached the index (index_batch_keys 0 on every shard)."""
    tl.wait_until(lambda: all(s["index_batch_keys"] == 0 for s in tl.info_shards(c)), timeout=30,
                  step=0.1)
    return tl.info_shards(c)


def lsm_state(srv, shard):
    """The last LSM shape RocksDB's LOG reports for a shard, and how many compactions it ran."""
    path = os.path.join(srv.data_dir, f"shard-{shard:03d}", "index", "LOG")
    try:
        text = open(path, errors="replace").read()
    except OSError:
        return "(no RocksDB LOG)"
    states = re.findall(r'"lsm_state": (\[[\d, ]*\])', text)
    return (f"RocksDB: lsm_state {states[-1] if states else '?'}, "
            f"{text.count('compaction_finished')} compactions")


def wait_reclaimed(srv, c, shards, peak, dropped0, what):
    """Polls (the server idle) until each shard of `shards` dropped N garbage rows and its
    index_bytes fell to max(peak / 8, ARENA); records a failure with the numbers otherwise."""
    t0 = time.monotonic()
    goal = {s: max(peak[s] // 8, ARENA) for s in shards}

    def done():
        now = tl.info_shards(c)
        return all(now[s]["garbage_dropped"] - dropped0[s] >= N and now[s]["index_bytes"] <= goal[s]
                   for s in shards)

    ok = tl.wait_until(done, timeout=WAIT_S, step=0.5)
    now = tl.info_shards(c)
    for s in shards:
        print(f"  {what[s]} (shard {s}): index_bytes {peak[s]} -> {now[s]['index_bytes']} "
              f"(goal <= {goal[s]}), garbage_dropped +{now[s]['garbage_dropped'] - dropped0[s]} "
              f"(goal >= {N}), {time.monotonic() - t0:.1f} s; {lsm_state(srv, s)}", flush=True)
        tl.check(ok or (now[s]["garbage_dropped"] - dropped0[s] >= N
                        and now[s]["index_bytes"] <= goal[s]),
                 f"{what[s]} of {N} elements: space not reclaimed within {WAIT_S:.0f} s: "
                 f"garbage_dropped +{now[s]['garbage_dropped'] - dropped0[s]} (expected >= {N}), "
                 f"index_bytes {now[s]['index_bytes']} (peak {peak[s]}, expected <= {goal[s]}); "
                 f"{lsm_state(srv, s)}")


def test_whole_key_removals_reclaim_their_elements():
    keys = [tl.key_on_shard(f"big{s}:", s, SHARDS) for s in range(SHARDS)]
    k_del, k_exp, k_set, k_flush = keys
    what = ["DEL of a hash", "active expiry of a set", "SET over a hash", "FLUSHDB of a set"]
    with tl.Server(threads=SHARDS) as srv:
        c = srv.client()
        t0 = time.monotonic()
        fill_hash(c, k_del, N)
        fill_set(c, k_exp, N)
        fill_hash(c, k_set, N)
        expect(c, ["SELECT", 3], OK)
        fill_set(c, k_flush, N)
        expect(c, ["SELECT", 0], OK)
        before = settled(c)
        print(f"  {4 * N} elements written in {time.monotonic() - t0:.1f} s; index_bytes "
              f"{[s['index_bytes'] for s in before]}", flush=True)
        peak = [s["index_bytes"] for s in before]
        dropped0 = [s["garbage_dropped"] for s in before]

        timed(c, ["DEL", k_del], 1)
        timed(c, ["PEXPIRE", k_exp, 1], 1)
        timed(c, ["SET", k_set, "now a string"], OK)
        expect(c, ["SELECT", 3], OK)
        timed(c, ["FLUSHDB"], OK)
        expect(c, ["DBSIZE"], 0)
        expect(c, ["SCARD", k_flush], 0)
        expect(c, ["SELECT", 0], OK)
        expect(c, ["EXISTS", k_del], 0)
        expect(c, ["HLEN", k_del], 0)
        expect(c, ["HGET", k_del, "f1"], None)
        expect(c, ["TYPE", k_set], S("string"))
        expect(c, ["GET", k_set], "now a string")
        tl.wait_until(lambda: c.call("DBSIZE") == 1, timeout=5)
        expect(c, ["EXISTS", k_exp], 0)
        expect(c, ["DBSIZE"], 1)
        expect(c, ["SISMEMBER", k_exp, "m1"], 0)
        # the space comes back, with the server idle
        wait_reclaimed(srv, c, range(SHARDS), peak, dropped0, what)
        # a key of the same name starts empty: none of the old elements shows through
        expect(c, ["HSET", k_del, "f1", "new"], 1)
        expect(c, ["HGETALL", k_del], [b"f1", b"new"])
        expect(c, ["SADD", k_exp, "m1", "m2"], 2)
        expect(c, ["SCARD", k_exp], 2)
        expect(c, ["SET", k_set, "x"], OK)
        expect(c, ["DEL", k_set], 1)
        expect(c, ["HSET", k_set, "f2", "new"], 1)
        expect(c, ["HLEN", k_set], 1)
        expect(c, ["SELECT", 3], OK)
        expect(c, ["SADD", k_flush, "m3"], 1)
        expect(c, ["SMEMBERS", k_flush], [b"m3"])
        c.close()
        # and after a restart too
        tl.check(srv.stop() == 0, "exit status after SIGTERM is not 0")
        srv.start()
        c = srv.client()
        expect(c, ["HGETALL", k_del], [b"f1", b"new"])
        expect(c, ["SCARD", k_exp], 2)
        expect(c, ["HGETALL", k_set], [b"f2", b"new"])
        expect(c, ["DBSIZE"], 3)
        expect(c, ["SELECT", 3], OK)
        expect(c, ["SMEMBERS", k_flush], [b"m3"])
        c.close()


def test_rewritten_keys_keep_the_index_bounded():
    nkeys, elems, rounds = tl.scaled(500, 20), 200, 8
    keys = [f"rw:{i}" for i in range(nkeys)]
    with tl.Server() as srv:
        c = srv.client()
        base = sum(s["index_bytes"] for s in settled(c))
        sizes = []
        t0 = time.monotonic()
        for r in range(rounds):
            if r:
                got = c.pipeline([["DEL", k] for k in keys])
                tl.check(got == [1] * nkeys, f"round {r}: DEL replies {tl.fmt(got[:5])}...")
            fields = [x for j in range(elems) for x in (f"f{j}", f"r{r}-{j}")]
            got = c.pipeline([["HSET", k] + fields for k in keys])
            tl.check(got == [elems] * nkeys, f"round {r}: HSET replies {tl.fmt(got[:5])}...")
            sizes.append(sum(s["index_bytes"] for s in settled(c)))
        print(f"  {rounds} rounds of {nkeys} keys x {elems} fields in "
              f"{time.monotonic() - t0:.1f} s; index_bytes {base} then after each round {sizes}",
              flush=True)
        one_round = max(sizes[0] - base, 1)
        limit = base + 3 * one_round
        final = tl.wait_until(lambda: sum(s["index_bytes"] for s in tl.info_shards(c)) <= limit,
                              timeout=WAIT_S, step=0.5)
        now = sum(s["index_bytes"] for s in tl.info_shards(c))
        print(f"  idle: index_bytes {now} (limit {limit})", flush=True)
        tl.check(final, f"{rounds} rounds of DEL + HSET of {nkeys} keys x {elems} fields: "
                        f"index_bytes {now} after {WAIT_S:.0f} s idle, more than 3x one round "
                        f"({one_round} over the empty index's {base}); after each round: {sizes}; "
                        f"{lsm_state(srv, 0)}; {lsm_state(srv, 1)}")
        # only the last round's fields are there
        for k in keys[:: max(1, nkeys // 20)]:
            expect(c, ["HLEN", k], elems)
            expect(c, ["HGET", k, "f7"], f"r{rounds - 1}-7")
        expect(c, ["DBSIZE"], nkeys)
        c.close()


def l0_files(srv, shard):
    """The L0 file count of the last LSM shape a shard's RocksDB LOG reports (-1: unknown)."""
    path = os.path.join(srv.data_dir, f"shard-{shard:03d}", "index", "LOG")
    try:
        states = re.findall(r'"lsm_state": \[(\d+)', open(path, errors="replace").read())
    except OSError:
        return -1
    return int(states[-1]) if states else -1


def test_restart_while_the_index_compacts():
    """Restarts until an index holds 4 L0 files (RocksDB's compaction trigger) when the server
    stops (each stop flushes one more): the next start compacts at once, running the garbage
    filter while the index is still opening.  Every start from a copy of that directory
    serves, with the data as it was."""
    cycles, attempts = 24, tl.scaled(6, 3)
    keys = tl.keys_all_shards("l0:", 8)
    at_trigger, shapes, mark = 0, [], len(tl.CHECKER.failures)
    with tl.Server() as srv:
        for cycle in range(cycles):
            c = srv.client()
            for k in keys:  # a hash rewritten each cycle: its old elements are garbage
                expect(c, ["DEL", k], 0 if cycle == 0 else 1)
                expect(c, ["HSET", k] + [x for j in range(20) for x in (f"f{j}", cycle)], 20)
            c.close()
            tl.check(srv.stop() == 0, f"cycle {cycle}: exit status after SIGTERM is not 0")
            shape = [l0_files(srv, s) for s in range(tl.NSHARDS)]
            shapes.append(shape)
            tries = attempts if max(shape) >= 4 else 1
            at_trigger += tries > 1
            saved = srv.data_dir + ".saved"
            shutil.rmtree(saved, ignore_errors=True)
            shutil.copytree(srv.data_dir, saved)
            for attempt in range(tries):
                shutil.rmtree(srv.data_dir)
                shutil.copytree(saved, srv.data_dir)
                try:
                    srv.start()
                except AssertionError as e:
                    tl.CHECKER.fail(f"cycle {cycle}, start {attempt + 1} from a directory whose "
                                    f"indexes hold {shape} L0 files: {str(e).splitlines()[0]}")
                    continue
                c = srv.client()
                got = c.pipeline([["HGET", k, "f7"] for k in keys] + [["DBSIZE"]])
                tl.check(got == [str(cycle).encode()] * len(keys) + [len(keys)],
                         f"cycle {cycle}: HGET f7 of each key, then DBSIZE: {tl.fmt(got)}")
                c.close()
                if attempt + 1 < tries:
                    tl.check(srv.stop() == 0, f"cycle {cycle}: exit status after SIGTERM is not 0")
            if len(tl.CHECKER.failures) > mark or not srv.alive() or at_trigger == 2:
                break
        print(f"  {at_trigger} of {len(shapes)} stops left an index at the compaction trigger "
              f"(L0 files per shard after each stop: {shapes})", flush=True)
        tl.check(at_trigger > 0, "no stop left 4 L0 files in an index: the test did not run")


if __name__ == "__main__":
    if tl.IS_REDIS:
        print("SKIP: INFO storage (index_bytes, garbage_dropped) is ringkv's")
        sys.exit(77)
    tl.main(globals(), shared_server=False)
