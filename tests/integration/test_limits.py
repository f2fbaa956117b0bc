#!/usr/bin/python3
"""test_limits: server.max_clients refuses the client over the limit with Redis's error;
server.output_buffer_limit disconnects a client that pipelines big replies without reading;
malformed protocol (bad or huge lengths, overlong lines, unbalanced quotes, garbage) gets
"-ERR Protocol error: ..." and closes that connection only, while another client keeps working;
server.max_bulk_len bounds a bulk string."""

import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringkv_testlib as tl  # noqa: E402
from ringkv_testlib import OK, S, expect, resp_cmd  # noqa: E402


def connected_clients(c):
    for line in c.call("INFO", "clients").decode().splitlines():
        if line.startswith("connected_clients:"):
            return int(line.split(":")[1])
    return -1


def test_max_clients():
    with tl.Server(max_clients=3) as srv:
        first = srv.client()
        tl.wait_until(lambda: connected_clients(first) == 1)
        others = [srv.client() for _ in range(2)]
        for o in others:
            expect(o, ["PING"], S("PONG"))
        over = tl.raw_connect(srv.port)
        got = over.read_until_close()
        tl.check(got == b"-ERR max number of clients reached\r\n",
                 f"4th client with max_clients=3: expected -ERR max number of clients reached "
                 f"and a close, got {got!r}")
        over.close()
        expect(first, ["PING"], S("PONG"))  # the connected ones are unaffected
        others[0].close()
        tl.wait_until(lambda: connected_clients(first) == 2)
        again = srv.client()
        expect(again, ["SET", "mc", "1"], OK)
        expect(again, ["GET", "mc"], "1")
        stats = first.call("INFO", "stats").decode()
        tl.check("rejected_connections:1\r\n" in stats,
                 f"INFO stats: expected rejected_connections:1, got {stats!r}")
        for x in (first, others[1], again):
            x.close()


def test_output_buffer_limit():
    with tl.Server(output_buffer_limit="1mb") as srv:
        c = srv.client()
        big = b"B" * (512 * 1024)
        expect(c, ["SET", "big", big], OK)
        n = 100  # 50 MB of replies: far more than the limit plus the socket buffers
        reply_len = len(b"$%d\r\n" % len(big)) + len(big) + 2
        slow = tl.raw_connect(srv.port, timeout=20, rcvbuf=32 * 1024)
        slow.sendall(b"".join(resp_cmd("GET", "big") for _ in range(n)))
        # the bystander works while the slow client does not read
        for _ in range(3):
            expect(c, ["GET", "big"], big)
        got = slow.read_until_close(limit=n * reply_len + 1)
        tl.check(len(got) < n * reply_len,
                 f"client pipelining {n} GETs of 512 KiB without reading (limit 1mb): expected a "
                 f"disconnect, got all {len(got)} bytes")
        slow.close()
        expect(c, ["PING"], S("PONG"))
        expect(c, ["STRLEN", "big"], len(big))
        # a client that reads its replies is never disconnected, whatever it fetches in total
        for _ in range(6):
            expect(c, ["GET", "big"], big)
        c.close()


# (bytes sent, the error that must follow, before the connection is closed)
PROTOCOL_ERRORS = [
    (b"*abc\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*3000000000\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*1\r\n$abc\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$-5\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$536870913\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),  # 512mb + 1
    (b"*1\r\n$99999999999999999999\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\nfoo\r\n", b"-ERR Protocol error: expected '$', got 'f'\r\n"),
    (b"*2\r\n$3\r\nGET\r\n:1\r\n", b"-ERR Protocol error: expected '$', got ':'\r\n"),
    (b"*" + b"1" * 70000, b"-ERR Protocol error: too big mbulk count string\r\n"),
    (b"*1\r\n$" + b"1" * 70000, b"-ERR Protocol error: too big bulk count string\r\n"),
    (b"A" * 70000, b"-ERR Protocol error: too big inline request\r\n"),
    (b'SET k "unbalanced\r\n', b"-ERR Protocol error: unbalanced quotes in request\r\n"),
    (b"SET k 'x\r\n", b"-ERR Protocol error: unbalanced quotes in request\r\n"),
    (b'SET "a"b c\r\n', b"-ERR Protocol error: unbalanced quotes in request\r\n"),
    # valid commands before the error are answered first
    (b"PING\r\n" + resp_cmd("PING") + b"*x\r\n",
     b"+PONG\r\n+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n"),
]


def test_protocol_errors():
    with tl.Server() as srv:
        by = srv.client()
        expect(by, ["SET", "by", "stander"], OK)
        for sent, want in PROTOCOL_ERRORS:
            s = tl.raw_connect(srv.port)
            s.sendall(sent)
            got = s.read_until_close()
            tl.check(got == want, f"sent {sent[:60]!r}{'...' if len(sent) > 60 else ''}: expected "
                                  f"{want!r} and a close, got {got[:200]!r}")
            s.close()
            expect(by, ["GET", "by"], "stander")
        tl.check(srv.alive(), "the server died")


def test_protocol_ignored_and_garbage():
    with tl.Server() as srv:
        by = srv.client()
        s = tl.raw_connect(srv.port)
        # empty and null multibulks are ignored, as Redis does
        s.sendall(b"*0\r\n*-1\r\n" + resp_cmd("PING"))
        got = s.reply()
        tl.check(got == b"+PONG\r\n", f"*0 *-1 then PING: expected +PONG, got {got!r}")
        # binary garbage on one line is an (unknown) inline command, not a protocol error
        s.sendall(b"\x01\x02\xfe\xff garbage\r\n")
        got = s.reply()
        tl.check(got.startswith(b"-ERR unknown command '"),
                 f"a garbage line: expected -ERR unknown command '...', got {got!r}")
        got = s.call("ECHO", "still here")
        tl.check(got == b"$10\r\nstill here\r\n", f"after the garbage line: ECHO gave {got!r}")
        s.close()
        # a client that dies in the middle of a command, or of a big bulk string
        for partial in (b"*2\r\n$3\r\nGET\r\n$100\r\nabc", b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000000\r\n"
                        + b"x" * (1 << 20), b"*5\r\n", b"GET k"):
            s = tl.raw_connect(srv.port)
            s.sendall(partial)
            s.close()
        # many misbehaving clients in a row: a garbage line, then a bad length (no NUL in the
        # line: Redis's inline parser stops at one and would wait for more)
        for i in range(20):
            line = bytes(b for b in ((i * 37 + j * 11) % 256 for j in range(300)) if b not in b"\0\r\n'\"")
            s = tl.raw_connect(srv.port)
            s.sendall(line + b"\r\n*1\r\n$x\r\n")
            got = s.read_until_close()
            tl.check(got.endswith(b"-ERR Protocol error: invalid bulk length\r\n"),
                     f"garbage line {line[:40]!r}... then $x: expected the invalid bulk length error "
                     f"and a close, got {got[:200]!r}")
            s.close()
        expect(by, ["PING"], S("PONG"))
        expect(by, ["SET", "k", "v"], OK)
        expect(by, ["GET", "k"], "v")
        tl.check(srv.alive(), "the server died")


def test_disconnect_with_requests_in_flight():
    """Clients that close right after sending big pipelines over both shards (replies still
    owed, requests still travelling between proactors) leave the server healthy."""
    with tl.Server() as srv:
        by = srv.client()
        keys = tl.keys_all_shards("fl:", 64)
        value = b"v" * 4096
        for round_ in range(30):
            cmds = []
            for i in range(300):
                k, k2 = keys[(i + round_) % 64], keys[(i * 7 + 1) % 64]
                cmds.append((["SET", k, value], ["GET", k], ["MGET", k, k2, "none"],
                             ["INCR", "fl:ctr:" + k], ["DEL", k2])[i % 5])
            s = tl.raw_connect(srv.port)
            s.sendall(b"".join(resp_cmd(*cmd) for cmd in cmds))
            if round_ % 2:
                s.sock.recv(100)  # some replies already came, most are still owed
            s.close()
        # A closed client's commands that waited behind a multi-key command across shards
        # (its barrier) still run; once the connections are gone they are all queued.
        gone = tl.wait_until(lambda: tl.info_fields(by.call("INFO", "clients"))
                             .get("connected_clients") == "1", timeout=30)
        tl.check(gone, "the closed clients' connections are still open after 30 s")
        expect(by, ["PING"], S("PONG"))
        expect(by, ["SET", keys[0], "after"], OK)
        expect(by, ["GET", keys[0]], "after")
        expect(by, ["MGET", keys[1], keys[2]], tl.Matcher(lambda a: type(a) is list and len(a) == 2, "2 values"))
        tl.check(srv.alive(), "the server died")


def test_idle_timeout():
    redis_args = ["--timeout", "1"]
    with tl.Server(sets={"server.timeout_s": 1}, redis_args=redis_args) as srv:
        busy = srv.client()
        idle = tl.raw_connect(srv.port)
        expect(busy, ["PING"], S("PONG"))
        closed = idle.closed_by_server(timeout=8)
        tl.check(closed, "a client idle for over server.timeout_s=1 s was not disconnected within 8 s")
        idle.close()
        # a fresh client works
        fresh = srv.client()
        expect(fresh, ["PING"], S("PONG"))
        fresh.close()


def test_max_bulk_len():
    with tl.Server(max_bulk_len="1mb") as srv:
        c = srv.client()
        exact = b"x" * (1 << 20)
        expect(c, ["SET", "b", exact], OK)
        expect(c, ["STRLEN", "b"], 1 << 20)
        s = tl.raw_connect(srv.port)
        s.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$1048577\r\n")
        got = s.read_until_close()
        tl.check(got == b"-ERR Protocol error: invalid bulk length\r\n",
                 f"a bulk of max_bulk_len + 1 bytes: expected invalid bulk length, got {got!r}")
        s.close()
        expect(c, ["STRLEN", "b"], 1 << 20)
        expect(c, ["APPEND", "b", "y"],
               tl.E("ERR string exceeds maximum allowed size (proto-max-bulk-len)"))
        expect(c, ["SETRANGE", "b", 1 << 20, "y"],
               tl.E("ERR string exceeds maximum allowed size (proto-max-bulk-len)"))
        expect(c, ["STRLEN", "b"], 1 << 20)


if __name__ == "__main__":
    tl.main(globals(), shared_server=False)
