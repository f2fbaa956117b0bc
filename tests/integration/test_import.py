#!/usr/bin/python3
"""test_import: ringkv-import end to end — every format imported offline then served by
ringkv-server with its values and TTLs, a second import overwriting a non-empty store
(exact key count), online imports into redis-server and ringkv-server with concurrent
readers, error replies and bad rows counted, the offline import refused while the server
runs, SIGINT during an offline import leaving the directory unchanged, and an
importer killed inside its commit leaving all or nothing."""

import base64
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import redis

BUILD = os.path.abspath(os.environ.get("RINGKV_BUILD", "build"))
IMPORT = os.path.join(BUILD, "ringkv-import")
SERVER = os.path.join(BUILD, "ringkv-server")
START_TIMEOUT_S = 60
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ping(port, proc):
    deadline = time.time() + START_TIMEOUT_S
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if redis.Redis(port=port, socket_timeout=2).ping():
                return
        except redis.exceptions.RedisError:
            time.sleep(0.1)
    raise RuntimeError("server did not answer PING")


class Server:
    """ringkv-server (dir=...) or redis-server (redis=True) on a free port."""

    def __init__(self, tmp, dir=None, redis_server=False):
        self.port = free_port()
        if redis_server:
            args = ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no",
                    "--dir", tmp]
        else:
            args = [SERVER, "--dir", dir, "--port", str(self.port), "--threads", "2"]
        self.log = open(os.path.join(tmp, f"server-{self.port}.log"), "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        wait_ping(self.port, self.proc)
        self.r = redis.Redis(port=self.port)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()


def run_import(*args, stdin=None):
    p = subprocess.run([IMPORT, *args], input=stdin, capture_output=True, timeout=300)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


# ------------------------------------------------------------------ data sets

def csv_field(b):
    if any(c in b for c in b',"\r\n') or b == b"":
        return b'"' + b.replace(b'"', b'""') + b'"'
    return b


def tsv_field(b):
    out = bytearray()
    for c in b:
        ch = bytes([c])
        if ch == b"\\":
            out += b"\\\\"
        elif ch == b"\t":
            out += b"\\t"
        elif ch == b"\n":
            out += b"\\n"
        elif ch == b"\r":
            out += b"\\r"
        elif c < 0x20 or c >= 0x7F:
            out += b"\\x%02x" % c
        else:
            out += ch
    return bytes(out)


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def rows_for(prefix, n=300):
    """(key, value, ttl) rows with quoting hazards, binary and empty values, large
    values (above inline_max) and TTLs (days, so none expires while a loaded
    machine runs the test)."""
    rnd = random.Random(prefix)
    rows = [
        (prefix + b":comma,key", b'value "quoted", with comma', 0),
        (prefix + b":nl\nkey", b"line1\r\nline2\n", 0),
        (prefix + b":empty", b"", 0),
        (prefix + b":binary", bytes(range(256)), 0),
        (prefix + b":ttl", b"expires", 86400),
        (prefix + b":unicode", "h\u00e9llo \u20ac \U0001F600".encode(), 172800),
    ]
    for i in range(n):
        size = rnd.choice([0, 10, 64, 65, 100, 1000, 5000])
        rows.append((prefix + b":%d" % i, rnd.randbytes(size), rnd.choice([0, 0, 259200])))
    return rows


def write_format(path, fmt, rows):
    with open(path, "wb") as f:
        for k, v, ttl in rows:
            t = b"%d" % ttl if ttl else b""
            if fmt == "csv":
                f.write(csv_field(k) + b"," + csv_field(v) + b"," + t + b"\r\n")
            elif fmt == "tsv":
                f.write(tsv_field(k) + b"\t" + tsv_field(v) + b"\t" + t + b"\n")
            elif fmt == "jsonl":
                o = {"key_b64": base64.b64encode(k).decode(),
                     "value_b64": base64.b64encode(v).decode()}
                if ttl:
                    o["ttl"] = ttl
                f.write(json.dumps(o).encode() + b"\n")
            else:
                f.write(resp("SET", k, v, "EX", ttl) if ttl else resp("SET", k, v))


def verify(r, expect, what):
    """expect: key -> (value, ttl); checks GET and TTL of every key."""
    bad = 0
    keys = list(expect)
    for i in range(0, len(keys), 200):
        chunk = keys[i:i + 200]
        vals = r.mget(chunk)
        pipe = r.pipeline(transaction=False)
        for k in chunk:
            pipe.ttl(k)
        ttls = pipe.execute()
        for k, v, t in zip(chunk, vals, ttls):
            want, wttl = expect[k]
            ok = v == want and ((wttl == 0 and t == -1) or (wttl > 0 and 0 < t <= wttl))
            if not ok:
                bad += 1
                if bad <= 3:
                    print(f"  {what}: key {k!r}: value {'ok' if v == want else repr(v)[:60]},"
                          f" ttl {t} (want {wttl})")
    check(bad == 0, f"{what}: {bad} of {len(expect)} keys wrong")


# ------------------------------------------------------------------ tests

def test_offline_formats_then_serve(tmp):
    data = os.path.join(tmp, "offline")
    expect = {}
    for fmt in ("csv", "tsv", "jsonl", "resp"):
        rows = rows_for(fmt.encode())
        path = os.path.join(tmp, "rows." + fmt)
        write_format(path, fmt, rows)
        rc, out, err = run_import("--offline", "--dir", data, "--quiet", path)
        check(rc == 0, f"offline {fmt}: exit {rc}: {err}")
        for k, v, ttl in rows:
            expect[k] = (v, ttl)
    # A second import into the non-empty store: overwrites (a TTL dropped, a TTL
    # added, a value changed, duplicates within the input: the last row wins) and
    # new keys; the summary counts them exactly.
    over = [(b"csv:ttl", b"now without ttl", 0), (b"csv:empty", b"now with ttl", 86400),
            (b"tsv:0", b"first", 0), (b"tsv:0", b"second", 0), (b"new:1", b"n1", 0),
            (b"new:2", b"x" * 3000, 0), (b"new:1", b"n1 again", 172800)]
    path = os.path.join(tmp, "over.jsonl")
    write_format(path, "jsonl", over)
    rc, out, err = run_import("--offline", "--dir", data, path)
    check(rc == 0, f"overwrite import: exit {rc}: {err}")
    check("7 rows read, 7 written, 0 skipped, 0 errors" in out, f"overwrite summary: {out}")
    check("5 keys written (2 new, 3 replaced, 0 extended)" in out, f"overwrite key counts: {out}")
    for k, v, ttl in over:
        expect[k] = (v, ttl)

    srv = Server(tmp, dir=data)
    try:
        verify(srv.r, expect, "offline import served")
        check(srv.r.dbsize() == len(expect), f"DBSIZE {srv.r.dbsize()} != {len(expect)}")
        # Refused while the server holds the directory, naming its pid.
        rc, out, err = run_import("--offline", "--dir", data, path)
        check(rc == 1 and "in use" in err and str(srv.proc.pid) in err,
              f"offline import while the server runs: exit {rc}: {err}")
        # The server writes on top of imported data and keeps it after a restart.
        srv.r.set(b"csv:0", b"set by the server")
        expect[b"csv:0"] = (b"set by the server", 0)
    finally:
        srv.stop()
    # SIGINT in the middle of an offline import: nothing changes.
    before = snapshot(data)
    proc = subprocess.Popen([IMPORT, "--offline", "--dir", data, "--format", "csv", "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdin.write(b"".join(b"sigint:%d,%s\n" % (i, b"v" * 200) for i in range(20000)))
    proc.stdin.flush()
    deadline = time.time() + 60
    while time.time() < deadline and count_tmp_segments(data) < 2:
        time.sleep(0.05)
    check(count_tmp_segments(data) == 2, "the import's temporary segments never appeared")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    check(proc.returncode == 130, f"SIGINT: exit {proc.returncode}: {err.decode()}")
    check(b"nothing was imported" in err, f"SIGINT message: {err.decode()}")
    check(snapshot(data) == before, "SIGINT changed the log segments or left files behind")
    srv = Server(tmp, dir=data)
    try:
        verify(srv.r, expect, "after SIGINT")
        check(srv.r.dbsize() == len(expect), f"DBSIZE after SIGINT {srv.r.dbsize()}")
        check(srv.r.get(b"sigint:0") is None, "a row of the interrupted import is visible")
    finally:
        srv.stop()


def test_crash_during_commit(tmp):
    """An importer killed at each point of its commit (RINGKV_IMPORT_FAULT, as a
    power loss would) leaves either nothing or everything: after the journal is
    written, the server's start completes the import on every shard."""
    for point in ("after-journal", "mid-rename", "mid-ingest"):
        data = os.path.join(tmp, "crash-" + point)
        base = [(b"base:%d" % i, b"b" * 100, 0) for i in range(200)]
        path = os.path.join(tmp, "base.csv")
        write_format(path, "csv", base)
        rc, out, err = run_import("--offline", "--dir", data, "--quiet", path)
        check(rc == 0, f"{point}: base import: exit {rc}: {err}")
        rows = [(b"crash:%d" % i, b"%d:" % i + b"c" * 300, 0) for i in range(20000)]
        rows += [(b"base:%d" % i, b"overwritten", 0) for i in range(0, 200, 2)]
        path = os.path.join(tmp, "crash.csv")
        write_format(path, "csv", rows)
        p = subprocess.run([IMPORT, "--offline", "--dir", data, "--quiet", path],
                           env=dict(os.environ, RINGKV_IMPORT_FAULT=point),
                           capture_output=True, timeout=300)
        check(p.returncode == 99, f"{point}: the importer did not die there: {p.returncode}"
              f" {p.stderr.decode(errors='replace')}")
        expect = {k: (v, t) for k, v, t in base + rows}
        srv = Server(tmp, dir=data)
        try:
            verify(srv.r, expect, f"killed {point}, then served")
            check(srv.r.dbsize() == len(expect), f"{point}: DBSIZE {srv.r.dbsize()} !="
                  f" {len(expect)}")
        finally:
            srv.stop()
        check(not os.path.exists(os.path.join(data, "IMPORT-COMMIT")),
              f"{point}: the commit journal was left behind")
        check(count_tmp_segments(data) == 0, f"{point}: temporary segments left behind")


def count_tmp_segments(data):
    return sum(1 for d in os.listdir(data) if d.startswith("shard-")
               for f in os.listdir(os.path.join(data, d, "log")) if f.endswith(".seg.import"))


def snapshot(data):
    """Names and contents of every log segment, and any file the import leaves."""
    out = {}
    for d in sorted(os.listdir(data)):
        if not d.startswith("shard-"):
            continue
        for f in sorted(os.listdir(os.path.join(data, d, "log"))):
            with open(os.path.join(data, d, "log", f), "rb") as fh:
                out[d + "/" + f] = hashlib.sha256(fh.read()).hexdigest()
        for f in os.listdir(os.path.join(data, d)):
            if "import" in f:
                out[d + "/" + f] = "left behind"
    return out


def test_online(tmp, srv, what):
    rows = rows_for(b"online", 3000)
    expect = {k: (v, ttl) for k, v, ttl in rows}
    stop = threading.Event()
    reader_bad = []

    def reader():
        r = redis.Redis(port=srv.port)
        keys = list(expect)
        while not stop.is_set():
            k = random.choice(keys)
            v = r.get(k)
            if v is not None and v != expect[k][0]:
                reader_bad.append(k)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for fmt in ("csv", "jsonl", "resp"):
        path = os.path.join(tmp, f"online.{fmt}")
        write_format(path, fmt, rows)
        rc, out, err = run_import("--port", str(srv.port), "--connections", "3", "--window", "64",
                                  path)
        check(rc == 0, f"{what} online {fmt}: exit {rc}: {err}")
        check(f"{len(rows)} rows read, {len(rows)} written, 0 skipped, 0 errors" in out,
              f"{what} online {fmt} summary: {out}")
    stop.set()
    for t in threads:
        t.join()
    check(not reader_bad, f"{what}: concurrent readers saw wrong values for {reader_bad[:3]}")
    verify(srv.r, expect, f"{what} online import")

    # Error replies are counted and reported with their line; the rest goes on.
    script = resp("SET", "e:1", "abc") + resp("INCR", "e:1") + resp("SET", "e:2", "ok") + \
        resp("INCR", "e:1")
    rc, out, err = run_import("--port", str(srv.port), "--format", "resp", "--max-errors", "5",
                              "-", stdin=script)
    check(rc == 1, f"{what} error replies: exit {rc}")
    check("4 rows read, 2 written, 0 skipped, 2 errors" in out, f"{what} error summary: {out}")
    check("line 8: the server replied: ERR value is not an integer" in err,
          f"{what} error report: {err}")
    check(srv.r.get("e:2") == b"ok", f"{what}: the command after an error reply was not run")
    # Without --max-errors the first error stops the import: no more commands are
    # sent once its reply is in (those already in flight are answered and counted).
    script += b"".join(resp("SET", "after:%d" % i, "v") for i in range(20000))
    rc, out, err = run_import("--port", str(srv.port), "--format", "resp", "--connections", "1",
                              "--window", "16", "-", stdin=script)
    check(rc == 1 and "stopping: more than 0" in err, f"{what} stop at first error: {err}")
    check(srv.r.get("after:19999") is None, f"{what}: rows after the first error were sent")


def test_bad_rows(tmp):
    data = os.path.join(tmp, "bad")
    text = b"k1,v1\nk2,v2,notanumber\nk3,v3\nk4,\"open\n"
    rc, out, err = run_import("--offline", "--dir", data, "--format", "csv", "-", stdin=text)
    check(rc == 1 and "line 2, column 3 (ttl): 'notanumber' is not a whole number" in err,
          f"bad row stops the import: {rc} {err}")
    check("nothing was imported" in err, f"a stopped offline import imports nothing: {err}")
    rc, out, err = run_import("--offline", "--dir", data, "--format", "csv", "--max-errors", "2",
                              "-", stdin=text)
    check(rc == 1, f"bad rows under --max-errors: exit {rc}")
    check("line 4, column 4: unterminated quoted field" in err, f"unterminated report: {err}")
    check("4 rows read, 2 written, 2 skipped, 0 errors" in out, f"--max-errors summary: {out}")
    rc, out, err = run_import("--offline", "--dir", data, "--format", "resp", "-",
                              stdin=resp("DEL", "k1"))
    check(rc == 1 and "command 'DEL' is not supported offline" in err, f"DEL offline: {err}")
    port = free_port()  # nothing listens there
    rc, out, err = run_import("--port", str(port), "--format", "csv", "-", stdin=b"k,v\n")
    check(rc == 1 and f"cannot connect to 127.0.0.1:{port}" in err, f"no server: {err}")
    rc, out, err = run_import("--offline", "rows.unknown")
    check(rc == 2 and "--format" in err, f"unknown extension: {rc} {err}")


# ------------------------------------------------------------------ hashes and sets

HASH_MAX_ENTRIES, HASH_MAX_VALUE, SET_MAX_INTSET = 512, 64, 512


def canonical_int(b):
    """Redis's string2ll: what an intset may hold."""
    try:
        s = b.decode("ascii")
    except UnicodeDecodeError:
        return False
    return s == str(int(s)) and -2**63 <= int(s) < 2**63 if s.lstrip("-").isdigit() else False


class Model:
    """What Redis holds after the rows (kind, key, payload, ttl), in order: kind is
    'string' (payload: the value, SET), 'hash' (a list of (field, value): HSET, then
    EXPIRE when ttl) or 'set' (members: SADD); a hash or set row on a key of another
    type is refused (WRONGTYPE).  keys: key -> [type, value, ttl, big]."""

    def __init__(self):
        self.keys = {}

    def apply(self, kind, key, payload, ttl):
        """Returns False when Redis would refuse the row."""
        cur = self.keys.get(key)
        if kind == "string":
            self.keys[key] = ["string", payload, ttl, False]
            return True
        if cur is not None and cur[0] != kind:
            return False
        if cur is None:
            cur = self.keys[key] = [kind, {} if kind == "hash" else set(), 0, False]
        if kind == "hash":
            for f, v in payload:
                cur[1][f] = v
                cur[3] |= len(f) > HASH_MAX_VALUE or len(v) > HASH_MAX_VALUE
            cur[3] |= len(cur[1]) > HASH_MAX_ENTRIES
        else:
            for m in payload:
                cur[1].add(m)
                cur[3] |= not canonical_int(m)
            cur[3] |= len(cur[1]) > SET_MAX_INTSET
        if ttl:
            cur[2] = ttl
        return True

    def encoding(self, key):
        kind, _, _, big = self.keys[key]
        return {"hash": "hashtable" if big else "listpack",
                "set": "hashtable" if big else "intset"}[kind]


def coll_rows(prefix, rnd):
    """(kind, key, payload, ttl) rows: small and large hashes and sets, every
    encoding change, binary and empty fields, members that look like integers but
    are not canonical, a key's rows spread over the input (merged), and rows on a
    key of another type (refused)."""
    p = prefix
    rows = [
        ("hash", p + b":h:small", [(b"name", b"x"), (b"age", b"3")], 0),
        ("hash", p + b":h:longval", [(b"f", b"v" * 65)], 0),
        ("hash", p + b":h:longfield", [(b"f" * 65, b"v")], 86400),
        ("hash", p + b":h:many", [(b"f%d" % i, b"%d" % i) for i in range(513)], 0),
        ("hash", p + b":h:bin", [(bytes(range(256)), b""), (b"", b"\x00\r\n")], 0),
        ("set", p + b":s:ints", [b"1", b"-5", b"9223372036854775807"], 0),
        ("set", p + b":s:notint", [b"1", b"007"], 0),
        ("set", p + b":s:minus0", [b"-0"], 0),
        ("set", p + b":s:many", [b"%d" % i for i in range(513)], 172800),
        ("set", p + b":s:bin", [bytes(range(256)), b""], 0),
        ("string", p + b":str", b"a string", 0),
        ("hash", p + b":str", [(b"f", b"v")], 0),               # WRONGTYPE
        ("set", p + b":h:small", [b"m"], 0),                     # WRONGTYPE
        ("hash", p + b":s:ints", [(b"f", b"v")], 0),             # WRONGTYPE
        ("hash", p + b":h:then:str", [(b"f", b"v")], 0),
        ("string", p + b":h:then:str", b"replaced the hash", 0),
        ("set", p + b":s:ints", [b"2", b"1"], 0),               # union
        ("hash", p + b":h:small", [(b"name", b"y"), (b"city", b"z")], 259200),  # merge, TTL
    ]
    for i in range(60):
        k = p + b":h:%d" % rnd.randrange(20)
        rows.append(("hash", k, [(b"f%d" % rnd.randrange(40), rnd.randbytes(rnd.choice([0, 5, 64, 65])))
                                 for _ in range(rnd.randrange(1, 6))], rnd.choice([0, 0, 86400])))
        k = p + b":s:%d" % rnd.randrange(20)
        rows.append(("set", k, [b"%d" % rnd.randrange(-50, 50) if rnd.random() < 0.9 else b"m%d" % i
                                for _ in range(rnd.randrange(1, 6))], 0))
    return rows


def write_coll_rows(path, fmt, rows):
    """jsonl (hash_b64 / set_b64 / value_b64), or resp (SET, HSET, SADD, EXPIRE)."""
    b64 = lambda b: base64.b64encode(b).decode()
    with open(path, "wb") as f:
        for kind, k, payload, ttl in rows:
            if fmt == "jsonl":
                o = {"key_b64": b64(k)}
                if kind == "string":
                    o["value_b64"] = b64(payload)
                elif kind == "hash":
                    o["hash_b64"] = {b64(fv): b64(vv) for fv, vv in payload}
                else:
                    o["set_b64"] = [b64(m) for m in payload]
                if ttl:
                    o["ttl"] = ttl
                f.write(json.dumps(o).encode() + b"\n")
            else:
                if kind == "string":
                    f.write(resp("SET", k, payload))
                elif kind == "hash":
                    f.write(resp("HSET", k, *[x for fv in payload for x in fv]))
                else:
                    f.write(resp("SADD", k, *payload))
                if ttl:
                    f.write(resp("EXPIRE", k, ttl))


def keyspace(r):
    """INFO keyspace of db0 as (keys, expires)."""
    db = r.info("keyspace").get("db0", {"keys": 0, "expires": 0})
    return db["keys"], db["expires"]


def verify_model(r, model, what, encodings=True):
    """Every key of the model: TYPE, value (GET, HGETALL, SMEMBERS), TTL, OBJECT
    ENCODING of hashes and sets; then DBSIZE and INFO keyspace."""
    bad = []
    for k, (kind, val, ttl, _) in model.keys.items():
        t = r.type(k).decode()
        got = r.get(k) if kind == "string" else r.hgetall(k) if kind == "hash" else r.smembers(k)
        want = val if kind == "string" else val
        tl = r.ttl(k)
        ok = t == kind and got == want and ((ttl == 0 and tl == -1) or (ttl and 0 < tl <= ttl))
        if ok and encodings and kind != "string":
            enc = r.object("encoding", k).decode()
            ok = enc == model.encoding(k)
            if not ok:
                bad.append(f"{k!r}: encoding {enc}, want {model.encoding(k)}")
                continue
        if not ok:
            bad.append(f"{k!r}: type {t} (want {kind}), value {'ok' if got == want else repr(got)[:80]},"
                       f" ttl {tl} (want {ttl})")
    check(not bad, f"{what}: {len(bad)} of {len(model.keys)} keys wrong: {bad[:3]}")
    n = len(model.keys)
    expires = sum(1 for v in model.keys.values() if v[2])
    check(r.dbsize() == n, f"{what}: DBSIZE {r.dbsize()} != {n}")
    check(keyspace(r) == (n, expires), f"{what}: INFO keyspace {keyspace(r)} != {(n, expires)}")


def test_collections_offline(tmp):
    """Hashes and sets (jsonl and resp) with strings, imported offline: served with
    their values, TTLs, encodings and exact counts, across a restart; a second
    import adds to the collections the directory holds; rows on a key of another
    type are refused with their line; the server writes on top."""
    data = os.path.join(tmp, "coll-offline")
    model = Model()
    for fmt in ("jsonl", "resp"):
        rows = coll_rows(b"off-" + fmt.encode(), random.Random(fmt))
        path = os.path.join(tmp, "coll." + fmt)
        write_coll_rows(path, fmt, rows)
        refused = [i for i, row in enumerate(rows) if not model.apply(*row)]
        rc, out, err = run_import("--offline", "--dir", data, "--max-errors", "100", path)
        check(rc == 1, f"offline {fmt} collections: exit {rc} (rows were refused): {err}")
        # resp: a row with a TTL is two commands (HSET, EXPIRE), each a row.
        n = len(rows) + (sum(1 for r in rows if r[3]) if fmt == "resp" else 0)
        check(f"{n} rows read, {n - len(refused)} written, {len(refused)} skipped,"
              f" 0 errors" in out, f"offline {fmt} collections summary: {out} {err}")
        check(err.count("WRONGTYPE Operation against a key holding the wrong kind of value")
              == len(refused), f"offline {fmt}: WRONGTYPE reports: {err}")
        if fmt == "jsonl":
            # The line of the first refused row (rows are one per line).
            check(f"line {refused[0] + 1}: WRONGTYPE Operation against a key holding the wrong"
                  f" kind of value (the key holds a string, written earlier in the input)" in err,
                  f"offline jsonl: WRONGTYPE line: {err}")
    # Into the collections the directory holds now: fields added and replaced,
    # members added, a TTL set; a refusal on a key of another type there.
    more = [("hash", b"off-jsonl:h:small", [(b"name", b"w"), (b"new", b"1")], 0),
            ("set", b"off-resp:s:ints", [b"77", b"1"], 86400),
            ("hash", b"off-resp:h:many", [(b"f0", b"changed")], 0),
            ("hash", b"off-jsonl:str", [(b"f", b"v")], 0),
            ("set", b"new:set", [b"a"], 0)]
    path = os.path.join(tmp, "more.jsonl")
    write_coll_rows(path, "jsonl", more)
    for row in more:
        model.apply(*row)
    rc, out, err = run_import("--offline", "--dir", data, "--max-errors", "1", path)
    check(rc == 1 and "5 rows read, 4 written, 1 skipped" in out,
          f"second import: exit {rc}: {out} {err}")
    check("4 keys written (1 new, 0 replaced, 3 extended)" in out, f"second import counts: {out}")
    check("line 4: WRONGTYPE Operation against a key holding the wrong kind of value (the key"
          " holds a string, in the data directory)" in err, f"second import refusal: {err}")
    # Expiry offline: of a collection the directory holds, of keys the import
    # writes (a string rewritten with its value, inline or not), none for a key
    # that does not exist; refused for a string the directory holds.
    big = b"x" * 5000
    script = (resp("PEXPIREAT", "off-resp:h:many", int(time.time() * 1000) + 86400000) +
              resp("EXPIRE", "off-jsonl:str", 100) +
              resp("EXPIRE", "no:such:key", 100) +
              resp("SET", "exp:small", "v") + resp("SET", "exp:big", big) +
              b"".join(resp("SET", "exp:filler:%d" % i, b"f" * 4000) for i in range(3000)) +
              resp("EXPIRE", "exp:small", 86400) + resp("EXPIREAT", "exp:big", int(time.time()) + 86400) +
              resp("SET", "exp:persist", "v", "EX", 500) + resp("PERSIST", "exp:persist") +
              resp("EXPIRE", "exp:small", 10, "NX"))
    model.keys[b"off-resp:h:many"][2] = 86400
    model.apply("string", b"exp:small", b"v", 86400)
    model.apply("string", b"exp:big", big, 86400)
    model.apply("string", b"exp:persist", b"v", 0)
    for i in range(3000):
        model.apply("string", b"exp:filler:%d" % i, b"f" * 4000, 0)
    rc, out, err = run_import("--offline", "--dir", data, "--format", "resp", "--max-errors", "5",
                              "-", stdin=script)
    check(rc == 1 and "3010 rows read, 3008 written, 2 skipped" in out, f"expiry offline: {out} {err}")
    check("line 8: the key is a string the data directory holds, and changing its expiry offline"
          " is not supported: import online instead" in err, f"expiry of a string there: {err}")
    check("command 'EXPIRE' is not supported offline" in err, f"EXPIRE with an option: {err}")

    srv = Server(tmp, dir=data)
    try:
        verify_model(srv.r, model, "collections imported offline")
        srv.r.hset(b"off-jsonl:h:small", b"by-server", b"1")
        srv.r.sadd(b"new:set", b"b")
        model.apply("hash", b"off-jsonl:h:small", [(b"by-server", b"1")], 0)
        model.apply("set", b"new:set", [b"b"], 0)
    finally:
        srv.stop()
    srv = Server(tmp, dir=data)
    try:
        verify_model(srv.r, model, "collections imported offline, after a restart")
    finally:
        srv.stop()


def test_collections_online(tmp, srv, what):
    """The same rows sent online (HSET/SADD, EXPIRE after a row with a ttl): the
    refused rows are error replies counted once each, with their line."""
    srv.r.flushall()
    model = Model()
    for fmt in ("jsonl", "resp"):
        rows = coll_rows(b"on-" + fmt.encode(), random.Random(fmt))
        path = os.path.join(tmp, "coll-online." + fmt)
        write_coll_rows(path, fmt, rows)
        refused = [i for i, row in enumerate(rows) if not model.apply(*row)]
        rc, out, err = run_import("--port", str(srv.port), "--connections", "3", "--max-errors",
                                  "100", path)
        # resp: a row with a TTL is two commands (HSET, EXPIRE), each a row.
        n = len(rows) + (sum(1 for r in rows if r[3]) if fmt == "resp" else 0)
        check(rc == 1 and f"{n} rows read, {n - len(refused)} written, 0 skipped,"
              f" {len(refused)} errors" in out, f"{what} online {fmt} collections: {rc} {out} {err}")
        if fmt == "jsonl":
            check(f"line {refused[0] + 1}: the server replied: WRONGTYPE" in err,
                  f"{what} online jsonl: error line: {err}")
    verify_model(srv.r, model, f"{what}: collections imported online", encodings=True)


def test_big_collections_offline(tmp):
    """A hash of 100k fields in one jsonl row, another built by 100k HSETs, and a
    set of 100k members by SADDs of 1000, offline: served whole after a restart."""
    data = os.path.join(tmp, "big-offline")
    n = 100000
    fields = {b"field:%d" % i: b"value:%d" % i for i in range(n)}
    path = os.path.join(tmp, "big.jsonl")
    with open(path, "wb") as f:
        f.write(json.dumps({"key": "big:json", "hash": {k.decode(): v.decode()
                                                        for k, v in fields.items()}}).encode() + b"\n")
    rc, out, err = run_import("--offline", "--dir", data, path)
    check(rc == 0 and "1 rows read, 1 written" in out and f", {n} hash fields" in out,
          f"big jsonl hash: {rc} {out} {err}")
    path = os.path.join(tmp, "big.resp")
    with open(path, "wb") as f:
        for k, v in fields.items():
            f.write(resp("HSET", "big:resp", k, v))
        for i in range(0, n, 1000):
            f.write(resp("SADD", "big:set", *[b"%d" % j for j in range(i, i + 1000)]))
    rc, out, err = run_import("--offline", "--dir", data, path)
    check(rc == 0 and f"{n + n // 1000} rows read" in out, f"big resp: {rc} {out} {err}")
    for restart in range(2):
        srv = Server(tmp, dir=data)
        try:
            r = srv.r
            check(r.hlen("big:json") == n and r.hlen("big:resp") == n and r.scard("big:set") == n,
                  f"big: HLEN {r.hlen('big:json')} {r.hlen('big:resp')}, SCARD {r.scard('big:set')}")
            check(r.hgetall("big:json") == fields, "big:json: HGETALL differs")
            check(r.hgetall("big:resp") == fields, "big:resp: HGETALL differs")
            check(r.smembers("big:set") == {b"%d" % i for i in range(n)}, "big:set: SMEMBERS differs")
            check([r.object("encoding", k) for k in ("big:json", "big:resp", "big:set")]
                  == [b"hashtable"] * 3, "big: encodings")
            check(r.dbsize() == 3, f"big: DBSIZE {r.dbsize()}")
        finally:
            srv.stop()


def test_collections_crash_during_commit(tmp):
    """An importer of hashes and sets killed after its journal (the server replays
    the new segments: metadata then elements) or between two ingests: the
    collections come whole."""
    for point in ("after-journal", "mid-ingest"):
        data = os.path.join(tmp, "coll-crash-" + point)
        model = Model()
        base = [("hash", b"base:%d" % i, [(b"f", b"base")], 0) for i in range(50)]
        rows = [("hash", b"crash:h:%d" % (i % 400), [(b"f%d" % i, b"v" * (i % 100))], 0)
                for i in range(8000)]
        rows += [("set", b"crash:s:%d" % (i % 300), [b"%d" % i], 0) for i in range(8000)]
        rows += [("hash", b"base:%d" % i, [(b"g", b"added")], 86400) for i in range(0, 50, 2)]
        for name, part in (("base", base), ("crash", rows)):
            path = os.path.join(tmp, name + ".jsonl")
            write_coll_rows(path, "jsonl", part)
            for row in part:
                model.apply(*row)
            env = dict(os.environ, RINGKV_IMPORT_FAULT=point) if name == "crash" else None
            p = subprocess.run([IMPORT, "--offline", "--dir", data, "--quiet", path], env=env,
                               capture_output=True, timeout=300)
            check(p.returncode == (99 if env else 0), f"{point}: {name} import: exit"
                  f" {p.returncode} {p.stderr.decode(errors='replace')}")
        srv = Server(tmp, dir=data)
        try:
            verify_model(srv.r, model, f"collections: killed {point}, then served")
        finally:
            srv.stop()
        check(count_tmp_segments(data) == 0, f"{point}: temporary segments left behind")


def redis_aof(tmp):
    """A redis-server's append-only files (base written by BGREWRITEAOF without the
    RDB preamble, then the commands after it) holding strings, hashes and sets,
    concatenated; and a dump of what that server holds.  None without
    redis-server."""
    if not shutil.which("redis-server"):
        return None, None
    d = os.path.join(tmp, "redis-aof")
    os.makedirs(d)
    port = free_port()
    log = open(os.path.join(d, "log"), "w")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--dir", d,
                             "--appendonly", "yes", "--aof-use-rdb-preamble", "no"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ping(port, proc)
        r = redis.Redis(port=port)
        rnd = random.Random(7)
        for i in range(300):
            r.hset(b"aof:h:%d" % (i % 40), mapping={b"f%d" % rnd.randrange(30): rnd.randbytes(20)})
            r.sadd(b"aof:s:%d" % (i % 40), b"%d" % rnd.randrange(100), b"m%d" % rnd.randrange(5))
            r.set(b"aof:str:%d" % (i % 40), rnd.randbytes(30))
        r.hset(b"aof:big", mapping={b"f%d" % i: b"v" for i in range(600)})
        r.set(b"aof:ttl:str", b"v", ex=86400)
        r.expire(b"aof:h:3", 86400)
        r.expire(b"aof:s:4", 86400)
        r.expire(b"aof:str:5", 86400)
        r.bgrewriteaof()
        deadline = time.time() + 60
        while time.time() < deadline:
            info = r.info("persistence")
            if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
                break
            time.sleep(0.1)
        r.hset(b"aof:h:1", b"after", b"rewrite")
        r.sadd(b"aof:s:1", b"after")
        r.hsetnx(b"aof:h:2", b"f0", b"kept?")
        r.expire(b"aof:h:5", 86400)                  # PEXPIREAT in the AOF
        r.set(b"aof:ttl:str2", b"x" * 100, ex=3600)  # SET ... PXAT
        r.pexpire(b"aof:str:6", 86400000)
        r.set(b"aof:str:5", b"no ttl any more")
        dump = dump_keys(r)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    adir = os.path.join(d, "appendonlydir")
    files = []
    with open(os.path.join(adir, "appendonly.aof.manifest")) as m:
        for line in m:
            parts = line.split()
            files.append((parts[parts.index("type") + 1], parts[parts.index("file") + 1]))
    files.sort(key=lambda x: x[0] != "b")  # the base first, then the increments in order
    out = os.path.join(tmp, "redis.aof")
    with open(out, "wb") as o:
        for _, name in files:
            with open(os.path.join(adir, name), "rb") as fh:
                o.write(fh.read())
    return out, dump


def dump_keys(r):
    """key -> (type, value, TTL in hours) of every key."""
    out = {}
    for k in r.scan_iter(count=1000):
        t = r.type(k)
        v = r.get(k) if t == b"string" else r.hgetall(k) if t == b"hash" else r.smembers(k)
        out[k] = (t, v, (r.ttl(k) + 600) // 3600 if r.ttl(k) > 0 else r.ttl(k))
    return out


def test_redis_aof(tmp):
    """An AOF of a Redis holding strings, hashes and sets loads offline and online
    into ringkv, which then holds what that Redis held."""
    aof, dump = redis_aof(tmp)
    if aof is None:
        print("redis-server is not installed: the AOF test is skipped")
        return
    data = os.path.join(tmp, "aof-offline")
    rc, out, err = run_import("--offline", "--dir", data, aof)
    check(rc == 0, f"AOF offline: exit {rc}: {out} {err}")
    srv = Server(tmp, dir=data)
    try:
        got = dump_keys(srv.r)
        check(got == dump, f"AOF offline: {len(got)} keys served, {len(dump)} in Redis;"
              f" differing: {[(k, got.get(k), dump[k]) for k in dump if got.get(k) != dump[k]][:2]}")
        check(sum(1 for v in dump.values() if v[2] > 0) == 6, "AOF: the TTLs set in Redis")
        srv.r.flushall()
        rc, out, err = run_import("--port", str(srv.port), aof)
        check(rc == 0, f"AOF online: exit {rc}: {out} {err}")
        got = dump_keys(srv.r)
        check(got == dump, f"AOF online: differing: "
              f"{[(k, got.get(k), dump[k]) for k in dump if got.get(k) != dump[k]][:2]}")
    finally:
        srv.stop()


def main():
    if not os.access(IMPORT, os.X_OK) or not os.access(SERVER, os.X_OK):
        print(f"{IMPORT} or {SERVER} is not built")
        return 77
    with tempfile.TemporaryDirectory(prefix="ringkv-import-test.") as tmp:
        os.chdir(tmp)
        test_bad_rows(tmp)
        test_offline_formats_then_serve(tmp)
        test_crash_during_commit(tmp)
        test_collections_offline(tmp)
        test_big_collections_offline(tmp)
        test_collections_crash_during_commit(tmp)
        test_redis_aof(tmp)
        if shutil.which("redis-server"):
            srv = Server(tmp, redis_server=True)
            try:
                test_online(tmp, srv, "redis-server")
                test_collections_online(tmp, srv, "redis-server")
            finally:
                srv.stop()
        else:
            print("redis-server is not installed: the online import into Redis is not tested")
        srv = Server(tmp, dir=os.path.join(tmp, "online-ringkv"))
        try:
            test_online(tmp, srv, "ringkv-server")
            test_collections_online(tmp, srv, "ringkv-server")
        finally:
            srv.stop()
    print(f"{len(failures)} check(s) failed" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
