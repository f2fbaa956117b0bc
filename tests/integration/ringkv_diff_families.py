"""ringkv_diff_families: the command families of the differential tests (test_diff_redis.py).

Each family has
  probes  commands sent to the server under test first: an `unknown command` reply (or, for
          databases, `DB index is out of range`) means the family is not implemented yet and
          it is skipped;
  edges   a deterministic list of edge cases (run once per protocol);
  gen     a random operation (args, how) drawn from small key pools, so that operations
          collide; which operation comes next depends only on the seed, never on a reply.
`how` names the check of ringkv_diff (exact, unordered, pairs, ttl, pttl, scan, srandmember,
hrandfield, randomkey, spop, info_keyspace, settle:CHECK).  Context runs a family against a
pair of servers.

Key pools: a few keys per type, some sharing a {hash tag} and some not, on both shards of a
two-proactor ringkv.  Values and members: small ones, integer-looking ones, and some longer
than 64 bytes (and bulk adds past 128 fields / 512 integers) so encodings change.
"""

import os
import random
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringkv_diff as rd  # noqa: E402
import ringkv_testlib as tl  # noqa: E402

LONG_MAX = "9223372036854775807"
LONG_MIN = "-9223372036854775808"


def key_pool(prefix, n_plain, n_tagged):
    """n_plain keys spread over the shards, then n_tagged keys sharing one hash tag."""
    tag = tl.tag_on_shard(1)
    return tl.keys_all_shards(prefix, n_plain) + [f"{prefix}{tag}{i}" for i in range(n_tagged)]


LONG = [
    "L" * 65,
    "long-value-" + "0123456789" * 8,
    "x" * 200,
]
VALUES = ["", "a", "bc", "hello", "v1", "v2", "0", "1", "-1", "10", "42", "100", "007", "+5",
          " 7", "1.5", "-0.5", "1e3", "3.0", "inf", "nan", LONG_MAX, LONG_MIN,
          "9223372036854775808", "12345678901234567890", "x" * 44, "y" * 45, "abc def",
          b"\x00\xff\r\n", "7\x00"] + LONG
INTS = ["0", "1", "-1", "2", "3", "5", "10", "-10", "100", "-100", "12345"]
BAD_INTS = [LONG_MAX, LONG_MIN, "9223372036854775808", "abc", "1.5", "", " 1", "+1", "0x1",
            "1e3", "1\x00", "\x00"]
FLOATS = ["0", "1", "1.5", "-2.25", "0.1", "10", "-3", "1e3", "2.5e-3", "3.0", ".5", "5."]
BAD_FLOATS = ["1e308", "-1e308", "inf", "-inf", "nan", "abc", "0x10", "", " 1", "1e400",
              "1\x00", "\x00", "1\x002"]
COUNTS = ["0", "1", "2", "3", "5", "10", "-1", "-2", "-5", "-20", "100", "1000000000", LONG_MAX]
BAD_COUNTS = ["abc", "1.5", "", LONG_MIN, "9223372036854775808"]
PATTERNS = ["*", "*a*", "?", "*:?", "*[ab]*", "*[^a]*", "*[0-9]", "*{*", "*}*", "\\*", "",
            "nomatch", "*\\[*", "h*", "s*", "t*", "d*", "*1", "[", "*x*y*"]
FIELDS = ["f1", "f2", "f3", "f4", "f1", "f2", "a", "1", "2", "-7", "", "F" * 70, "f*x",
          b"\xff\x00"]
MEMBERS = ["0", "1", "2", "3", "5", "10", "-5", "100", "1", "2", LONG_MAX, LONG_MIN, "a", "b",
           "c", "", "01", "+1", "9223372036854775808", "M" * 70]
TYPES = ["string", "hash", "set", "list", "zset", "none", "foo", "STRING"]


class Gen:
    """A random operation source over key pools; it depends only on rng.

    skeys, hkeys, setkeys: the keys string, hash and set commands use (the types family
    gives all three the same pool); all_keys: the keyspace commands' keys.
    """

    def __init__(self, rng, skeys, hkeys, setkeys, arity=None):
        self.r = rng
        self.skeys, self.hkeys, self.setkeys = skeys, hkeys, setkeys
        self.all_keys = list(dict.fromkeys(skeys + hkeys + setkeys))
        self.arity = arity or {}

    def p(self, prob):
        return self.r.random() < prob

    def pick(self, seq):
        return seq[self.r.randrange(len(seq))]

    def some(self, seq, lo, hi):
        return [self.pick(seq) for _ in range(self.r.randint(lo, hi))]

    def word(self, w):
        """w, sometimes lowercased (option and command names are case-insensitive)."""
        return w.lower() if self.p(0.1) else w

    def val(self):
        return self.pick(VALUES) if self.p(0.85) else "r" + str(self.r.randrange(1000))

    def int_arg(self):
        return self.pick(INTS) if self.p(0.9) else self.pick(BAD_INTS)

    def float_arg(self):
        return self.pick(FLOATS) if self.p(0.88) else self.pick(BAD_FLOATS)

    def count(self):
        return self.pick(COUNTS) if self.p(0.93) else self.pick(BAD_COUNTS)

    def index(self):
        return str(self.r.randint(-30, 30)) if self.p(0.9) else self.pick(
            [LONG_MAX, LONG_MIN, "abc", "1.5"])

    # Times: far from now and from each other, so the two servers (a few microseconds apart)
    # never disagree on an expiry or on an NX/XX/GT/LT comparison; now and then one that is an
    # error or expires at once.
    def ttl_s(self):
        return str(self.r.randint(1000, 10**7)) if self.p(0.92) else self.pick(
            ["0", "-1", "abc", "1.5", "", LONG_MAX, "9223372036854775", "-9223372036854775"])

    def ttl_ms(self):
        return str(self.r.randint(10**6, 10**10)) if self.p(0.92) else self.pick(
            ["0", "-5", "abc", LONG_MAX, "9223372036854775000", LONG_MIN])

    def at_s(self):
        return str(4000000000 + self.r.randint(0, 10**7)) if self.p(0.92) else self.pick(
            ["1", "0", "-1", "abc", LONG_MAX])

    def at_ms(self):
        # no PXAT near 2^63: Redis's INFO avg_ttl would overflow (the edge cases have them)
        return str(4000000000000 + self.r.randint(0, 10**10)) if self.p(0.92) else self.pick(
            ["1", "abc", "-1", "9223372036854775808"])

    def mangle_arity(self, args):
        """args with one argument too few or too many for its command's arity, or None."""
        a = self.arity.get(str(args[0]).lower())
        if a is None:
            return None
        if a > 0:
            n = a - 1 if a > 1 and self.p(0.5) else a + 1
        else:
            n = -a - 1
        if n < 1:
            return None
        out = list(args[:n])
        while len(out) < n:
            out.append("x")
        return out


def groups(g, gs):
    """The option groups gs (lists) in a random order, flattened."""
    gs = [list(x) for x in gs]
    g.r.shuffle(gs)
    return [w for grp in gs for w in grp]


# ------------------------------------------------------------------ strings & keyspace


def expiry_group(g):
    return g.pick([
        lambda: [g.word("EX"), g.ttl_s()],
        lambda: [g.word("PX"), g.ttl_ms()],
        lambda: [g.word("EXAT"), g.at_s()],
        lambda: [g.word("PXAT"), g.at_ms()],
        lambda: [g.word("KEEPTTL")],
    ])()


def op_set(g):
    gs = []
    if g.p(0.25):
        gs.append([g.word(g.pick(["NX", "XX"]))])
    if g.p(0.15):
        gs.append([g.word("GET")])
    if g.p(0.4):
        gs.append(expiry_group(g))
    if g.p(0.05):
        gs.append(g.pick([["NX", "XX"], ["EX", "100", "PX", "100000"], ["KEEPTTL", "EX", "100"],
                          ["FOO"], ["EX"], ["GET", "GET"], ["PXAT"], ["KEEPTTL", "PERSIST"]]))
    return ["SET", g.pick(g.skeys), g.val()] + groups(g, gs), "exact"


def op_getex(g):
    a = ["GETEX", g.pick(g.skeys)]
    if g.p(0.6):
        a += expiry_group(g) if g.p(0.8) else [g.word("PERSIST")]
        if a[-1] == "KEEPTTL" or g.p(0.05):
            a += g.pick([["PERSIST"], ["EX", "10"], ["FOO"]])
    return a, "exact"


def op_mset(g, name="MSET"):
    a = [name]
    for _ in range(g.r.randint(1, 4)):
        a += [g.pick(g.skeys), g.val()]
    if g.p(0.05):
        a.append(g.val())
    return a, "exact"


def strings_op(g):
    k = g.pick(g.skeys)
    c = g.r.choices(STRING_OPS, STRING_WEIGHTS)[0]
    return c(g, k)


STRING_TABLE = [
    (12, lambda g, k: op_set(g)),
    (8, lambda g, k: (["GET", k], "exact")),
    (3, lambda g, k: (["MGET"] + g.some(g.skeys, 1, 5), "exact")),
    (2, lambda g, k: op_mset(g)),
    (1, lambda g, k: op_mset(g, "MSETNX")),
    (2, lambda g, k: (["GETSET", k, g.val()], "exact")),
    (2, lambda g, k: (["GETDEL", k], "exact")),
    (2, lambda g, k: op_getex(g)),
    (1, lambda g, k: (["SETNX", k, g.val()], "exact")),
    (1, lambda g, k: (["SETEX", k, g.ttl_s(), g.val()], "exact")),
    (1, lambda g, k: (["PSETEX", k, g.ttl_ms(), g.val()], "exact")),
    (4, lambda g, k: (["APPEND", k, g.val()], "exact")),
    (3, lambda g, k: (["INCR", k], "exact")),
    (1, lambda g, k: (["DECR", k], "exact")),
    (2, lambda g, k: (["INCRBY", k, g.int_arg()], "exact")),
    (1, lambda g, k: (["DECRBY", k, g.int_arg()], "exact")),
    (3, lambda g, k: (["INCRBYFLOAT", k, g.float_arg()], "exact")),
    (2, lambda g, k: (["STRLEN", k], "exact")),
    (3, lambda g, k: (["GETRANGE", k, g.index(), g.index()], "exact")),
    (3, lambda g, k: (["SETRANGE", k, str(g.r.randint(0, 80)) if g.p(0.93) else g.pick(
        ["-1", "abc", "536870912", "99999999999", LONG_MAX]), g.val()], "exact")),
]
STRING_OPS = [f for _, f in STRING_TABLE]
STRING_WEIGHTS = [w for w, _ in STRING_TABLE]


def op_expire(g, k):
    name, t = g.pick([("EXPIRE", g.ttl_s), ("PEXPIRE", g.ttl_ms), ("EXPIREAT", g.at_s),
                      ("PEXPIREAT", g.at_ms)])
    a = [name, k, t()]
    if g.p(0.3):
        a.append(g.word(g.pick(["NX", "XX", "GT", "LT"])))
    if g.p(0.05):
        a += g.pick([["NX", "XX"], ["GT", "LT"], ["FOO"], ["XX", "GT"], ["NX", "GT"], ["LT", "LT"]])
    return a, "exact"


def op_scan_keys(g):
    gs = []
    if g.p(0.5):
        gs.append([g.word("MATCH"), g.pick(PATTERNS)])
    if g.p(0.6):
        gs.append([g.word("COUNT"), g.pick(["1", "2", "3", "5", "10", "100", "1000000000"])])
    if g.p(0.3):
        gs.append([g.word("TYPE"), g.pick(TYPES)])
    if g.p(0.04):
        gs.append(g.pick([["COUNT", "0"], ["COUNT", "-1"], ["COUNT", "abc"], ["MATCH"],
                          ["FOO", "1"], ["TYPE"]]))
    cursor = "0" if g.p(0.97) else g.pick(["abc", " 1", "1x", "18446744073709551616"])
    return ["SCAN", cursor] + groups(g, gs), "scan"


def keyspace_op(g):
    k = g.pick(g.all_keys)
    c = g.r.choices(KEYSPACE_OPS, KEYSPACE_WEIGHTS)[0]
    return c(g, k)


KEYSPACE_TABLE = [
    (3, lambda g, k: (["DEL"] + g.some(g.all_keys, 1, 3), "exact")),
    (1, lambda g, k: (["UNLINK"] + g.some(g.all_keys, 1, 3), "exact")),
    (3, lambda g, k: (["EXISTS"] + g.some(g.all_keys, 1, 4), "exact")),
    (1, lambda g, k: (["TOUCH"] + g.some(g.all_keys, 1, 3), "exact")),
    (2, lambda g, k: (["TYPE", k], "exact")),
    (7, op_expire),
    (3, lambda g, k: (["TTL", k], "ttl")),
    (2, lambda g, k: (["PTTL", k], "pttl")),
    (1, lambda g, k: (["EXPIRETIME", k], "ttl")),
    (1, lambda g, k: (["PEXPIRETIME", k], "pttl")),
    (2, lambda g, k: (["PERSIST", k], "exact")),
    (2, lambda g, k: (["DBSIZE"], "settle:exact")),
    (1.5, lambda g, k: (["KEYS", g.pick(PATTERNS)], "unordered")),
    (1.5, lambda g, k: op_scan_keys(g)),
    (1, lambda g, k: (["RANDOMKEY"], "randomkey")),
    (0.5, lambda g, k: (["INFO", "keyspace"], "settle:info_keyspace")),
    (0.1, lambda g, k: (["FLUSHDB"], "exact")),
]
KEYSPACE_OPS = [f for _, f in KEYSPACE_TABLE]
KEYSPACE_WEIGHTS = [w for w, _ in KEYSPACE_TABLE]


# ------------------------------------------------------------------------------ hashes


def op_hset(g, k, name="HSET"):
    a = [name, k]
    for _ in range(g.r.randint(1, 3)):
        a += [g.pick(FIELDS), g.val()]
    if g.p(0.04):
        a.append(g.pick(FIELDS))
    return a, "exact"


def op_hrandfield(g, k):
    a = ["HRANDFIELD", k]
    if g.p(0.7):
        a.append(g.count())
        if g.p(0.35):
            a.append(g.word("WITHVALUES"))
        if g.p(0.03):
            a += g.pick([["x"], ["WITHVALUES"]]) if len(a) == 4 else [g.pick(["WITHVALUE", "x"])]
    return a, "hrandfield"


def op_sub_scan(g, name, k):
    gs = []
    if g.p(0.4):
        gs.append([g.word("MATCH"), g.pick(["*", "f*", "*1*", "?", "[ab]*", "*[0-9]", "nomatch",
                                            "\\*", ""])])
    if g.p(0.5):
        gs.append([g.word("COUNT"), g.pick(["1", "2", "5", "10", "1000000000"])])
    if g.p(0.04):
        gs.append(g.pick([["COUNT", "0"], ["COUNT", "abc"], ["MATCH"], ["FOO", "1"],
                          ["TYPE", "string"]]))
    cursor = "0" if g.p(0.97) else g.pick(["abc", " 1", "1x"])
    return [name, k, cursor] + groups(g, gs), "scan"


def bulk_fields(n):
    a = []
    for i in range(n):
        a += [f"bulk{i}", str(i)]
    return a


def hashes_op(g):
    k = g.pick(g.hkeys)
    c = g.r.choices(HASH_OPS, HASH_WEIGHTS)[0]
    return c(g, k)


HASH_TABLE = [
    (10, op_hset),
    (2, lambda g, k: (["HSETNX", k, g.pick(FIELDS), g.val()], "exact")),
    (2, lambda g, k: op_hset(g, k, "HMSET")),
    (8, lambda g, k: (["HGET", k, g.pick(FIELDS)], "exact")),
    (3, lambda g, k: (["HMGET", k] + g.some(FIELDS, 1, 4), "exact")),
    (4, lambda g, k: (["HDEL", k] + g.some(FIELDS, 1, 3), "exact")),
    (3, lambda g, k: (["HLEN", k], "exact")),
    (2, lambda g, k: (["HSTRLEN", k, g.pick(FIELDS)], "exact")),
    (3, lambda g, k: (["HEXISTS", k, g.pick(FIELDS)], "exact")),
    (2, lambda g, k: (["HKEYS", k], "unordered")),
    (2, lambda g, k: (["HVALS", k], "unordered")),
    (3, lambda g, k: (["HGETALL", k], "pairs")),
    (3, lambda g, k: (["HINCRBY", k, g.pick(FIELDS), g.int_arg()], "exact")),
    (3, lambda g, k: (["HINCRBYFLOAT", k, g.pick(FIELDS), g.float_arg()], "exact")),
    (3, op_hrandfield),
    (2, lambda g, k: op_sub_scan(g, "HSCAN", k)),
    (0.3, lambda g, k: (["HSET", k] + bulk_fields(g.pick([127, 128, 129, 200])), "exact")),
]
HASH_OPS = [f for _, f in HASH_TABLE]
HASH_WEIGHTS = [w for w, _ in HASH_TABLE]


# -------------------------------------------------------------------------------- sets


def set_keys(g, lo, hi):
    """Set keys for a multi-key command: now and then a key of the string pool or a missing one."""
    out = []
    for _ in range(g.r.randint(lo, hi)):
        x = g.r.random()
        out.append(g.pick(g.skeys) if x < 0.06 else "set:missing" if x < 0.1 else
                   g.pick(g.setkeys))
    return out


def op_sintercard(g):
    keys = set_keys(g, 1, 3)
    n = str(len(keys)) if g.p(0.92) else g.pick(["0", "-1", str(len(keys) + 1), "abc"])
    a = ["SINTERCARD", n] + keys
    if g.p(0.4):
        a += [g.word("LIMIT"), g.pick(["0", "1", "2", "5", "100"]) if g.p(0.9) else
              g.pick(["-1", "abc", ""])]
    if g.p(0.03):
        a += g.pick([["LIMIT"], ["FOO", "1"]])
    return a, "exact"


def op_spop(g, k):
    a = ["SPOP", k]
    if g.p(0.5):
        a.append(g.pick(["1", "2", "3", "5", "100", "0"]) if g.p(0.9) else
                 g.pick(BAD_COUNTS + ["-1"]))
    return a, "spop"


def op_srandmember(g, k):
    a = ["SRANDMEMBER", k]
    if g.p(0.7):
        a.append(g.count())
    return a, "srandmember"


def sets_op(g):
    k = g.pick(g.setkeys)
    c = g.r.choices(SET_OPS, SET_WEIGHTS)[0]
    return c(g, k)


def dest_key(g):
    return g.pick(g.skeys) if g.p(0.1) else g.pick(g.setkeys)


SET_TABLE = [
    (10, lambda g, k: (["SADD", k] + g.some(MEMBERS, 1, 4), "exact")),
    (5, lambda g, k: (["SREM", k] + g.some(MEMBERS, 1, 3), "exact")),
    (3, lambda g, k: (["SCARD", k], "exact")),
    (3, lambda g, k: (["SISMEMBER", k, g.pick(MEMBERS)], "exact")),
    (2, lambda g, k: (["SMISMEMBER", k] + g.some(MEMBERS, 1, 3), "exact")),
    (3, lambda g, k: (["SMEMBERS", k], "unordered")),
    (3, op_srandmember),
    (3, op_spop),
    (3, lambda g, k: (["SMOVE", k, dest_key(g), g.pick(MEMBERS)], "exact")),
    (2, lambda g, k: (["SINTER"] + set_keys(g, 1, 3), "unordered")),
    (2, lambda g, k: op_sintercard(g)),
    (2, lambda g, k: (["SINTERSTORE", dest_key(g)] + set_keys(g, 1, 3), "exact")),
    (2, lambda g, k: (["SUNION"] + set_keys(g, 1, 3), "unordered")),
    (2, lambda g, k: (["SUNIONSTORE", dest_key(g)] + set_keys(g, 1, 3), "exact")),
    (2, lambda g, k: (["SDIFF"] + set_keys(g, 1, 3), "unordered")),
    (2, lambda g, k: (["SDIFFSTORE", dest_key(g)] + set_keys(g, 1, 3), "exact")),
    (2, lambda g, k: op_sub_scan(g, "SSCAN", k)),
    (0.3, lambda g, k: (["SADD", k] + [str(i * 7 - 300) for i in range(g.pick(
        [130, 511, 512, 513, 600]))], "exact")),
    (0.2, lambda g, k: (["SADD", k] + [f"m{i}" for i in range(130)], "exact")),
]
SET_OPS = [f for _, f in SET_TABLE]
SET_WEIGHTS = [w for w, _ in SET_TABLE]


# ------------------------------------------------------------------------ types & dbs


def object_op(g):
    k = g.pick(g.all_keys)
    if g.p(0.95):
        return [g.word("OBJECT"), g.word("ENCODING"), k], "encoding"
    return g.pick([["OBJECT", "FOO", k], ["OBJECT", "ENCODING"], ["OBJECT", "ENCODING", k, "x"]]), \
        "exact"


def select_op(g):
    if g.p(0.95):
        return ["SELECT", str(g.pick([0, 0, 1, 1, 2, 3] + list(range(16))))], "exact"
    return ["SELECT", g.pick(["16", "-1", "abc", "1.5", "99999999999999999999", ""])], "exact"


def db_index(g):
    return str(g.pick([0, 1, 2, 3, 15])) if g.p(0.94) else g.pick(["16", "-1", "abc", ""])


def databases_op(g, available):
    x = g.r.random()
    if x < 0.08:
        return select_op(g)
    if x < 0.10:
        return ["SWAPDB", db_index(g), db_index(g)], "exact"
    if x < 0.105:
        return ["FLUSHDB"] + ([g.pick(["ASYNC", "SYNC"])] if g.p(0.5) else []), "exact"
    if x < 0.14:
        return ["DBSIZE"], "settle:exact"
    if x < 0.17:
        return ["INFO", "keyspace"], "settle:info_keyspace"
    if x < 0.30:
        return keyspace_op(g)
    if x < 0.60 or not available:
        return strings_op(g)
    return g.pick(available)(g)


# ------------------------------------------------------------------------- edge cases
#
# Lists of (args, how), or callables taking the run (sleeps, waits).


def sleep(s):
    return lambda run: time.sleep(s)


def settle(args, how="exact"):
    return lambda run: run.settle(args, how)


def edges_strings():
    k, k2, tagged = tl.key_on_shard("e:", 0), tl.key_on_shard("e:", 1), "e:{x}1"
    e = []
    x = e.append
    for v, ops in [
        ("10", [["INCR"], ["INCRBY", "9223372036854775800"], ["DECRBY", "-5"], ["DECR"]]),
        (LONG_MAX, [["INCR"], ["INCRBY", "1"], ["DECRBY", LONG_MIN], ["DECR"]]),
        (LONG_MIN, [["DECR"], ["INCRBY", "-1"], ["DECRBY", "1"], ["INCR"]]),
        ("abc", [["INCR"], ["INCRBYFLOAT", "1"], ["APPEND", "d"], ["STRLEN"]]),
        (" 1", [["INCR"], ["INCRBYFLOAT", "1"]]),
        ("1 ", [["INCR"], ["INCRBYFLOAT", "1"]]),
        ("007", [["INCR"], ["GET"]]),
        ("1\x00", [["INCRBYFLOAT", "1"], ["INCR"], ["GET"]]),
        ("\x00", [["INCRBYFLOAT", "1"], ["GET"]]),
        ("2", [["INCRBYFLOAT", "1\x00"], ["INCRBYFLOAT", "\x00"], ["INCRBY", "1\x00"], ["GET"]]),
        ("1e308", [["INCRBYFLOAT", "1e308"], ["INCRBYFLOAT", "-1e308"], ["GET"]]),
        ("3.0", [["INCRBYFLOAT", "0"], ["GET"], ["INCRBYFLOAT", "1.5e1"], ["INCRBYFLOAT", "inf"],
                 ["INCRBYFLOAT", "nan"], ["INCRBYFLOAT", "-inf"], ["INCRBYFLOAT", "0.1"]]),
        ("5", [["INCRBYFLOAT", "-5"], ["GET"], ["INCRBYFLOAT", "1e-20"], ["INCRBYFLOAT", "1e20"],
               ["GET"]]),
        ("", [["APPEND", ""], ["STRLEN"], ["GETRANGE", "0", "-1"], ["INCR"], ["SETRANGE", "3", "x"],
              ["GET"]]),
        ("hello", [["GETRANGE", "-100", "100"], ["GETRANGE", LONG_MAX, LONG_MIN],
                   ["GETRANGE", "3", "1"], ["GETRANGE", "-1", "-1"], ["GETRANGE", "5", "5"],
                   ["GETRANGE", "0"], ["SETRANGE", "-1", "x"], ["SETRANGE", "536870912", "x"],
                   ["SETRANGE", "0", ""], ["SETRANGE", "10", "!"], ["GET"]]),
    ]:
        x((["SET", k, v], "exact"))
        for op in ops:
            x(([op[0], k] + op[1:], "exact"))
    for opts in [["EX", "0"], ["EX", "-1"], ["EX", "abc"], ["EX", LONG_MAX], ["PX", "0"],
                 ["PX", LONG_MAX], ["EXAT", "0"], ["PXAT", "-1"], ["NX", "XX"],
                 ["EX", "10", "PX", "10"],
                 ["KEEPTTL", "PX", "10"], ["GET", "NX"], ["XX", "GET"], ["FOO"], ["EX"],
                 ["ex", "100", "keepttl"], ["EXAT", "1"], ["PXAT", "1", "GET"]]:
        x((["SET", k, "v0", "EX", "1000"], "exact"))
        x((["SET", k, "v"] + opts, "exact"))
        x((["PTTL", k], "pttl"))
        x((["GET", k], "exact"))
    x((["SET", k, "v", "KEEPTTL"], "exact"))
    x((["TTL", k], "ttl"))
    for opts in [["EX", "0"], ["PERSIST", "EX", "10"], ["EX", "10", "PX", "10"], ["FOO"],
                 ["PXAT", "1"], ["PERSIST"], ["EX", "100"], ["KEEPTTL"]]:
        x((["GETEX", k] + opts, "exact"))
        x((["TTL", k], "ttl"))
    x((["SET", k, "v"], "exact"))
    # NX XX GT LT: each time far from the last, so no comparison depends on the moment
    for name, unit in (("EXPIRE", 1), ("PEXPIRE", 1000)):
        x((["PERSIST", k], "exact"))
        for t, opts in [(100, ["NX", "XX"]), (100, ["GT", "LT"]), (100, ["FOO"]), (1000, ["GT"]),
                        (1000, ["XX"]), (1000, ["NX"]), (500, ["NX"]), (300, ["GT"]),
                        (2000, ["GT"]), (3000, ["LT"]), (1500, ["LT"]), (100, ["XX", "GT"]),
                        (5000, ["XX", "GT"]), (100, ["NX", "GT"]), (100, ["lt", "LT"])]:
            x(([name, k, str(t * unit)] + opts, "exact"))
            x((["PTTL", k], "pttl"))
        for bad in [LONG_MAX, "9223372036854775", "-9223372036854775", "abc", ""]:
            x(([name, k, bad], "exact"))
    for a in [["PERSIST", k], ["PERSIST", k], ["EXPIRE", k, "0"], ["EXISTS", k],
              ["SET", k, "v"], ["PEXPIREAT", k, "1"], ["EXISTS", k], ["SET", k, "v"],
              ["EXPIREAT", k, "-1"], ["GET", k], ["TTL", k], ["PTTL", k], ["EXPIRETIME", k],
              ["PERSIST", k], ["GETEX", "e:none", "EX", "abc"], ["GETEX", "e:none", "EX", "-1"],
              ["GETEX", "e:none", "PXAT", LONG_MAX], ["GETEX", "e:none", "EX", "1", "PX", "1"],
              ["MSET", k, "1", k2, "2", tagged, "3"], ["MGET", k, k2, tagged, "e:none"],
              ["MSETNX", k, "x", "e:new"], ["MSETNX", "e:new", "1", "e:new", "2"], ["GET", "e:new"],
              ["EXISTS", k, k, k2, "e:none"], ["DEL", k, k, "e:none"], ["UNLINK", k2, tagged],
              ["SETNX", k, "a"], ["SETNX", k, "b"], ["SETEX", k, "0", "v"],
              ["SETEX", k, "abc", "v"],
              ["PSETEX", k, "-1", "v"], ["GETSET", k, "new"], ["GETDEL", k], ["GETDEL", k],
              ["SETRANGE", "e:none", "0", ""], ["SETRANGE", "e:none", "5", ""],
              ["EXISTS", "e:none"],
              ["APPEND", "e:none2", ""], ["EXISTS", "e:none2"], ["GETRANGE", "e:none", "0", "-1"],
              ["MSET", k], ["MSET", k, "1", k2], ["MGET"], ["GET"], ["GET", k, k2], ["SET", k],
              ["FOO", "bar"], ["DBSIZE", "x"], ["TYPE"], ["TTL"], ["KEYS"], ["SCAN"],
              ["INCRBY", k, "abc"], ["INCRBYFLOAT", k, "abc"], ["INCRBYFLOAT", k, ""],
              ["DECRBY", k, LONG_MIN], ["APPEND", k], ["STRLEN", k, k],
              ["FLUSHALL", "FOO"], ["FLUSHDB", "FOO"], ["DBSIZE"]]:
        x((a, "exact"))
    for pat in ["", "[", "\\", "*\\", "[a-", "[^]", "**", "e:*", "*"]:
        x((["KEYS", pat], "unordered"))
    for a in [["SCAN", "0", "COUNT", "0"], ["SCAN", "0", "COUNT", "-1"], ["SCAN", "abc"],
              ["SCAN", "0", "MATCH"], ["SCAN", "0", "TYPE"], ["SCAN", "0", "FOO", "bar"],
              ["SCAN", " 1"], ["SCAN", "18446744073709551616"], ["SCAN", "0", "TYPE", "foo"],
              ["SCAN", "0", "count", "1", "match", "e:*", "type", "string"]]:
        x((a, "scan"))
    # expiry for real: keys that expire 40 ms after being written, read 300 ms later
    for a in [["SET", k, "v", "PX", "40"], ["SET", k2, "v"], ["PEXPIRE", k2, "40"],
              ["SETEX", tagged, "1000", "v"], ["PEXPIRE", tagged, "40", "LT"],
              ["PSETEX", "e:ps", "40", "v"]]:
        x((a, "exact"))
    x(sleep(0.3))
    for a in [["GET", k], ["EXISTS", k2], ["TTL", tagged], ["STRLEN", "e:ps"], ["TYPE", k]]:
        x((a, "exact"))
    x(settle(["DBSIZE"]))
    x(settle(["KEYS", "*"], "unordered"))
    return e


def edges_hashes():
    k, k2 = tl.key_on_shard("he:", 0), tl.key_on_shard("he:", 1)
    e = []
    for a in [["HSET", k, "f"], ["HSET", k], ["HMSET", k, "f"], ["HSET", k, "f", "1", "g"],
              ["HSETNX", k, "f"], ["HGET", k], ["HMGET", k], ["HDEL", k], ["HSTRLEN", k],
              ["HSET", k, "f", "1", "f", "2"], ["HGET", k, "f"], ["HLEN", k],
              ["HINCRBY", k, "f", LONG_MAX], ["HINCRBY", k, "f", "abc"], ["HINCRBY", k, "f", "1.5"],
              ["HINCRBY", k, "f", "-3"], ["HINCRBY", k, "n", "-9223372036854775808"],
              ["HINCRBY", k, "n", "-1"], ["HSET", k, "s", "abc", "sp", " 1", "fl", "1e308"],
              ["HINCRBY", k, "s", "1"], ["HINCRBYFLOAT", k, "s", "1"], ["HINCRBY", k, "sp", "1"],
              ["HINCRBYFLOAT", k, "sp", "1"], ["HINCRBYFLOAT", k, "fl", "1e308"],
              ["HINCRBYFLOAT", k, "fl", "inf"], ["HINCRBYFLOAT", k, "fl", "nan"],
              ["HINCRBYFLOAT", k, "fl", "abc"], ["HINCRBYFLOAT", k, "new", "1.5"],
              ["HINCRBYFLOAT", k, "new", "0.1"], ["HINCRBYFLOAT", k, "new", "-1.6"],
              ["HINCRBYFLOAT", k, "new", "1e-5"], ["HGET", k, "new"], ["HINCRBY", k, "new", "1"],
              ["HSETNX", k, "f", "x"], ["HSETNX", k, "g", "x"], ["HSTRLEN", k, "fl"],
              ["HSTRLEN", k, "none"], ["HEXISTS", k, "g"], ["HEXISTS", k, "none"],
              ["HMGET", k, "f", "none", "g"], ["HMSET", k, "a", "1", "b", "2"],
              ["HRANDFIELD", k, "0"], ["HRANDFIELD", k, "0", "WITHVALUES"],
              ["HRANDFIELD", k, "-4611686018427387904", "WITHVALUES"],
              ["HRANDFIELD", k, LONG_MIN], ["HRANDFIELD", k, LONG_MIN, "WITHVALUES"],
              ["HRANDFIELD", k, "1", "WITHVALUE"], ["HRANDFIELD", k, "1", "WITHVALUES", "x"],
              ["HRANDFIELD", k, "abc"], ["HRANDFIELD", "he:none"], ["HRANDFIELD", "he:none", "5"],
              ["HRANDFIELD", "he:none", "-5", "WITHVALUES"], ["HGETALL", "he:none"],
              ["HKEYS", "he:none"], ["HVALS", "he:none"], ["HLEN", "he:none"],
              ["HGET", "he:none", "f"], ["HMGET", "he:none", "a", "b"], ["HDEL", "he:none", "a"],
              ["HSTRLEN", "he:none", "f"], ["HEXISTS", "he:none", "f"],
              ["HDEL", k, "f", "f", "none"]]:
        e.append((a, "exact"))
    for a, how in [(["HRANDFIELD", k, "1000000000"], "hrandfield"),
                   (["HRANDFIELD", k, "-7", "WITHVALUES"], "hrandfield"),
                   (["HRANDFIELD", k, LONG_MAX, "WITHVALUES"], "hrandfield"),
                   (["HGETALL", k], "pairs"), (["HKEYS", k], "unordered"),
                   (["HVALS", k], "unordered"),
                   (["HSCAN", k, "abc"], "scan"), (["HSCAN", k, "0", "COUNT", "0"], "scan"),
                   (["HSCAN", k, "0", "MATCH"], "scan"), (["HSCAN", k, "0", "FOO", "1"], "scan"),
                   (["HSCAN", "he:none", "0"], "scan"), (["HSCAN", k, "0", "MATCH", "s*"], "scan"),
                   (["HSCAN", k, "0", "count", "1"], "scan")]:
        e.append((a, how))
    for a in [["HSET", k2, "F" * 64, "1"], ["HSET", k2, "g", "V" * 65], ["HSET", k2, "", ""],
              ["HGET", k2, ""], ["HSTRLEN", k2, "g"], ["HDEL", k2, "F" * 64, "g", ""],
              ["EXISTS", k2], ["TYPE", k2], ["HSET", k2] + bulk_fields(129), ["HLEN", k2],
              ["HDEL", k, "s", "sp", "fl", "new", "g", "a", "b", "n"], ["EXISTS", k], ["TYPE", k],
              ["HLEN", k]]:
        e.append((a, "exact"))
    e.append((["HGETALL", k2], "pairs"))
    e.append((["HSCAN", k2, "0", "COUNT", "7"], "scan"))
    return e


def edges_sets():
    k, k2, k3 = tl.key_on_shard("se:", 0), tl.key_on_shard("se:", 1), "se:{x}3"
    s = "se:str"
    e = []
    for a in [["SADD", k], ["SADD", k, "a", "a", "a"], ["SREM", k, "a"], ["EXISTS", k],
              ["SADD", k, "1", "2", "3"], ["SADD", k2, "2", "3", "4", "x"], ["SADD", k3, "3", "x"],
              ["SET", s, "v"], ["SPOP", k, "-1"], ["SPOP", k, "0"], ["SPOP", "se:none"],
              ["SPOP", "se:none", "5"], ["SPOP", k, "1", "2"], ["SPOP", k, "abc"],
              ["SPOP", s], ["SPOP", s, "1"],
              ["SRANDMEMBER", "se:none"], ["SRANDMEMBER", "se:none", "3"],
              ["SRANDMEMBER", "se:none", "-3"], ["SRANDMEMBER", k, "0"],
              ["SRANDMEMBER", k, LONG_MIN], ["SRANDMEMBER", k, "abc"],
              ["SRANDMEMBER", k, "1", "2"], ["SRANDMEMBER", s],
              ["SMOVE", k, k, "1"], ["SMOVE", k, k, "nope"], ["SMOVE", k, "se:none", "nope"],
              ["SMOVE", "se:none", k, "1"], ["SMOVE", k, s, "1"], ["SMOVE", s, k, "1"],
              ["SMOVE", k, s, "nope"], ["SMOVE", k, k2, "1"], ["SMOVE", k2, "se:new", "x"],
              ["SMOVE", k2, "se:new2", "4"], ["SCARD", "se:new"], ["SCARD", k],
              ["SINTERCARD", "0", k], ["SINTERCARD", "-1", k], ["SINTERCARD", "2", k],
              ["SINTERCARD", "abc", k], ["SINTERCARD", "1", k, "LIMIT", "0"],
              ["SINTERCARD", "1", k, "LIMIT", "-1"], ["SINTERCARD", "1", k, "LIMIT", "abc"],
              ["SINTERCARD", "1", k, "LIMIT"], ["SINTERCARD", "1", k, "FOO", "1"],
              ["SINTERCARD", "2", k, k2, "LIMIT", "1"], ["SINTERCARD", "2", k, s],
              ["SINTERCARD", "2", "se:none", s], ["SINTERCARD", "2", k, k2, "limit", "0"],
              ["SISMEMBER", k, "2"], ["SISMEMBER", "se:none", "2"], ["SISMEMBER", s, "2"],
              ["SMISMEMBER", k], ["SMISMEMBER", k, "2", "nope", "2"],
              ["SMISMEMBER", "se:none", "1"],
              ["SINTER", k, "se:none", s], ["SINTER", s, "se:none"], ["SUNION", k, s],
              ["SDIFF", "se:none", s], ["SDIFF", s, "se:none"],
              ["SINTERSTORE", k, k, k2], ["SMEMBERS", k], ["SUNIONSTORE", k2, k2],
              ["SDIFFSTORE", k3, k3, k3], ["EXISTS", k3], ["SINTERSTORE", s, k2],
              ["TYPE", s], ["SDIFFSTORE", "se:d", "se:none"], ["EXISTS", "se:d"],
              ["SET", s, "v"], ["SUNIONSTORE", s, "se:none"], ["EXISTS", s],
              ["SADD", k, "a"], ["SUNIONSTORE", "se:d", k, k2, "se:none"], ["SCARD", "se:d"],
              ["SINTERSTORE", "se:d", k, "se:none"], ["EXISTS", "se:d"],
              ["SADD", k3] + [str(i) for i in range(513)], ["SCARD", k3],
              ["SADD", k3, "x"], ["SREM", k3, "x", "0", "1"], ["SCARD", k3],
              ["SINTERSTORE"], ["SCARD"], ["SMEMBERS"], ["SADD", k, LONG_MIN, LONG_MAX,
                                                         "9223372036854775808", "01", "-0", ""]]:
        # (SMEMBERS's order is ringkv's hash order, Redis's intset is sorted: COMMANDS.md)
        e.append((a, "unordered" if a[0] == "SMEMBERS" and len(a) > 1 else "exact"))
    for a, how in [(["SMEMBERS", k], "unordered"), (["SMEMBERS", "se:none"], "unordered"),
                   (["SINTER", k, k2], "unordered"), (["SUNION", k, k2, "se:none"], "unordered"),
                   (["SDIFF", k, k2], "unordered"), (["SINTER", k, "se:none"], "unordered"),
                   (["SRANDMEMBER", k, "-5"], "srandmember"),
                   (["SRANDMEMBER", k, "1000000000"], "srandmember"),
                   (["SPOP", k, "2"], "spop"), (["SPOP", k], "spop"),
                   (["SPOP", k, "1000000000"], "spop"), (["EXISTS", k], "exact"),
                   (["SSCAN", k2, "abc"], "scan"), (["SSCAN", k2, "0", "COUNT", "0"], "scan"),
                   (["SSCAN", k2, "0", "MATCH"], "scan"), (["SSCAN", "se:none", "0"], "scan"),
                   (["SSCAN", k3, "0", "MATCH", "1*", "COUNT", "20"], "scan"),
                   (["SSCAN", k2, "0", "count", "1"], "scan")]:
        e.append((a, how))
    return e


# The WRONGTYPE matrix: each template runs with {K} a string, a hash, a set and a missing key
# (fresh fixtures every time), then the type, contents, TTL and encoding of every key it names
# are compared.
WRONGTYPE_TEMPLATES = [
    (["GET", "{K}"], "exact"), (["SET", "{K}", "v", "GET"], "exact"),
    (["SET", "{K}", "v", "NX"], "exact"), (["SET", "{K}", "v", "KEEPTTL"], "exact"),
    (["GETSET", "{K}", "v"], "exact"), (["GETDEL", "{K}"], "exact"),
    (["GETEX", "{K}", "PERSIST"], "exact"), (["GETEX", "{K}", "EX", "abc"], "exact"),
    (["SET", "{K}", "v", "GET", "EX", "0"], "exact"), (["APPEND", "{K}", "x"], "exact"),
    (["INCR", "{K}"], "exact"), (["DECR", "{K}"], "exact"), (["INCRBY", "{K}", "2"], "exact"),
    (["DECRBY", "{K}", "2"], "exact"), (["INCRBYFLOAT", "{K}", "1.5"], "exact"),
    (["STRLEN", "{K}"], "exact"), (["GETRANGE", "{K}", "0", "-1"], "exact"),
    (["SETRANGE", "{K}", "1", "x"], "exact"), (["MGET", "{K}", "{STR}"], "exact"),
    (["SETNX", "{K}", "v"], "exact"), (["MSETNX", "{K}", "v"], "exact"),
    (["MSET", "{K}", "v"], "exact"), (["SETEX", "{K}", "1000", "v"], "exact"),
    (["HSET", "{K}", "f1", "v"], "exact"), (["HSETNX", "{K}", "g", "v"], "exact"),
    (["HMSET", "{K}", "g", "v"], "exact"), (["HGET", "{K}", "f1"], "exact"),
    (["HMGET", "{K}", "f1", "g"], "exact"), (["HDEL", "{K}", "f1"], "exact"),
    (["HLEN", "{K}"], "exact"), (["HSTRLEN", "{K}", "f1"], "exact"),
    (["HEXISTS", "{K}", "f1"], "exact"), (["HKEYS", "{K}"], "unordered"),
    (["HVALS", "{K}"], "unordered"), (["HGETALL", "{K}"], "pairs"),
    (["HINCRBY", "{K}", "n", "1"], "exact"), (["HINCRBYFLOAT", "{K}", "n", "1.5"], "exact"),
    (["HRANDFIELD", "{K}"], "hrandfield"), (["HRANDFIELD", "{K}", "2"], "hrandfield"),
    (["HRANDFIELD", "{K}", "-3", "WITHVALUES"], "hrandfield"), (["HSCAN", "{K}", "0"], "scan"),
    (["SADD", "{K}", "7"], "exact"), (["SREM", "{K}", "1"], "exact"), (["SCARD", "{K}"], "exact"),
    (["SISMEMBER", "{K}", "1"], "exact"), (["SMISMEMBER", "{K}", "1", "x"], "exact"),
    (["SMEMBERS", "{K}"], "unordered"), (["SRANDMEMBER", "{K}"], "srandmember"),
    (["SRANDMEMBER", "{K}", "2"], "srandmember"), (["SRANDMEMBER", "{K}", "-3"], "srandmember"),
    (["SPOP", "{K}"], "spop"), (["SPOP", "{K}", "2"], "spop"),
    (["SMOVE", "{K}", "{SET2}", "1"], "exact"), (["SMOVE", "{SET2}", "{K}", "2"], "exact"),
    (["SMOVE", "{K}", "{K}", "1"], "exact"),
    (["SINTER", "{K}", "{SET2}"], "unordered"), (["SINTER", "{SET2}", "{K}"], "unordered"),
    (["SINTER", "{MISSING}", "{K}"], "unordered"),
    (["SINTERCARD", "2", "{K}", "{SET2}"], "exact"),
    (["SINTERCARD", "2", "{MISSING}", "{K}"], "exact"),
    (["SINTERSTORE", "{DEST}", "{K}", "{SET2}"], "exact"),
    (["SINTERSTORE", "{K}", "{SET2}"], "exact"),
    (["SUNION", "{SET2}", "{K}"], "unordered"),
    (["SUNIONSTORE", "{DEST}", "{SET2}", "{K}"], "exact"),
    (["SUNIONSTORE", "{K}", "{SET2}"], "exact"),
    (["SDIFF", "{K}", "{SET2}"], "unordered"), (["SDIFF", "{SET2}", "{K}"], "unordered"),
    (["SDIFF", "{MISSING}", "{K}"], "unordered"),
    (["SDIFFSTORE", "{DEST}", "{SET2}", "{K}"], "exact"),
    (["SDIFFSTORE", "{K}", "{SET2}"], "exact"), (["SSCAN", "{K}", "0"], "scan"),
    (["TYPE", "{K}"], "exact"), (["OBJECT", "ENCODING", "{K}"], "encoding"),
    (["EXISTS", "{K}"], "exact"), (["DEL", "{K}"], "exact"), (["UNLINK", "{K}"], "exact"),
    (["EXPIRE", "{K}", "1000"], "exact"), (["PEXPIRE", "{K}", "1000000", "NX"], "exact"),
    (["TTL", "{K}"], "ttl"), (["PERSIST", "{K}"], "exact"),
]


def wrongtype_fixtures():
    return {
        "STR": tl.key_on_shard("wt:str", 0),
        "HASH": tl.key_on_shard("wt:hash", 1),
        "SET": tl.key_on_shard("wt:set", 0),
        "SET2": tl.key_on_shard("wt:set2-", 1),
        "DEST": tl.key_on_shard("wt:dest", 1),
        "MISSING": tl.key_on_shard("wt:missing", 0),
    }


def wrongtype_case(template, how, kname):
    fx = wrongtype_fixtures()
    args = [fx[a[1:-1]] if a.startswith("{") and a[1:-1] != "K" else fx[kname] if a == "{K}"
            else a for a in template]

    def case(run):
        run.resync()
        for a in [["SET", fx["STR"], "12", "EX", "1000"], ["HSET", fx["HASH"], "f1", "1", "n", "5",
                                                          "x", "abc"],
                  ["SADD", fx["SET"], "1", "2", "a"], ["SADD", fx["SET2"], "2", "3", "b"],
                  ["PEXPIRE", fx["SET"], "5000000"]]:
            run.op(a)
        run.op(args, how)
        for key in dict.fromkeys(a for a in args if a in fx.values()):
            t = run.op(["TYPE", key])
            run.op(["TTL", key], "ttl")
            if t == ("+", b"string"):
                run.op(["GET", key])
            elif t == ("+", b"hash"):
                run.op(["HGETALL", key], "pairs")
            elif t == ("+", b"set"):
                run.op(["SMEMBERS", key], "unordered")
            if t != ("+", b"none"):
                run.op(["OBJECT", "ENCODING", key], "encoding")

    case.command = template[0]
    return case


def edges_types():
    e = []
    for template, how in WRONGTYPE_TEMPLATES:
        for kname in ("STR", "HASH", "SET", "MISSING"):
            e.append(wrongtype_case(template, how, kname))
    k, k2 = tl.key_on_shard("enc:", 0), tl.key_on_shard("enc:", 1)
    enc = lambda key: (["OBJECT", "ENCODING", key], "encoding")  # noqa: E731
    # strings: int, embstr (<= 44 bytes), raw, and what each command leaves behind
    for v in ["1", "-1", "0", "9999", "10000", "123456789", LONG_MAX, LONG_MIN,
              "9223372036854775808", "007", " 12", "-0", "+1", "1.5", "", "x" * 44, "x" * 45,
              "12345678901234567890", "1" * 21]:
        e += [(["SET", k, v], "exact"), enc(k)]
    for a in [["SET", k, "12", "EX", "1000"], ["OBJECT", "ENCODING", k], ["SET", k, "ab"],
              ["APPEND", k, "c"], ["OBJECT", "ENCODING", k], ["SET", k, "5"], ["APPEND", k, "5"],
              ["OBJECT", "ENCODING", k], ["INCR", k], ["OBJECT", "ENCODING", k],
              ["SETRANGE", k, "0", "9"], ["OBJECT", "ENCODING", k], ["INCRBYFLOAT", k, "1"],
              ["OBJECT", "ENCODING", k], ["GETSET", k, "77"], ["OBJECT", "ENCODING", k],
              ["SETRANGE", k2, "2", "x"], ["OBJECT", "ENCODING", k2], ["APPEND", "enc:new", "1"],
              ["OBJECT", "ENCODING", "enc:new"], ["INCRBY", "enc:new2", "5"],
              ["OBJECT", "ENCODING", "enc:new2"], ["MSET", k, "1", k2, "x" * 50],
              ["OBJECT", "ENCODING", k], ["OBJECT", "ENCODING", k2], ["SETNX", "enc:n3", "100"],
              ["OBJECT", "ENCODING", "enc:n3"], ["OBJECT", "ENCODING", "enc:none"],
              ["OBJECT", "encoding", k], ["OBJECT", "FOO", k], ["OBJECT", "ENCODING"],
              ["OBJECT", "ENCODING", k, k2], ["OBJECT"], ["DEL", k, k2]]:
        e.append((a, "encoding" if a[0] == "OBJECT" else "exact"))
    # hashes: listpack up to 128 fields of at most 64 bytes; hashtable after, for good
    for a in [["HSET", k, "f", "v"], enc(k)[0], ["HSET", k, "F" * 64, "V" * 64], enc(k)[0],
              ["HSET", k, "g", "V" * 65], enc(k)[0], ["HDEL", k, "g"], enc(k)[0],
              ["HSET", k2] + bulk_fields(128), enc(k2)[0], ["HSET", k2, "one-more", "1"],
              enc(k2)[0], ["HDEL", k2, "one-more", "bulk0"], enc(k2)[0], ["DEL", k, k2],
              ["HSET", k, "F" * 65, "v"], enc(k)[0], ["HINCRBYFLOAT", k2, "f", "1.5"], enc(k2)[0],
              ["HSETNX", "enc:h3", "f", "V" * 65], enc("enc:h3")[0], ["DEL", k, k2, "enc:h3"]]:
        e.append((a, "exact"))
    # sets: intset while every member is an integer and there are at most 512
    ints = [str(i * 3 - 700) for i in range(512)]
    for a in [["SADD", k, "1", "2"], enc(k)[0], ["SADD", k, LONG_MIN, LONG_MAX], enc(k)[0],
              ["SADD", k, "9223372036854775808"], enc(k)[0], ["DEL", k], ["SADD", k, "01"],
              enc(k)[0], ["DEL", k], ["SADD", k, "-0"], enc(k)[0], ["DEL", k], ["SADD", k, "a"],
              enc(k)[0], ["SREM", k, "a"], ["SADD", k, "1"], enc(k)[0],
              ["SADD", k2] + ints, enc(k2)[0], ["SADD", k2, "100000"], enc(k2)[0],
              ["SREM", k2, "100000", "-700"], enc(k2)[0], ["DEL", k2],
              ["SADD", k2, "1", "2", "3"], ["SADD", "enc:s3", "2", "3", "x"],
              ["SINTERSTORE", "enc:d", k2, "enc:s3"], enc("enc:d")[0],
              ["SUNIONSTORE", "enc:d", k2, "enc:s3"], enc("enc:d")[0],
              ["SDIFFSTORE", "enc:d", "enc:s3", k2], enc("enc:d")[0],
              ["SUNIONSTORE", "enc:d", k2], enc("enc:d")[0],
              ["SMOVE", "enc:s3", "enc:m", "2"], enc("enc:m")[0],
              ["SMOVE", "enc:s3", "enc:m2", "x"], enc("enc:m2")[0],
              ["SINTERSTORE", "enc:d", "enc:s3", "enc:s3"], enc("enc:d")[0],
              ["SPOP", k2, "0"], enc(k2)[0]]:
        e.append((a, "exact"))
    for t in TYPES:
        e.append((["SCAN", "0", "TYPE", t], "scan"))
        e.append((["SCAN", "0", "TYPE", t, "COUNT", "1", "MATCH", "enc:*"], "scan"))
    for a in [["EXISTS", k, k2, "enc:s3", "enc:d"], ["EXPIRE", "enc:d", "1000"],
              ["TTL", "enc:d"], ["PERSIST", "enc:d"], ["DEL", k2, "enc:d"], ["DBSIZE"]]:
        e.append((a, "ttl" if a[0] == "TTL" else "exact"))
    return e


def edges_databases(available):
    e = []
    key = "d:same"
    for db in range(16):
        e.append((["SELECT", str(db)], "exact"))
        e.append((["SET", key, f"db{db}"], "exact"))
        if db % 3 == 0:
            e.append((["EXPIRE", key, str(1000 + db)], "exact"))
        if "hashes" in available and db % 2:
            e.append((["HSET", f"d:h{db % 4}", "f", str(db)], "exact"))
        if "sets" in available and db % 4 == 1:
            e.append((["SADD", "d:s", str(db)], "exact"))
        e.append((["DBSIZE"], "exact"))
    e.append((["INFO", "keyspace"], "info_keyspace"))
    for a in [["SELECT", "16"], ["SELECT", "-1"], ["SELECT", "abc"], ["SELECT", "1.5"],
              ["SELECT", "99999999999999999999"], ["SELECT", ""], ["SELECT"], ["SELECT", "1", "2"],
              ["GET", key], ["SELECT", "0"], ["GET", key], ["SWAPDB", "0", "15"], ["GET", key],
              ["TTL", key], ["SWAPDB", "0", "16"], ["SWAPDB", "abc", "0"], ["SWAPDB", "0", "abc"],
              ["SWAPDB", "-1", "0"], ["SWAPDB", "3", "3"], ["SWAPDB", "0"],
              ["SWAPDB", "0", "1", "2"],
              ["SELECT", "15"], ["GET", key], ["SELECT", "2"], ["DBSIZE"], ["SWAPDB", "2", "3"],
              ["GET", key], ["TTL", key], ["SELECT", "5"], ["FLUSHDB"], ["DBSIZE"],
              ["FLUSHDB", "ASYNC"], ["FLUSHDB", "SYNC"], ["FLUSHDB", "FOO"], ["SELECT", "6"],
              ["DBSIZE"], ["KEYS", "*"], ["RANDOMKEY"], ["SELECT", "5"], ["RANDOMKEY"],
              ["SCAN", "0"], ["KEYS", "*"]]:
        how = ("ttl" if a[0] == "TTL" else "randomkey" if a[0] == "RANDOMKEY" else
               "scan" if a[0] == "SCAN" else "unordered" if a[0] == "KEYS" else "exact")
        e.append((a, how))
    e.append((["INFO", "keyspace"], "info_keyspace"))
    e.append((["SELECT", "7"], "exact"))
    e.append((["FLUSHALL"], "exact"))
    e.append((["INFO", "keyspace"], "info_keyspace"))
    e.append((["DBSIZE"], "exact"))
    return e


# -------------------------------------------------------------------------- transactions


def tx_body_op(g):
    """A string, hash or set operation whose reply both servers give exactly (inside EXEC's
    array there is no per-reply comparison)."""
    for _ in range(20):
        x = g.r.random()
        args, how = strings_op(g) if x < 0.5 else hashes_op(g) if x < 0.75 else sets_op(g)
        if how == "exact":
            return args, how
    return ["PING"], "exact"


def gen_transactions(g, available):
    """MULTI ... EXEC blocks (with DISCARD, nesting, queue-time errors) and WATCH / UNWATCH
    between ordinary operations; the generator remembers whether it opened a MULTI."""
    in_multi = getattr(g, "in_multi", False)
    x = g.r.random()
    if in_multi:
        if x < 0.12:
            g.in_multi = False
            return [g.word("EXEC")], "exact"
        if x < 0.14:
            g.in_multi = False
            return [g.word("DISCARD")], "exact"
        if x < 0.15:
            return [g.word("MULTI")], "exact"
        if x < 0.16:
            return [g.word("WATCH"), g.pick(g.all_keys)], "exact"
        if x < 0.17:
            return [g.pick(["NOSUCH", "GETT"]), g.pick(g.all_keys)], "exact"
        return tx_body_op(g)
    if x < 0.14:
        g.in_multi = True
        return [g.word("MULTI")], "exact"
    if x < 0.22:
        return [g.word("WATCH")] + g.some(g.all_keys, 1, 3), "exact"
    if x < 0.25:
        return [g.word("UNWATCH")], "exact"
    if x < 0.26:
        return [g.pick(["EXEC", "DISCARD"])], "exact"
    return tx_body_op(g)


def edges_transactions():
    k, h, s = "t:s", "t:h", "t:set"
    e = [(["EXEC"], "exact"), (["DISCARD"], "exact"), (["UNWATCH"], "exact")]
    block = [["MULTI"], ["SET", k, "1"], ["INCR", k], ["HSET", h, "f", "v"], ["HINCRBY", h, "f", "1"],
             ["SADD", s, "a"], ["SMEMBERS", s], ["GET", k], ["EXEC"]]
    e += [(a, "exact") for a in block]
    for bad in (["NOSUCH", k], ["GET"], ["SET", k], ["CONFIG", "NOSUB"], ["CONFIG", "GET"]):
        e += [(a, "exact") for a in (["MULTI"], ["SET", k, "9"], bad, ["EXEC"], ["GET", k])]
    e += [(a, "exact") for a in (["MULTI"], ["MULTI"], ["WATCH", k], ["GET", k], ["EXEC"])]
    e += [(a, "exact") for a in (["MULTI"], ["EXEC"], ["MULTI"], ["DISCARD"], ["DISCARD"])]
    # WATCH: a change by this connection, a refused change, an element change, UNWATCH
    for change in (["SET", k, "2"], ["SET", k, "3", "NX"], ["HSET", h, "f", "x"],
                   ["HSET", h, "f", "x"], ["SREM", s, "zz"], ["DEL", "t:nokey"],
                   ["EXPIRE", k, "1000"], ["PERSIST", k], ["GET", k]):
        e += [(a, "exact") for a in (["WATCH", k, h, s], change, ["MULTI"], ["GET", k],
                                     ["EXEC"])]
    e += [(a, "exact") for a in (["WATCH", k], ["SET", k, "5"], ["UNWATCH"], ["MULTI"],
                                 ["GET", k], ["EXEC"])]
    e += [(a, "exact") for a in (["WATCH", "t:nokey"], ["FLUSHDB"], ["MULTI"], ["PING"],
                                 ["EXEC"])]
    e += [(a, "exact") for a in (["SET", k, "1"], ["WATCH", k], ["FLUSHDB"], ["MULTI"],
                                 ["PING"], ["EXEC"])]
    e += [(a, "exact") for a in (["MULTI"], ["SELECT", "2"], ["SET", k, "db2"], ["EXEC"],
                                 ["GET", k], ["SELECT", "0"], ["GET", k])]
    return e


# --------------------------------------------------------------------------- families


class Family:
    def __init__(self, name, probes, edges, gen, needs=()):
        self.name = name
        self.probes = probes  # commands whose `unknown command` means: skip the family
        self.edges = edges  # f(available) -> list of operations
        self.gen = gen  # f(Gen, available) -> (args, how)
        self.needs = needs  # families whose commands this one uses


S_KEYS = key_pool("s:", 4, 2)
H_KEYS = key_pool("h:", 3, 2)
SET_KEYS = key_pool("set:", 3, 2)
T_KEYS = key_pool("t:", 4, 2)
D_KEYS = key_pool("d:", 2, 2)


def gen_strings(g, available):
    return strings_op(g) if g.p(0.65) else keyspace_op(g)


def gen_hashes(g, available):
    x = g.r.random()
    return hashes_op(g) if x < 0.86 else keyspace_op(g) if x < 0.96 else strings_op(g)


def gen_sets(g, available):
    x = g.r.random()
    return sets_op(g) if x < 0.86 else keyspace_op(g) if x < 0.96 else strings_op(g)


def gen_types(g, available):
    x = g.r.random()
    if x < 0.06:
        return object_op(g)
    if x < 0.16:
        return keyspace_op(g)
    if x < 0.18:
        return ["TYPE", g.pick(g.all_keys)], "exact"
    if x < 0.45:
        return strings_op(g)
    return hashes_op(g) if x < 0.72 else sets_op(g)


def gen_databases(g, available):
    ops = [f for name, f in (("hashes", hashes_op), ("sets", sets_op)) if name in available]
    return databases_op(g, ops)


FAMILIES = {
    "strings": Family("strings", [["GET", "probe"]], lambda av: edges_strings(), gen_strings),
    "hashes": Family("hashes", [["HLEN", "probe"]], lambda av: edges_hashes(), gen_hashes),
    "sets": Family("sets", [["SCARD", "probe"]], lambda av: edges_sets(), gen_sets),
    "types": Family("types", [["HLEN", "probe"], ["SCARD", "probe"],
                              ["OBJECT", "ENCODING", "probe"]],
                    lambda av: edges_types(), gen_types, needs=("hashes", "sets")),
    "databases": Family("databases", [["SELECT", "1"], ["SWAPDB", "0", "1"]],
                        edges_databases, gen_databases),
    "transactions": Family("transactions", [["UNWATCH"]], lambda av: edges_transactions(),
                           gen_transactions, needs=("hashes", "sets")),
}

POOLS = {
    "strings": (S_KEYS, S_KEYS, S_KEYS),
    "hashes": (["h:str", H_KEYS[0]], H_KEYS + ["h:str"], SET_KEYS[:1]),
    "sets": (["set:str", SET_KEYS[0]], SET_KEYS[:1], SET_KEYS),
    "types": (T_KEYS, T_KEYS, T_KEYS),
    "databases": (D_KEYS, D_KEYS, D_KEYS),
    "transactions": (T_KEYS, T_KEYS, T_KEYS),
}


def make_gen(family, rng, arity):
    s, h, st = POOLS[family]
    return Gen(rng, s, h, st, arity)


# ------------------------------------------------------------------------ running them

# The reference: redis-server without persistence, with 16 databases.
REDIS_ARGS = ["--databases", "16", "--appendonly", "no", "--save", ""]


def arity_table(port, names):
    """{command: arity} from the reference's COMMAND INFO."""
    s = tl.raw_connect(port)
    node = rd.parse_reply(s.call("COMMAND", "INFO", *names))
    s.close()
    out = {}
    for entry in node[1]:
        if entry[0] == "*":
            out[entry[1][0][1].decode().lower()] = entry[1][1][1]
    return out


def probe(port, family):
    """None when ringkv knows the family's commands, else why the family is skipped."""
    s = tl.raw_connect(port)
    try:
        for args in family.probes:
            reply = rd.parse_reply(s.call(*args))
            text = reply[1].decode() if rd.is_error(reply) else ""
            if text.startswith("ERR unknown command") or "DB index is out of range" in text:
                return f"{tl.fmt_cmd(args)} -> -{text}"
        return None
    finally:
        s.close()


class Context:
    """What every run against one pair of servers shares: their ports and names, the
    reference's command arities, and the mismatch policy."""

    def __init__(self, ref_port, sut_port, names, out=print, max_mismatches=5, strict=False,
                 skip_cmds=()):
        self.ref_port, self.sut_port, self.names, self.out = ref_port, sut_port, names, out
        self.skip_cmds = {c.upper() for c in skip_cmds}  # operations left out (known bugs)
        self.max_mismatches = max_mismatches
        self.strict = strict
        self.settle_s = rd.SETTLE_S
        self.arity = arity_table(ref_port, ALL_COMMANDS)

    def run(self, family, seed, proto, ops, available, repro="", wrap_sut=None):
        """One run: the edge cases when seed is None, else ops random operations.  wrap_sut
        (self-check) may replace the server-under-test's Side.  Returns the finished Run."""
        run = rd.Run(self.ref_port, self.sut_port, family.name,
                     seed if seed is not None else "edge", proto, names=self.names, repro=repro,
                     max_mismatches=self.max_mismatches, strict=self.strict, out=self.out,
                     settle_s=self.settle_s)
        if wrap_sut is not None:
            run.sut = wrap_sut(run.sut)
        try:
            run.start()
            if seed is None:
                run.run_ops(self._without_skipped(family.edges(available)))
            else:
                rng = random.Random(f"{family.name}/{seed}/{proto}")
                run.run_ops(self._without_skipped(random_ops(
                    make_gen(family.name, rng, self.arity), family, available, ops)))
        except rd.Diverged:
            pass
        finally:
            run.close()
        return run


    def _without_skipped(self, ops):
        for item in ops:
            cmd = getattr(item, "command", None) if callable(item) else item[0][0]
            if str(cmd).upper() not in self.skip_cmds:
                yield item


def random_ops(g, family, available, n):
    """n operations of family; 2 % have a wrong argument count, some a lowercase name."""
    for _ in range(n):
        args, how = family.gen(g, available)
        if g.p(0.02):
            bad = g.mangle_arity(args)
            if bad is not None:
                args, how = bad, "exact"
        if g.p(0.03):
            args = [str(args[0]).lower()] + list(args[1:])
        yield args, how


ALL_COMMANDS = sorted({
    "GET", "SET", "SETNX", "SETEX", "PSETEX", "GETSET", "GETDEL", "GETEX", "MGET", "MSET",
    "MSETNX", "APPEND", "STRLEN", "INCR", "DECR", "INCRBY", "DECRBY", "INCRBYFLOAT", "GETRANGE",
    "SETRANGE", "DEL", "UNLINK", "EXISTS", "TOUCH", "TYPE", "EXPIRE", "PEXPIRE", "EXPIREAT",
    "PEXPIREAT", "TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME", "PERSIST", "DBSIZE", "KEYS", "SCAN",
    "RANDOMKEY", "INFO", "FLUSHDB", "FLUSHALL", "HSET", "HSETNX", "HMSET", "HGET", "HMGET", "HDEL",
    "HLEN", "HSTRLEN", "HEXISTS", "HKEYS", "HVALS", "HGETALL", "HINCRBY", "HINCRBYFLOAT",
    "HRANDFIELD", "HSCAN", "SADD", "SREM", "SCARD", "SISMEMBER", "SMISMEMBER", "SMEMBERS",
    "SRANDMEMBER", "SPOP", "SMOVE", "SINTER", "SINTERCARD", "SINTERSTORE", "SUNION",
    "SUNIONSTORE", "SDIFF", "SDIFFSTORE", "SSCAN", "OBJECT", "SELECT", "SWAPDB", "MULTI", "EXEC",
    "DISCARD", "WATCH", "UNWATCH",
})


