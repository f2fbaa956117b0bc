"""ringkv_diff: the engine of the differential tests against Redis (test_diff_redis.py runs the
families of ringkv_diff_families.py with it; test_diff_selfcheck.py checks the engine itself).

A Run holds one connection to a reference redis-server and one to the server under test
(ringkv, or a second redis-server when the harness checks itself).  Every operation sends the
same command to both, parses both replies into Nodes that keep their RESP type, and compares
them with the operation's check (`how`):

  exact       equal parsed replies: type (simple vs bulk string, $-1 vs *-1 vs _, integer,
              RESP3 map/set/double/bool) and value, error texts included.  The default.
  unordered   an array or RESP3 set whose order Redis leaves unspecified (HKEYS, HVALS,
              SMEMBERS, SINTER, SUNION, SDIFF, KEYS): the same type, compared as multisets.
  pairs       HGETALL: a flat field/value array (RESP2) or a map (RESP3), as a multiset of pairs.
  ttl, pttl   a remaining time: equal when negative (-1, -2), else within TTL_SLACK_S/_MS
              (the two servers apply an EXPIRE a few microseconds apart).
  scan        SCAN/HSCAN/SSCAN from cursor 0: each server's walk runs to cursor 0 and the
              unions of what they returned are compared (HSCAN: field -> value); a key may
              come back twice.  Errors (bad cursor, COUNT 0) are compared exactly.
  srandmember, hrandfield, randomkey
              random replies: the same shape on both (types, lengths, error texts), every
              element in the collection (read with SMEMBERS/HGETALL/KEYS, themselves
              compared), distinct for a positive count, WITHVALUES values those of their field.
  spop        when the reply is random (an existing set, a positive count or none), SPOP is
              sent to the server under test only: its reply must have the right type and
              length and distinct members of the set, and those members are SREMed on the
              reference, which must have had them, so both keep the same contents.  Other
              SPOPs (missing key, wrong type, bad count) go to both and are compared exactly.
  info_keyspace
              INFO keyspace: the reply type and every line exactly, except avg_ttl (present,
              an integer >= 0 on both; Redis's own running average overflows to a negative
              number when a key expires near 2^63 ms, so the generators never make one).
  settle:CHECK
              CHECK, retried for up to SETTLE_S until both agree: DBSIZE and INFO keyspace,
              whose counts include keys that expired but were not reclaimed yet (a SET with an
              EXAT in the past leaves one), which each server reclaims at its own moment.

A difference Redis documents for ringkv (docs/COMMANDS.md) is counted as `documented`, not as a
mismatch, unless RINGKV_DIFF_STRICT=1; each is named in DOCUMENTED with its line of the doc.

On a mismatch the Run prints the family, seed, protocol, operation number, command, both
replies, a command line that reproduces it and the last HISTORY commands; it then empties both
servers (FLUSHALL) and goes on, up to max_mismatches, so one bug does not hide the next.
"""

import collections
import os
import re
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringkv_testlib as tl  # noqa: E402

HISTORY = 20  # commands shown before a mismatch
TRACE = os.environ.get("RINGKV_DIFF_TRACE") == "1"  # print every command and its replies
TTL_SLACK_S = 1  # TTL rounds to the nearest second
TTL_SLACK_MS = 1500  # PTTL: an ASan build may answer a little later than Redis
SCAN_MAX_CALLS = 100000  # a walk that has not reached cursor 0 by then never will
SETTLE_S = 5.0  # how long a "settle" check retries (active expiry, lazily reclaimed keys)
LONG_MAX = 9223372036854775807

# Differences docs/COMMANDS.md states on purpose: accepted (and counted) unless strict.
DOCUMENTED = {
    "string_encoding": "docs/COMMANDS.md, OBJECT (a string's encoding follows its bytes, not"
                       " the command that wrote it)",
}


# ------------------------------------------------------------------------- replies
#
# A Node is a tuple (kind, value), hashable and comparable:
#   ("+", bytes) simple string   ("-", bytes) error        ("!", bytes) RESP3 blob error
#   (":", int) integer           ("$", bytes) bulk string  ("=", bytes) verbatim ("txt:...")
#   ("$-1", None) RESP2 null bulk, ("*-1", None) RESP2 null array, ("_", None) RESP3 null
#   ("*", (Node, ...)) array     ("~", (...)) RESP3 set    (">", (...)) push
#   ("%", ((Node, Node), ...)) RESP3 map                  ("|", ...) attributes are dropped
#   (",", bytes) double as sent  ("#", bool) boolean       ("(", bytes) big number


def parse_reply(data):
    """The Node of one complete reply (bytes as tl.Raw.reply() returns them)."""
    node, end = _parse(data, 0)
    if end != len(data):
        raise ValueError(f"{len(data) - end} bytes after the reply: {data[end:end + 40]!r}")
    return node


def _parse(data, i):
    kind = chr(data[i])
    j = data.index(b"\r\n", i)
    line, i = data[i + 1 : j], j + 2
    if kind in "+-":
        return (kind, line), i
    if kind == ":":
        return (":", int(line)), i
    if kind in "$=!":
        n = int(line)
        if n < 0:
            return (kind + "-1", None), i
        return (kind, data[i : i + n]), i + n + 2
    if kind in "*~>":
        n = int(line)
        if n < 0:
            return (kind + "-1", None), i
        items = []
        for _ in range(n):
            node, i = _parse(data, i)
            items.append(node)
        return (kind, tuple(items)), i
    if kind in "%|":
        pairs = []
        for _ in range(int(line)):
            k, i = _parse(data, i)
            v, i = _parse(data, i)
            pairs.append((k, v))
        if kind == "|":
            return _parse(data, i)
        return ("%", tuple(pairs)), i
    if kind == "_":
        return ("_", None), i
    if kind == ",":
        return (",", line), i
    if kind == "#":
        return ("#", line == b"t"), i
    if kind == "(":
        return ("(", line), i
    raise ValueError(f"unknown RESP type {kind!r} in {data[:60]!r}")


NULLS = ("$-1", "*-1", "_")
AGGREGATES = ("*", "~", ">")
ERRORS = ("-", "!")


def is_error(n):
    return n[0] in ERRORS


def fmt_node(n, limit=240):
    """A Node as a person reads it, with its type: +OK, "bulk", (integer) 1, (nil $-1), ..."""
    s = _fmt(n)
    return s if len(s) <= limit else s[:limit] + "..."


def _fmt(n):
    kind, v = n
    if kind in ERRORS:
        return ("-" if kind == "-" else "(blob error) -") + v.decode("utf-8", "replace")
    if kind == "+":
        return "+" + v.decode("utf-8", "replace")
    if kind == ":":
        return f"(integer) {v}"
    if kind == "$":
        return repr(v[:100])[1:] + (f"...({len(v)} bytes)" if len(v) > 100 else "")
    if kind == "=":
        return "(verbatim) " + repr(v[:100])[1:]
    if kind in NULLS or kind.endswith("-1"):
        return f"(nil {kind})"
    if kind in AGGREGATES:
        tag = {"*": "", "~": "set", ">": "push"}[kind]
        return tag + "[" + ", ".join(_fmt(x) for x in v) + "]"
    if kind == "%":
        return "map{" + ", ".join(f"{_fmt(a)}: {_fmt(b)}" for a, b in v) + "}"
    if kind == ",":
        return "(double) " + v.decode()
    if kind == "#":
        return f"(boolean) {v}"
    if kind == "(":
        return "(big number) " + v.decode()
    return repr(n)


def shape(n):
    """n with the content of every bulk string hidden: what a random reply must share."""
    kind, v = n
    if kind == "$":
        return ("$", None)
    if kind in AGGREGATES:
        return (kind, tuple(shape(x) for x in v))
    if kind == "%":
        return (kind, tuple((shape(a), shape(b)) for a, b in v))
    return n


def bulks(n):
    """The bytes of every bulk string in n, depth first."""
    kind, v = n
    if kind == "$":
        return [v]
    if kind in AGGREGATES:
        return [b for x in v for b in bulks(x)]
    if kind == "%":
        return [b for a, c in v for b in bulks(a) + bulks(c)]
    return []


def _sorted(nodes):
    return sorted(nodes, key=repr)


# -------------------------------------------------------------------------- checks
#
# A check takes both replies and returns None (they agree), a string (why they do not) or
# ("documented", key of DOCUMENTED).


def check_exact(r, s):
    return None if r == s else "the replies differ"


def check_unordered(r, s):
    if r[0] in AGGREGATES and r[0] == s[0]:
        return None if _sorted(r[1]) == _sorted(s[1]) else "the elements differ (order ignored)"
    return check_exact(r, s)


def hash_pairs(n):
    """The (field, value) Nodes of an HGETALL reply, sorted; None if n is not one."""
    if n[0] == "%":
        return _sorted(n[1])
    if n[0] == "*" and len(n[1]) % 2 == 0:
        return _sorted(zip(n[1][0::2], n[1][1::2]))
    return None


def check_pairs(r, s):
    if r[0] == s[0] and r[0] in ("%", "*"):
        pr, ps = hash_pairs(r), hash_pairs(s)
        if pr is None or ps is None:
            return "not a field/value list"
        return None if pr == ps else "the field/value pairs differ (order ignored)"
    return check_exact(r, s)


def _check_time(slack):
    def check(r, s):
        if r[0] == s[0] == ":" and r[1] >= 0 and s[1] >= 0:
            return None if abs(r[1] - s[1]) <= slack else f"differ by more than {slack}"
        return check_exact(r, s)

    return check


def check_info_keyspace(r, s):
    if r[0] != s[0] or r[0] not in ("$", "="):
        return check_exact(r, s)
    lr, ls = r[1].decode().split("\r\n"), s[1].decode().split("\r\n")
    if len(lr) != len(ls):
        return "not the same lines"
    for a, b in zip(lr, ls):
        ma, mb = _KEYSPACE_LINE.fullmatch(a), _KEYSPACE_LINE.fullmatch(b)
        if not (ma and mb):
            if a != b:
                return f"line {b!r} where Redis has {a!r}"
            continue
        if ma["avg"] is None or mb["avg"] is None:
            return "avg_ttl missing"
        if int(ma["avg"]) < 0 or int(mb["avg"]) < 0:
            return "negative avg_ttl"
        if ma["db"] != mb["db"] or ma["keys"] != mb["keys"]:
            return f"line {b!r} where Redis has {a!r}"
        if ma["expires"] != mb["expires"]:
            return f"expires differ: {b!r} where Redis has {a!r}"
    return None


_KEYSPACE_LINE = re.compile(r"db(?P<db>\d+):keys=(?P<keys>\d+),expires=(?P<expires>\d+)"
                            r"(?:,avg_ttl=(?P<avg>-?\d+))?")

_STRING_ENCODINGS = (b"int", b"embstr", b"raw")


def check_encoding(r, s):
    """OBJECT ENCODING: a string's may differ (documented); anything else exactly."""
    if r != s and r[0] == s[0] == "$" and r[1] in _STRING_ENCODINGS and s[1] in _STRING_ENCODINGS:
        return ("documented", "string_encoding")
    return check_exact(r, s)


CHECKS = {
    "encoding": check_encoding,
    "exact": check_exact,
    "unordered": check_unordered,
    "info_keyspace": check_info_keyspace,
    "pairs": check_pairs,
    "ttl": _check_time(TTL_SLACK_S),
    "pttl": _check_time(TTL_SLACK_MS),
}


# --------------------------------------------------------------------------- a run


class Diverged(Exception):
    """A mismatch was recorded: the current operation stops and the run resynchronizes."""


class ServerGone(Exception):
    """A connection broke (EOF, reset or timeout): the run cannot go on."""


class Side:
    """One server's connection in a run."""

    def __init__(self, name, port, timeout):
        self.name = name
        self.raw = tl.raw_connect(port, timeout)

    def send(self, args):
        try:
            self.raw.sendall(tl.resp_cmd(*args))
        except OSError as e:
            raise ServerGone(f"{self.name}: sending {tl.fmt_cmd(args)}: {e!r}") from e

    def read(self, args):
        try:
            return parse_reply(self.raw.reply())
        except (OSError, EOFError, ValueError) as e:
            raise ServerGone(f"{self.name}: reading the reply to {tl.fmt_cmd(args)}: {e!r}") from e

    def close(self):
        self.raw.close()


class Mismatch:
    """One difference: where (family, seed, protocol, operation), the command, both replies
    (None: not sent to that server), why, and the commands before it."""

    def __init__(self, run, args, r, s, why, history):
        self.family, self.seed, self.proto = run.family, run.seed, run.proto
        self.op = run.op_no
        self.args, self.r, self.s, self.why = list(args), r, s, why
        self.history = history
        self.cmd_name = str(args[0]).upper() if args else "?"

    def report(self, names, repro):
        lines = [
            f"MISMATCH family={self.family} seed={self.seed} proto=RESP{self.proto} "
            f"op #{self.op}: {self.why}",
            f"  command: {tl.fmt_cmd(self.args)}",
            f"  {names[0]:7}: {fmt_node(self.r, 600) if self.r is not None else '(not sent)'}",
            f"  {names[1]:7}: {fmt_node(self.s, 600) if self.s is not None else '(not sent)'}",
            f"  reproduce: {repro}",
            f"  last {len(self.history)} commands (#op command => reply, or "
            f"{names[0]} | {names[1]}):",
        ]
        lines += ["    " + h for h in self.history]
        return "\n".join(lines)


class Run:
    """One family's operations for one seed and protocol, on fresh connections to both servers.

    ref_port: the reference redis-server; sut_port: the server under test.  op(args, how)
    sends one operation and checks it; a mismatch is recorded (and printed through out) and
    raises Diverged, which run_ops catches.
    """

    def __init__(self, ref_port, sut_port, family, seed, proto, names=("redis", "ringkv"),
                 repro="", max_mismatches=5, strict=False, out=print, timeout=60,
                 settle_s=SETTLE_S):
        self.family, self.seed, self.proto = family, seed, proto
        self.names = names
        self.repro = repro
        self.max_mismatches = max_mismatches
        self.strict = strict
        self.out = out
        self.settle_s = settle_s
        self.ref = Side(names[0], ref_port, timeout)
        self.sut = Side(names[1], sut_port, timeout)
        self.history = collections.deque(maxlen=HISTORY)
        self.mismatches = []
        self.documented = collections.Counter()
        self.commands = 0  # commands sent to the server under test
        self.op_no = 0

    def close(self):
        self.ref.close()
        self.sut.close()

    # ---- sending

    def _log(self, args, r, s):
        cmd = tl.fmt_cmd(args)
        if len(cmd) > 160:
            cmd = cmd[:160] + "..."
        if r is not None and s is not None and r == s:
            self.history.append(f"#{self.op_no} {cmd} => {fmt_node(r, 160)}")
        else:
            rr = fmt_node(r, 160) if r is not None else "(not sent)"
            ss = fmt_node(s, 160) if s is not None else "(not sent)"
            self.history.append(f"#{self.op_no} {cmd} => {rr} | {ss}")
        if TRACE:
            self.out(f"[{self.family}/{self.seed}/RESP{self.proto}] {self.history[-1]}")

    def note(self, text):
        """A line of the history that is not one command (a SCAN walk's summary)."""
        self.history.append(f"#{self.op_no} {text}")
        if TRACE:
            self.out(f"[{self.family}/{self.seed}/RESP{self.proto}] {self.history[-1]}")

    def both(self, args, log=True):
        """Sends args to both servers; returns (reference reply, server-under-test reply)."""
        self.ref.send(args)
        self.sut.send(args)
        r, s = self.ref.read(args), self.sut.read(args)
        self.commands += 1
        if log:
            self._log(args, r, s)
        return r, s

    def ref_only(self, args):
        self.ref.send(args)
        r = self.ref.read(args)
        self._log(args, r, None)
        return r

    def sut_only(self, args):
        self.sut.send(args)
        s = self.sut.read(args)
        self.commands += 1
        self._log(args, None, s)
        return s

    # ---- checking

    def differ(self, args, r, s, why):
        """Records a mismatch and raises Diverged."""
        m = Mismatch(self, args, r, s, why, list(self.history))
        self.mismatches.append(m)
        self.out(m.report(self.names, self.repro))
        raise Diverged()

    def verdict(self, args, r, s, result):
        if result is None:
            return
        if isinstance(result, tuple) and result[0] == "documented" and not self.strict:
            self.documented[result[1]] += 1
            return
        if isinstance(result, tuple):
            result = f"documented difference {DOCUMENTED[result[1]]} (strict mode)"
        self.differ(args, r, s, result)

    def op(self, args, how="exact"):
        """Sends one operation and checks it; returns the reference's reply (None for spop).
        how "settle:CHECK" retries CHECK until both agree (see settle)."""
        args = list(args)
        if how.startswith("settle:"):
            return self.settle(args, how[len("settle:"):])
        special = SPECIAL.get(how)
        if special is not None:
            return special(self, args)
        r, s = self.both(args)
        self.verdict(args, r, s, self.check(how, r, s))
        return r

    def check(self, how, r, s):
        return CHECKS[how](r, s)

    def settle(self, args, how="exact"):
        """op(args, how), retried until both agree or settle_s passes: for counts that include
        keys which expired but were not reclaimed yet (DBSIZE, INFO keyspace).  Redis reclaims
        such a key when it is read or by its active expiry, ringkv only by its active expiry
        (docs/COMMANDS.md:67); both get there within about 100 ms."""
        deadline = time.monotonic() + self.settle_s
        while True:
            r, s = self.both(args, log=False)
            res = self.check(how, r, s)
            if res is None or isinstance(res, tuple) or time.monotonic() > deadline:
                self._log(args, r, s)
                self.verdict(args, r, s, res)
                return r
            time.sleep(0.05)

    def start(self):
        """Empties both servers and switches both connections to the run's protocol."""
        self.resync()
        if self.proto == 3:
            r, s = self.both(["HELLO", "3"])
            if r[0] != "%" or s[0] != "%":
                self.differ(["HELLO", "3"], r, s, "HELLO 3 did not answer a map")

    def resync(self):
        """Both servers empty again (after a mismatch the two states may differ)."""
        self.both(["DISCARD"], log=False)  # (a mismatch may come inside MULTI)
        self.both(["UNWATCH"], log=False)
        r, s = self.both(["FLUSHALL"])
        if r != ("+", b"OK") or s != ("+", b"OK"):
            raise ServerGone(f"FLUSHALL answered {fmt_node(r)} | {fmt_node(s)}")

    def run_ops(self, ops):
        """Runs every (args, how) of the iterable ops (or callables taking the run); stops
        after max_mismatches.  Returns the number of operations run."""
        n = 0
        for item in ops:
            self.op_no += 1
            n += 1
            try:
                if callable(item):
                    item(self)
                else:
                    self.op(*item)
            except Diverged:
                if len(self.mismatches) >= self.max_mismatches:
                    self.out(f"  (stopping this run after {len(self.mismatches)} mismatches)")
                    break
                self.resync()
        return n


# ------------------------------------------------------------ special operations


def _count_arg(a):
    """The integer a (bytes/str) as Redis's string2ll reads it, or None."""
    t = a.decode() if isinstance(a, bytes) else str(a)
    if not re.fullmatch(r"-?(0|[1-9][0-9]*)", t) or t == "-0":
        return None
    v = int(t)
    return v if -LONG_MAX - 1 <= v <= LONG_MAX else None


def op_scan(run, args):
    """SCAN/HSCAN/SSCAN walked to cursor 0 on each server; the unions compared."""
    pos = 1 if str(args[0]).upper() == "SCAN" else 2
    is_hash = str(args[0]).upper() == "HSCAN"
    walks = []
    for side in (run.ref, run.sut):
        walks.append(_walk(run, side, args, pos))
    (r, rs), (s, ss) = walks
    if r is not None or s is not None:  # an error or a malformed reply on either side
        done = ("+", b"(the walk reached cursor 0)")
        r, s = r or done, s or done
        run._log(args, r, s)
        if r != s:
            run.differ(args, r, s, "the replies differ")
        return r
    if is_hash:
        ur, why_r = _hash_union(rs)
        us, why_s = _hash_union(ss)
        if why_r or why_s:
            run.differ(args, None, ("*", tuple(("$", b) for b in ss)), why_s or why_r)
    else:
        ur, us = set(rs), set(ss)
    run.note(f"{tl.fmt_cmd(args)} => walk to cursor 0: {len(rs)} | {len(ss)} elements")
    if ur != us:
        extra = sorted(set(us) - set(ur)) if not is_hash else sorted(
            k for k in us if ur.get(k) != us[k])
        missing = sorted(set(ur) - set(us)) if not is_hash else sorted(
            k for k in ur if us.get(k) != ur[k])
        run.differ(args, _union_node(ur), _union_node(us),
                   f"the walks returned different elements: only {run.names[1]}: "
                   f"{extra[:10]}, only {run.names[0]} or different: {missing[:10]}")
    return None


def _walk(run, side, args, pos):
    """(None, elements) after a walk to cursor 0, or (first bad reply, None)."""
    elems = []
    cursor = args[pos]
    for calls in range(SCAN_MAX_CALLS):
        a = list(args)
        a[pos] = cursor
        side.send(a)
        n = side.read(a)
        run.commands += side is run.sut
        if is_error(n) and calls == 0:
            return n, None
        ok = (n[0] == "*" and len(n[1]) == 2 and n[1][0][0] == "$" and n[1][1][0] == "*"
              and all(x[0] == "$" for x in n[1][1][1]))
        if not ok:
            return ("+", b"(call %d of the walk) " % (calls + 1) + fmt_node(n).encode()), None
        elems += [x[1] for x in n[1][1][1]]
        cursor = n[1][0][1]
        if cursor == b"0":
            return None, elems
    return ("+", b"(no cursor 0 after %d calls)" % SCAN_MAX_CALLS), None


def _hash_union(flat):
    if len(flat) % 2:
        return {}, "HSCAN returned an odd number of elements"
    d = {}
    for f, v in zip(flat[0::2], flat[1::2]):
        if d.get(f, v) != v:
            return d, f"HSCAN returned field {f!r} twice with different values"
        d[f] = v
    return d, None


def _union_node(u):
    if isinstance(u, dict):
        return ("%", tuple((("$", k), ("$", v)) for k, v in sorted(u.items())))
    return ("~", tuple(("$", x) for x in sorted(u)))


def _members(run, key):
    """The members of set key, the same on both servers (SMEMBERS compared); a set of bytes."""
    a = ["SMEMBERS", key]
    r, s = run.both(a)
    run.verdict(a, r, s, check_unordered(r, s))
    return set(bulks(r)) if r[0] in AGGREGATES else set()


def _hash(run, key):
    a = ["HGETALL", key]
    r, s = run.both(a)
    run.verdict(a, r, s, check_pairs(r, s))
    pairs = hash_pairs(r) or []
    return {f[1]: v[1] for f, v in pairs}


def _random_common(run, args, r, s):
    """The checks every random reply shares; True when there is content to check further."""
    if shape(r) != shape(s):
        run.differ(args, r, s, "the replies differ in type or length")
    return bool(bulks(r))


def op_srandmember(run, args):
    r, s = run.both(args)
    if not _random_common(run, args, r, s):
        return r
    members = _members(run, args[1])
    count = _count_arg(args[2]) if len(args) > 2 else None
    for name, n in ((run.names[0], r), (run.names[1], s)):
        got = bulks(n)
        bad = [m for m in got if m not in members]
        if bad:
            run.differ(args, r, s, f"{name} returned {bad[0]!r}, not a member")
        if count is not None and count > 0 and len(set(got)) != len(got):
            run.differ(args, r, s, f"{name} repeated a member for a positive count")
        if count is not None and len(got) != (min(count, len(members)) if count >= 0 else -count):
            run.differ(args, r, s, f"{name} returned {len(got)} members")
    return r


def op_hrandfield(run, args):
    r, s = run.both(args)
    if not _random_common(run, args, r, s):
        return r
    fields = _hash(run, args[1])
    count = _count_arg(args[2]) if len(args) > 2 else None
    withvalues = len(args) > 3 and str(args[3] if isinstance(args[3], str) else
                                       args[3].decode()).upper() == "WITHVALUES"
    for name, n in ((run.names[0], r), (run.names[1], s)):
        if withvalues:
            if n[0] != "*":
                run.differ(args, r, s, f"{name}: not an array")
            if run.proto == 3:
                pairs = [bulks(x) for x in n[1]]
            else:
                flat = bulks(n)
                pairs = [[f, v] for f, v in zip(flat[0::2], flat[1::2])]
            for p in pairs:
                if len(p) != 2 or p[0] not in fields or fields[p[0]] != p[1]:
                    run.differ(args, r, s, f"{name}: {p!r} is not a field and its value")
            got = [p[0] for p in pairs]
        else:
            got = bulks(n)
            bad = [f for f in got if f not in fields]
            if bad:
                run.differ(args, r, s, f"{name} returned {bad[0]!r}, not a field")
        if count is not None and count > 0 and len(set(got)) != len(got):
            run.differ(args, r, s, f"{name} repeated a field for a positive count")
        if count is not None and len(got) != (min(count, len(fields)) if count >= 0 else -count):
            run.differ(args, r, s, f"{name} returned {len(got)} fields")
    return r


def op_randomkey(run, args):
    r, s = run.both(args)
    if not _random_common(run, args, r, s):
        return r
    a = ["KEYS", "*"]
    kr, ks = run.both(a)
    run.verdict(a, kr, ks, check_unordered(kr, ks))
    keys = set(bulks(kr))
    for name, n in ((run.names[0], r), (run.names[1], s)):
        if n[1] not in keys:
            run.differ(args, r, s, f"{name} returned {n[1]!r}, not a key")
    return r


def op_spop(run, args):
    key = args[1] if len(args) > 1 else None
    count = _count_arg(args[2]) if len(args) == 3 else None
    random_reply = len(args) == 2 or (len(args) == 3 and count is not None and count > 0)
    if random_reply:
        t = ["TYPE", key]
        tr, ts = run.both(t)
        run.verdict(t, tr, ts, check_exact(tr, ts))
        random_reply = tr == ("+", b"set")
    if not random_reply:  # nil, empty, WRONGTYPE or an error: deterministic
        r, s = run.both(args)
        run.verdict(args, r, s, check_exact(r, s))
        return r
    members = _members(run, key)
    s = run.sut_only(args)
    if len(args) == 2:
        if s[0] != "$":
            run.differ(args, None, s, "SPOP of an existing set did not return a bulk string")
        popped = [s[1]]
    else:
        want = "~" if run.proto == 3 else "*"
        popped = bulks(s)
        if s[0] != want or len(s[1]) != len(popped):
            run.differ(args, None, s, f"SPOP with a count did not return a {want} of bulk strings")
        if len(popped) != min(count, len(members)):
            run.differ(args, None, s, f"SPOP popped {len(popped)} of {len(members)} members")
    bad = [m for m in popped if m not in members]
    if bad or len(set(popped)) != len(popped):
        run.differ(args, None, s, f"SPOP popped {bad[:1] or 'a member twice'}, not members")
    srem = ["SREM", key] + popped
    r = run.ref_only(srem)
    if r != (":", len(popped)):
        run.differ(srem, r, None, "the reference did not have the members SPOP popped")
    return None


SPECIAL = {
    "scan": op_scan,
    "srandmember": op_srandmember,
    "hrandfield": op_hrandfield,
    "randomkey": op_randomkey,
    "spop": op_spop,
}
