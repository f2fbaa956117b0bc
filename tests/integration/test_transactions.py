#!/usr/bin/python3
"""test_transactions: MULTI / EXEC / DISCARD / WATCH / UNWATCH.

Semantics, byte for byte as Redis 7.0 answers them: QUEUED, errors at queue time (unknown
command, arity, unknown subcommand) abort EXEC with EXECABORT, run-time errors reply per
command, nested MULTI, WATCH inside MULTI, EXEC/DISCARD without MULTI, an empty transaction,
SELECT inside a transaction, RESET and DISCARD leaving MULTI; WATCH: EXEC replies a null
array (RESP2 *-1, RESP3 _) after a write by another client, by the same client, a delete,
an element change of a hash or set, an expiry that passed, FLUSHDB of a key that existed,
SWAPDB — and runs after UNWATCH, after changes to other keys, after FLUSHDB of a key that did
not exist, and when a watched key is changed by the transaction itself; a pipeline after EXEC
sees its effects, and a client that half-closes after them still gets every reply; a
pipeline's replies (a transaction's QUEUED with its EXEC's) leave in one send;
redis-py's pipeline() (MULTI/EXEC by default), transaction() with its retry loop under a
concurrent writer, and WatchError.

Isolation across shards: writers move amounts between accounts on both shards with
MULTI/DECRBY/INCRBY/EXEC while readers read every account in one MULTI/EXEC or in one MGET (a
multi-key command on several shards runs under holds too); no reader ever sees a sum other than
the constant total, and the final sum is exact.  Multi-key commands across shards: MSET, MGET,
MSETNX (all or none), DEL, EXISTS; MSETNX racing SETNX and DEL of its keys never leaves a mix."""

import os
import random
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import redis  # noqa: E402

import ringkv_testlib as tl  # noqa: E402
from ringkv_testlib import OK, S, E, check, expect, expect_pipeline  # noqa: E402

QUEUED = S("QUEUED")
EXECABORT = E("EXECABORT Transaction discarded because of previous errors.")
K = tl.keys_all_shards("tx:", 6)  # keys alternating between the shards


def test_basic(srv, c):
    expect_pipeline(c, [["MULTI"], ["SET", K[0], "1"], ["INCR", K[0]], ["GET", K[0]],
                        ["SADD", K[1], "a", "b"], ["SCARD", K[1]], ["HSET", K[2], "f", "v"],
                        ["HGET", K[2], "f"], ["MSET", K[3], "x", K[4], "y"],
                        ["MGET", K[3], K[4], K[0]], ["EXEC"]],
                    [OK, QUEUED, QUEUED, QUEUED, QUEUED, QUEUED, QUEUED, QUEUED, QUEUED,
                     QUEUED, [OK, 2, b"2", 2, 2, 1, b"v", OK, [b"x", b"y", b"2"]]])
    expect(c, ["MULTI"], OK)
    expect(c, ["EXEC"], [])


def test_errors(srv, c):
    expect(c, ["EXEC"], E("ERR EXEC without MULTI"))
    expect(c, ["DISCARD"], E("ERR DISCARD without MULTI"))
    expect_pipeline(c, [["MULTI"], ["MULTI"], ["SET", K[0], "v"], ["WATCH", K[0]], ["EXEC"]],
                    [OK, E("ERR MULTI calls can not be nested"), QUEUED,
                     E("ERR WATCH inside MULTI is not allowed"), [OK]])
    for bad, err in (
        (["NOSUCH", "x"], E("ERR unknown command 'NOSUCH', with args beginning with: 'x' ")),
        (["GET"], E("ERR wrong number of arguments for 'get' command")),
        (["CONFIG", "NOSUB"], E("ERR unknown subcommand 'NOSUB'. Try CONFIG HELP.")),
        (["CONFIG", "GET"], E("ERR wrong number of arguments for 'config|get' command")),
    ):
        expect_pipeline(c, [["MULTI"], ["SET", K[1], "no"], bad, ["SET", K[1], "no"], ["EXEC"]],
                        [OK, QUEUED, err, QUEUED, EXECABORT])
        expect(c, ["EXISTS", K[1]], 0)
    # run-time errors reply per command; the others run
    expect_pipeline(c, [["SET", K[2], "str"], ["MULTI"], ["HSET", K[2], "f", "v"],
                        ["INCR", K[2]], ["SET", K[3], "ok"], ["EXEC"]],
                    [OK, OK, QUEUED, QUEUED, QUEUED,
                     [E("WRONGTYPE Operation against a key holding the wrong kind of value"),
                      E("ERR value is not an integer or out of range"), OK]])
    expect(c, ["GET", K[3]], b"ok")
    # DISCARD and RESET leave MULTI without running anything
    expect_pipeline(c, [["MULTI"], ["SET", K[4], "x"], ["DISCARD"], ["EXISTS", K[4]]],
                    [OK, QUEUED, OK, 0])
    expect_pipeline(c, [["MULTI"], ["SET", K[4], "x"], ["RESET"], ["EXISTS", K[4]]],
                    [OK, QUEUED, S("RESET"), 0])


def test_select_inside(srv, c):
    expect_pipeline(c, [["MULTI"], ["SET", K[0], "db0"], ["SELECT", "3"], ["SET", K[0], "db3"],
                        ["GET", K[0]], ["EXEC"], ["GET", K[0]], ["SELECT", "0"],
                        ["GET", K[0]]],
                    [OK, QUEUED, QUEUED, QUEUED, QUEUED, [OK, OK, OK, b"db3"], b"db3", OK,
                     b"db0"])


def test_pipeline_after_exec(srv, c):
    """Commands pipelined after EXEC see what it did."""
    cmds = []
    for i in range(50):
        cmds += [["MULTI"], ["INCR", K[i % 6]], ["INCR", K[(i + 1) % 6]], ["EXEC"],
                 ["GET", K[i % 6]]]
    replies = c.pipeline(cmds)
    counts = [0] * 6
    for i in range(50):
        counts[i % 6] += 1
        counts[(i + 1) % 6] += 1
        got = replies[5 * i + 3], replies[5 * i + 4]
        check(got[0] == [counts[i % 6], counts[(i + 1) % 6]] and
              got[1] == str(counts[i % 6]).encode(), f"round {i}: {got!r}")


def test_reply_batches(srv, c):
    """A pipeline's replies leave in one send (net/conn.h, "Reply batches"): a transaction's
    +OK and QUEUED wait for its EXEC, a GET's for the SET behind it (its log write)."""
    def sends():
        return int(tl.info_fields(c.call("INFO", "stats"))["total_writes_processed"])

    rounds = 100
    before = sends()
    for i in range(rounds):
        expect_pipeline(c, [["MULTI"], ["INCR", K[0]], ["INCR", K[2]], ["EXEC"]],
                        [OK, QUEUED, QUEUED, [i + 1, i + 1]])
        expect_pipeline(c, [["GET", K[1]], ["SET", K[1], str(i)], ["GET", K[1]]],
                        [None if i == 0 else str(i - 1).encode(), OK, str(i).encode()])
    got = sends() - before - 1  # (the first INFO's reply)
    # One send per pipeline (two each before): a little slack for a pipeline that arrives in
    # two reads.
    check(2 * rounds <= got <= 2 * rounds + rounds // 4,
          f"{got} sends for {2 * rounds} pipelines")


def watch_case(srv, c, before, change, key=None, expect_null=True, proto=2):
    key = key or K[0]
    other = srv.client()
    try:
        for cmd in before:
            c.call(*cmd)
        expect(c, ["WATCH", key], OK)
        for who, cmd in change:
            if who == "sleep":
                time.sleep(cmd)
            else:
                (c if who == "self" else other).call(*cmd)
        expect(c, ["MULTI"], OK)
        expect(c, ["SET", K[5], "ran"], QUEUED)
        got = c.call("EXEC")
        check((got is None) == expect_null,
              f"WATCH {key} then {change}: EXEC replied {got!r}, expected "
              f"{'null' if expect_null else '[OK]'}")
        c.call("DEL", K[5])
    finally:
        other.close()


def test_watch(srv, c):
    k = K[0]
    watch_case(srv, c, [["SET", k, "1"]], [("other", ["SET", k, "2"])])
    watch_case(srv, c, [["SET", k, "1"]], [("self", ["SET", k, "2"])])
    watch_case(srv, c, [["SET", k, "1"]], [("other", ["DEL", k])])
    watch_case(srv, c, [["SET", k, "1"]], [("other", ["EXPIRE", k, "100"])])
    watch_case(srv, c, [["DEL", k]], [("other", ["HSET", k, "f", "v"])])
    watch_case(srv, c, [["DEL", k], ["HSET", k, "f", "v"]], [("other", ["HSET", k, "f", "w"])])
    watch_case(srv, c, [["DEL", k], ["SADD", k, "m"]], [("other", ["SREM", k, "m"])])
    watch_case(srv, c, [["SET", k, "1"]], [("other", ["FLUSHDB"])])
    watch_case(srv, c, [["SET", k, "1"]], [("other", ["FLUSHALL"])])
    watch_case(srv, c, [["SET", k, "1"]], [("other", ["SWAPDB", "0", "1"])])
    watch_case(srv, c, [["SET", k, "1", "PX", "50"]], [("sleep", 0.12)], expect_null=True)
    # ... and the cases that run
    watch_case(srv, c, [["SET", k, "1"]], [], expect_null=False)
    watch_case(srv, c, [["SET", k, "1"]], [("other", ["SET", K[1], "x"])], expect_null=False)
    watch_case(srv, c, [["SET", k, "1"]], [("other", ["GET", k])], expect_null=False)
    watch_case(srv, c, [["DEL", k]], [("other", ["FLUSHDB"])], expect_null=False)
    watch_case(srv, c, [["SET", k, "1"]], [("other", ["SET", k, "2", "NX"])],
               expect_null=False)
    c.call("DEL", k)
    # UNWATCH forgets; EXEC, DISCARD forget too
    expect(c, ["WATCH", k], OK)
    expect(c, ["UNWATCH"], OK)
    c.call("SET", k, "x")
    expect_pipeline(c, [["MULTI"], ["GET", k], ["EXEC"]], [OK, QUEUED, [b"x"]])
    expect(c, ["WATCH", k], OK)
    expect_pipeline(c, [["MULTI"], ["SET", k, "mine"], ["EXEC"]], [OK, QUEUED, [OK]])
    c.call("SET", k, "y")
    expect_pipeline(c, [["MULTI"], ["GET", k], ["EXEC"]], [OK, QUEUED, [b"y"]])
    # RESP3's null
    c.call("HELLO", "3")
    c.call("SET", k, "1")
    expect(c, ["WATCH", k], OK)
    c.call("SET", k, "2")
    expect_pipeline(c, [["MULTI"], ["GET", k], ["EXEC"]], [OK, QUEUED, None])
    # watches of many keys on both shards
    expect(c, ["WATCH"] + K, OK)
    srv_other = srv.client()
    srv_other.call("SADD", K[3], "z")
    srv_other.close()
    expect_pipeline(c, [["MULTI"], ["GET", k], ["EXEC"]], [OK, QUEUED, None])


def test_half_close(srv, c):
    """A client that sends a transaction and commands after it, then half-closes, gets every
    reply (the commands waiting behind the EXEC run after the EOF)."""
    import socket
    s = socket.create_connection(("127.0.0.1", srv.port))
    cmds = [["MULTI"], ["SET", K[0], "1"], ["SET", K[1], "2"], ["EXEC"], ["MSET", K[2], "a",
            K[3], "b"], ["MGET", K[0], K[1], K[2], K[3]]]
    s.sendall(b"".join(tl.resp_cmd(*a) for a in cmds))
    s.shutdown(socket.SHUT_WR)
    data = b""
    s.settimeout(10)
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    want = (b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n+OK\r\n+OK\r\n"
            b"*4\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\na\r\n$1\r\nb\r\n")
    check(data == want, f"replies after a half-close: {data!r}")


def test_redis_py(srv, c):
    r = redis.Redis(port=srv.port)
    p = r.pipeline()  # transaction=True: MULTI ... EXEC
    p.set(K[0], 5).incrby(K[0], 3).hset(K[1], mapping={"a": "1", "b": "2"}).hgetall(K[1])
    p.sadd(K[2], "x", "y").smembers(K[2]).get(K[0])
    got = p.execute()
    check(got == [True, 8, 2, {b"a": b"1", b"b": b"2"}, 2, {b"x", b"y"}, b"8"],
          f"pipeline(): {got!r}")

    def incr(pipe):
        v = int(pipe.get(K[3]) or 0)
        pipe.multi()
        pipe.set(K[3], v + 1)

    stop = threading.Event()

    def meddle():
        m = redis.Redis(port=srv.port)
        while not stop.is_set():
            m.incr(K[3])
            time.sleep(0.001)

    t = threading.Thread(target=meddle)
    t.start()
    try:
        for _ in range(100):
            r.transaction(incr, K[3])
    finally:
        stop.set()
        t.join()
    meddled = int(r.get(K[3]))
    check(meddled >= 100, f"transaction(): {meddled} < 100 increments")
    p = r.pipeline()
    p.watch(K[4])
    r2 = redis.Redis(port=srv.port)
    r2.set(K[4], "x")
    p.multi()
    p.set(K[4], "y")
    try:
        p.execute()
        check(False, "WatchError expected")
    except redis.WatchError:
        pass
    check(r.get(K[4]) == b"x", "the aborted transaction wrote nothing")


def test_isolation_across_shards(srv, c):
    accounts = tl.keys_all_shards("acct:", 8)
    total = 1000 * len(accounts)
    c.call("MSET", *[x for a in accounts for x in (a, "1000")])
    stop = threading.Event()
    errors = []
    transfers = [0]

    def writer(seed):
        rng = random.Random(seed)
        w = srv.client()
        try:
            while not stop.is_set():
                a, b = rng.sample(accounts, 2)
                n = str(rng.randint(1, 50))
                got = w.pipeline([["MULTI"], ["DECRBY", a, n], ["INCRBY", b, n], ["EXEC"]])
                if not isinstance(got[3], list) or len(got[3]) != 2:
                    errors.append(f"writer EXEC: {got!r}")
                    return
                transfers[0] += 1
        finally:
            w.close()

    def reader(seen, plain):
        rd = srv.client()
        try:
            while not stop.is_set():
                if plain:  # one MGET over both shards: isolated as well
                    got = rd.call("MGET", *accounts)
                else:
                    cmds = [["MULTI"]] + [["GET", a] for a in accounts] + [["EXEC"]]
                    got = rd.pipeline(cmds)[-1]
                s = sum(int(v) for v in got)
                seen[0] += 1
                if s != total:
                    errors.append(f"a reader saw the sum {s}, not {total}: {got!r}")
                    return
        finally:
            rd.close()

    seen = [0]
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=reader, args=(seen, plain)) for plain in (False, True)]
    for t in threads:
        t.start()
    time.sleep(tl.scaled(3))
    stop.set()
    for t in threads:
        t.join()
    check(not errors, "; ".join(errors[:3]))
    final = sum(int(v) for v in c.call("MGET", *accounts))
    check(final == total, f"final sum {final}, expected {total}")
    check(transfers[0] > 100 and seen[0] > 10,
          f"too little concurrency to mean anything: {transfers[0]} transfers, "
          f"{seen[0]} reads")
    print(f"     {transfers[0]} transfers, {seen[0]} consistent reads of {len(accounts)} accounts")


def test_multikey_across_shards(srv, c):
    keys = tl.keys_all_shards("mk:", 6)
    expect(c, ["MSET"] + [x for k in keys for x in (k, "v")], OK)
    expect(c, ["MGET"] + keys, [b"v"] * 6)
    expect(c, ["MSETNX"] + [x for k in keys for x in (k, "w")], 0)
    expect(c, ["DEL"] + keys, 6)
    expect(c, ["MSETNX"] + [x for k in keys for x in (k, "w")], 1)
    expect(c, ["EXISTS"] + keys + ["mk:none"], 6)
    c.call("DEL", *keys)
    # MSETNX against a racer that SETNXes one key and deletes all six: an MGET in one MULTI
    # with the MSETNX sees all six values after a 1, and never an "m" next to the racer's
    stop = threading.Event()
    bad = []

    def racer():
        r = srv.client()
        try:
            i = 0
            while not stop.is_set():
                r.call("SETNX", keys[i % 6], "racer")
                r.call("DEL", *keys)
                i += 1
        finally:
            r.close()

    t = threading.Thread(target=racer)
    t.start()
    try:
        for _ in range(tl.scaled(300)):
            got = c.pipeline([["MULTI"], ["MSETNX"] + [x for k in keys for x in (k, "m")],
                              ["MGET"] + keys, ["EXEC"]])[-1]
            ok, vals = got[0], got[1]
            mine = sum(1 for v in vals if v == b"m")
            # (a racer's value exists only after its DEL of all six: never next to an "m")
            if (ok == 1 and mine != 6) or (mine > 0 and b"racer" in vals):
                bad.append(f"MSETNX replied {ok}, then MGET {vals!r}")
    finally:
        stop.set()
        t.join()
    check(not bad, "; ".join(bad[:3]))


if __name__ == "__main__":
    tl.main(globals(), databases=16)
