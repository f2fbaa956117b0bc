#!/usr/bin/python3
"""test_databases: databases 0..15 are isolated — the same key names hold different types and
values in each; SELECT is per connection and applies to the commands pipelined after it
(multi-key and cross-shard commands included); FLUSHDB empties one database only, FLUSHALL all;
SWAPDB is seen by every connection at once, moves the counts, races with writers without
losing or duplicating any, and survives SIGTERM and kill -9; DBSIZE and INFO keyspace
(keys=, expires=) are exact per database; SCAN (with TYPE), KEYS and RANDOMKEY walk one
database; MOVE moves a key (and its expiry) to another one; server.databases=4 refuses SELECT 4 as
Redis does, CONFIG GET databases reports it, and a directory written with 16 databases,
reopened with 4 and then 16, still holds database 5."""

import os
import sys
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringkv_testlib as tl  # noqa: E402
from ringkv_testlib import ANY_INT, OK, S, UNORDERED, E, check, expect, expect_pipeline  # noqa: E402

NDB = 16
OUT_OF_RANGE = E("ERR DB index is out of range")
WRONGTYPE = E("WRONGTYPE Operation against a key holding the wrong kind of value")
SAME = tl.keys_all_shards("same:", 4)  # the key names every database uses


def typed_writes(db, keys=SAME):
    """The commands that give each key of database db its db-specific type and value."""
    out = []
    for i, k in enumerate(keys):
        kind = (db + i) % 3
        if kind == 0:
            out.append(["SET", k, f"str-{db}-{i}"])
        elif kind == 1:
            out.append(["HSET", k, "db", str(db), "i", str(i), f"only{db}", "x"])
        else:
            out.append(["SADD", k, f"db{db}", f"i{i}", "common"])
    return out


def typed_replies(db, keys=SAME):
    return [OK if (db + i) % 3 == 0 else 3 for i in range(len(keys))]


def typed_reads(db, keys=SAME):
    """(command, expected reply) pairs that read back what typed_writes(db) wrote."""
    out = []
    for i, k in enumerate(keys):
        kind = (db + i) % 3
        if kind == 0:
            out += [(["TYPE", k], S("string")), (["GET", k], f"str-{db}-{i}"),
                    (["HGET", k, "db"], WRONGTYPE)]
        elif kind == 1:
            out += [(["TYPE", k], S("hash")), (["HGET", k, "db"], str(db)), (["HLEN", k], 3),
                    (["HEXISTS", k, f"only{(db + 3) % NDB}"], 0), (["GET", k], WRONGTYPE)]
        else:
            out += [(["TYPE", k], S("set")), (["SCARD", k], 3),
                    (["SMEMBERS", k], UNORDERED([f"db{db}", f"i{i}", "common"])),
                    (["SCARD", k], 3)]
    return out


def fill_all(c, dbs=range(NDB)):
    """Writes typed_writes(db) into each db, all in one pipeline of SELECTs and writes."""
    cmds, want = [], []
    for db in dbs:
        cmds += [["SELECT", db]] + typed_writes(db)
        want += [OK] + typed_replies(db)
    expect_pipeline(c, cmds, want)
    expect(c, ["SELECT", 0], OK)


def check_all(c, dbs=range(NDB), swapped=None, sizes=None):
    """Reads every db back in one pipeline, then SELECTs 0; swapped maps a db to the db whose
    data it holds; sizes: DBSIZE of some dbs if not len(SAME)."""
    cmds, want = [], []
    for db in dbs:
        cmds.append(["SELECT", db])
        want.append(OK)
        for cmd, w in typed_reads((swapped or {}).get(db, db)):
            cmds.append(cmd)
            want.append(w)
        cmds.append(["DBSIZE"])
        want.append((sizes or {}).get(db, len(SAME)))
    expect_pipeline(c, cmds, want)
    expect(c, ["SELECT", 0], OK)


def expect_keyspace(c, want, label=""):
    """Checks INFO keyspace lists exactly want: {db: (keys, expires)}."""
    got = tl.info_keyspace(c)
    tl.check(got == want, f"{label}INFO keyspace: expected {fmt_ks(want)}, got {fmt_ks(got)}")


def fmt_ks(ks):
    return " ".join(f"db{d}:keys={k},expires={e}" for d, (k, e) in sorted(ks.items())) or "(none)"


def test_same_names_hold_different_types_per_db(srv, c):
    fill_all(c)
    d = srv.client()
    check_all(d)
    # expiries in the odd databases only, counted per database
    for db in range(1, NDB, 2):
        expect(c, ["SELECT", db], OK)
        expect(c, ["EXPIRE", SAME[db % len(SAME)], 1000], 1)
    expect(c, ["SELECT", 0], OK)
    expect(d, ["TTL", SAME[0]], -1)
    expect_keyspace(d, {db: (len(SAME), db % 2) for db in range(NDB)})
    for db in range(NDB):
        expect(d, ["SELECT", db], OK)
        expect(d, ["TTL", SAME[db % len(SAME)]], ANY_INT(990, 1000) if db % 2 else -1)
    d.close()


def test_select_is_per_connection_and_pipelined(srv, c):
    a, b = srv.client(), srv.client()
    expect(a, ["SELECT", 3], OK)
    expect(a, ["SET", "x", "in-3"], OK)
    expect(b, ["GET", "x"], None)
    expect(b, ["SET", "x", "in-0"], OK)
    expect(a, ["GET", "x"], "in-3")
    expect(b, ["GET", "x"], "in-0")
    # commands pipelined after SELECT run in its database, whatever their shard
    k = tl.keys_all_shards("pl:", 4)
    expect_pipeline(a, [
        ["SELECT", 5], ["SET", k[0], "five"], ["HSET", k[1], "f", "5"], ["SADD", k[2], "5"],
        ["SELECT", 6], ["GET", k[0]], ["HGET", k[1], "f"], ["SCARD", k[2]], ["SET", k[0], "six"],
        ["SELECT", 5], ["GET", k[0]], ["HGET", k[1], "f"], ["SMEMBERS", k[2]],
        ["MSET", k[0], "m5", k[3], "m5"], ["MGET", k[0], k[3]], ["EXISTS", k[0], k[1], k[2], k[3]],
        ["SELECT", 6], ["MGET", k[0], k[3]], ["DBSIZE"],
        ["SELECT", 16], ["GET", k[0]], ["SELECT", -1], ["SELECT", "x"], ["GET", k[0]],
    ], [
        OK, OK, 1, 1,
        OK, None, None, 0, OK,
        OK, "five", "5", [b"5"],
        OK, [b"m5", b"m5"], 4,
        OK, [b"six", None], 1,
        OUT_OF_RANGE, b"six", OUT_OF_RANGE, tl.NOT_INT, b"six",
    ])
    # multi-key set commands over both shards stay in the connection's database
    s0, s1 = tl.key_on_shard("ms:a", 0), tl.key_on_shard("ms:b", 1)
    for db, members in ((4, ["a", "b", "c"]), (0, ["x", "y"])):
        expect(a, ["SELECT", db], OK)
        expect(a, ["SADD", s0] + members, len(members))
        expect(a, ["SADD", s1] + members[1:], len(members) - 1)
    expect(a, ["SELECT", 4], OK)
    expect(a, ["SINTERSTORE", "ms:dst", s0, s1], 2)
    expect(a, ["SUNION", s0, s1], UNORDERED(["a", "b", "c"]))
    expect(a, ["SMOVE", s0, s1, "a"], 1)
    expect(a, ["SMEMBERS", s1], UNORDERED(["a", "b", "c"]))
    expect(a, ["SMEMBERS", "ms:dst"], UNORDERED(["b", "c"]))
    expect(a, ["DEL", s0, s1, "ms:dst"], 3)
    expect(a, ["SELECT", 0], OK)
    expect(a, ["SMEMBERS", s0], UNORDERED(["x", "y"]))
    expect(a, ["SMEMBERS", s1], [b"y"])
    expect(a, ["EXISTS", "ms:dst"], 0)
    # RESET brings the connection back to database 0
    expect(b, ["SELECT", 3], OK)
    expect(b, ["RESET"], S("RESET"))
    expect(b, ["GET", "x"], "in-0")
    a.close()
    b.close()


def test_flushdb_leaves_the_other_databases(srv, c):
    fill_all(c)
    expect(c, ["SELECT", 5], OK)
    expect(c, ["EXPIRE", SAME[0], 1000], 1)
    expect(c, ["FLUSHDB"], OK)
    expect(c, ["DBSIZE"], 0)
    expect(c, ["KEYS", "*"], [])
    expect(c, ["RANDOMKEY"], None)
    for k in SAME:
        expect(c, ["EXISTS", k], 0)
    expect(c, ["SELECT", 6], OK)
    expect(c, ["FLUSHDB", "ASYNC"], OK)
    expect(c, ["SELECT", 7], OK)
    expect(c, ["FLUSHDB", "SYNC"], OK)
    want = {db: (len(SAME), 0) for db in range(NDB) if db not in (5, 6, 7)}
    expect_keyspace(c, want)
    d = srv.client()
    check_all(d, [db for db in range(NDB) if db not in (5, 6, 7)])
    # a flushed database takes new data, of any type, under the old names
    expect(c, ["SELECT", 5], OK)
    expect_pipeline(c, typed_writes(6), typed_replies(6))
    check_all(c, [5], swapped={5: 6})
    expect_keyspace(d, {**want, 5: (len(SAME), 0)})
    d.close()


def test_swapdb_is_seen_at_once_by_every_connection(srv, c):
    fill_all(c, [1, 2])
    k = tl.keys_all_shards("only1:", 6)
    expect(c, ["SELECT", 1], OK)
    for i, key in enumerate(k):
        expect(c, ["SET", key, i, "EX", 1000 + i], OK)
    expect(c, ["EXPIRE", SAME[0], 500], 1)
    expect(c, ["SELECT", 0], OK)
    in1, in2 = srv.client(), srv.client()
    expect(in1, ["SELECT", 1], OK)
    expect(in2, ["SELECT", 2], OK)
    n1 = len(SAME) + len(k)
    expect_keyspace(c, {1: (n1, len(k) + 1), 2: (len(SAME), 0)})
    expect(c, ["SWAPDB", 1, 2], OK)
    # the very next command of each connection sees the other database's data
    expect(in1, ["DBSIZE"], len(SAME))
    expect(in2, ["DBSIZE"], n1)
    check_all(in1, [1], swapped={1: 2})
    check_all(in2, [2], swapped={2: 1}, sizes={2: n1})
    expect(in2, ["SELECT", 2], OK)
    expect(in2, ["TTL", SAME[0]], ANY_INT(490, 500))
    expect(in2, ["GET", k[3]], "3")
    expect(in2, ["TTL", k[3]], ANY_INT(990, 1003))
    expect(in1, ["SELECT", 1], OK)
    expect(in1, ["GET", k[3]], None)
    expect_keyspace(c, {2: (n1, len(k) + 1), 1: (len(SAME), 0)})
    # with an empty database, with itself, and back
    expect(c, ["SWAPDB", 2, 9], OK)
    expect(in2, ["DBSIZE"], 0)
    expect(in2, ["RANDOMKEY"], None)
    expect_keyspace(c, {9: (n1, len(k) + 1), 1: (len(SAME), 0)})
    expect(c, ["SWAPDB", 9, 9], OK)
    expect(c, ["SWAPDB", 9, 2], OK)
    expect_keyspace(c, {1: (len(SAME), 0), 2: (n1, len(k) + 1)})
    check_all(in1, [1], swapped={1: 2})
    # writes after a swap go to the database the connection has selected
    expect(in1, ["SELECT", 1], OK)
    expect(in1, ["SADD", "after", "x"], 1)
    expect(c, ["SWAPDB", 1, 2], OK)
    expect(in2, ["SELECT", 2], OK)
    expect(in2, ["SMEMBERS", "after"], [b"x"])
    expect(in1, ["EXISTS", "after"], 0)
    expect(c, ["SWAPDB", 0, NDB], OUT_OF_RANGE)
    expect(c, ["SWAPDB", "a", 0], E("ERR invalid first DB index"))
    expect(c, ["SWAPDB", 0, "b"], E("ERR invalid second DB index"))
    in1.close()
    in2.close()


def race_swapdb(srv, c, n_members, n_swaps):
    """A writer adds members 0..n-1 to set 'race' and keys race:i in database 1 while another
    connection swaps databases 1 and 2 n_swaps times; returns the members acknowledged."""
    stop = threading.Event()
    swaps = [0]

    def swapper():
        s = srv.client()
        while not stop.is_set() and swaps[0] < n_swaps:
            if s.call("SWAPDB", 1, 2) != OK:
                tl.CHECKER.fail("SWAPDB 1 2 during the race did not reply +OK")
                break
            swaps[0] += 1
        s.close()

    w = srv.client()
    expect(w, ["SELECT", 1], OK)
    th = threading.Thread(target=swapper)
    th.start()
    for base in range(0, n_members, 50):
        cmds = []
        for i in range(base, min(base + 50, n_members)):
            cmds += [["SADD", "race", f"m{i}"], ["SET", f"race:{i}", i]]
        got = w.pipeline(cmds)
        tl.check(got == [1, OK] * (len(cmds) // 2), f"race writes: replies {tl.fmt(got[:6])}...")
    stop.set()
    th.join()
    w.close()
    return swaps[0]


def check_race(c, n_members, label):
    """Every member and key is in exactly one of databases 1 and 2."""
    members, keys = {}, {}
    for db in (1, 2):
        expect(c, ["SELECT", db], OK)
        got = c.call("SMEMBERS", "race")
        members[db] = {m.decode() for m in got} if isinstance(got, list) else set()
        cursor, found = b"0", set()
        while True:
            cursor, batch = c.call("SCAN", cursor, "MATCH", "race:*", "COUNT", 100)
            found.update(k.decode() for k in batch)
            if cursor == b"0":
                break
        keys[db] = found
        expect(c, ["DBSIZE"], len(found) + (1 if members[db] else 0))
    expect(c, ["SELECT", 0], OK)
    want_m = {f"m{i}" for i in range(n_members)}
    want_k = {f"race:{i}" for i in range(n_members)}
    tl.check(members[1] | members[2] == want_m and not members[1] & members[2],
             f"{label}: members of 'race' in db 1 ({len(members[1])}) and db 2 ({len(members[2])})"
             f": {len(want_m - members[1] - members[2])} missing, "
             f"{len(members[1] & members[2])} in both")
    tl.check(keys[1] | keys[2] == want_k and not keys[1] & keys[2],
             f"{label}: keys race:* in db 1 ({len(keys[1])}) and db 2 ({len(keys[2])}): "
             f"{len(want_k - keys[1] - keys[2])} missing, {len(keys[1] & keys[2])} in both")


def test_swapdb_racing_writers_loses_nothing(srv, c):
    n = tl.scaled(2000, 200)
    swaps = race_swapdb(srv, c, n, 200)
    tl.check(swaps > 0, "no SWAPDB ran during the writes")
    check_race(c, n, f"after {swaps} SWAPDBs racing {n} writes")


def test_flushall_empties_every_database(srv, c):
    fill_all(c)
    expect(c, ["SELECT", 9], OK)
    expect(c, ["FLUSHALL"], OK)
    expect_keyspace(c, {})
    for db in range(NDB):
        expect(c, ["SELECT", db], OK)
        expect(c, ["DBSIZE"], 0)
        expect(c, ["SCAN", 0], [b"0", []])
        expect(c, ["EXISTS"] + SAME, 0)
    expect(c, ["SELECT", 3], OK)
    expect(c, ["SADD", SAME[0], "new"], 1)
    expect_keyspace(c, {3: (1, 0)})


def test_dbsize_and_info_keyspace_are_exact(srv, c):
    want = {}
    for db in (0, 1, 4, 11, 15):
        keys = tl.keys_all_shards(f"cnt{db}:", db + 3)
        expect(c, ["SELECT", db], OK)
        for i, k in enumerate(keys):
            cmd = [["SET", k, "v"], ["HSET", k, "f", "v"], ["SADD", k, "m"]][i % 3]
            expect(c, cmd, OK if i % 3 == 0 else 1)
        expires = 0
        for i, k in enumerate(keys[: db // 2 + 1]):
            expect(c, ["PEXPIRE", k, 100000 + i], 1)
            expires += 1
        if expires > 1:
            expect(c, ["PERSIST", keys[0]], 1)
            expires -= 1
        expect(c, ["DEL", keys[-1]], 1)
        if keys[-1] in keys[: db // 2 + 1]:
            expires -= 1
        # a collection emptied element by element is gone too
        expect(c, ["HSET", "tmp", "a", "1"], 1)
        expect(c, ["EXPIRE", "tmp", 100], 1)
        expect(c, ["HDEL", "tmp", "a"], 1)
        want[db] = (len(keys) - 1, expires)
        expect(c, ["DBSIZE"], len(keys) - 1)
    expect_keyspace(c, want)
    for db, (n, _) in want.items():
        expect(c, ["SELECT", db], OK)
        expect(c, ["DBSIZE"], n)


def test_scan_keys_randomkey_walk_one_database(srv, c):
    dbs = {2: tl.keys_all_shards("two:", 30), 3: tl.keys_all_shards("three:", 20)}
    for db, keys in dbs.items():
        expect(c, ["SELECT", db], OK)
        for i, k in enumerate(keys):
            expect(c, [["SET", k, "v"], ["HSET", k, "f", "v"], ["SADD", k, "m"]][i % 3],
                   OK if i % 3 == 0 else 1)
    for db, keys in dbs.items():
        expect(c, ["SELECT", db], OK)
        for kind, i0 in (("string", 0), ("hash", 1), ("set", 2)):
            found, cursor = [], b"0"
            while True:
                cursor, batch = c.call("SCAN", cursor, "COUNT", 7, "TYPE", kind)
                found += batch
                if cursor == b"0":
                    break
            tl.check(sorted(set(found)) == sorted(k.encode() for k in keys[i0::3]),
                     f"db {db}: SCAN TYPE {kind} found {len(set(found))} keys, expected "
                     f"{len(keys[i0::3])}: {sorted(set(found))[:4]}...")
        found, cursor = set(), b"0"
        while True:
            cursor, batch = c.call("SCAN", cursor, "COUNT", 5)
            found.update(batch)
            if cursor == b"0":
                break
        tl.check(found == {k.encode() for k in keys}, f"db {db}: SCAN found {len(found)} keys,"
                                                       f" expected {len(keys)}")
        expect(c, ["KEYS", "*"], UNORDERED(keys))
        expect(c, ["KEYS", "two:*"], UNORDERED(keys if db == 2 else []))
        for _ in range(20):
            expect(c, ["RANDOMKEY"], tl.Matcher(lambda a, ks=keys: a in {k.encode() for k in ks},
                                                f"(a key of db {db})"))
    expect(c, ["SELECT", 4], OK)
    expect(c, ["SCAN", 0], [b"0", []])
    expect(c, ["KEYS", "*"], [])
    expect(c, ["RANDOMKEY"], None)


def test_move_between_databases(srv, c):
    expect(c, ["SET", "mv", "1", "EX", "100"], OK)
    expect(c, ["MOVE", "mv", 1], 1)
    expect(c, ["EXISTS", "mv"], 0)
    expect(c, ["SET", "mv", "0"], OK)
    c.call("SELECT", 1)
    expect(c, ["GET", "mv"], b"1")
    check(c.call("TTL", "mv") > 90, "MOVE lost the expiry")
    expect(c, ["MOVE", "mv", 0], 0)  # (there is one in database 0)
    expect(c, ["MOVE", "mv", 1], E("ERR source and destination objects are the same"))
    expect(c, ["DBSIZE"], 1)
    c.call("SELECT", 0)
    expect(c, ["GET", "mv"], b"0")


def test_config_get_databases(srv, c):
    expect(c, ["CONFIG", "GET", "databases"], [b"databases", b"16"])


def test_restart_keeps_every_database(srv, c):
    with tl.Server(durability="fsync", databases=NDB) as s2:
        c2 = s2.client()
        fill_all(c2)
        expect(c2, ["SELECT", 3], OK)
        expect(c2, ["EXPIRE", SAME[1], 1000], 1)
        expect(c2, ["SWAPDB", 3, 12], OK)
        expect(c2, ["SELECT", 7], OK)
        expect(c2, ["FLUSHDB"], OK)
        c2.close()
        swapped = {3: 12, 12: 3}
        live = [db for db in range(NDB) if db != 7]
        want = {db: (len(SAME), 1 if db == 12 else 0) for db in live}
        tl.check(s2.stop() == 0, "exit status after SIGTERM is not 0")
        s2.start()
        c2 = s2.client()
        check_all(c2, live, swapped)
        expect_keyspace(c2, want)
        expect(c2, ["SELECT", 12], OK)
        expect(c2, ["TTL", SAME[1]], ANY_INT(900, 1000))
        # kill -9 right after acknowledged SWAPDB / FLUSHDB / writes (durability fsync)
        expect(c2, ["SWAPDB", 0, 15], OK)
        for db in (1, 2):
            expect(c2, ["SELECT", db], OK)
            expect(c2, ["FLUSHDB"], OK)
        expect(c2, ["SELECT", 7], OK)
        expect_pipeline(c2, typed_writes(8), typed_replies(8))
        n = tl.scaled(1000, 100)
        swaps = race_swapdb(s2, c2, n, 100)
        s2.kill9()
        c2.close()
        s2.start()
        c2 = s2.client()
        swapped.update({0: 15, 15: 0, 7: 8})
        live = [db for db in range(NDB) if db not in (1, 2)]
        check_all(c2, live, swapped)
        check_race(c2, n, f"after kill -9 following {swaps} SWAPDBs racing {n} writes")
        ks = tl.info_keyspace(c2)
        tl.check({db: ks[db] for db in live if db in ks} == {db: (len(SAME), 1 if db == 12 else 0)
                                                              for db in live},
                 f"INFO keyspace after kill -9: {ks}")
        c2.close()


def test_fewer_databases(srv, c):
    with tl.Server(databases=4) as s4:
        c4 = s4.client()
        expect(c4, ["SELECT", 3], OK)
        expect(c4, ["SELECT", 4], OUT_OF_RANGE)
        expect(c4, ["SWAPDB", 0, 4], OUT_OF_RANGE)
        expect(c4, ["SWAPDB", 3, 0], OK)
        expect(c4, ["CONFIG", "GET", "databases"], [b"databases", b"4"])
        c4.close()
    if tl.IS_REDIS:
        return  # Redis cannot load an AOF that selects database 5 with 4 databases
    srv16 = tl.Server(databases=NDB)
    data_dir = srv16.data_dir
    try:
        srv16.start()
        c16 = srv16.client()
        fill_all(c16, [0, 2, 5])
        c16.close()
        tl.check(srv16.stop() == 0, "exit status after SIGTERM (16 databases) is not 0")
        with tl.Server(databases=4, data_dir=data_dir) as s4:
            c4 = s4.client()
            check_all(c4, [0, 2])
            expect(c4, ["SELECT", 5], OUT_OF_RANGE)
            expect_keyspace(c4, {0: (len(SAME), 0), 2: (len(SAME), 0)})
            expect(c4, ["SELECT", 2], OK)
            expect(c4, ["SET", "written-with-4", "yes"], OK)
            c4.close()
        srv16.start()
        c16 = srv16.client()
        check_all(c16, [0, 5])
        expect(c16, ["SELECT", 2], OK)
        expect(c16, ["GET", "written-with-4"], "yes")
        expect_keyspace(c16, {0: (len(SAME), 0), 2: (len(SAME) + 1, 0), 5: (len(SAME), 0)})
        # emptied key by key, database 5 counts down to nothing (not below)
        expect(c16, ["SELECT", 5], OK)
        expect(c16, ["KEYS", "*"], UNORDERED(SAME))
        expect(c16, ["DEL"] + SAME, len(SAME))
        expect(c16, ["DBSIZE"], 0)
        expect_keyspace(c16, {0: (len(SAME), 0), 2: (len(SAME) + 1, 0)})
        c16.close()
        tl.check(srv16.stop() == 0, "exit status after SIGTERM (16 databases again) is not 0")
    finally:
        if tl.CHECKER.failures:
            print(f"---- server log ({srv16.log_path}) ----\n{srv16.log()}\n----")
        srv16.cleanup()


if __name__ == "__main__":
    tl.main(globals(), databases=NDB)
