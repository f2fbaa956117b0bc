#!/usr/bin/python3
"""test_auth: with server.requirepass every command but AUTH, HELLO ... AUTH, RESET and QUIT
answers NOAUTH until the client authenticates; wrong passwords answer WRONGPASS; RESET
forgets the authentication; other clients are unaffected."""

import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringkv_testlib as tl  # noqa: E402
from ringkv_testlib import OK, SYNTAX, E, S, expect, wrong_args  # noqa: E402

PASSWORD = "s3cret-Pass"
NOAUTH = E("NOAUTH Authentication required.")
WRONGPASS = E("WRONGPASS invalid username-password pair or user is disabled.")
HELLO_NOAUTH = E(
    "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO "
    "AUTH <user> <pass> option can be used to authenticate the client and select the RESP "
    "protocol version at the same time"
)


def test_noauth_before_auth(srv, c):
    expect(c, ["SET", "auth:k", "v"], OK)
    u = srv.client(auth=False)
    for cmd in (["GET", "auth:k"], ["SET", "auth:k", "x"], ["PING"], ["ECHO", "x"],
                ["CLIENT", "ID"], ["SELECT", 0], ["COMMAND", "COUNT"], ["DBSIZE"], ["INFO"],
                ["KEYS", "*"], ["FLUSHALL"], ["CONFIG", "GET", "maxclients"]):
        expect(u, cmd, NOAUTH)
    for cmd in (["HELLO"], ["HELLO", 3], ["HELLO", 2, "SETNAME", "x"]):
        expect(u, cmd, HELLO_NOAUTH)
    expect(u, ["NOSUCHCMD"], E("ERR unknown command 'NOSUCHCMD', with args beginning with: "))
    expect(c, ["GET", "auth:k"], "v")  # nothing was written or flushed
    expect(u, ["QUIT"], OK)
    tl.check(u.closed_by_server(), "QUIT before AUTH: the connection was not closed")


def test_auth_forms(srv, c):
    u = srv.client(auth=False)
    expect(u, ["AUTH", "wrong"], WRONGPASS)
    expect(u, ["GET", "k"], NOAUTH)
    expect(u, ["AUTH", "default", "wrong"], WRONGPASS)
    expect(u, ["AUTH", "someone", PASSWORD], WRONGPASS)
    expect(u, ["AUTH", "a", "b", "c"], SYNTAX)
    expect(u, ["AUTH"], wrong_args("auth"))
    expect(u, ["GET", "k"], NOAUTH)
    expect(u, ["AUTH", "default", PASSWORD], OK)
    expect(u, ["SET", "k", "1"], OK)
    expect(u, ["AUTH", "wrong"], WRONGPASS)  # a failed AUTH does not log an authenticated client out
    expect(u, ["GET", "k"], "1")
    u.close()
    u = srv.client(auth=False)
    expect(u, ["AUTH", PASSWORD], OK)
    expect(u, ["GET", "k"], "1")
    expect(u, ["RESET"], S("RESET"))
    expect(u, ["GET", "k"], NOAUTH)
    u.close()


def test_hello_auth(srv, c):
    u = srv.client(auth=False)
    expect(u, ["HELLO", 3, "AUTH", "default", "wrong"], WRONGPASS)
    expect(u, ["GET", "k"], NOAUTH)
    expect(u, ["HELLO", 3, "AUTH", "default", PASSWORD, "SETNAME", "authed"],
           tl.Matcher(lambda a: type(a) is dict and a.get(b"proto") == 3, "a RESP3 map with proto 3"))
    expect(u, ["GET", "missing"], None)
    expect(u, ["CLIENT", "GETNAME"], "authed")
    expect(u, ["RESET"], S("RESET"))
    expect(u, ["GET", "missing"], NOAUTH)
    expect(u, ["HELLO", 2, "AUTH", "default", PASSWORD],
           tl.Matcher(lambda a: type(a) is list, "a RESP2 array"))
    expect(u, ["DBSIZE"], 0)
    u.close()


def test_pipelined_auth(srv, c):
    u = srv.client(auth=False)
    tl.expect_pipeline(
        u,
        [["SET", "p", "1"], ["AUTH", "bad"], ["GET", "p"], ["AUTH", PASSWORD], ["SET", "p", "2"],
         ["GET", "p"]],
        [NOAUTH, WRONGPASS, NOAUTH, OK, OK, "2"],
    )
    u.close()


def test_raw_noauth(srv, c):
    s = tl.raw_connect(srv.port)
    s.sendall(b"GET x\r\n")  # inline
    got = tl.raw_read_reply(s)
    tl.check(got == b"-NOAUTH Authentication required.\r\n", f"inline GET before AUTH: got {got!r}")
    s.sendall(tl.resp_cmd("AUTH", PASSWORD) + b"PING\r\n")
    got = tl.raw_read_reply(s) + tl.raw_read_reply(s)
    tl.check(got == b"+OK\r\n+PONG\r\n", f"AUTH then inline PING: got {got!r}")
    s.close()


def test_unauthenticated_limits(srv, c):
    """Before AUTH a client may send at most 10 arguments of at most 16 KiB (Redis's
    limits: a client without the password cannot make the server buffer much)."""
    for data, err in ((b"*11\r\n", "unauthenticated multibulk length"),
                      (b"*2\r\n$3\r\nGET\r\n$16385\r\n", "unauthenticated bulk length")):
        s = tl.raw_connect(srv.port)
        s.sendall(data)
        got = tl.raw_read_reply(s)
        tl.check(got == b"-ERR Protocol error: " + err.encode() + b"\r\n",
                 f"{data[:20]!r} before AUTH: got {got!r}")
        tl.check(s.closed_by_server(), f"{err}: the connection stays open")
        s.close()
    # After AUTH the normal limits apply, in the same pipeline.
    s = tl.raw_connect(srv.port)
    big = b"x" * 20000
    s.sendall(tl.resp_cmd("AUTH", PASSWORD) + tl.resp_cmd("SET", "big", big) +
              tl.resp_cmd("STRLEN", "big"))
    got = tl.raw_read_reply(s) + tl.raw_read_reply(s) + tl.raw_read_reply(s)
    tl.check(got == b"+OK\r\n+OK\r\n:20000\r\n", f"20 KB SET after AUTH: got {got!r}")
    s.close()


if __name__ == "__main__":
    tl.main(globals(), requirepass=PASSWORD)
