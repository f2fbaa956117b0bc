#!/usr/bin/python3
"""test_expiry: keys given a TTL of a few hundred milliseconds (by SET PX, PSETEX, PEXPIRE,
GETEX, PEXPIREAT) disappear for GET, TTL, PTTL, EXISTS, MGET, KEYS, SCAN, DBSIZE and
RANDOMKEY once it passes, on both shards; PERSIST, a plain SET or a longer TTL keep a key.
One short wait in all."""

import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringkv_testlib as tl  # noqa: E402
from ringkv_testlib import ANY_INT, OK, S, expect  # noqa: E402

TTL_MS = 300


def test_short_ttls_expire(srv, c):
    short = tl.keys_all_shards("short:", 10)  # each is given a TTL of TTL_MS in its own way
    keep = tl.keys_all_shards("keep:", 8)  # each was given a short TTL and then lost it
    now_ms = int(time.time() * 1000)
    setups = [
        ["SET", short[0], "v", "PX", TTL_MS], ["SET", short[1], "v", "PX", TTL_MS],
        ["PSETEX", short[2], TTL_MS, "v"], ["PSETEX", short[3], TTL_MS, "v"],
        ["SET", short[4], "v"], ["PEXPIRE", short[4], TTL_MS],
        ["SET", short[5], "v"], ["GETEX", short[5], "PX", TTL_MS],
        ["SET", short[6], "v", "PXAT", now_ms + TTL_MS], ["SET", short[7], "v"],
        ["PEXPIREAT", short[7], now_ms + TTL_MS], ["SET", short[8], "1", "PX", TTL_MS],
        ["SET", short[9], "abc", "PX", TTL_MS],
        ["SET", keep[0], "v", "PX", TTL_MS], ["PERSIST", keep[0]],
        ["SET", keep[1], "v", "PX", TTL_MS], ["SET", keep[1], "w"],
        ["SET", keep[2], "v", "PX", TTL_MS], ["PEXPIRE", keep[2], 100000],
        ["SET", keep[3], "v", "PX", TTL_MS], ["GETEX", keep[3], "PERSIST"],
        ["SET", keep[4], "v", "PX", TTL_MS], ["GETSET", keep[4], "w"],
        ["SET", keep[5], "v", "PX", TTL_MS], ["MSET", keep[5], "w"],
        ["SET", keep[6], "v", "PX", TTL_MS], ["EXPIRE", keep[6], 100, "GT"],
        ["SET", keep[7], "v", "PX", TTL_MS], ["SETEX", keep[7], 100, "w"],
    ]
    for cmd in setups:
        r = c.call(*cmd)
        tl.check(r in (OK, 1, b"v"), f"{tl.fmt_cmd(cmd)}: unexpected reply {tl.fmt(r)}")
    # each has a TTL of at most TTL_MS (or, on a stalled machine, has expired already)
    has_ttl = tl.Matcher(lambda a: type(a) is int and (a == -2 or 0 < a <= TTL_MS),
                         f"(integer in [1, {TTL_MS}], or -2)")
    for k in short:
        expect(c, ["PTTL", k], has_ttl)
    time.sleep(TTL_MS / 1000 + 0.15)
    for k in short:
        expect(c, ["GET", k], None)
        expect(c, ["TTL", k], -2)
        expect(c, ["PTTL", k], -2)
        expect(c, ["EXISTS", k], 0)
        expect(c, ["EXPIRETIME", k], -2)
        expect(c, ["TYPE", k], S("none"))
        expect(c, ["STRLEN", k], 0)
        expect(c, ["PERSIST", k], 0)
        expect(c, ["EXPIRE", k, 100], 0)
    expect(c, ["MGET"] + short, [None] * len(short))
    for k in keep:
        expect(c, ["EXISTS", k], 1)
    expect(c, ["GET", keep[0]], "v")
    expect(c, ["TTL", keep[0]], -1)
    expect(c, ["TTL", keep[2]], ANY_INT(99, 100))
    expect(c, ["KEYS", "short:*"], [])
    seen, cursor = [], b"0"
    while True:
        cursor, batch = c.call("SCAN", cursor, "COUNT", 100)
        seen += batch
        if cursor == b"0":
            break
    tl.check(sorted(set(seen)) == sorted(k.encode() for k in keep),
             f"SCAN after expiry: expected only the keep:* keys, got {sorted(set(seen))}")
    # the key count drops without the keys being touched (active expiry); poll, bounded
    tl.wait_until(lambda: c.call("DBSIZE") == len(keep), timeout=5)
    expect(c, ["DBSIZE"], len(keep))
    # an expired key is gone for writes too: they start from nothing
    expect(c, ["INCR", short[8]], 1)
    expect(c, ["TTL", short[8]], -1)
    expect(c, ["APPEND", short[9], "x"], 1)
    expect(c, ["SET", short[0], "new", "NX"], OK)
    expect(c, ["SETNX", short[1], "new"], 1)
    expect(c, ["GETSET", short[2], "new"], None)
    expect(c, ["SET", short[3], "new", "XX"], None)
    expect(c, ["MSETNX", short[4], "a", short[5], "b"], 1)


def test_randomkey_skips_expired(srv, c):
    keys = tl.keys_all_shards("rk:", 6)
    for k in keys:
        expect(c, ["SET", k, "v", "PX", 150], OK)
    time.sleep(0.3)
    expect(c, ["RANDOMKEY"], None)
    expect(c, ["SET", "rk:live", "v"], OK)
    for _ in range(5):
        expect(c, ["RANDOMKEY"], "rk:live")


if __name__ == "__main__":
    tl.main(globals())
