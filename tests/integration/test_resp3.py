#!/usr/bin/python3
"""test_resp3: after HELLO 3 replies use RESP3 types (maps, nulls, sets, verbatim strings),
checked byte for byte on raw sockets and through python3-redis; RESET and HELLO 2 return to
RESP2; each connection keeps its own protocol."""

import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringkv_testlib as tl  # noqa: E402
from ringkv_testlib import OK, expect, resp_cmd  # noqa: E402


def raw_call(s, *args):
    return s.call(*args)


def first_diff(a, b):
    """The offset of the first byte where a and b differ."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def raw_expect(s, args, want):
    got = raw_call(s, *args)
    tl.check(got == want, f"{tl.fmt_cmd(args)}: expected bytes {want!r}, got {got!r}")
    return got


def test_hello3_map(srv, c):
    s = tl.raw_connect(srv.port)
    cid = int(raw_call(s, "CLIENT", "ID")[1:-2])
    got = raw_call(s, "HELLO", "3")
    tl.check(got.startswith(b"%"), f"HELLO 3: expected a RESP3 map (%), got {got!r}")
    s.close()
    r = expect(c, ["HELLO", 3], tl.Matcher(lambda a: type(a) is dict, "a map"))
    if type(r) is dict:
        tl.check(r.get(b"proto") == 3, f"HELLO 3: proto: expected 3, got {tl.fmt(r)}")
        tl.check(r.get(b"id") == c.call("CLIENT", "ID"), f"HELLO 3: id is not CLIENT ID: {tl.fmt(r)}")
        for key, kind in ((b"server", bytes), (b"version", bytes), (b"mode", bytes),
                          (b"role", bytes), (b"modules", list)):
            tl.check(type(r.get(key)) is kind, f"HELLO 3: {key.decode()}: expected {kind.__name__}, "
                                               f"got {tl.fmt(r.get(key))}")
    expect(c, ["HELLO"], tl.Matcher(lambda a: type(a) is dict, "a map (still RESP3)"))
    tl.check(cid > 0, "CLIENT ID is not positive")


def test_resp3_nulls(srv, c):
    s = tl.raw_connect(srv.port)
    raw_call(s, "HELLO", "3")
    a, b = tl.key_on_shard("r3:", 0), tl.key_on_shard("r3:", 1)
    raw_expect(s, ["GET", a], b"_\r\n")
    raw_expect(s, ["GET", b], b"_\r\n")
    raw_expect(s, ["SET", a, "1"], b"+OK\r\n")
    raw_expect(s, ["MGET", a, b], b"*2\r\n$1\r\n1\r\n_\r\n")
    raw_expect(s, ["MGET", b, a], b"*2\r\n_\r\n$1\r\n1\r\n")
    raw_expect(s, ["SET", a, "2", "NX"], b"_\r\n")
    raw_expect(s, ["SET", b, "2", "XX"], b"_\r\n")
    raw_expect(s, ["GETDEL", b], b"_\r\n")
    raw_expect(s, ["GETEX", b], b"_\r\n")
    raw_expect(s, ["GETSET", b, "x"], b"_\r\n")
    raw_expect(s, ["CLIENT", "GETNAME"], b"_\r\n")
    raw_expect(s, ["COMMAND", "INFO", "nosuchcommand"], b"*1\r\n_\r\n")
    raw_expect(s, ["FLUSHALL"], b"+OK\r\n")
    raw_expect(s, ["RANDOMKEY"], b"_\r\n")
    raw_expect(s, ["KEYS", "*"], b"*0\r\n")
    raw_expect(s, ["TTL", a], b":-2\r\n")
    raw_expect(s, ["PING"], b"+PONG\r\n")
    raw_expect(s, ["ECHO", "x"], b"$1\r\nx\r\n")
    raw_expect(s, ["INCRBYFLOAT", a, "1.5"], b"$3\r\n1.5\r\n")
    raw_expect(s, ["GET", "a", "b"], b"-ERR wrong number of arguments for 'get' command\r\n")
    s.close()


def test_resp3_maps_and_verbatim(srv, c):
    s = tl.raw_connect(srv.port)
    raw_call(s, "HELLO", "3")
    raw_expect(s, ["CONFIG", "GET", "maxclients"], b"%1\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n")
    raw_expect(s, ["CONFIG", "GET", "nosuchparam"], b"%0\r\n")
    raw_expect(s, ["SET", "vk", "v"], b"+OK\r\n")
    got = raw_call(s, "INFO", "keyspace")
    tl.check(got.startswith(b"=") and b"\r\ntxt:# Keyspace\r\n" in got and b"db0:keys=1," in got,
             f"INFO keyspace: expected a verbatim txt string with db0:keys=1, got {got!r}")
    got = raw_call(s, "CLIENT", "INFO")
    tl.check(got.startswith(b"=") and b"\r\ntxt:id=" in got and b" resp=3" in got,
             f"CLIENT INFO: expected a verbatim txt string with resp=3, got {got!r}")
    got = raw_call(s, "CLIENT", "LIST")
    tl.check(got.startswith(b"=") and b"\r\ntxt:id=" in got,
             f"CLIENT LIST: expected a verbatim txt string, got {got[:200]!r}")
    s.close()
    c.call("HELLO", 3)
    expect(c, ["COMMAND", "DOCS", "get"], tl.Matcher(
        lambda a: type(a) is dict and type(a[b"get"]) is dict and b"summary" in a[b"get"],
        "{get: {summary: ...}}"))
    expect(c, ["COMMAND", "INFO", "get"], tl.Matcher(
        lambda a: a[0][0] == b"get" and a[0][1] == 2 and type(a[0][2]) is tl.Set3
        and tl.S("readonly") in a[0][2], "[[get, 2, ~(readonly ...) ...]]"))
    expect(c, ["INFO", "server"], tl.Matcher(
        lambda a: type(a) is tl.Verbatim and a.fmt == b"txt" and b"# Server" in a, "(verbatim txt) # Server..."))
    expect(c, ["SCAN", 0, "COUNT", 1000], tl.Matcher(
        lambda a: type(a) is list and a[0] == b"0" and type(a[1]) is list, "[cursor, [keys]]"))
    expect(c, ["TIME"], tl.Matcher(lambda a: type(a) is list and len(a) == 2, "[secs, usecs]"))


def test_reset_and_hello2_back_to_resp2(srv, c):
    s = tl.raw_connect(srv.port)
    raw_call(s, "HELLO", "3")
    raw_expect(s, ["GET", "missing"], b"_\r\n")
    raw_expect(s, ["RESET"], b"+RESET\r\n")
    raw_expect(s, ["GET", "missing"], b"$-1\r\n")
    raw_expect(s, ["CONFIG", "GET", "nosuchparam"], b"*0\r\n")
    got = raw_call(s, "HELLO", "3")
    tl.check(got.startswith(b"%"), f"HELLO 3 again: expected a map, got {got!r}")
    got = raw_call(s, "HELLO", "2")
    tl.check(got.startswith(b"*"),
             f"HELLO 2: expected a RESP2 array, got {got!r}")
    raw_expect(s, ["GET", "missing"], b"$-1\r\n")
    raw_expect(s, ["MGET", "missing"], b"*1\r\n$-1\r\n")
    s.close()


def test_protocol_is_per_connection(srv, c):
    """A RESP3 connection and a RESP2 connection side by side, pipelining over both shards."""
    three = tl.raw_connect(srv.port)
    raw_call(three, "HELLO", "3")
    two = tl.raw_connect(srv.port)
    keys = tl.keys_all_shards("pc:", 100)
    cmds = b""
    want3 = b""
    want2 = b""
    for i, k in enumerate(keys):
        if i % 2 == 0:
            cmds += resp_cmd("SET", k, str(i))
            want3 += b"+OK\r\n"
            want2 += b"+OK\r\n"
    for i, k in enumerate(keys):
        cmds += resp_cmd("GET", k)
        if i % 2 == 0:
            v = str(i).encode()
            want3 += b"$%d\r\n%s\r\n" % (len(v), v)
        else:
            want3 += b"_\r\n"
    three.sendall(cmds)
    got = three.read_all(len(want3))
    tl.check(got == want3, f"RESP3 pipeline of {len(keys) * 3 // 2} commands: replies differ from "
                           f"byte {first_diff(got, want3)}: {got[first_diff(got, want3):][:60]!r}")
    for i in range(len(keys)):
        if i % 2 == 0:
            v = str(i).encode()
            want2 += b"$%d\r\n%s\r\n" % (len(v), v)
        else:
            want2 += b"$-1\r\n"
    want2 = want2[len(keys) // 2 * 5:]  # only the GETs
    two.sendall(b"".join(resp_cmd("GET", k) for k in keys))
    got = two.read_all(len(want2))
    tl.check(got == want2, f"RESP2 connection next to a RESP3 one: replies differ from byte "
                           f"{first_diff(got, want2)}: {got[first_diff(got, want2):][:60]!r}")
    three.close()
    two.close()
    expect(c, ["GET", "missing"], None)
    expect(c, ["SET", "x", "y"], OK)


if __name__ == "__main__":
    tl.main(globals())
