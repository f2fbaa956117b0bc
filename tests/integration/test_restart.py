#!/usr/bin/python3
"""test_restart: data written over both shards (values small and large, TTLs, counters,
deletes, FLUSHALL) is all there after SIGTERM and a restart, in every durability mode; under
durability fsync a kill -9 in the middle of pipelined writes loses nothing acknowledged and
leaves no wrong value; a key whose TTL passed while the server was down stays gone."""

import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringkv_testlib as tl  # noqa: E402
from ringkv_testlib import ANY_INT, OK, expect  # noqa: E402


def value_of(i):
    """The value written to key number i: sizes from a few bytes to 200 KiB."""
    size = (5, 60, 70, 1000, 5000, 200 * 1024)[i % 6]
    return (b"%d:" % i + bytes((i + j) % 251 for j in range(size)))[:size]


def write_dataset(c, keys):
    """Writes the dataset checked by check_dataset; returns nothing, checks every reply."""
    cmds, want = [], []
    for i, k in enumerate(keys):
        cmds.append(["SET", k, value_of(i)])
        want.append(OK)
    tl.expect_pipeline(c, cmds, want)
    for k in keys[:20]:
        expect(c, ["EXPIRE", k, 1000], 1)
    for i in range(50):
        expect(c, ["INCRBY", "counter:" + keys[i], i], i)
    for k in keys[-30:]:
        expect(c, ["DEL", k], 1)
    expect(c, ["APPEND", keys[25], b"+tail"], len(value_of(25)) + 5)
    expect(c, ["SET", "short-lived", "x", "PX", 400], OK)


def check_dataset(c, keys):
    live = keys[:-30]
    for i, k in enumerate(live):
        want = value_of(i) + (b"+tail" if i == 25 else b"")
        expect(c, ["GET", k], want)
    for k in keys[-30:]:
        expect(c, ["EXISTS", k], 0)
    for k in keys[:20]:
        expect(c, ["TTL", k], ANY_INT(900, 1000))
    expect(c, ["TTL", keys[20]], -1)
    for i in range(50):
        expect(c, ["GET", "counter:" + keys[i]], str(i))
    tl.wait_until(lambda: c.call("EXISTS", "short-lived") == 0, timeout=5)
    expect(c, ["GET", "short-lived"], None)
    tl.wait_until(lambda: c.call("DBSIZE") == len(live) + 50, timeout=5)
    expect(c, ["DBSIZE"], len(live) + 50)


def test_sigterm_restart_keeps_data():
    keys = tl.keys_all_shards("rs:", 300)
    with tl.Server(durability="fsync") as srv:
        c = srv.client()
        write_dataset(c, keys)
        c.close()
        rc = srv.stop()
        tl.check(rc == 0, f"exit status after SIGTERM: expected 0, got {rc}")
        time.sleep(0.3)  # the short-lived key's TTL passes while the server is down
        srv.start()
        c = srv.client()
        check_dataset(c, keys)
        # a second restart, after more writes and a FLUSHALL, keeps exactly what came after it
        expect(c, ["FLUSHALL"], OK)
        expect(c, ["SET", keys[0], "after-flush"], OK)
        expect(c, ["SET", keys[1], "after-flush"], OK)
        c.close()
        tl.check(srv.stop() == 0, "exit status after the second SIGTERM is not 0")
        srv.start()
        c = srv.client()
        expect(c, ["DBSIZE"], 2)
        expect(c, ["MGET", keys[0], keys[1], keys[2]], ["after-flush", "after-flush", None])
        c.close()


def test_sigterm_restart_every_durability():
    keys = tl.keys_all_shards("dm:", 60)
    for mode in ("write", "none"):
        with tl.Server(durability=mode) as srv:
            c = srv.client()
            write_dataset(c, keys)
            c.close()
            rc = srv.stop()
            tl.check(rc == 0, f"durability {mode}: exit status after SIGTERM: expected 0, got {rc}")
            srv.start()
            c = srv.client()
            before = len(tl.CHECKER.failures)
            check_dataset(c, keys)
            tl.check(len(tl.CHECKER.failures) == before, f"durability {mode}: data lost by a clean restart")
            c.close()


def test_kill9_under_fsync_loses_nothing_acknowledged():
    keys = tl.keys_all_shards("k9:", 2000)
    with tl.Server(durability="fsync") as srv:
        c = srv.client()
        acked = {}
        # whole pipelines acknowledged before the kill
        for base in range(0, 1000, 250):
            cmds = [["SET", k, f"v1-{k}"] for k in keys[base:base + 250]]
            for cmd, r in zip(cmds, c.pipeline(cmds)):
                tl.check(r == OK, f"{tl.fmt_cmd(cmd)}: expected +OK, got {tl.fmt(r)}")
                acked[cmd[1]] = cmd[2].encode()
        expect(c, ["INCRBY", "k9:counter", 1000], 1000)
        # a pipeline in flight when the server dies: only what was acknowledged must survive
        cmds = [["SET", k, f"v2-{k}"] for k in keys]
        c.conn.send_packed_command(c.conn.pack_commands(cmds))
        for cmd in cmds[:700]:
            r = c.read()
            tl.check(r == OK, f"{tl.fmt_cmd(cmd)}: expected +OK, got {tl.fmt(r)}")
            acked[cmd[1]] = cmd[2].encode()
        srv.kill9()
        c.close()
        srv.start()
        c = srv.client()
        got = c.call("MGET", *keys)
        # an acknowledged key holds its acknowledged value, or the later (unacknowledged) v2
        lost = [(k, g) for k, g in zip(keys, got)
                if k in acked and g not in (acked[k], f"v2-{k}".encode())]
        tl.check(not lost, f"kill -9 under fsync: {len(lost)} acknowledged writes lost or changed, "
                           f"e.g. GET {lost[0][0] if lost else ''}: expected "
                           f"{acked[lost[0][0]] if lost else ''!r}, got {lost[0][1] if lost else ''!r}")
        wrong = [(k, g) for k, g in zip(keys, got)
                 if k not in acked and g not in (None, f"v2-{k}".encode())]
        tl.check(not wrong, f"kill -9: keys with values never written: {wrong[:3]}")
        expect(c, ["GET", "k9:counter"], "1000")
        expect(c, ["DBSIZE"], ANY_INT(1001, 2001))
        # the store works normally after recovery
        expect(c, ["SET", keys[0], "after"], OK)
        expect(c, ["GET", keys[0]], "after")
        c.close()


if __name__ == "__main__":
    tl.main(globals(), shared_server=False)
