"""ringkv_testlib: shared helpers of the integration tests (tests/integration/test_*.py).

A test script defines functions named test_* and ends with `testlib.main(globals())`.
main() runs them in definition order, each against a fresh connection to one
shared server (started once per script, FLUSHALL between tests), records every
failed check with the command, the expected and the actual reply, goes on, and
exits 0 (all passed) or 1.  A script may also start its own servers with
`with Server(...) as srv:`.

Target: `build/ringkv-server` (or $RINGKV_BUILD/ringkv-server; tests/run.sh sets
RINGKV_BUILD to build or build/asan), started on a free port with a temporary
data directory and --threads 2 so there are two shards.  With
RINGKV_TEST_TARGET=redis the same tests run against /usr/bin/redis-server
instead (configured to match: one database, AOF with fsync always for
durability tests, the same limits), which is how the tests themselves are
validated against Redis's semantics.

Clients: python3-redis's Connection with RawParser below, which keeps replies
exactly as the server sent them: Status for +simple strings, bytes for bulk
strings, Err (with the full text, prefix included) for errors, and the RESP3
types (dict for maps, Set3, Verbatim, Push, float for doubles, bool).
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

import redis
from redis.connection import PythonParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

TARGET = os.environ.get("RINGKV_TEST_TARGET", "ringkv")
IS_REDIS = TARGET == "redis"
SRC_DIR = os.environ.get("RINGKV_SRC_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
BUILD = os.environ.get("RINGKV_BUILD", "build")
NSHARDS = 2  # --threads 2
START_TIMEOUT_S = 60  # ASan builds open RocksDB slowly on a busy machine
STOP_TIMEOUT_S = 30


# ---------------------------------------------------------------- reply types


class Status(bytes):
    """A RESP simple string (+OK); equal to the same bytes, told apart by type."""


class Verbatim(bytes):
    """A RESP3 verbatim string (=); the bytes after the format, .fmt is b'txt'."""

    fmt = b""


class Set3(list):
    """A RESP3 set (~); compared without regard to order."""


class Push(list):
    """A RESP3 push (>)."""


class Err(ResponseError):
    """An error reply; .msg is the whole text after '-', prefix included."""

    def __init__(self, msg):
        super().__init__(msg)
        self.msg = msg

    def __eq__(self, other):
        return isinstance(other, Err) and other.msg == self.msg

    def __hash__(self):
        return hash(self.msg)

    def __repr__(self):
        return "-" + self.msg


OK = Status(b"OK")


def S(s):
    """The simple-string reply s."""
    return Status(s.encode() if isinstance(s, str) else s)


def E(msg):
    """The error reply with exactly this text (e.g. "ERR syntax error")."""
    return Err(msg)


def wrong_args(cmd):
    """Redis's arity error for cmd (lowercase, 'client|setname' for subcommands)."""
    return Err(f"ERR wrong number of arguments for '{cmd}' command")


NOT_INT = Err("ERR value is not an integer or out of range")
NOT_FLOAT = Err("ERR value is not a valid float")
SYNTAX = Err("ERR syntax error")
OVERFLOW = Err("ERR increment or decrement would overflow")


class Matcher:
    """An expectation that is not one exact value: Matcher(pred, "description")."""

    def __init__(self, pred, desc):
        self.pred = pred
        self.desc = desc

    def matches(self, actual):
        try:
            return bool(self.pred(actual))
        except Exception:
            return False

    def __repr__(self):
        return self.desc


def ANY_INT(lo=None, hi=None):
    """An integer reply within [lo, hi]."""
    return Matcher(
        lambda a: type(a) is int and (lo is None or a >= lo) and (hi is None or a <= hi),
        f"(integer in [{lo}, {hi}])",
    )


def ERR_PREFIX(prefix):
    """An error reply that starts with prefix."""
    return Matcher(lambda a: isinstance(a, Err) and a.msg.startswith(prefix), f"-{prefix}...")


def UNORDERED(items):
    """An array reply holding exactly these elements in any order."""
    want = sorted(_b(i) for i in items)
    return Matcher(
        lambda a: type(a) in (list, Set3) and sorted(a) == want,
        f"(array in any order) {fmt(want)}",
    )


def _b(v):
    return v.encode() if isinstance(v, str) else v


def match(actual, expected):
    """True when actual is expected, type included (Status is not bulk, 1 is not True)."""
    if isinstance(expected, Matcher):
        return expected.matches(actual)
    if isinstance(expected, str):
        expected = expected.encode()
    if expected is None:
        return actual is None
    if isinstance(expected, Err):
        return isinstance(actual, Err) and actual.msg == expected.msg
    if isinstance(expected, bytes):
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, bool):
        return type(actual) is bool and actual == expected
    if isinstance(expected, int):
        return type(actual) is int and actual == expected
    if isinstance(expected, float):
        return type(actual) is float and (actual == expected or actual != actual and expected != expected)
    if isinstance(expected, Set3):
        return type(actual) is Set3 and len(actual) == len(expected) and all(
            any(match(a, e) for a in actual) for e in expected
        )
    if isinstance(expected, list):
        return (
            type(actual) is type(expected)
            and len(actual) == len(expected)
            and all(match(a, e) for a, e in zip(actual, expected))
        )
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or len(actual) != len(expected):
            return False
        exp = {_b(k): v for k, v in expected.items()}
        return all(k in exp and match(v, exp[k]) for k, v in actual.items())
    return actual == expected


def fmt(v, limit=300):
    """A reply as a person reads it: +OK, -ERR ..., "bulk", (integer) 1, (nil), [...]."""
    if isinstance(v, Matcher):
        s = repr(v)
    elif isinstance(v, Err):
        s = "-" + v.msg
    elif isinstance(v, Status):
        s = "+" + v.decode("utf-8", "replace")
    elif isinstance(v, Verbatim):
        s = "(verbatim " + v.fmt.decode() + ") " + repr(bytes(v))
    elif isinstance(v, (bytes, str)):
        b = _b(v)
        s = repr(b[:200]) + (f"...({len(b)} bytes)" if len(b) > 200 else "")
    elif v is None:
        s = "(nil)"
    elif isinstance(v, bool):
        s = f"(boolean) {v}"
    elif isinstance(v, int):
        s = f"(integer) {v}"
    elif isinstance(v, float):
        s = f"(double) {v!r}"
    elif isinstance(v, dict):
        s = "{" + ", ".join(f"{fmt(k)}: {fmt(x)}" for k, x in v.items()) + "}"
    elif isinstance(v, list):
        tag = {Set3: "set", Push: "push"}.get(type(v), "")
        s = tag + "[" + ", ".join(fmt(x) for x in v) + "]"
    else:
        s = repr(v)
    return s if len(s) <= limit else s[:limit] + "..."


def fmt_cmd(args):
    """A command as typed: SET "a b" 1."""
    out = []
    for a in args:
        b = _b(a) if not isinstance(a, (int, float)) else str(a).encode()
        s = b.decode("utf-8", "replace")
        if len(s) > 60:
            s = s[:60] + f"...({len(b)} bytes)"
        out.append(s if s and all(c.isprintable() and c not in ' "' for c in s) else repr(s))
    return " ".join(out)


class RawParser(PythonParser):
    """redis-py's parser, extended to RESP3 and keeping replies as sent (see the module doc)."""

    def read_response(self, disable_decoding=False):
        raw = self._buffer.readline()
        if not raw:
            raise RedisConnectionError("Connection closed by server.")
        kind, rest = raw[:1], raw[1:]
        if kind == b"+":
            return Status(rest)
        if kind == b"-":
            return Err(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n == -1 else self._buffer.read(n)
        if kind in (b"*", b"~", b">"):
            n = int(rest)
            if n == -1:
                return None
            items = [self.read_response() for _ in range(n)]
            return {b"*": list, b"~": Set3, b">": Push}[kind](items)
        if kind == b"%":
            n = int(rest)
            d = {}
            for _ in range(n):
                k = self.read_response()
                d[k] = self.read_response()
            return d
        if kind == b"_":
            return None
        if kind == b",":
            return float(rest)
        if kind == b"#":
            return rest == b"t"
        if kind == b"(":
            return int(rest)
        if kind == b"=":
            data = self._buffer.read(int(rest))
            v = Verbatim(data[4:])
            v.fmt = data[:3]
            return v
        if kind == b"!":
            return Err(self._buffer.read(int(rest)).decode("utf-8", "replace"))
        if kind == b"|":
            n = int(rest)
            for _ in range(2 * n):
                self.read_response()
            return self.read_response()
        raise redis.exceptions.InvalidResponse(f"Protocol Error: {raw!r}")


class Client:
    """One connection (python3-redis Connection + RawParser); errors are returned as Err."""

    def __init__(self, port, timeout=20):
        self.port = port
        self.conn = redis.Connection(
            host="127.0.0.1", port=port, socket_timeout=timeout, parser_class=RawParser
        )
        self.conn.connect()

    def send(self, *args):
        self.conn.send_command(*args)

    def read(self):
        try:
            return self.conn.read_response()
        except Err as e:
            return e

    def call(self, *args):
        """Sends one command and returns its reply."""
        self.send(*args)
        return self.read()

    def pipeline(self, cmds):
        """Sends every command of cmds in one write, then returns their replies in order."""
        self.conn.send_packed_command(self.conn.pack_commands(cmds))
        return [self.read() for _ in cmds]

    def closed_by_server(self, timeout=10):
        """True when the server closes the connection (EOF or reset) within timeout."""
        sock = self.conn._sock
        if sock is None:
            return True
        sock.settimeout(timeout)
        try:
            while True:
                if not sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except OSError:
            return False

    def close(self):
        self.conn.disconnect()


# --------------------------------------------------------------- raw sockets


class Raw:
    """A plain TCP connection for byte-exact checks; reply() reads one RESP reply, keeping
    whatever follows it for the next call."""

    def __init__(self, port, timeout=10, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""

    def sendall(self, data):
        self.sock.sendall(data)

    def _more(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError(f"connection closed by the server (unparsed: {self.buf[:100]!r})")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._more()
        i = self.buf.index(b"\r\n") + 2
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _exact(self, n):
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def reply(self):
        """The bytes of the next complete reply (RESP2 or RESP3); EOFError if the server closes."""
        ln = self._line()
        kind = ln[:1]
        if kind in (b"$", b"=", b"!"):
            n = int(ln[1:-2])
            return ln if n < 0 else ln + self._exact(n + 2)
        if kind in (b"*", b"~", b">", b"%", b"|"):
            n = int(ln[1:-2])
            n = n * 2 if kind in (b"%", b"|") else n
            out = ln + b"".join(self.reply() for _ in range(max(n, 0)))
            return out + self.reply() if kind == b"|" else out
        return ln

    def call(self, *args):
        """Sends one command in RESP and returns the bytes of its reply."""
        self.sendall(resp_cmd(*args))
        return self.reply()

    def read_all(self, nbytes):
        """Exactly nbytes (fewer if the server closes first)."""
        try:
            while len(self.buf) < nbytes:
                self._more()
        except (EOFError, ConnectionResetError, socket.timeout):
            pass
        out, self.buf = self.buf[:nbytes], self.buf[nbytes:]
        return out

    def read_until_close(self, limit=1 << 20):
        """Everything received until the server closes (or limit bytes, or a timeout)."""
        try:
            while len(self.buf) < limit:
                self._more()
        except (EOFError, ConnectionResetError, socket.timeout):
            pass
        out, self.buf = self.buf, b""
        return out

    def closed_by_server(self, timeout=10):
        """True when the server closes the connection within timeout (bytes are discarded)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


def raw_connect(port, timeout=10, rcvbuf=None):
    return Raw(port, timeout, rcvbuf)


def raw_read_reply(s):
    """The next reply of the Raw connection s, as bytes."""
    return s.reply()


def resp_cmd(*args):
    """The RESP encoding of a command."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = _b(a) if not isinstance(a, int) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


# ------------------------------------------------------------------ sharding


def _crc16(data):
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def slot_of(key):
    """Redis Cluster's slot of key (CRC16 of the key or of its {hash tag}, mod 16384)."""
    k = _b(key)
    s = k.find(b"{")
    if s != -1:
        e = k.find(b"}", s + 1)
        if e != -1 and e != s + 1:
            k = k[s + 1 : e]
    return _crc16(k) % 16384


def shard_of(key, nshards=NSHARDS):
    """ringkv's shard of key: slots are split into nshards contiguous ranges (storage/layout.h)."""
    return slot_of(key) * nshards // 16384


def key_on_shard(prefix, shard, nshards=NSHARDS, start=0):
    """The first key prefix + N (N >= start) that lives on shard."""
    i = start
    while shard_of(f"{prefix}{i}", nshards) != shard:
        i += 1
    return f"{prefix}{i}"


def keys_all_shards(prefix, n, nshards=NSHARDS):
    """n keys named prefix + N cycling through every shard (key i on shard i % nshards)."""
    out, i = [], 0
    while len(out) < n:
        want = len(out) % nshards
        k = key_on_shard(prefix, want, nshards, i)
        i = int(k[len(prefix) :]) + 1
        out.append(k)
    return out


def tag_on_shard(shard, nshards=NSHARDS):
    """A hash tag "{tN}" whose keys live on shard."""
    i = 0
    while shard_of(f"{{t{i}}}", nshards) != shard:
        i += 1
    return f"{{t{i}}}"


# -------------------------------------------------------------------- server


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One ringkv-server (or redis-server) process on a free port.

    Options (each maps to both servers): durability ("fsync", "write", "none"),
    requirepass, max_clients, output_buffer_limit ("1mb"), max_bulk_len ("1mb"),
    databases (server.databases / --databases; default: ringkv's 16, Redis's 1),
    threads (ringkv's --threads, the shards of a new directory; default NSHARDS),
    sets (more ringkv --set options; ignored for redis), redis_args (more
    redis-server arguments).  data_dir: reuse a directory (restart tests);
    otherwise a temporary one, removed by cleanup().  target: "ringkv" or
    "redis" for this server (default RINGKV_TEST_TARGET), so a test may run both.
    """

    def __init__(
        self,
        durability=None,
        requirepass=None,
        max_clients=None,
        output_buffer_limit=None,
        max_bulk_len=None,
        sets=None,
        redis_args=None,
        data_dir=None,
        target=None,
        databases=None,
        threads=NSHARDS,
    ):
        self.is_redis = (target or TARGET) == "redis"
        self.opts = dict(
            durability=durability,
            requirepass=requirepass,
            max_clients=max_clients,
            output_buffer_limit=output_buffer_limit,
            max_bulk_len=max_bulk_len,
            databases=databases,
        )
        self.threads = threads
        self.sets = dict(sets or {})
        self.redis_args = list(redis_args or [])
        self.tmp = tempfile.mkdtemp(prefix="ringkv-it.")
        self.data_dir = data_dir or os.path.join(self.tmp, "data")
        os.makedirs(self.data_dir, exist_ok=True)
        self.log_path = os.path.join(self.tmp, "server.log")
        self.proc = None
        self.port = None
        self.password = requirepass

    def argv(self):
        o = self.opts
        if self.is_redis:
            a = ["/usr/bin/redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
            a += ["--dir", self.data_dir, "--save", "", "--databases", "1", "--daemonize", "no"]
            a += ["--logfile", "", "--enable-debug-command", "no"]
            if o["durability"]:
                fsync = {"fsync": "always", "write": "everysec", "none": "no"}[o["durability"]]
                a += ["--appendonly", "yes", "--appendfsync", fsync]
            else:
                a += ["--appendonly", "yes", "--appendfsync", "always"]
            if o["requirepass"] is not None:
                a += ["--requirepass", o["requirepass"]]
            if o["max_clients"] is not None:
                a += ["--maxclients", str(o["max_clients"])]
            if o["output_buffer_limit"] is not None:
                lim = o["output_buffer_limit"]
                a += ["--client-output-buffer-limit", f"normal {lim} {lim} 0"]
            if o["max_bulk_len"] is not None:
                a += ["--proto-max-bulk-len", o["max_bulk_len"]]
            if o["databases"] is not None:
                a += ["--databases", str(o["databases"])]
            return a + self.redis_args
        binary = BUILD if os.path.isabs(BUILD) else os.path.join(SRC_DIR, BUILD)
        a = [os.path.join(binary, "ringkv-server"), "--port", str(self.port)]
        a += ["--dir", self.data_dir, "--threads", str(self.threads)]
        sets = {}
        if o["durability"]:
            sets["storage.durability"] = o["durability"]
        if o["requirepass"] is not None:
            sets["server.requirepass"] = o["requirepass"]
        if o["max_clients"] is not None:
            sets["server.max_clients"] = o["max_clients"]
        if o["output_buffer_limit"] is not None:
            sets["server.output_buffer_limit"] = o["output_buffer_limit"]
        if o["max_bulk_len"] is not None:
            sets["server.max_bulk_len"] = o["max_bulk_len"]
        if o["databases"] is not None:
            sets["server.databases"] = o["databases"]
        sets.update(self.sets)
        for k, v in sets.items():
            a += ["--set", f"{k}={v}"]
        return a

    def start(self):
        """Starts the server and waits until it answers PING (or NOAUTH; not Redis's LOADING);
        raises otherwise."""
        self._mark = len(CHECKER.failures)
        for attempt in range(3):
            self.port = free_port()
            log = open(self.log_path, "ab")
            log.write(f"==== {' '.join(self.argv())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=SRC_DIR,
            )
            log.close()
            try:
                self._wait_ready()
                return self
            except AssertionError:
                if self.proc.poll() is not None and "in use" in self.log() and attempt < 2:
                    continue
                raise

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"server exited with status {self.proc.returncode} before serving; log:\n"
                    + self.log()
                )
            try:
                s = raw_connect(self.port, timeout=2)
                reply = s.call("PING")
                s.close()
                if reply[:1] in (b"+", b"-") and not reply.startswith(b"-LOADING"):
                    return
            except (OSError, EOFError):
                pass
            time.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
        raise AssertionError(
            f"server did not answer PING on port {self.port} within {START_TIMEOUT_S} s; log:\n"
            + self.log()
        )

    def client(self, auth=True):
        """A new connection; AUTH is sent first when the server has a password and auth."""
        c = Client(self.port)
        if auth and self.password:
            r = c.call("AUTH", self.password)
            if r != OK:
                raise AssertionError(f"AUTH failed: {fmt(r)}")
        return c

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """SIGTERM, then waits; returns the exit status (None if it had to be killed)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self.proc = None
        return rc

    def kill9(self):
        """SIGKILL and wait."""
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def wait_exit(self, timeout=STOP_TIMEOUT_S):
        """Waits for the process to exit by itself (SHUTDOWN); returns its status or None."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self.proc = None
        return rc

    def log(self, tail=200):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-tail:])

    def cleanup(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        subprocess.run(["rm", "-rf", self.tmp], check=False)

    def __enter__(self):
        return self.start()

    def __exit__(self, et, ev, tb):
        """Stops with SIGTERM and records a failure unless the exit status is 0."""
        try:
            if self.proc is not None:
                rc = self.stop()
                check(rc == 0, f"server exit status after SIGTERM: expected 0, got {rc}")
            if et is not None or len(CHECKER.failures) > self._mark:
                print(f"---- server log ({self.log_path}) ----\n{self.log()}\n----")
        finally:
            self.cleanup()
        return False


# ---------------------------------------------------------------------- INFO


def info_fields(text):
    """The field:value lines of an INFO reply (bytes), as a dict of strings."""
    out = {}
    for line in bytes(text).decode().splitlines():
        if line and not line.startswith("#") and ":" in line:
            k, _, v = line.partition(":")
            out[k] = v
    return out


def info_keyspace(client):
    """INFO keyspace as {db: (keys, expires)}, the databases listed (those holding keys)."""
    out = {}
    for k, v in info_fields(client.call("INFO", "keyspace")).items():
        if k.startswith("db"):
            f = dict(x.split("=", 1) for x in v.split(","))
            out[int(k[2:])] = (int(f["keys"]), int(f["expires"]))
    return out


def info_shards(client):
    """ringkv's INFO storage, one dict per shard_N line ({field: int}), in shard order."""
    lines = info_fields(client.call("INFO", "storage"))
    out = []
    while f"shard_{len(out)}" in lines:
        out.append({k: int(v) for k, v in
                    (x.split("=", 1) for x in lines[f"shard_{len(out)}"].split(","))})
    return out


def scaled(n, minimum=1):
    """n scaled by RINGKV_TEST_SCALE (tests/run.sh sets 0.5 under sanitizers), at least minimum."""
    return max(minimum, int(n * float(os.environ.get("RINGKV_TEST_SCALE", "1"))))


# ------------------------------------------------------------------- checks


class Checker:
    def __init__(self):
        self.failures = []
        self.current = "?"

    def fail(self, msg):
        line = f"FAIL [{self.current}] {msg}"
        print(line, flush=True)
        self.failures.append(line)


CHECKER = Checker()


def check(cond, msg):
    """Records a failure (and goes on) unless cond."""
    if not cond:
        CHECKER.fail(msg)
    return bool(cond)


def expect(client, args, expected):
    """Sends args, records a failure unless the reply matches expected; returns the reply."""
    try:
        actual = client.call(*args)
    except Exception as e:  # the connection broke: that is a failure of this command
        CHECKER.fail(f"{fmt_cmd(args)}: expected {fmt(expected)}, got exception {e!r}")
        raise
    if not match(actual, expected):
        CHECKER.fail(f"{fmt_cmd(args)}: expected {fmt(expected)}, got {fmt(actual)}")
    return actual


def expect_pipeline(client, cmds, expected):
    """Sends all cmds in one write; checks every reply in order against expected."""
    replies = client.pipeline(cmds)
    bad = 0
    for i, (cmd, want, got) in enumerate(zip(cmds, expected, replies)):
        if not match(got, want):
            bad += 1
            if bad <= 10:
                CHECKER.fail(f"pipeline #{i} {fmt_cmd(cmd)}: expected {fmt(want)}, got {fmt(got)}")
    if bad > 10:
        CHECKER.fail(f"pipeline: {bad - 10} more mismatches")
    return replies


def wait_until(pred, timeout=5.0, step=0.02):
    """Polls pred until it is true or timeout seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def main(ns, shared_server=True, **server_opts):
    """Runs every test_* function of ns (a module's globals()) in definition order.

    With shared_server, one Server(**server_opts) is started and each test is
    called as fn(srv, client) with a fresh client after FLUSHALL; otherwise as
    fn().  Exits 0 when no check failed, 1 otherwise (the server's log is
    printed then).
    """
    tests = [(n, f) for n, f in ns.items() if n.startswith("test_") and callable(f)]
    only = os.environ.get("RINGKV_TEST_ONLY")
    if only:
        tests = [(n, f) for n, f in tests if only in n]
    srv = None
    if shared_server:
        srv = Server(**server_opts)
        try:
            srv.start()
        except AssertionError as e:
            print(f"FAIL: could not start the server: {e}")
            srv.cleanup()
            sys.exit(1)
    t0 = time.monotonic()
    for name, fn in tests:
        CHECKER.current = name
        before = len(CHECKER.failures)
        try:
            if srv is not None:
                if not srv.alive():
                    CHECKER.fail("the server is no longer running; test not run")
                    continue
                c = srv.client()
                c.call("FLUSHALL")
                try:
                    fn(srv, c)
                finally:
                    c.close()
            else:
                fn()
        except Exception:
            CHECKER.fail("exception:\n" + traceback.format_exc())
        status = "ok" if len(CHECKER.failures) == before else "FAIL"
        print(f"{status:4} {name}", flush=True)
    CHECKER.current = "shutdown"
    if srv is not None:
        was_alive = srv.alive()
        rc = srv.stop()
        check(was_alive, "the server died during the tests")
        if was_alive:
            check(rc == 0, f"server exit status after SIGTERM: expected 0, got {rc}")
        if CHECKER.failures:
            print(f"---- server log ({srv.log_path}) ----\n{srv.log()}\n----")
        srv.cleanup()
    print(
        f"{os.path.basename(sys.argv[0])} [{TARGET}]: {len(tests)} tests, "
        f"{len(CHECKER.failures)} failed checks ({time.monotonic() - t0:.1f} s)"
    )
    sys.exit(1 if CHECKER.failures else 0)
