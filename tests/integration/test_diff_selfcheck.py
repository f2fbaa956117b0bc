#!/usr/bin/python3
"""test_diff_selfcheck: the differential harness (ringkv_diff.py) finds differences and only
differences: its checks tell apart replies that differ (types, nulls, elements, errors) and
accept those Redis leaves unordered; two identical redis-servers show no difference in any
family; a reply altered on the way (one per kind of check) and a redis-server configured
differently are reported, with the seed, a reproduction and the commands before.

Needs only /usr/bin/redis-server.  RINGKV_DIFF_OPS scales the random runs (default 300 x
RINGKV_TEST_SCALE)."""

import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringkv_diff as rd  # noqa: E402
import ringkv_diff_families as fam  # noqa: E402
import ringkv_testlib as tl  # noqa: E402

P = rd.parse_reply
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"FAIL {what}", flush=True)
    return cond


def agree(how, a, b, want=True):
    r, s = P(a), P(b)
    res = rd.Run.check(_FakeRun(), how, r, s)
    check((res is None) == want, f"{how}: {a!r} vs {b!r}: expected "
                                  f"{'agreement' if want else 'a difference'}, got {res!r}")


class _FakeRun:
    strict = False


def test_checks():
    """The checks on hand-made replies."""
    differ = [
        (b"+OK\r\n", b"$2\r\nOK\r\n"), (b"$-1\r\n", b"*-1\r\n"), (b"$-1\r\n", b"_\r\n"),
        (b"*-1\r\n", b"_\r\n"), (b":1\r\n", b"#t\r\n"), (b":1\r\n", b"$1\r\n1\r\n"),
        (b"-ERR a\r\n", b"-ERR b\r\n"), (b"*0\r\n", b"~0\r\n"), (b",1\r\n", b",1.0\r\n"),
        (b"*2\r\n$1\r\na\r\n$1\r\nb\r\n", b"*2\r\n$1\r\nb\r\n$1\r\na\r\n"),
        (b"$3\r\nabc\r\n", b"=7\r\ntxt:abc\r\n"), (b"%0\r\n", b"*0\r\n"),
    ]
    for a, b in differ:
        agree("exact", a, b, want=False)
    agree("exact", b"*2\r\n$1\r\na\r\n_\r\n", b"*2\r\n$1\r\na\r\n_\r\n")
    ab = b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nb\r\n"
    agree("unordered", ab, b"*3\r\n$1\r\nb\r\n$1\r\na\r\n$1\r\nb\r\n")
    agree("unordered", ab, b"*3\r\n$1\r\na\r\n$1\r\na\r\n$1\r\nb\r\n", want=False)  # a multiset
    agree("unordered", ab, b"*2\r\n$1\r\nb\r\n$1\r\na\r\n", want=False)
    agree("unordered", ab, b"~3\r\n$1\r\nb\r\n$1\r\na\r\n$1\r\nb\r\n", want=False)
    agree("unordered", b"-WRONGTYPE x\r\n", b"*0\r\n", want=False)
    pairs = b"*4\r\n$1\r\nf\r\n$1\r\n1\r\n$1\r\ng\r\n$1\r\n2\r\n"
    agree("pairs", pairs, b"*4\r\n$1\r\ng\r\n$1\r\n2\r\n$1\r\nf\r\n$1\r\n1\r\n")
    agree("pairs", pairs, b"*4\r\n$1\r\nf\r\n$1\r\n2\r\n$1\r\ng\r\n$1\r\n1\r\n", want=False)
    agree("pairs", b"%2\r\n$1\r\nf\r\n$1\r\n1\r\n$1\r\ng\r\n$1\r\n2\r\n",
          b"%2\r\n$1\r\ng\r\n$1\r\n2\r\n$1\r\nf\r\n$1\r\n1\r\n")
    agree("pairs", b"%1\r\n$1\r\nf\r\n$1\r\n1\r\n", b"*2\r\n$1\r\nf\r\n$1\r\n1\r\n", want=False)
    agree("ttl", b":100\r\n", b":101\r\n")
    agree("ttl", b":100\r\n", b":102\r\n", want=False)
    agree("ttl", b":-1\r\n", b":-2\r\n", want=False)
    agree("ttl", b":-1\r\n", b":0\r\n", want=False)
    agree("pttl", b":100000\r\n", b":98600\r\n")
    agree("pttl", b":100000\r\n", b":90000\r\n", want=False)
    def info(line, kind=b"$", prefix=b""):
        body = prefix + b"# Keyspace\r\n" + line + b"\r\n"
        return kind + b"%d\r\n%s\r\n" % (len(body), body)

    full = info(b"db0:keys=3,expires=1,avg_ttl=5")
    agree("info_keyspace", full, info(b"db0:keys=3,expires=1,avg_ttl=0"))
    agree("info_keyspace", full, info(b"db0:keys=4,expires=1,avg_ttl=5"), want=False)
    agree("info_keyspace", full, info(b"db1:keys=3,expires=1,avg_ttl=5"), want=False)
    agree("info_keyspace", full, info(b"db0:keys=3,expires=1"), want=False)
    agree("info_keyspace", full, b"$2\r\n\r\n\r\n", want=False)
    verbatim = info(b"db0:keys=3,expires=1,avg_ttl=5", b"=", b"txt:")
    agree("info_keyspace", full, verbatim, want=False)  # RESP3 INFO is a verbatim string
    agree("info_keyspace", verbatim, info(b"db0:keys=3,expires=1,avg_ttl=9", b"=", b"txt:"))
    agree("info_keyspace", full, info(b"db0:keys=3,expires=0,avg_ttl=5"), want=False)


class Faulty(rd.Side):
    """The server under test's connection, with one reply altered: from the after-th reply to
    command cmd on, mutate(node) is tried until it returns a node (then it stops, unless
    persistent)."""

    def __init__(self, inner, cmd, mutate, after=1, persistent=False):
        self.__dict__.update(inner.__dict__)
        self.cmd, self.mutate, self.after, self.persistent = cmd, mutate, after, persistent
        self.seen = 0
        self.injected = None  # the op number it altered

    def read(self, args):
        n = super().read(args)
        if (self.injected is None or self.persistent) and str(args[0]).upper() == self.cmd:
            self.seen += 1
            if self.seen >= self.after:
                m = self.mutate(n, args)
                if m is not None and m != n:
                    self.injected = args
                    return m
        return n


def _bulk_to_simple(n, args):
    return ("+", n[1]) if n[0] == "$" else None


def _null_kind(n, args):
    return ("*-1", None) if n[0] in ("$-1", "_") else None


def _drop_last(n, args):
    return (n[0], n[1][:-1]) if n[0] in rd.AGGREGATES and n[1] else None


def _add_elem(n, args):
    return (n[0], n[1] + (("$", b"injected"),)) if n[0] in rd.AGGREGATES else None


def _hgetall_drop(n, args):
    if n[0] == "%" and n[1]:
        return ("%", n[1][:-1])
    return ("*", n[1][:-2]) if n[0] == "*" and n[1] else None


def _scan_drop(n, args):
    if n[0] == "*" and len(n[1]) == 2 and n[1][1][0] == "*" and n[1][1][1]:
        step = n[1][1][1]
        keep = step[:-2] if len(step) % 2 == 0 and len(step) >= 2 else step[:-1]
        return ("*", (n[1][0], ("*", keep)))
    return None


def _foreign_first(n, args):
    """The first bulk string of an array (or a lone bulk string) replaced by one not in the data."""
    if n[0] == "$":
        return ("$", b"not-there")
    if n[0] in rd.AGGREGATES and n[1]:
        first = n[1][0]
        if first[0] == "$":
            return (n[0], (("$", b"not-there"),) + n[1][1:])
        if first[0] == "*":  # RESP3 HRANDFIELD WITHVALUES: [[f, v], ...]
            return (n[0], (("*", (first[1][0], ("$", b"not-its-value"))),) + n[1][1:])
    return None


def _duplicate(n, args):
    if n[0] in rd.AGGREGATES and len(n[1]) >= 2 and n[1][0][0] == "$":
        return (n[0], (n[1][0], n[1][0]) + n[1][2:])
    return None


def _flat_value(n, args):
    """RESP2 HRANDFIELD ... WITHVALUES: the first value changed."""
    if (str(args[-1]).upper() == "WITHVALUES" and n[0] == "*" and len(n[1]) >= 2
            and all(x[0] == "$" for x in n[1])):
        return ("*", (n[1][0], ("$", n[1][1][1] + b"!")) + n[1][2:])
    return None


def _plus_one(n, args):
    return (":", n[1] + 1) if n[0] == ":" else None


def _plus_five(n, args):
    """Past the TTL slack."""
    return (":", n[1] + 5) if n[0] == ":" else None


def _status_changed(n, args):
    return ("+", b"hash" if n[1] != b"hash" else b"set") if n[0] == "+" else None


def _info_drop_line(n, args):
    if n[0] in ("$", "=") and b"db" in n[1]:
        lines = n[1].split(b"\r\n")
        kept = [x for x in lines if not x.startswith(b"db")][:1] + [
            x for x in lines if x.startswith(b"db")][1:]
        return (n[0], b"\r\n".join(kept + [b"", b""]))
    return None


# (family, protocol, command, mutation, persistent): every kind of check, both protocols.
# Persistent faults alter every later reply too (DBSIZE and INFO keyspace are retried until
# the servers agree, see ringkv_diff.Run.settle, so a one-off difference is not reported).
INJECTIONS = [
    ("strings", 2, "GET", _bulk_to_simple, False), ("strings", 3, "GET", _null_kind, False),
    ("strings", 2, "MGET", _drop_last, False), ("strings", 3, "INCR", _plus_one, False),
    ("strings", 2, "KEYS", _add_elem, False), ("strings", 3, "SCAN", _scan_drop, False),
    ("strings", 2, "RANDOMKEY", _foreign_first, False), ("strings", 2, "TTL", _plus_five, False),
    ("hashes", 2, "HGETALL", _hgetall_drop, False), ("hashes", 3, "HGETALL", _hgetall_drop, False),
    ("hashes", 3, "HKEYS", _drop_last, False), ("hashes", 2, "HSCAN", _scan_drop, False),
    ("hashes", 2, "HRANDFIELD", _foreign_first, False),
    ("hashes", 3, "HRANDFIELD", _foreign_first, False),
    ("hashes", 2, "HRANDFIELD", _flat_value, False), ("hashes", 2, "HLEN", _plus_one, False),
    ("sets", 3, "SMEMBERS", _add_elem, False), ("sets", 2, "SINTER", _add_elem, False),
    ("sets", 2, "SSCAN", _scan_drop, False), ("sets", 2, "SRANDMEMBER", _foreign_first, False),
    ("sets", 3, "SRANDMEMBER", _duplicate, False), ("sets", 2, "SPOP", _foreign_first, False),
    ("sets", 3, "SPOP", _drop_last, False), ("sets", 2, "SCARD", _plus_one, False),
    ("types", 2, "OBJECT", _bulk_to_simple, False), ("types", 3, "TYPE", _status_changed, False),
    ("databases", 2, "DBSIZE", _plus_one, True), ("databases", 3, "INFO", _info_drop_line, True),
]


def test_redis_vs_redis(ctx, ops):
    """Two identical redis-servers: no family reports a difference."""
    for name, family in fam.FAMILIES.items():
        t = time.monotonic()
        runs = [ctx.run(family, None, proto, 0, ["hashes", "sets"]) for proto in (2, 3)]
        runs += [ctx.run(family, seed, proto, ops, ["hashes", "sets"])
                 for seed, proto in ((101, 2), (102, 3))]
        n = sum(len(r.mismatches) for r in runs)
        cmds = sum(r.commands for r in runs)
        if (check(n == 0, f"redis vs redis, family {name}: {n} mismatches (expected none)")
                and check(cmds > 200, f"redis vs redis, family {name}: only {cmds} commands")):
            print(f"ok   redis vs redis: {name}: {cmds} commands, no difference "
                  f"({time.monotonic() - t:.1f} s)", flush=True)


def test_injected(ctx, ops):
    """One reply altered in flight: the run reports it, at that command."""
    for name, proto, cmd, mutate, persistent in INJECTIONS:
        faulty = []

        def wrap(side, cmd=cmd, mutate=mutate, persistent=persistent):
            faulty.append(Faulty(side, cmd, mutate, after=2, persistent=persistent))
            return faulty[-1]

        reports = []
        ctx.out, ctx.max_mismatches, ctx.settle_s = reports.append, 1, 0.3
        run = ctx.run(fam.FAMILIES[name], 7, proto, ops, ["hashes", "sets"], repro="(repro)",
                      wrap_sut=wrap)
        ctx.out, ctx.max_mismatches, ctx.settle_s = print, 3, rd.SETTLE_S
        f = faulty[0]
        what = f"injected {mutate.__name__} into {cmd} (family {name}, RESP{proto})"
        if not check(f.injected is not None, f"{what}: no such reply in {ops} operations"):
            continue
        ok = (check(run.mismatches, f"{what}: not reported")
              and check(run.mismatches[0].cmd_name in (cmd, "SREM", "SMEMBERS", "KEYS", "HGETALL"),
                        f"{what}: first mismatch at {run.mismatches[0].cmd_name}")
              and check(all(s in reports[0] for s in ("seed=7", "reproduce:", "last ")),
                        f"{what}: the report lacks the seed, reproduction or history:\n"
                        f"{reports[0]}"))
        if ok:
            print(f"ok   {what}: reported ({reports[0].splitlines()[0]})", flush=True)


def test_configured_differently(ref_port, ops):
    """A redis-server with other encoding limits: OBJECT ENCODING tells them apart."""
    other = tl.Server(target="redis", redis_args=fam.REDIS_ARGS + [
        "--hash-max-listpack-entries", "4", "--set-max-intset-entries", "4"])
    try:
        other.start()
        ctx = fam.Context(ref_port, other.port, ("redis", "redis-4"), out=lambda s: None)
        run = ctx.run(fam.FAMILIES["types"], None, 2, 0, ["hashes", "sets"])
        got = {m.cmd_name for m in run.mismatches}
        check("OBJECT" in got, f"redis with other encoding limits: expected OBJECT ENCODING "
                               f"mismatches, got {sorted(got)}")
        if "OBJECT" in got:
            m = next(m for m in run.mismatches if m.cmd_name == "OBJECT")
            print(f"ok   redis with other encoding limits: reported ({tl.fmt_cmd(m.args)}: "
                  f"{rd.fmt_node(m.r)} | {rd.fmt_node(m.s)})", flush=True)
    finally:
        other.stop()
        other.cleanup()


def main():
    t0 = time.monotonic()
    # Redis against Redis only: a sanitized ringkv build changes nothing here, so the
    # operation count ignores RINGKV_TEST_SCALE (the injections need their commands to come).
    ops = int(os.environ.get("RINGKV_DIFF_OPS") or 300)
    test_checks()
    print(f"{'ok  ' if not failures else 'FAIL'} the checks on hand-made replies", flush=True)
    ref = tl.Server(target="redis", redis_args=fam.REDIS_ARGS)
    twin = tl.Server(target="redis", redis_args=fam.REDIS_ARGS)
    try:
        ref.start()
        twin.start()
        ctx = fam.Context(ref.port, twin.port, ("redis", "redis2"), max_mismatches=3)
        test_redis_vs_redis(ctx, ops)
        test_injected(ctx, ops)
        test_configured_differently(ref.port, ops)
    finally:
        for srv in (ref, twin):
            srv.stop()
            srv.cleanup()
    print(f"test_diff_selfcheck: {len(failures)} failed checks ({time.monotonic() - t0:.1f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
