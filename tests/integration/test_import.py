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
    check("5 keys written (2 new, 3 replaced)" in out, f"overwrite key counts: {out}")
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


def main():
    if not os.access(IMPORT, os.X_OK) or not os.access(SERVER, os.X_OK):
        print(f"{IMPORT} or {SERVER} is not built")
        return 77
    with tempfile.TemporaryDirectory(prefix="ringkv-import-test.") as tmp:
        os.chdir(tmp)
        test_bad_rows(tmp)
        test_offline_formats_then_serve(tmp)
        test_crash_during_commit(tmp)
        if shutil.which("redis-server"):
            srv = Server(tmp, redis_server=True)
            try:
                test_online(tmp, srv, "redis-server")
            finally:
                srv.stop()
        else:
            print("redis-server is not installed: the online import into Redis is not tested")
        srv = Server(tmp, dir=os.path.join(tmp, "online-ringkv"))
        try:
            test_online(tmp, srv, "ringkv-server")
        finally:
            srv.stop()
    print(f"{len(failures)} check(s) failed" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
