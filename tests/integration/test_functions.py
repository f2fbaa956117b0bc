#!/usr/bin/python3
"""test_functions: FUNCTION LOAD/DELETE/FLUSH/LIST/DUMP/RESTORE/STATS/KILL/HELP, FCALL, FCALL_RO.

Against redis-server 7.0.15, every reply compared (RESP2 parsed, libraries and functions of
FUNCTION LIST in name order: both servers keep them in hash tables): library metadata errors,
every redis.register_function form and error, the load environment (only register_function,
log and the constants), the 500 ms load timeout, REPLACE, collisions, FCALL/FCALL_RO errors
and replies, runtime errors naming the function and line, LIST filters and WITHCODE, DELETE,
FLUSH; RESP3 byte for byte for LIST and STATS.  DUMP/RESTORE both ways between ringkv and
Redis (Redis writes its payload LZF-compressed), every policy, a corrupt payload.  A library
loaded on one connection is there on every proactor; two clients loading at once leave every
proactor with the same libraries.  STATS names a busy function and FUNCTION KILL stops it.
Persistence: the libraries are there after a restart (and gone after DELETE/FLUSH); a corrupt
functions file stops the start with a message naming the file."""

import os
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringkv_testlib as tl  # noqa: E402
from ringkv_testlib import OK, check, expect  # noqa: E402

LIB = """#!lua name=mylib
redis.register_function('myget', function(keys, args) return redis.call('GET', keys[1]) end)
redis.register_function{function_name='echo', callback=function(keys, args) return args end,
  flags={'no-writes'}, description='echoes'}
redis.register_function('myset', function(keys, args) return redis.call('SET', keys[1], args[1]) end)
"""
ERRS = """#!lua name=errs
local function helper(a) return a end
redis.register_function('probe', function(keys, args)
  return {type(string), type(cjson), type(redis.call), helper(args[1]), #keys} end)
redis.register_function('e_cmd', function() return redis.call('nosuch') end)
redis.register_function('e_glob', function() return nosuchvar end)
redis.register_function('e_err', function() error('boom') end)
redis.register_function('e_set', function() newglobal = 1 end)
redis.register_function('e_reply', function() return redis.error_reply('MY err') end)
redis.register_function{function_name='ro_w', callback=function() return redis.call('SET', 'a', 'b') end,
  flags={'no-writes'}}
"""


def lib(name, body):
    return f"#!lua name={name}\n{body}"


LOADS = [
    "redis.register_function('x', function() return 1 end)",  # no metadata
    "#!lua\nredis.register_function('a', function() return 1 end)",
    "#!js name=x\n",
    "#!lua name=x name=y\nredis.register_function('a', function() return 1 end)",
    "#!lua name=l4 foo=bar\nreturn 1",
    "#!lua name=bad-name\nreturn 1",
    lib("l2", "return 1"),
    lib("l3", "redis.register_function('myget', function() return 1 end)"),
    lib("l5", "redis.call('set','a','b')"),
    lib("l6", "x = 5"),
    lib("l6b", "local t = string.len('x')"),
    lib("l7", "redis.register_function('f7', function() return 1 end, 'extra')"),
    lib("l8", "redis.register_function('bad name', function() return 1 end)"),
    lib("l9", "redis.register_function{function_name='f9', callback=function() end, flags={'bogus'}}"),
    lib("l10", "syntax error here"),
    lib("l11", "error('boom')"),
    lib("x1", "redis.register_function{function_name='zz', callback=function() end, bogus=1}"),
    lib("x2", "redis.register_function{function_name='zz', callback=5}"),
    lib("x3", "redis.register_function{function_name='z3', callback=function() end, description=5}"),
    lib("x4", "redis.register_function{callback=function() end}"),
    lib("x5", "redis.register_function('a5', function() end) redis.register_function('a5', function() end)"),
    lib("x6", "redis.register_function(6, function() end)"),
    lib("x7", "redis.register_function{function_name='z7', callback=function() end, flags='no-writes'}"),
    lib("x8", "while true do end"),
    lib("x9", "redis.register_function{function_name='z9'}"),
    lib("x10", "redis.register_function(function() end, function() end)"),
    lib("x11", "redis.register_function('a11', 5)"),
    lib("x13", "redis.register_function{[1]=1}"),
    lib("x14", "redis.log(redis.LOG_NOTICE, 'loading') redis.register_function('a14', function() "
               "return redis.REDIS_VERSION ~= nil end)"),
    lib("CAPS", "redis.register_function('caps_fn', function() return 'caps' end)"),
]


def scenario():
    cmds = [["FUNCTION", "FLUSH"], ["FUNCTION", "LOAD", LIB], ["FUNCTION", "LOAD", LIB],
            ["FUNCTION", "LOAD", "bogus", LIB], ["FUNCTION", "LOAD", ERRS]]
    cmds += [["FUNCTION", "LOAD", code] for code in LOADS]
    cmds += [["SET", "k", "v"], ["FCALL", "myget", "1", "k"], ["FCALL", "echo", "0", "a", "b"],
             ["FCALL_RO", "echo", "0", "x"], ["FCALL_RO", "myget", "1", "k"],
             ["FCALL", "myset", "1", "k2", "w"], ["GET", "k2"], ["FCALL", "nosuch", "0"],
             ["FCALL", "nosuch", "-1"], ["FCALL", "myget", "-1"], ["FCALL", "myget", "x"],
             ["FCALL", "myget", "5", "a"], ["FCALL", "probe", "1", "k1", "a1"],
             ["FCALL", "e_cmd", "0"], ["FCALL", "e_glob", "0"], ["FCALL", "e_err", "0"],
             ["FCALL", "e_set", "0"], ["FCALL", "e_reply", "0"], ["FCALL", "ro_w", "0"],
             ["FCALL", "z3", "0"], ["FCALL", "6", "0"], ["FCALL", "a14", "0"],
             ["FCALL", "caps_fn", "0"], ["EVAL", "return redis.call('FCALL', 'echo', 0)", "0"],
             ["FUNCTION", "LIST"], ["FUNCTION", "LIST", "WITHCODE", "LIBRARYNAME", "my*"],
             ["FUNCTION", "LIST", "LIBRARYNAME", "nomatch"], ["FUNCTION", "LIST", "LIBRARYNAME"],
             ["FUNCTION", "LIST", "foo"], ["FUNCTION", "LIST", "WITHCODE", "WITHCODE"],
             ["FUNCTION", "LIST", "LIBRARYNAME", "a", "LIBRARYNAME", "b"],
             ["FUNCTION", "STATS"], ["FUNCTION", "STATS", "x"], ["FUNCTION", "KILL"],
             ["FUNCTION", "DELETE", "nosuch"], ["FUNCTION", "DELETE"],
             ["FUNCTION", "DELETE", "errs"], ["FCALL", "probe", "0"],
             ["FUNCTION", "LOAD", "REPLACE", LIB.replace("myget", "myget2")],
             ["FCALL", "myget", "1", "k"], ["FCALL", "myget2", "1", "k"],
             ["FUNCTION", "RESTORE"], ["FUNCTION", "RESTORE", "abc"],
             ["FUNCTION", "RESTORE", "abc", "bogus"], ["FUNCTION", "FLUSH", "bad"],
             ["FUNCTION", "FLUSH", "ASYNC"], ["FUNCTION", "LIST"], ["FUNCTION", "HELP"],
             ["FCALL", "myget2", "1", "k"], ["FUNCTION"], ["FUNCTION", "NOSUCH"]]
    return cmds


def normalize(cmd, reply):
    if cmd[:2] == ["FUNCTION", "LIST"] and isinstance(reply, list):
        libs = []
        for entry in reply:
            d = dict(zip(entry[0::2], entry[1::2]))
            d[b"functions"] = sorted(
                (sorted(dict(zip(f[0::2], f[1::2])).items(), key=repr) for f in d[b"functions"]),
                key=repr)
            libs.append(sorted(d.items(), key=repr))
        return sorted(libs, key=repr)
    if cmd[:2] == ["FUNCTION", "STATS"] and isinstance(reply, list):
        return reply  # (idle: no function runs)
    return reply


def run_on(port, cmds):
    c = tl.Client(port)
    out = [normalize(cmd, c.call(*cmd)) for cmd in cmds]
    c.close()
    return out


def test_semantics_vs_redis():
    cmds = scenario()
    with tl.Server(target="redis") as r, tl.Server() as k:
        want = run_on(r.port, cmds)
        got = run_on(k.port, cmds)
    bad = [(c, w, g) for c, w, g in zip(cmds, want, got) if w != g]
    for c, w, g in bad[:10]:
        check(False, f"{tl.fmt_cmd(c)[:120]}: redis {tl.fmt(w)}, ringkv {tl.fmt(g)}")
    print(f"     {len(cmds)} commands compared, {len(bad)} mismatches", flush=True)


def test_resp3_bytes():
    code = ("#!lua name=rl\nredis.register_function{function_name='one', callback=function() "
            "return 1 end, flags={'no-writes', 'allow-oom'}, description='d'}")
    cmds = [["HELLO", "3"], ["FUNCTION", "FLUSH"], ["FUNCTION", "LOAD", code],
            ["FUNCTION", "LIST", "WITHCODE"], ["FUNCTION", "STATS"], ["FCALL", "one", "0"]]
    with tl.Server(target="redis") as r, tl.Server() as k:
        outs = []
        for srv in (r, k):
            raw = tl.Raw(srv.port)
            replies = [raw.call(*cmd) for cmd in cmds]
            raw.close()
            outs.append(replies[1:])  # (HELLO's differs: server, version)
        for cmd, a, b in zip(cmds[1:], outs[0], outs[1]):
            check(a == b, f"{tl.fmt_cmd(cmd)[:60]} RESP3: redis {a!r}, ringkv {b!r}")


def test_dump_restore_with_redis():
    big = "#!lua name=big\n" + "\n".join(
        f"redis.register_function('fn{i}', function(keys, args) return {i} end)" for i in range(50))
    small = "#!lua name=small\nredis.register_function('s1', function() return 's' end)"
    with tl.Server(target="redis") as r, tl.Server() as k:
        a, b = r.client(), k.client()
        expect(a, ["FUNCTION", "LOAD", big], b"big")
        expect(b, ["FUNCTION", "LOAD", small], b"small")
        da, db = a.call("FUNCTION", "DUMP"), b.call("FUNCTION", "DUMP")
        check(da[1] != 0x3f, "redis's dump is not compressed: the LZF path is not tested")
        expect(b, ["FUNCTION", "RESTORE", da], OK)  # Redis's payload into ringkv
        expect(a, ["FUNCTION", "RESTORE", db], OK)  # ringkv's into Redis
        expect(b, ["FCALL", "fn7", "0"], 7)
        expect(a, ["FCALL", "s1", "0"], b"s")
        for c in (a, b):
            expect(c, ["FUNCTION", "RESTORE", da], tl.E("ERR Library big already exists"))
            expect(c, ["FUNCTION", "RESTORE", da, "APPEND"],
                   tl.E("ERR Library big already exists"))
            expect(c, ["FUNCTION", "RESTORE", da, "REPLACE"], OK)
            expect(c, ["FUNCTION", "RESTORE", da, "FLUSH"], OK)
            expect(c, ["FCALL", "s1", "0"], tl.E("ERR Function not found"))
            bad = bytearray(da)
            bad[5] ^= 1
            expect(c, ["FUNCTION", "RESTORE", bytes(bad)],
                   tl.E("ERR DUMP payload version or checksum are wrong"))
        a.close()
        b.close()


def test_every_proactor_and_concurrent_loads():
    with tl.Server(threads=2) as srv:
        clients = [srv.client() for _ in range(8)]  # (spread over both proactors)
        expect(clients[0], ["FUNCTION", "LOAD", LIB], b"mylib")
        for c in clients:
            expect(c, ["FCALL", "echo", "0", "hi"], [b"hi"])

        def loader(i):
            c = srv.client()
            for n in range(20):
                c.call("FUNCTION", "LOAD", "REPLACE",
                       lib(f"c{i}", f"redis.register_function('c{i}', function() return {n} end)"))
                if n % 5 == 3:
                    c.call("FUNCTION", "DELETE", f"c{i}")
            c.close()

        threads = [threading.Thread(target=loader, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        lists = [normalize(["FUNCTION", "LIST"], c.call("FUNCTION", "LIST")) for c in clients]
        check(all(x == lists[0] for x in lists), "proactors hold different libraries")
        for c in clients:
            expect(c, ["FCALL", "c0", "0"], 19)
            c.close()


def test_busy_stats_and_kill():
    with tl.Server(threads=2, sets={"server.busy_reply_threshold_ms": 100}) as srv:
        c = srv.client()
        expect(c, ["FUNCTION", "LOAD", lib("loop", "redis.register_function('loop', function() "
                                                   "while true do end end)")], b"loop")
        expect(c, ["FUNCTION", "KILL"], tl.E("NOTBUSY No scripts in execution right now."))
        runner = srv.client()
        got = {}
        t = threading.Thread(target=lambda: got.setdefault("r", runner.call("FCALL", "loop", "0",
                                                                            "a")))
        t.start()
        time.sleep(0.4)
        # a connection of the other proactor (the looping one serves nothing meanwhile)
        other = None
        for _ in range(16):
            o = tl.Client(srv.port, timeout=1)
            try:
                stats = o.call("FUNCTION", "STATS")
            except Exception:  # (the looping proactor's: it answers once the loop ends)
                o.close()
                continue
            if stats[1] is not None:
                other = o
                break
            o.close()
        check(other is not None, "FUNCTION STATS never showed the busy function")
        if other is not None:
            running = dict(zip(stats[1][0::2], stats[1][1::2]))
            check(running[b"name"] == b"loop" and running[b"command"] == [b"FCALL", b"loop", b"0",
                                                                          b"a"]
                  and running[b"duration_ms"] >= 100, f"running_script: {running!r}")
            expect(other, ["FUNCTION", "KILL"], OK)
            other.close()
        t.join(10)
        check(isinstance(got.get("r"), tl.Err) and b"killed" in bytes(str(got["r"]), "utf-8"),
              f"the killed FCALL replied {got.get('r')!r}")
        runner.close()
        c.close()


def test_persistence():
    with tl.Server() as srv:
        c = srv.client()
        expect(c, ["FUNCTION", "LOAD", LIB], b"mylib")
        expect(c, ["FUNCTION", "LOAD", lib("other", "redis.register_function('o', function() "
                                                    "return 'o' end)")], b"other")
        c.close()
        srv.stop()
        srv.start()
        c = srv.client()
        expect(c, ["FCALL", "echo", "0", "x"], [b"x"])
        expect(c, ["FCALL", "o", "0"], b"o")
        expect(c, ["FUNCTION", "DELETE", "other"], OK)
        c.close()
        srv.stop()
        srv.start()
        c = srv.client()
        expect(c, ["FCALL", "o", "0"], tl.E("ERR Function not found"))
        expect(c, ["FCALL", "echo", "0", "x"], [b"x"])
        expect(c, ["FUNCTION", "FLUSH"], OK)
        c.close()
        srv.stop()
        srv.start()
        c = srv.client()
        expect(c, ["FUNCTION", "LIST"], [])
        expect(c, ["FUNCTION", "LOAD", LIB], b"mylib")
        c.close()
        srv.stop()
        path = os.path.join(srv.data_dir, "functions")
        with open(path, "r+b") as f:
            f.seek(3)
            f.write(b"\xff")
        try:
            srv.start()
            check(False, "the server started with a corrupt functions file")
        except AssertionError:
            log = srv.log()
            check("functions" in log and "move the file away" in log,
                  f"no message naming the functions file: {log[-400:]}")
        os.remove(path)
        srv.start()
        c = srv.client()
        expect(c, ["FUNCTION", "LIST"], [])
        c.close()


if __name__ == "__main__":
    tl.main(globals(), shared_server=False)
