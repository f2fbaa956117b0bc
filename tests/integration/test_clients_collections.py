#!/usr/bin/python3
"""test_clients_collections: real clients on hashes, sets and databases.  redis-py (its own
parser and reply callbacks) calls every hash and set command — hset with mapping and items,
hgetall, hincrbyfloat, hrandfield with count and withvalues, hscan_iter, sadd, smembers, spop
with a count, srandmember, smove, sinter / sunion / sdiff and their *store, sintercard,
sscan_iter, type, object encoding, a non-transactional pipeline — over keys on both shards,
and select / swapdb / flushdb through a second Redis(db=1) client; redis-cli (hiredis) prints
HGETALL, SMEMBERS, HRANDFIELD and friends in RESP2 (--no-raw) and RESP3 (-3: a map, a set)
exactly as it does for Redis."""

import os
import re
import subprocess
import sys
import warnings

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import redis  # noqa: E402

import ringkv_testlib as tl  # noqa: E402

K = tl.keys_all_shards("cl:", 8)  # keys alternating between the shards


def eq(actual, expected, what):
    tl.check(actual == expected, f"{what}: expected {expected!r}, got {actual!r}")
    return actual


def raises(fn, prefix, what):
    try:
        got = fn()
    except redis.exceptions.ResponseError as e:
        tl.check(str(e).startswith(prefix), f"{what}: expected an error {prefix!r}..., got {e}")
        return
    tl.CHECKER.fail(f"{what}: expected an error {prefix!r}..., got {got!r}")


def client(srv, db=0):
    return redis.Redis(host="127.0.0.1", port=srv.port, db=db, decode_responses=True,
                       socket_timeout=20)


def test_redis_py_hashes(srv, c):
    r = client(srv)
    h = K[0]
    eq(r.hset(h, mapping={"a": "1", "b": "2"}), 2, "hset mapping")
    eq(r.hset(h, "c", "3"), 1, "hset key value")
    eq(r.hset(h, "a", "one", mapping={"d": "4"}, items=["e", "5", "f", "6"]), 3,
       "hset key value + mapping + items")
    eq(r.hsetnx(h, "a", "x"), 0, "hsetnx existing")
    eq(r.hsetnx(h, "g", "7"), 1, "hsetnx new")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # hmset: redis-py prefers hset
        eq(r.hmset(h, {"b": "two"}), True, "hmset")
    full = {"a": "one", "b": "two", "c": "3", "d": "4", "e": "5", "f": "6", "g": "7"}
    eq(r.hgetall(h), full, "hgetall")
    eq(r.hget(h, "c"), "3", "hget")
    eq(r.hget(h, "zz"), None, "hget missing field")
    eq(r.hmget(h, ["a", "zz", "g"]), ["one", None, "7"], "hmget")
    eq(sorted(r.hkeys(h)), sorted(full), "hkeys")
    eq(sorted(r.hvals(h)), sorted(full.values()), "hvals")
    eq(r.hlen(h), 7, "hlen")
    eq(r.hstrlen(h, "a"), 3, "hstrlen")
    eq(r.hexists(h, "a"), True, "hexists")
    eq(r.hexists(h, "zz"), False, "hexists missing")
    eq(r.hincrby(h, "n", 5), 5, "hincrby new field")
    eq(r.hincrby(h, "n", -7), -2, "hincrby")
    eq(r.hincrbyfloat(h, "fl", 1.5), 1.5, "hincrbyfloat new field")
    eq(r.hincrbyfloat(h, "fl", 2.25), 3.75, "hincrbyfloat")
    eq(r.hincrbyfloat(h, "c", "0.1"), 3.1, "hincrbyfloat on an integer field")
    eq(r.hget(h, "c"), "3.1", "hget after hincrbyfloat")
    raises(lambda: r.hincrby(h, "a", 1), "hash value is not an integer", "hincrby on 'one'")
    raises(lambda: r.hincrbyfloat(h, "a", 1), "hash value is not a float", "hincrbyfloat on 'one'")
    eq(r.hdel(h, "g", "zz"), 1, "hdel")
    now = r.hgetall(h)
    one = r.hrandfield(h)
    tl.check(one in now, f"hrandfield: {one!r} is not a field")
    three = r.hrandfield(h, 3)
    tl.check(len(three) == 3 == len(set(three)) and set(three) <= set(now),
             f"hrandfield count 3: {three!r}")
    eq(len(r.hrandfield(h, 50)), len(now), "hrandfield count 50 (more than there are)")
    rep = r.hrandfield(h, -20)
    tl.check(len(rep) == 20 and set(rep) <= set(now), f"hrandfield count -20: {rep!r}")
    wv = r.hrandfield(h, 2, withvalues=True)
    tl.check(len(wv) == 4 and all(now.get(wv[i]) == wv[i + 1] for i in (0, 2)),
             f"hrandfield 2 withvalues: {wv!r} do not pair fields with their values")
    eq(r.hrandfield(K[7]), None, "hrandfield missing key")
    eq(r.hrandfield(K[7], 2, withvalues=True), [], "hrandfield missing key with count")
    eq(r.type(h), "hash", "type")
    eq(r.object("encoding", h), "listpack", "object encoding of a small hash")
    # a hash past listpack's 512 entries, on the other shard, walked by hscan_iter
    big = K[1]
    p = r.pipeline(transaction=False)
    for i in range(0, 1500, 500):
        p.hset(big, mapping={f"f{j}": f"v{j}" for j in range(i, i + 500)})
    eq(p.execute(), [500, 500, 500], "pipelined hset")
    eq(r.object("encoding", big), "hashtable", "object encoding of a 1500-field hash")
    eq(dict(r.hscan_iter(big, count=100)), {f"f{j}": f"v{j}" for j in range(1500)}, "hscan_iter")
    eq(dict(r.hscan_iter(big, match="f14*", count=1000)),
       {f: f"v{f[1:]}" for f in ["f14"] + [f"f14{j}" for j in range(10)] +
        [f"f14{j}{k}" for j in range(10) for k in range(10)]}, "hscan_iter match f14*")
    cursor, page = r.hscan(h, 0, count=100)
    eq((cursor, page), (0, now), "hscan of a small hash")
    eq(r.set(K[2], "s"), True, "set")
    raises(lambda: r.hget(K[2], "f"), "WRONGTYPE", "hget on a string")
    eq(r.expire(h, 100), True, "expire on a hash")
    tl.check(0 < r.ttl(h) <= 100, f"ttl of a hash: {r.ttl(h)}")
    eq(r.persist(h), True, "persist on a hash")
    eq(r.delete(h, big), 2, "delete")
    eq(r.exists(h, big), 0, "exists after delete")
    r.close()


def test_redis_py_sets(srv, c):
    r = client(srv)
    s, t, u = K[0], K[1], K[2]
    eq(r.sadd(s, "a", "b", "c", "d"), 4, "sadd")
    eq(r.sadd(s, "a", "e"), 1, "sadd existing + new")
    eq(r.smembers(s), {"a", "b", "c", "d", "e"}, "smembers")
    eq(r.scard(s), 5, "scard")
    eq(r.sismember(s, "a"), True, "sismember")
    eq(r.sismember(s, "z"), False, "sismember missing")
    eq([bool(x) for x in r.smismember(s, ["a", "z", "e"])], [True, False, True], "smismember")
    eq(r.srem(s, "e", "z"), 1, "srem")
    eq(r.sadd(t, "c", "d", "x", "y"), 4, "sadd t")
    eq(r.sadd(u, "d", "y", "z"), 3, "sadd u")
    eq(r.sinter(s, t), {"c", "d"}, "sinter across shards")
    eq(r.sinter([s, t, u]), {"d"}, "sinter of three")
    eq(r.sunion(s, u), {"a", "b", "c", "d", "y", "z"}, "sunion")
    eq(r.sdiff(s, t), {"a", "b"}, "sdiff")
    eq(r.sdiff([t, s, u]), {"x"}, "sdiff of three")
    eq(r.sintercard(2, [s, t]), 2, "sintercard")
    eq(r.sintercard(2, [s, t], limit=1), 1, "sintercard limit 1")
    eq(r.sintercard(3, [s, t, K[7]]), 0, "sintercard with a missing key")
    d1, d2, d3 = K[3], K[4], K[5]
    eq(r.sinterstore(d1, [s, t]), 2, "sinterstore")
    eq(r.sunionstore(d2, [s, t, u]), 7, "sunionstore")
    eq(r.sdiffstore(d3, [s, t]), 2, "sdiffstore")
    eq((r.smembers(d1), r.smembers(d2), r.smembers(d3)),
       ({"c", "d"}, {"a", "b", "c", "d", "x", "y", "z"}, {"a", "b"}), "the stored sets")
    eq(r.sinterstore(d1, [s, K[7]]), 0, "sinterstore of an empty intersection")
    eq(r.exists(d1), 0, "an empty sinterstore deletes its destination")
    eq(r.smove(s, t, "a"), True, "smove across shards")
    eq(r.smove(s, t, "zz"), False, "smove of a missing member")
    eq((r.smembers(s), r.smembers(t)), ({"b", "c", "d"}, {"a", "c", "d", "x", "y"}), "after smove")
    tag = "{cl}"
    eq(r.sadd(f"{tag}1", "m"), 1, "sadd tagged")
    eq(r.smove(f"{tag}1", f"{tag}2", "m"), True, "smove within one shard")
    eq((r.exists(f"{tag}1"), r.smembers(f"{tag}2")), (0, {"m"}), "smove empties its source")
    one = r.srandmember(t)
    tl.check(one in {"a", "c", "d", "x", "y"}, f"srandmember: {one!r}")
    two = r.srandmember(t, 2)
    tl.check(len(two) == 2 == len(set(two)) and set(two) <= {"a", "c", "d", "x", "y"},
             f"srandmember 2: {two!r}")
    rep = r.srandmember(t, -9)
    tl.check(len(rep) == 9 and set(rep) <= {"a", "c", "d", "x", "y"}, f"srandmember -9: {rep!r}")
    eq(r.srandmember(K[7]), None, "srandmember missing key")
    eq(r.srandmember(K[7], 3), [], "srandmember missing key with count")
    before = r.smembers(t)
    popped = r.spop(t, 2)
    tl.check(len(popped) == 2 == len(set(popped)) and set(popped) <= before,
             f"spop 2: {popped!r} from {before!r}")
    eq(r.smembers(t), before - set(popped), "smembers after spop 2")
    last = r.spop(t)
    tl.check(last in before - set(popped), f"spop: {last!r}")
    eq(set(r.spop(t, 10)), before - set(popped) - {last}, "spop of more than there are")
    eq(r.exists(t), 0, "spop of every member deletes the key")
    eq(r.spop(K[7]), None, "spop missing key")
    eq(r.type(s), "set", "type")
    eq(r.sadd(K[6], *range(10)), 10, "sadd integers")
    eq(r.object("encoding", K[6]), "intset", "object encoding of small integers")
    eq(r.object("encoding", s), "hashtable", "object encoding of a small set of strings (7.0)")
    big = K[1]
    eq(r.sadd(big, *[f"m{i}" for i in range(2000)]), 2000, "sadd 2000")
    eq(set(r.sscan_iter(big, count=100)), {f"m{i}" for i in range(2000)}, "sscan_iter")
    eq(set(r.sscan_iter(big, match="m19*", count=500)),
       {"m19"} | {f"m19{i}" for i in range(10)}
       | {f"m19{i}{j}" for i in range(10) for j in range(10)},
       "sscan_iter match m19*")
    eq(sorted(r.scan_iter(_type="set")), sorted([s, u, d2, d3, f"{tag}2", K[6], big]),
       "scan_iter type set")
    eq(r.hset(K[7], "f", "v"), 1, "hset")
    raises(lambda: r.sadd(K[7], "m"), "WRONGTYPE", "sadd on a hash")
    r.close()


def test_redis_py_databases(srv, c):
    r0, r1 = client(srv), client(srv, db=1)
    eq(r0.sadd("same", "in-0"), 1, "db 0: sadd")
    eq(r1.hset("same", mapping={"in": "1"}), 1, "db 1: hset")
    eq((r0.type("same"), r1.type("same")), ("set", "hash"), "one name, two types")
    p = r1.pipeline(transaction=False)
    p.hset(K[0], "f", "v").sadd(K[1], "m").hgetall(K[0]).smembers(K[1]).dbsize()
    eq(p.execute(), [1, 1, {"f": "v"}, {"m"}, 3], "db 1: pipeline")
    eq(r0.dbsize(), 1, "db 0 dbsize")
    ks = r0.info("keyspace")
    eq((ks.get("db0", {}).get("keys"), ks.get("db1", {}).get("keys")), (1, 3), "info keyspace")
    eq(r0.swapdb(0, 1), True, "swapdb 0 1")
    eq((r0.type("same"), r1.type("same")), ("hash", "set"), "after swapdb (seen at once)")
    eq((r0.dbsize(), r1.dbsize()), (3, 1), "dbsize after swapdb")
    eq(r0.hgetall(K[0]), {"f": "v"}, "db 0 holds db 1's hash")
    eq(r1.flushdb(), True, "flushdb of db 1")
    eq((r0.dbsize(), r1.dbsize()), (3, 0), "flushdb leaves db 0")
    eq(r1.smembers("same"), set(), "db 1 is empty")
    eq(r0.flushdb(asynchronous=True), True, "flushdb async")
    eq(r0.dbsize(), 0, "dbsize after flushdb async")
    r0.close()
    r1.close()


def cli(srv, *args, resp3=False, db=0):
    """redis-cli's output (--no-raw, as on a terminal) for one command."""
    argv = ["redis-cli", "-p", str(srv.port), "-n", str(db), "--no-raw"] + \
        (["-3"] if resp3 else []) + [str(a) for a in args]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    return p.stdout.rstrip("\n")


def lines_any_order(text, pattern):
    """The lines of text with their leading index 'N) ' / 'N# ' / 'N~ ' checked (1..n) and
    dropped, sorted."""
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        m = re.fullmatch(r"\s*(\d+)" + pattern + r" (.*)", line)
        if not m or int(m[1]) != i:
            return [f"unexpected line {line!r}"]
        out.append(m[2])
    return sorted(out)


def test_redis_cli_hiredis(srv, c):
    h, s, e = K[0], K[1], K[7]
    cli(srv, "HSET", h, "f1", "v1", "f2", "two words")
    cli(srv, "SADD", s, "a", "b c")
    # RESP2: flat arrays
    eq(lines_any_order(cli(srv, "HGETALL", h), r"\)"),
       sorted(['"f1"', '"v1"', '"f2"', '"two words"']), "redis-cli --no-raw HGETALL")
    eq(lines_any_order(cli(srv, "SMEMBERS", s), r"\)"), ['"a"', '"b c"'], "redis-cli SMEMBERS")
    # RESP3: HGETALL is a map, SMEMBERS a set
    eq(lines_any_order(cli(srv, "HGETALL", h, resp3=True), "#"),
       ['"f1" => "v1"', '"f2" => "two words"'], "redis-cli -3 HGETALL (a map)")
    eq(lines_any_order(cli(srv, "SMEMBERS", s, resp3=True), "~"), ['"a"', '"b c"'],
       "redis-cli -3 SMEMBERS (a set)")
    eq(lines_any_order(cli(srv, "SINTER", s, s, resp3=True), "~"), ['"a"', '"b c"'],
       "redis-cli -3 SINTER (a set)")
    wv = cli(srv, "HRANDFIELD", h, 2, "WITHVALUES", resp3=True)  # RESP3: an array of pairs
    pairs = re.findall(r'(?m)^\d\) 1\) (".*")\n   2\) (".*")$', wv)
    tl.check(len(wv.splitlines()) == 4
             and sorted(pairs) == [('"f1"', '"v1"'), ('"f2"', '"two words"')],
             f"redis-cli -3 HRANDFIELD 2 WITHVALUES (pairs): {wv!r}")
    # empty replies and the other reply types, byte for byte as Redis prints them
    for args, resp3, want in [
        (["HGETALL", e], False, "(empty array)"),
        (["HGETALL", e], True, "(empty hash)"),
        (["SMEMBERS", e], True, "(empty set)"),
        (["SPOP", e, 3], True, "(empty set)"),
        (["SPOP", e], True, "(nil)"),
        (["HGET", h, "zz"], False, "(nil)"),
        (["HMGET", h, "f1", "zz"], True, '1) "v1"\n2) (nil)'),
        (["HINCRBYFLOAT", h, "n", "1.5"], True, '"1.5"'),
        (["HSTRLEN", h, "f2"], True, "(integer) 9"),
        (["SMISMEMBER", s, "a", "zz"], True, "1) (integer) 1\n2) (integer) 0"),
        (["SINTERCARD", 1, s], True, "(integer) 2"),
        (["HSCAN", e, 0], False, '1) "0"\n2) (empty array)'),
        (["TYPE", h], True, "hash"),
        (["OBJECT", "ENCODING", s], True, '"hashtable"'),
        (["HSET", s, "f", "v"], True,
         "(error) WRONGTYPE Operation against a key holding the wrong kind of value"),
    ]:
        eq(cli(srv, *args, resp3=resp3), want,
           f"redis-cli {'-3 ' if resp3 else ''}{tl.fmt_cmd(args)}")
    # SELECT through redis-cli -n
    eq(cli(srv, "SADD", s, "in-3", db=3), "(integer) 1", "redis-cli -n 3 SADD")
    eq(cli(srv, "SMEMBERS", s, db=3, resp3=True), '1~ "in-3"', "redis-cli -n 3 -3 SMEMBERS")
    eq(cli(srv, "SCARD", s), "(integer) 2", "db 0 untouched by redis-cli -n 3")


if __name__ == "__main__":
    tl.main(globals(), databases=16)
