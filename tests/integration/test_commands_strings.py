#!/usr/bin/python3
"""test_commands_strings: every string command (GET SET SETNX SETEX PSETEX GETSET GETDEL GETEX
MGET MSET MSETNX APPEND STRLEN INCR DECR INCRBY DECRBY INCRBYFLOAT GETRANGE SETRANGE) against
Redis's replies, happy path and errors, with keys on both shards."""

import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringkv_testlib as tl  # noqa: E402
from ringkv_testlib import ANY_INT, NOT_FLOAT, NOT_INT, OK, OVERFLOW, SYNTAX, E, expect  # noqa: E402
from ringkv_testlib import wrong_args  # noqa: E402

KEYS = [tl.key_on_shard("str:", 0), tl.key_on_shard("str:", 1)]  # one key per shard
I64_MAX = 9223372036854775807
I64_MIN = -9223372036854775808


def test_get_set_basic(srv, c):
    for k in KEYS:
        expect(c, ["GET", k], None)
        expect(c, ["SET", k, "hello"], OK)
        expect(c, ["GET", k], "hello")
        expect(c, ["SET", k, "world"], OK)
        expect(c, ["GET", k], "world")
        expect(c, ["SET", k, ""], OK)
        expect(c, ["GET", k], "")
    binary = b"\x00\r\n\xff bin \r\n\x00"
    expect(c, ["SET", b"key with spaces\r\n\x00", binary], OK)
    expect(c, ["GET", b"key with spaces\r\n\x00"], binary)
    for size in (63, 64, 65, 4096, 100_000, 1 << 20):  # around inline_max and the log block
        v = bytes((i * 7 + size) % 251 for i in range(size))
        for k in KEYS:
            expect(c, ["SET", k, v], OK)
            expect(c, ["GET", k], v)
    expect(c, ["GET"], wrong_args("get"))
    expect(c, ["GET", "a", "b"], wrong_args("get"))
    expect(c, ["SET", "a"], wrong_args("set"))
    expect(c, ["set"], wrong_args("set"))


def test_set_nx_xx_get(srv, c):
    for k in KEYS:
        expect(c, ["SET", k, "v1", "XX"], None)
        expect(c, ["GET", k], None)
        expect(c, ["SET", k, "v1", "NX"], OK)
        expect(c, ["SET", k, "v2", "NX"], None)
        expect(c, ["GET", k], "v1")
        expect(c, ["SET", k, "v3", "XX"], OK)
        expect(c, ["GET", k], "v3")
        expect(c, ["SET", k, "v4", "GET"], "v3")
        expect(c, ["GET", k], "v4")
        expect(c, ["SET", k, "v5", "nx", "GET"], "v4")  # NX fails, GET still returns the value
        expect(c, ["GET", k], "v4")
        expect(c, ["SET", k, "v6", "XX", "GET"], "v4")
        expect(c, ["GET", k], "v6")
        expect(c, ["DEL", k], 1)
        expect(c, ["SET", k, "v7", "GET"], None)
        expect(c, ["GET", k], "v7")
        expect(c, ["SET", k, "v8", "NX", "XX"], SYNTAX)
        expect(c, ["SET", k, "v8", "XX", "NX"], SYNTAX)
        expect(c, ["SET", k, "v8", "BOGUS"], SYNTAX)
        expect(c, ["SET", k, "v8", "NX", "NX"], None)  # a repeated NX is allowed
        expect(c, ["GET", k], "v7")


def test_set_expire_options(srv, c):
    for k in KEYS:
        expect(c, ["SET", k, "v", "EX", 100], OK)
        expect(c, ["TTL", k], ANY_INT(99, 100))
        expect(c, ["SET", k, "v", "PX", 100000], OK)
        expect(c, ["PTTL", k], ANY_INT(98000, 100000))
        now = int(time.time())
        expect(c, ["SET", k, "v", "EXAT", now + 200], OK)
        expect(c, ["TTL", k], ANY_INT(198, 200))
        expect(c, ["EXPIRETIME", k], now + 200)
        expect(c, ["SET", k, "v", "PXAT", (now + 300) * 1000 + 123], OK)
        expect(c, ["PEXPIRETIME", k], (now + 300) * 1000 + 123)
        expect(c, ["SET", k, "v2", "KEEPTTL"], OK)
        expect(c, ["PEXPIRETIME", k], (now + 300) * 1000 + 123)
        expect(c, ["GET", k], "v2")
        expect(c, ["SET", k, "v3", "XX", "KEEPTTL", "GET"], "v2")
        expect(c, ["PEXPIRETIME", k], (now + 300) * 1000 + 123)
        expect(c, ["SET", k, "v4"], OK)  # a plain SET clears the TTL
        expect(c, ["TTL", k], -1)
        expect(c, ["SET", k, "v", "NX", "EX", 10], None)
        expect(c, ["TTL", k], -1)
        for bad in (0, -1):
            for opt in ("EX", "PX", "EXAT", "PXAT"):
                expect(c, ["SET", k, "v", opt, bad], E("ERR invalid expire time in 'set' command"))
        expect(c, ["SET", k, "v", "EX", I64_MAX], E("ERR invalid expire time in 'set' command"))
        expect(c, ["SET", k, "v", "EX", "abc"], NOT_INT)
        expect(c, ["SET", k, "v", "PX", "1.5"], NOT_INT)
        expect(c, ["SET", k, "v", "EX"], SYNTAX)
        expect(c, ["SET", k, "v", "EX", 10, "PX", 100], SYNTAX)
        expect(c, ["SET", k, "v", "EX", 10, "KEEPTTL"], SYNTAX)
        expect(c, ["SET", k, "v", "KEEPTTL", "PXAT", 10**13], SYNTAX)
        expect(c, ["GET", k], "v4")
        expect(c, ["TTL", k], -1)
        # an absolute time in the past: the key is set and at once expired
        expect(c, ["SET", k, "gone", "EXAT", 1], OK)
        expect(c, ["GET", k], None)
        expect(c, ["EXISTS", k], 0)


def test_setnx_setex_psetex(srv, c):
    for k in KEYS:
        expect(c, ["SETNX", k, "a"], 1)
        expect(c, ["SETNX", k, "b"], 0)
        expect(c, ["GET", k], "a")
        expect(c, ["SETEX", k, 50, "c"], OK)
        expect(c, ["GET", k], "c")
        expect(c, ["TTL", k], ANY_INT(49, 50))
        expect(c, ["PSETEX", k, 50000, "d"], OK)
        expect(c, ["GET", k], "d")
        expect(c, ["PTTL", k], ANY_INT(48000, 50000))
        expect(c, ["SETEX", k, 0, "x"], E("ERR invalid expire time in 'setex' command"))
        expect(c, ["SETEX", k, -5, "x"], E("ERR invalid expire time in 'setex' command"))
        expect(c, ["PSETEX", k, 0, "x"], E("ERR invalid expire time in 'psetex' command"))
        expect(c, ["SETEX", k, "ten", "x"], NOT_INT)
        expect(c, ["PSETEX", k, "", "x"], NOT_INT)
        expect(c, ["GET", k], "d")
        # SETNX leaves an existing key (and its TTL) alone, and sets no TTL on a new one
        expect(c, ["SETNX", k, "e"], 0)
        expect(c, ["PTTL", k], ANY_INT(48000, 50000))
        expect(c, ["DEL", k], 1)
        expect(c, ["SETNX", k, ""], 1)
        expect(c, ["GET", k], "")
        expect(c, ["TTL", k], -1)
    expect(c, ["SETNX", "k"], wrong_args("setnx"))
    expect(c, ["SETNX", "k", "v", "extra"], wrong_args("setnx"))
    expect(c, ["SETEX", "k", 10], wrong_args("setex"))
    expect(c, ["PSETEX", "k", 10, "v", "extra"], wrong_args("psetex"))


def test_getset_getdel(srv, c):
    for k in KEYS:
        expect(c, ["GETSET", k, "one"], None)
        expect(c, ["GETSET", k, "two"], "one")
        expect(c, ["GET", k], "two")
        expect(c, ["EXPIRE", k, 100], 1)
        expect(c, ["GETSET", k, "three"], "two")
        expect(c, ["TTL", k], -1)  # GETSET clears the TTL
        expect(c, ["GETDEL", k], "three")
        expect(c, ["GETDEL", k], None)
        expect(c, ["EXISTS", k], 0)
        expect(c, ["GETSET", k, ""], None)
        expect(c, ["GETSET", k, "four"], "")
        expect(c, ["SETNX", k, "five"], 0)
        expect(c, ["GETSET", k, "six"], "four")
        expect(c, ["GET", k], "six")
    expect(c, ["GETSET", "k"], wrong_args("getset"))
    expect(c, ["GETSET", "k", "v", "extra"], wrong_args("getset"))
    expect(c, ["GETDEL"], wrong_args("getdel"))
    expect(c, ["GETDEL", "a", "b"], wrong_args("getdel"))


def test_getex(srv, c):
    for k in KEYS:
        expect(c, ["GETEX", k], None)
        expect(c, ["GETEX", k, "EX", 10], None)
        expect(c, ["EXISTS", k], 0)
        expect(c, ["SET", k, "val"], OK)
        expect(c, ["GETEX", k], "val")
        expect(c, ["TTL", k], -1)
        expect(c, ["GETEX", k, "EX", 100], "val")
        expect(c, ["TTL", k], ANY_INT(99, 100))
        expect(c, ["GETEX", k, "PX", 200000], "val")
        expect(c, ["PTTL", k], ANY_INT(198000, 200000))
        now = int(time.time())
        expect(c, ["GETEX", k, "EXAT", now + 500], "val")
        expect(c, ["EXPIRETIME", k], now + 500)
        expect(c, ["GETEX", k, "PXAT", (now + 600) * 1000 + 7], "val")
        expect(c, ["PEXPIRETIME", k], (now + 600) * 1000 + 7)
        expect(c, ["GETEX", k, "PERSIST"], "val")
        expect(c, ["TTL", k], -1)
        expect(c, ["GETEX", k, "EX", 0], E("ERR invalid expire time in 'getex' command"))
        expect(c, ["GETEX", k, "PX", -1], E("ERR invalid expire time in 'getex' command"))
        expect(c, ["GETEX", k, "EX", "x"], NOT_INT)
        expect(c, ["GETEX", k, "EX", 10, "PX", 10], SYNTAX)
        expect(c, ["GETEX", k, "EX", 10, "PERSIST"], SYNTAX)
        expect(c, ["GETEX", k, "EX"], SYNTAX)
        expect(c, ["GETEX", k, "KEEPTTL"], SYNTAX)
        expect(c, ["GETEX", k, "BOGUS"], SYNTAX)
        expect(c, ["TTL", k], -1)
        expect(c, ["GETEX", k, "EXAT", 1], "val")  # a time in the past deletes the key
        expect(c, ["EXISTS", k], 0)
    expect(c, ["GETEX"], wrong_args("getex"))


def test_getex_checks_expire_value_after_key(srv, c):
    """As Redis 7.0's getexCommand: the options' syntax first, then a missing key is nil
    whatever the expire time says, and only an existing key's time is validated."""
    invalid = E("ERR invalid expire time in 'getex' command")
    for k in KEYS:
        expect(c, ["GETEX", k, "EX", "abc"], None)
        expect(c, ["GETEX", k, "EX", -1], None)
        expect(c, ["GETEX", k, "PX", 0], None)
        expect(c, ["GETEX", k, "EX", I64_MAX], None)  # would overflow in ms
        expect(c, ["GETEX", k, "PXAT", "1.5"], None)
        expect(c, ["GETEX", k, "EX", "abc", "PX", 10], SYNTAX)  # the syntax comes first
        expect(c, ["GETEX", k, "EX", -1, "BOGUS"], SYNTAX)
        expect(c, ["EXISTS", k], 0)
        expect(c, ["SET", k, "val", "EX", 100], OK)
        expect(c, ["GETEX", k, "EX", "abc"], NOT_INT)
        expect(c, ["GETEX", k, "EX", -1], invalid)
        expect(c, ["GETEX", k, "EX", I64_MAX], invalid)
        expect(c, ["GETEX", k, "PXAT", 0], invalid)
        expect(c, ["GET", k], "val")  # a refused time changes nothing
        expect(c, ["TTL", k], ANY_INT(99, 100))
        expect(c, ["GETEX", k, "EX", 100, "EX", "abc"], NOT_INT)  # of repeats, the last counts
        expect(c, ["GETEX", k, "PX", "abc", "PX", 50000], "val")
        expect(c, ["PTTL", k], ANY_INT(48000, 50000))
        expect(c, ["DEL", k], 1)


def test_mget_mset_msetnx(srv, c):
    keys = tl.keys_all_shards("m:", 20)
    args = []
    for i, k in enumerate(keys):
        args += [k, f"value-{i}"]
    expect(c, ["MSET"] + args, OK)
    expect(c, ["MGET"] + keys, [f"value-{i}" for i in range(len(keys))])
    expect(c, ["MGET", keys[0], "nope:1", keys[1], "nope:2"], ["value-0", None, "value-1", None])
    expect(c, ["MGET", keys[3], keys[3]], ["value-3", "value-3"])
    expect(c, ["MSET", keys[0], "a", keys[0], "b"], OK)  # the last one wins
    expect(c, ["GET", keys[0]], "b")
    expect(c, ["MSET"], wrong_args("mset"))
    expect(c, ["MSET", "a"], wrong_args("mset"))
    expect(c, ["MSET", "a", "1", "b"], wrong_args("mset"))
    expect(c, ["MGET"], wrong_args("mget"))
    expect(c, ["EXISTS", "a"], 0)

    # MSETNX is all or nothing, also when the keys live on different shards
    a, b = tl.key_on_shard("nx:", 0), tl.key_on_shard("nx:", 1)
    expect(c, ["MSETNX", a, "1", b, "2"], 1)
    expect(c, ["MGET", a, b], ["1", "2"])
    c2, d = tl.key_on_shard("nx:", 0, start=1000), tl.key_on_shard("nx:", 1, start=1000)
    expect(c, ["MSETNX", c2, "3", d, "4", b, "5"], 0)
    expect(c, ["MGET", c2, d, b], [None, None, "2"])
    expect(c, ["MSETNX", d, "4", a, "5"], 0)
    expect(c, ["MGET", d, a], [None, "1"])
    expect(c, ["MSETNX", c2, "3", d, "4"], 1)
    expect(c, ["MGET", c2, d], ["3", "4"])
    expect(c, ["MSETNX", "dup:1", "first", "dup:1", "second"], 1)  # a repeated key: the last wins
    expect(c, ["GET", "dup:1"], "second")
    expect(c, ["MSETNX", "x"], wrong_args("msetnx"))
    expect(c, ["MSETNX", "x", "1", "y"], wrong_args("msetnx"))
    # MSET clears the TTLs of the keys it writes
    expect(c, ["SET", a, "t", "EX", 100], OK)
    expect(c, ["MSET", a, "u", b, "w"], OK)
    expect(c, ["TTL", a], -1)


def test_append_strlen(srv, c):
    for k in KEYS:
        expect(c, ["STRLEN", k], 0)
        expect(c, ["APPEND", k, "Hello"], 5)
        expect(c, ["APPEND", k, " World"], 11)
        expect(c, ["GET", k], "Hello World")
        expect(c, ["STRLEN", k], 11)
        expect(c, ["APPEND", k, ""], 11)
        expect(c, ["EXPIRE", k, 100], 1)
        expect(c, ["APPEND", k, "!"], 12)
        expect(c, ["TTL", k], ANY_INT(99, 100))  # APPEND keeps the TTL
        big = b"x" * 70000
        expect(c, ["APPEND", k, big], 12 + 70000)
        expect(c, ["STRLEN", k], 12 + 70000)
        expect(c, ["GETRANGE", k, 0, 11], "Hello World!")
        expect(c, ["SET", k, 12345], OK)
        expect(c, ["STRLEN", k], 5)
    expect(c, ["APPEND", "k"], wrong_args("append"))
    expect(c, ["STRLEN"], wrong_args("strlen"))
    expect(c, ["STRLEN", "a", "b"], wrong_args("strlen"))


def test_incr_decr(srv, c):
    for k in KEYS:
        expect(c, ["INCR", k], 1)
        expect(c, ["INCR", k], 2)
        expect(c, ["DECR", k], 1)
        expect(c, ["DECR", k], 0)
        expect(c, ["DECR", k], -1)
        expect(c, ["INCRBY", k, 100], 99)
        expect(c, ["DECRBY", k, 1000], -901)
        expect(c, ["INCRBY", k, -99], -1000)
        expect(c, ["GET", k], "-1000")
        expect(c, ["EXPIRE", k, 100], 1)
        expect(c, ["INCR", k], -999)
        expect(c, ["TTL", k], ANY_INT(99, 100))  # INCR keeps the TTL
        expect(c, ["SET", k, I64_MAX - 1], OK)
        expect(c, ["INCR", k], I64_MAX)
        expect(c, ["INCR", k], OVERFLOW)
        expect(c, ["INCRBY", k, 1], OVERFLOW)
        expect(c, ["GET", k], str(I64_MAX))
        expect(c, ["SET", k, I64_MIN + 1], OK)
        expect(c, ["DECR", k], I64_MIN)
        expect(c, ["DECR", k], OVERFLOW)
        expect(c, ["DECRBY", k, 1], OVERFLOW)
        expect(c, ["INCRBY", k, -1], OVERFLOW)
        expect(c, ["SET", k, 0], OK)
        expect(c, ["DECRBY", k, I64_MIN], E("ERR decrement would overflow"))
        expect(c, ["INCRBY", k, I64_MIN], I64_MIN)
        for bad in ("abc", "1.5", " 1", "1 ", "", "+5", "007", "99999999999999999999", "0x10"):
            expect(c, ["SET", k, bad], OK)
            expect(c, ["INCR", k], NOT_INT)
            expect(c, ["DECRBY", k, 1], NOT_INT)
            expect(c, ["GET", k], bad)
        expect(c, ["SET", k, "10"], OK)
        for bad in ("x", "1.0", "9223372036854775808", "-9223372036854775809", ""):
            expect(c, ["INCRBY", k, bad], NOT_INT)
            expect(c, ["DECRBY", k, bad], NOT_INT)
        expect(c, ["GET", k], "10")
        expect(c, ["SET", k, "-0"], OK)
        expect(c, ["INCR", k], NOT_INT)
    expect(c, ["INCR"], wrong_args("incr"))
    expect(c, ["DECR", "a", "b"], wrong_args("decr"))
    expect(c, ["INCRBY", "a"], wrong_args("incrby"))
    expect(c, ["DECRBY", "a", 1, 2], wrong_args("decrby"))


def test_incrbyfloat(srv, c):
    for k in KEYS:
        expect(c, ["INCRBYFLOAT", k, "1.5"], "1.5")
        expect(c, ["SET", k, "10.50"], OK)
        expect(c, ["INCRBYFLOAT", k, "0.1"], "10.6")  # the examples of Redis's documentation
        expect(c, ["INCRBYFLOAT", k, "-5"], "5.6")
        expect(c, ["SET", k, "5.0e3"], OK)
        expect(c, ["INCRBYFLOAT", k, "2.0e2"], "5200")
        expect(c, ["GET", k], "5200")
        expect(c, ["SET", k, 3], OK)
        expect(c, ["INCRBYFLOAT", k, "1.1"], "4.1")
        expect(c, ["INCRBYFLOAT", k, "2.2"], "6.3")
        expect(c, ["INCRBYFLOAT", k, "-6.3"], "0")
        expect(c, ["INCRBYFLOAT", k, 7], "7")
        expect(c, ["EXPIRE", k, 100], 1)
        expect(c, ["INCRBYFLOAT", k, "0.25"], "7.25")
        expect(c, ["TTL", k], ANY_INT(99, 100))
        expect(c, ["INCRBYFLOAT", k, "abc"], NOT_FLOAT)
        expect(c, ["INCRBYFLOAT", k, ""], NOT_FLOAT)
        expect(c, ["INCRBYFLOAT", k, "1.5x"], NOT_FLOAT)
        expect(c, ["INCRBYFLOAT", k, "inf"], E("ERR increment would produce NaN or Infinity"))
        expect(c, ["INCRBYFLOAT", k, "nan"], NOT_FLOAT)
        expect(c, ["GET", k], "7.25")
        expect(c, ["SET", k, "not a number"], OK)
        expect(c, ["INCRBYFLOAT", k, "1"], NOT_FLOAT)
    expect(c, ["INCRBYFLOAT", "k"], wrong_args("incrbyfloat"))


def test_incrbyfloat_refuses_nul_inside(srv, c):
    """A value or increment with a NUL byte is not a float (Redis's string2ld consumes every
    byte); ringkv once parsed only the part before the NUL."""
    for k in KEYS:
        for value in (b"1\x00", b"\x00abc", b"1\x001", b"\x00"):
            expect(c, ["SET", k, value], OK)
            expect(c, ["INCRBYFLOAT", k, "1"], NOT_FLOAT)
            expect(c, ["GET", k], value)
        expect(c, ["SET", k, "1"], OK)
        for incr in (b"1\x00", b"\x00abc", b"2.5\x00x"):
            expect(c, ["INCRBYFLOAT", k, incr], NOT_FLOAT)
        expect(c, ["GET", k], "1")
        expect(c, ["DEL", k], 1)


def test_getrange_setrange(srv, c):
    for k in KEYS:
        expect(c, ["GETRANGE", k, 0, -1], "")
        expect(c, ["SET", k, "This is a string"], OK)
        expect(c, ["GETRANGE", k, 0, 3], "This")
        expect(c, ["GETRANGE", k, -3, -1], "ing")
        expect(c, ["GETRANGE", k, 0, -1], "This is a string")
        expect(c, ["GETRANGE", k, 10, 100], "string")
        expect(c, ["GETRANGE", k, 5, 3], "")
        expect(c, ["GETRANGE", k, -100, 3], "This")
        expect(c, ["GETRANGE", k, 100, 200], "")
        expect(c, ["GETRANGE", k, -1, -5], "")
        expect(c, ["GETRANGE", k, "a", 1], NOT_INT)
        expect(c, ["GETRANGE", k, 0, "1.5"], NOT_INT)
        expect(c, ["SET", k, "Hello World"], OK)
        expect(c, ["SETRANGE", k, 6, "Redis"], 11)
        expect(c, ["GET", k], "Hello Redis")
        expect(c, ["SETRANGE", k, 11, "!!"], 13)
        expect(c, ["GET", k], "Hello Redis!!")
        expect(c, ["SETRANGE", k, 0, ""], 13)
        expect(c, ["SETRANGE", k, 15, "x"], 16)
        expect(c, ["GET", k], b"Hello Redis!!\x00\x00x")
        expect(c, ["EXPIRE", k, 100], 1)
        expect(c, ["SETRANGE", k, 0, "J"], 16)
        expect(c, ["TTL", k], ANY_INT(99, 100))
        expect(c, ["SETRANGE", k, -1, "x"], E("ERR offset is out of range"))
        expect(c, ["SETRANGE", k, "x", "x"], NOT_INT)
        expect(
            c,
            ["SETRANGE", k, 512 * 1024 * 1024, "x"],
            E("ERR string exceeds maximum allowed size (proto-max-bulk-len)"),
        )
        expect(c, ["DEL", k], 1)
        expect(c, ["SETRANGE", k, 5, ""], 0)  # an empty write does not create the key
        expect(c, ["EXISTS", k], 0)
        expect(c, ["SETRANGE", k, 3, "abc"], 6)
        expect(c, ["GET", k], b"\x00\x00\x00abc")
    expect(c, ["GETRANGE", "k", 0], wrong_args("getrange"))
    expect(c, ["SETRANGE", "k", 0], wrong_args("setrange"))


if __name__ == "__main__":
    tl.main(globals())
