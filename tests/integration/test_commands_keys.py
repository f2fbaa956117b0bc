#!/usr/bin/python3
"""test_commands_keys: the keyspace commands (DEL UNLINK EXISTS TOUCH TYPE EXPIRE PEXPIRE
EXPIREAT PEXPIREAT with NX XX GT LT, TTL PTTL EXPIRETIME PEXPIRETIME PERSIST SCAN KEYS DBSIZE
FLUSHDB FLUSHALL RANDOMKEY) against Redis's replies, with keys on both shards."""

import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringkv_testlib as tl  # noqa: E402
from ringkv_testlib import ANY_INT, NOT_INT, OK, SYNTAX, UNORDERED, E, S, expect  # noqa: E402
from ringkv_testlib import wrong_args  # noqa: E402

KEYS = [tl.key_on_shard("key:", 0), tl.key_on_shard("key:", 1)]
I64_MAX = 9223372036854775807


def mset(c, keys, value="v"):
    args = []
    for k in keys:
        args += [k, value]
    expect(c, ["MSET"] + args, OK)


def test_del_unlink_exists_touch(srv, c):
    keys = tl.keys_all_shards("d:", 10)
    mset(c, keys)
    expect(c, ["EXISTS"] + keys, 10)
    expect(c, ["EXISTS", keys[0], keys[0], keys[1], "missing"], 3)  # repeats count
    expect(c, ["TOUCH"] + keys + ["missing"], 10)
    expect(c, ["DEL", keys[0], keys[1], "missing"], 2)
    expect(c, ["EXISTS", keys[0], keys[1]], 0)
    expect(c, ["DEL", keys[2], keys[2]], 1)  # a repeated key is deleted once
    expect(c, ["UNLINK", keys[3], keys[4], keys[5], "missing"], 3)
    expect(c, ["UNLINK", keys[3]], 0)
    expect(c, ["DEL"] + keys, 4)
    expect(c, ["DBSIZE"], 0)
    expect(c, ["DEL", "missing"], 0)
    expect(c, ["TOUCH", "missing"], 0)
    # keys that share a hash tag live on one shard; two tags on two shards
    t0, t1 = tl.tag_on_shard(0), tl.tag_on_shard(1)
    tagged = [f"{t0}a", f"{t0}b", f"{t1}a", f"{t1}b"]
    mset(c, tagged)
    expect(c, ["EXISTS"] + tagged, 4)
    expect(c, ["DEL"] + tagged, 4)
    for cmd in ("DEL", "UNLINK", "EXISTS", "TOUCH"):
        expect(c, [cmd], wrong_args(cmd.lower()))


def test_type(srv, c):
    for k in KEYS:
        expect(c, ["TYPE", k], S("none"))
        expect(c, ["SET", k, "x"], OK)
        expect(c, ["TYPE", k], S("string"))
    expect(c, ["TYPE"], wrong_args("type"))
    expect(c, ["TYPE", "a", "b"], wrong_args("type"))


def test_expire_ttl_persist(srv, c):
    for k in KEYS:
        expect(c, ["TTL", k], -2)
        expect(c, ["PTTL", k], -2)
        expect(c, ["EXPIRETIME", k], -2)
        expect(c, ["PEXPIRETIME", k], -2)
        expect(c, ["EXPIRE", k, 100], 0)
        expect(c, ["PERSIST", k], 0)
        expect(c, ["SET", k, "v"], OK)
        expect(c, ["TTL", k], -1)
        expect(c, ["PTTL", k], -1)
        expect(c, ["EXPIRETIME", k], -1)
        expect(c, ["PEXPIRETIME", k], -1)
        expect(c, ["PERSIST", k], 0)
        expect(c, ["EXPIRE", k, 100], 1)
        expect(c, ["TTL", k], ANY_INT(99, 100))
        expect(c, ["PTTL", k], ANY_INT(98000, 100000))
        expect(c, ["PEXPIRE", k, 50500], 1)
        expect(c, ["TTL", k], ANY_INT(49, 51))  # TTL rounds to the nearest second
        expect(c, ["PTTL", k], ANY_INT(48500, 50500))
        now = int(time.time())
        expect(c, ["EXPIREAT", k, now + 1000], 1)
        expect(c, ["EXPIRETIME", k], now + 1000)
        expect(c, ["PEXPIRETIME", k], (now + 1000) * 1000)
        expect(c, ["PEXPIREAT", k, (now + 2000) * 1000 + 999], 1)
        expect(c, ["PEXPIRETIME", k], (now + 2000) * 1000 + 999)
        expect(c, ["EXPIRETIME", k], now + 2001)  # rounded to the nearest second
        expect(c, ["GET", k], "v")
        expect(c, ["PERSIST", k], 1)
        expect(c, ["TTL", k], -1)
        expect(c, ["GET", k], "v")
        # a time not in the future deletes the key
        expect(c, ["EXPIRE", k, 0], 1)
        expect(c, ["EXISTS", k], 0)
        expect(c, ["SET", k, "v"], OK)
        expect(c, ["PEXPIRE", k, -100], 1)
        expect(c, ["GET", k], None)
        expect(c, ["SET", k, "v"], OK)
        expect(c, ["EXPIREAT", k, now - 10], 1)
        expect(c, ["TTL", k], -2)
        expect(c, ["SET", k, "v"], OK)
        expect(c, ["PEXPIREAT", k, 1], 1)
        expect(c, ["EXISTS", k], 0)
        # errors
        expect(c, ["SET", k, "v"], OK)
        expect(c, ["EXPIRE", k, "abc"], NOT_INT)
        expect(c, ["EXPIRE", k, "1.5"], NOT_INT)
        expect(c, ["PEXPIREAT", k, ""], NOT_INT)
        expect(c, ["EXPIRE", k, I64_MAX], E("ERR invalid expire time in 'expire' command"))
        expect(c, ["PEXPIRE", k, I64_MAX], E("ERR invalid expire time in 'pexpire' command"))
        expect(c, ["EXPIREAT", k, I64_MAX], E("ERR invalid expire time in 'expireat' command"))
        expect(c, ["EXPIRE", k, 10, "BOGUS"], E("ERR Unsupported option BOGUS"))
        expect(c, ["TTL", k], -1)
    for cmd in ("EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT"):
        expect(c, [cmd, "k"], wrong_args(cmd.lower()))
    for cmd in ("TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME", "PERSIST"):
        expect(c, [cmd], wrong_args(cmd.lower()))
        expect(c, [cmd, "a", "b"], wrong_args(cmd.lower()))


def test_expire_nx_xx_gt_lt(srv, c):
    now = int(time.time())
    for k in KEYS:
        expect(c, ["SET", k, "v"], OK)
        # no TTL: XX and GT fail (no TTL counts as infinite), NX and LT succeed
        expect(c, ["EXPIRE", k, 100, "XX"], 0)
        expect(c, ["EXPIRE", k, 100, "GT"], 0)
        expect(c, ["TTL", k], -1)
        expect(c, ["EXPIRE", k, 100, "LT"], 1)
        expect(c, ["PERSIST", k], 1)
        expect(c, ["EXPIRE", k, 100, "NX"], 1)
        expect(c, ["EXPIRE", k, 200, "NX"], 0)
        expect(c, ["TTL", k], ANY_INT(99, 100))
        expect(c, ["EXPIRE", k, 200, "XX"], 1)
        expect(c, ["TTL", k], ANY_INT(199, 200))
        expect(c, ["EXPIRE", k, 100, "GT"], 0)
        expect(c, ["EXPIRE", k, 300, "GT"], 1)
        expect(c, ["TTL", k], ANY_INT(299, 300))
        expect(c, ["EXPIRE", k, 400, "LT"], 0)
        expect(c, ["EXPIRE", k, 150, "LT"], 1)
        expect(c, ["TTL", k], ANY_INT(149, 150))
        expect(c, ["EXPIRE", k, 250, "XX", "GT"], 1)
        expect(c, ["EXPIRE", k, 50, "XX", "GT"], 0)
        expect(c, ["PEXPIRE", k, 100000, "lt"], 1)
        expect(c, ["PEXPIRE", k, 200000, "Lt"], 0)
        expect(c, ["EXPIREAT", k, now + 50, "LT"], 1)
        expect(c, ["EXPIREAT", k, now + 60, "NX"], 0)
        expect(c, ["PEXPIREAT", k, (now + 70) * 1000, "GT"], 1)
        expect(c, ["PEXPIRETIME", k], (now + 70) * 1000)
        nx_xx = E("ERR NX and XX, GT or LT options at the same time are not compatible")
        expect(c, ["EXPIRE", k, 10, "NX", "XX"], nx_xx)
        expect(c, ["EXPIRE", k, 10, "NX", "GT"], nx_xx)
        expect(c, ["PEXPIRE", k, 10, "LT", "NX"], nx_xx)
        expect(
            c, ["EXPIREAT", k, now + 10, "GT", "LT"],
            E("ERR GT and LT options at the same time are not compatible"),
        )
        expect(c, ["PEXPIRETIME", k], (now + 70) * 1000)
        expect(c, ["DEL", k], 1)
        expect(c, ["EXPIRE", k, 10, "NX"], 0)  # options on a missing key


def scan_all(c, *opts):
    """Every key a full SCAN iteration returns (a list, duplicates kept); checks the cursors."""
    cursor, seen, rounds = b"0", [], 0
    while True:
        reply = c.call("SCAN", cursor, *opts)
        ok = tl.check(
            isinstance(reply, list) and len(reply) == 2 and type(reply[0]) is bytes
            and isinstance(reply[1], list),
            f"SCAN {cursor!r} {opts}: expected [cursor, [keys...]], got {tl.fmt(reply)}",
        )
        if not ok:
            return seen
        cursor = reply[0]
        seen += reply[1]
        rounds += 1
        if cursor == b"0" or not tl.check(rounds < 100000, "SCAN did not finish"):
            return seen


def test_scan(srv, c):
    expect(c, ["SCAN", 0], [b"0", []])
    keys = tl.keys_all_shards("scan:", 300) + ["other:1", "other:2"]
    mset(c, keys)
    seen = scan_all(c)
    tl.check(set(seen) == {k.encode() for k in keys},
             f"SCAN 0 (iterated): expected the {len(keys)} keys, got {len(set(seen))} distinct")
    seen = scan_all(c, "COUNT", 7)
    tl.check(set(seen) == {k.encode() for k in keys}, "SCAN ... COUNT 7 missed keys")
    seen = scan_all(c, "MATCH", "other:*")
    tl.check(sorted(set(seen)) == [b"other:1", b"other:2"],
             f"SCAN ... MATCH other:*: expected other:1 other:2, got {sorted(set(seen))}")
    seen = scan_all(c, "MATCH", "scan:1?", "COUNT", 1000)
    want = {k.encode() for k in keys if k.startswith("scan:1") and len(k) == 7}
    tl.check(set(seen) == want, f"SCAN ... MATCH scan:1?: expected {sorted(want)}, got {sorted(set(seen))}")
    seen = scan_all(c, "TYPE", "string", "COUNT", 50)
    tl.check(set(seen) == {k.encode() for k in keys}, "SCAN ... TYPE string missed keys")
    seen = scan_all(c, "TYPE", "hash")
    tl.check(seen == [], f"SCAN ... TYPE hash: expected no keys, got {len(seen)}")
    seen = scan_all(c, "MATCH", "nothing*")
    tl.check(seen == [], f"SCAN ... MATCH nothing*: expected no keys, got {len(seen)}")
    # keys present during the whole scan are returned even while others are written
    cursor, found = b"0", set()
    while True:
        cursor, batch = c.call("SCAN", cursor, "COUNT", 20)
        found |= set(batch)
        c.call("SET", f"new:{len(found)}", "x")
        if cursor == b"0":
            break
    tl.check({k.encode() for k in keys} <= found, "SCAN with concurrent writes missed keys")
    expect(c, ["SCAN", "abc"], E("ERR invalid cursor"))
    expect(c, ["SCAN", "1x"], E("ERR invalid cursor"))
    expect(c, ["SCAN", 0, "COUNT", 0], SYNTAX)
    expect(c, ["SCAN", 0, "COUNT", "x"], NOT_INT)
    expect(c, ["SCAN", 0, "MATCH"], SYNTAX)
    expect(c, ["SCAN", 0, "BOGUS", 1], SYNTAX)
    expect(c, ["SCAN"], wrong_args("scan"))


def test_keys_patterns(srv, c):
    expect(c, ["KEYS", "*"], [])
    names = ["hello", "hallo", "hxllo", "hllo", "heeeello", "h*llo", "other", "h\\llo"]
    mset(c, names)
    expect(c, ["KEYS", "*"], UNORDERED(names))
    expect(c, ["KEYS", "h?llo"], UNORDERED(["hello", "hallo", "hxllo", "h*llo", "h\\llo"]))
    expect(c, ["KEYS", "h*llo"], UNORDERED(["hello", "hallo", "hxllo", "hllo", "heeeello", "h*llo",
                                            "h\\llo"]))
    expect(c, ["KEYS", "h[ae]llo"], UNORDERED(["hello", "hallo"]))
    expect(c, ["KEYS", "h[^e]llo"], UNORDERED(["hallo", "hxllo", "h*llo", "h\\llo"]))
    expect(c, ["KEYS", "h[a-b]llo"], UNORDERED(["hallo"]))
    expect(c, ["KEYS", "h\\*llo"], UNORDERED(["h*llo"]))
    expect(c, ["KEYS", "other"], UNORDERED(["other"]))
    expect(c, ["KEYS", "nomatch*"], [])
    keys = tl.keys_all_shards("kk:", 40)
    mset(c, keys)
    expect(c, ["KEYS", "kk:*"], UNORDERED(keys))
    expect(c, ["KEYS"], wrong_args("keys"))


def test_dbsize_flush_randomkey(srv, c):
    expect(c, ["DBSIZE"], 0)
    expect(c, ["RANDOMKEY"], None)
    keys = tl.keys_all_shards("f:", 50)
    mset(c, keys)
    expect(c, ["DBSIZE"], 50)
    for _ in range(20):
        expect(c, ["RANDOMKEY"], tl.Matcher(lambda a: a in {k.encode() for k in keys}, "one of f:*"))
    expect(c, ["SET", keys[0], "again"], OK)
    expect(c, ["DBSIZE"], 50)
    expect(c, ["DEL", keys[0]], 1)
    expect(c, ["DBSIZE"], 49)
    expect(c, ["FLUSHDB"], OK)
    expect(c, ["DBSIZE"], 0)
    expect(c, ["GET", keys[1]], None)
    expect(c, ["KEYS", "*"], [])
    mset(c, keys)
    expect(c, ["FLUSHALL"], OK)
    expect(c, ["DBSIZE"], 0)
    expect(c, ["EXISTS"] + keys, 0)
    for cmd in ("FLUSHALL", "FLUSHDB"):
        for mode in ("SYNC", "ASYNC", "sync"):
            mset(c, keys[:5])
            expect(c, [cmd, mode], OK)
            expect(c, ["DBSIZE"], 0)
        expect(c, [cmd, "BOGUS"], SYNTAX)
    expect(c, ["SET", "only", "1"], OK)
    expect(c, ["RANDOMKEY"], "only")
    expect(c, ["DBSIZE", "x"], wrong_args("dbsize"))
    expect(c, ["RANDOMKEY", "x"], wrong_args("randomkey"))
    expect(c, ["FLUSHALL", "ASYNC", "x"], SYNTAX)


if __name__ == "__main__":
    tl.main(globals())
