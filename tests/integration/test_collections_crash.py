#!/usr/bin/python3
"""test_collections_crash: kill -9 loses no acknowledged change to a hash or a set and applies
no command by halves, under storage.durability fsync (4 rounds) and write (2 rounds).

Each round, THREADS connections run random pipelined batches of HSET (up to 20 fields), HDEL,
HINCRBY, SADD (up to 20 members), SREM, SPOP (with and without a count), SMOVE and
SINTERSTORE (their keys share a {hash tag}, so one shard), DEL and EXPIRE over a few keys of
their own in databases 0, 7 and 15 on both shards, SELECTing between them, plus their own
fields and members of one shared hash and one shared set per database and shard.  Each
connection keeps a model of its keys from every reply it read (a reply that differs from the
model is a failure too).  At a random moment the server is killed; on restart each
connection's keys must equal its model with some of its in-flight commands (those sent whose
reply did not come) applied whole: any set of them that, on each key, is a prefix of the ones
on that key (a later command on a key never survives without the earlier ones).  HLEN / SCARD
must equal the elements read back, and DBSIZE, INFO keyspace keys= / expires= and SCAN of each
database must list exactly the keys that exist.  A final SIGTERM restart keeps exactly the
models.  RINGKV_CRASH_SEED picks the random sequence (printed)."""

import copy
import os
import random
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringkv_testlib as tl  # noqa: E402
from ringkv_testlib import OK  # noqa: E402

THREADS = tl.scaled(4, 2)
DBS = (0, 7, 15)
BATCH_MAX = 6  # commands with a durable effect per pipelined batch (2^6 in-flight subsets)
RUN_S = (0.4, 2.0 * float(os.environ.get("RINGKV_TEST_SCALE", "1")) + 0.2)
FIELDS = [f"f{i}" for i in range(40)]
COUNTERS = [f"n{i}" for i in range(4)]
MEMBERS = [f"m{i}" for i in range(40)]
HASH_KEYS = ("h0", "h1")
SET_KEYS = ("s0", "s1", "s2")


def tag_for(prefix, shard):
    i = 0
    while tl.shard_of(f"{{{prefix}{i}}}") != shard:
        i += 1
    return f"{{{prefix}{i}}}"


SHARED_TAGS = [tag_for("shared", s) for s in range(tl.NSHARDS)]
SHARED_KEYS = [f"{tag}:{k}" for tag in SHARED_TAGS for k in ("hash", "set")]


class Conn:
    """One connection's keys and model: priv[(db, key)] = [type, value, has_ttl] (value: a
    dict of fields or a set of members; a missing key has no entry); shared[(db, key)] = its
    own fields (dict) or members (set) of a shared key."""

    def __init__(self, t):
        self.t = t
        self.own = f"t{t}."  # its fields and members of the shared keys
        tags = [tag_for(f"c{t}-", s) for s in range(tl.NSHARDS)]
        self.hash_keys = [f"{tag}:{k}" for tag in tags for k in HASH_KEYS]
        self.set_groups = [[f"{tag}:{k}" for k in SET_KEYS] for tag in tags]
        self.shared_hashes = [f"{tag}:hash" for tag in SHARED_TAGS]
        self.shared_sets = [f"{tag}:set" for tag in SHARED_TAGS]
        self.priv = {}
        self.shared = {}
        self.seq = 0
        self.db = 0  # the connection's database (SELECT)
        self.batch = []  # the batch being sent: [(db, args, keys)], keys = {(db, key)}
        self.acked = 0  # replies read of the batch
        self.failed = False
        self.stats = dict(acked=0, batches=0)

    def private_keys(self):
        return self.hash_keys + [k for g in self.set_groups for k in g]

    # ------------------------------------------------------------ generation

    def gen_batch(self, rng):
        """A batch: maybe a SELECT, then 1..BATCH_MAX commands of the connection's database.
        A key SPOPped is not touched again in the batch (its in-flight outcome is read back)."""
        out = []
        if rng.random() < 0.35:
            self.db = rng.choice(DBS)
            out.append((self.db, ["SELECT", self.db], set()))
        frozen = set()
        while len(out) < BATCH_MAX + (1 if out and out[0][1][0] == "SELECT" else 0):
            args = self.gen_command(rng)
            keys = {(self.db, k) for k in command_keys(args)}
            if keys & frozen:
                continue
            if args[0] == "SPOP":
                frozen |= keys
            out.append((self.db, args, keys))
            if rng.random() < 0.25:
                break
        return out

    def gen_command(self, rng):
        self.seq += 1
        val = f"{self.t}.{self.seq}"
        r = rng.random()
        if r < 0.17:
            k = rng.choice(self.hash_keys)
            fields = rng.sample(FIELDS, rng.randint(1, 20))
            return ["HSET", k] + [x for i, f in enumerate(fields) for x in (f, f"{val}.{i}")]
        if r < 0.25:
            k = rng.choice(self.hash_keys)
            return ["HDEL", k] + rng.sample(FIELDS + COUNTERS, rng.randint(1, 5))
        if r < 0.33:
            k = rng.choice(self.hash_keys)
            return ["HINCRBY", k, rng.choice(COUNTERS), rng.randint(-50, 100)]
        group = rng.choice(self.set_groups)
        if r < 0.50:
            return ["SADD", rng.choice(group)] + rng.sample(MEMBERS, rng.randint(1, 20))
        if r < 0.58:
            return ["SREM", rng.choice(group)] + rng.sample(MEMBERS, rng.randint(1, 5))
        if r < 0.63:
            return ["SPOP", rng.choice(group)] + ([] if rng.random() < 0.4 else [rng.randint(1, 5)])
        if r < 0.71:
            return ["SMOVE", rng.choice(group), rng.choice(group), rng.choice(MEMBERS)]
        if r < 0.76:
            return ["SINTERSTORE", rng.choice(group)] + rng.sample(group, rng.randint(1, 3))
        if r < 0.80:
            return ["DEL", rng.choice(self.private_keys())]
        if r < 0.84:
            return ["EXPIRE", rng.choice(self.private_keys()), rng.randint(1000, 2000)]
        own = self.own
        if r < 0.89:
            fields = rng.sample(FIELDS, rng.randint(1, 10))
            return ["HSET", rng.choice(self.shared_hashes)] + [
                x for f in fields for x in (own + f, val)]
        if r < 0.91:
            k = rng.choice(self.shared_hashes)
            return ["HDEL", k] + [own + f for f in rng.sample(FIELDS, 3)]
        if r < 0.93:
            k = rng.choice(self.shared_hashes)
            return ["HINCRBY", k, own + rng.choice(COUNTERS), rng.randint(1, 9)]
        if r < 0.98:
            return ["SADD", rng.choice(self.shared_sets)] + [
                own + m for m in rng.sample(MEMBERS, rng.randint(1, 10))]
        return ["SREM", rng.choice(self.shared_sets)] + [own + m for m in rng.sample(MEMBERS, 3)]

    # ----------------------------------------------------------------- model

    def is_shared(self, key):
        return key in self.shared_hashes or key in self.shared_sets


def command_keys(args):
    name = args[0]
    if name in ("SELECT",):
        return []
    if name == "SMOVE":
        return [args[1], args[2]]
    if name == "SINTERSTORE":
        return args[1:]
    return [args[1]]


NOT_READ = object()  # apply's actual when no state was read back (an acknowledged command)


def apply(th, state, cmd, reply=None, actual=NOT_READ):
    """Applies cmd to state (th's priv and shared dicts, changed in place) and returns the
    reply it should have.  SPOP's outcome is random: reply (acknowledged) or actual (the
    key's state read back after the crash, for an in-flight SPOP; None: the key is gone)
    decides it; returns Ellipsis when neither can explain it."""
    priv, shared = state
    db, args, _ = cmd
    name, key = args[0], args[1] if len(args) > 1 else None
    if name == "SELECT":
        return OK
    if th.is_shared(key):
        portion = shared.setdefault((db, key), {} if key in th.shared_hashes else set())
        if name == "HSET":
            pairs = dict(zip(args[2::2], args[3::2]))
            new = sum(f not in portion for f in pairs)
            portion.update(pairs)
            return new
        if name in ("HDEL", "SREM"):
            n = 0
            for x in set(args[2:]):
                if x in portion:
                    n += 1
                    portion.remove(x) if isinstance(portion, set) else portion.pop(x)
            return n
        if name == "HINCRBY":
            v = int(portion.get(args[2], "0")) + args[3]
            portion[args[2]] = str(v)
            return v
        if name == "SADD":
            n = len(set(args[2:]) - portion)
            portion.update(args[2:])
            return n
        raise AssertionError(name)

    def get(k, typ):
        o = priv.get((db, k))
        assert o is None or o[0] == typ, (k, o, typ)
        return o

    def make(k, typ):
        o = priv.get((db, k))
        if o is None:
            o = priv[(db, k)] = [typ, {} if typ == "hash" else set(), False]
        return o

    def drop_if_empty(k):
        if not priv[(db, k)][1]:
            del priv[(db, k)]

    if name == "HSET":
        o = make(key, "hash")
        pairs = dict(zip(args[2::2], args[3::2]))
        new = sum(f not in o[1] for f in pairs)
        o[1].update(pairs)
        return new
    if name == "HDEL":
        o = get(key, "hash")
        if o is None:
            return 0
        n = sum(o[1].pop(f, None) is not None for f in set(args[2:]))
        drop_if_empty(key)
        return n
    if name == "HINCRBY":
        o = make(key, "hash")
        v = int(o[1].get(args[2], "0")) + args[3]
        o[1][args[2]] = str(v)
        return v
    if name == "SADD":
        o = make(key, "set")
        n = len(set(args[2:]) - o[1])
        o[1].update(args[2:])
        return n
    if name == "SREM":
        o = get(key, "set")
        if o is None:
            return 0
        n = len(o[1] & set(args[2:]))
        o[1] -= set(args[2:])
        drop_if_empty(key)
        return n
    if name == "SPOP":
        o = get(key, "set")
        count = args[2] if len(args) > 2 else None
        members = o[1] if o else set()
        want = min(1 if count is None else count, len(members))
        if reply is not None and not isinstance(reply, (bytes, list)):
            return Ellipsis  # an error, say
        if reply is not None or actual is NOT_READ:
            popped = [] if reply is None else [reply] if isinstance(reply, bytes) else reply
            popped = [p.decode() if isinstance(p, bytes) else p for p in popped]
        else:  # in flight: what the key lost, as read back (all of it if the key is gone)
            left = actual[1] if actual is not None and actual[0] == "set" else set()
            popped = list(members - left)
        if len(set(popped)) != len(popped) or not set(popped) <= members or len(popped) != want:
            return Ellipsis
        if o:
            o[1] -= set(popped)
            drop_if_empty(key)
        if count is not None:
            return [p.encode() for p in popped]
        return popped[0].encode() if popped else None
    if name == "SMOVE":
        src, dst, m = args[1], args[2], args[3]
        so = get(src, "set")
        if so is None or m not in so[1]:
            return 0
        if src == dst:
            return 1
        so[1].discard(m)
        drop_if_empty(src)
        make(dst, "set")[1].add(m)
        return 1
    if name == "SINTERSTORE":
        dst, srcs = args[1], args[2:]
        sets = [get(k, "set") for k in srcs]
        inter = set.intersection(*[s[1] for s in sets]) if all(sets) else set()
        priv.pop((db, dst), None)
        if inter:
            priv[(db, dst)] = ["set", set(inter), False]
        return len(inter)
    if name == "DEL":
        return 1 if priv.pop((db, key), None) is not None else 0
    if name == "EXPIRE":
        o = priv.get((db, key))
        if o is None:
            return 0
        o[2] = True
        return 1
    raise AssertionError(name)


def matches(expected, reply):
    if expected is Ellipsis:
        return False
    if isinstance(expected, list) and isinstance(reply, list):  # SPOP with a count: any order
        return sorted(expected) == sorted(reply)
    return tl.match(reply, expected)


# ------------------------------------------------------------------ workers


def worker(th, port, rng, killed):
    """Runs batches until the connection breaks (the kill)."""
    try:
        c = tl.Client(port)
    except Exception as e:
        if not killed.is_set():
            tl.CHECKER.fail(f"connection {th.t}: cannot connect: {e!r}")
        return
    th.db = 0
    th.batch, th.acked = [], 0
    try:
        while not th.failed:
            th.batch = th.gen_batch(rng)
            th.acked = 0
            c.conn.send_packed_command(c.conn.pack_commands([a for _, a, _ in th.batch]))
            for cmd in th.batch:
                reply = c.read()
                want = apply(th, (th.priv, th.shared), cmd, reply=reply)
                th.acked += 1
                th.stats["acked"] += 1
                if not matches(want, reply):
                    exp = "a reply the model explains" if want is Ellipsis else tl.fmt(want)
                    tl.CHECKER.fail(f"connection {th.t}, db {cmd[0]}: {tl.fmt_cmd(cmd[1])}: "
                                    f"expected {exp}, got {tl.fmt(reply)} (model "
                                    f"left behind: the connection stops)")
                    th.failed = True
                    break
            th.stats["batches"] += 1
    except Exception as e:
        if not killed.is_set():
            tl.CHECKER.fail(f"connection {th.t}: exception before the kill: {e!r}")
            th.failed = True
    finally:
        try:
            c.close()
        except Exception:
            pass


# ----------------------------------------------------------------- read back


def read_back(srv, threads):
    """Every key of every connection as the server has it: {(db, key): (type, value, ttl)}
    with value a dict or a set; missing keys are absent.  Checks HLEN / SCARD against the
    elements, and DBSIZE, INFO keyspace and SCAN of each database against the keys found."""
    c = srv.client()
    universe = {}
    for db in DBS:
        keys = set(SHARED_KEYS)
        for th in threads:
            keys.update(th.private_keys())
        universe[db] = sorted(keys)
    actual = {}
    for db in DBS:
        keys = universe[db]
        got = c.pipeline([["SELECT", db]] + [["TYPE", k] for k in keys]
                         + [["TTL", k] for k in keys])
        types, ttls = got[1:1 + len(keys)], got[1 + len(keys):]
        cmds = []
        for k, t in zip(keys, types):
            if t == b"hash":
                cmds += [["HGETALL", k], ["HLEN", k]]
            elif t == b"set":
                cmds += [["SMEMBERS", k], ["SCARD", k]]
            elif t != b"none":
                tl.CHECKER.fail(f"db {db}: TYPE {k}: {tl.fmt(t)}, never written as that")
        got = iter(c.pipeline(cmds))
        for k, t, ttl in zip(keys, types, ttls):
            if t not in (b"hash", b"set"):
                tl.check(ttl == -2,
                         f"db {db}: TTL {k}: expected -2 for a missing key, got {tl.fmt(ttl)}")
                continue
            elems, n = next(got), next(got)
            if t == b"hash":
                value = {elems[i].decode(): elems[i + 1].decode() for i in range(0, len(elems), 2)}
            else:
                value = {m.decode() for m in elems}
            tl.check(n == len(value) and len(value) > 0,
                     f"db {db}: {'HLEN' if t == b'hash' else 'SCARD'} {k}: {tl.fmt(n)}, but "
                     f"{len(value)} elements read back")
            tl.check(ttl == -1 or (type(ttl) is int and 0 < ttl <= 2000),
                     f"db {db}: TTL {k}: {tl.fmt(ttl)}, expected -1 or 1..2000")
            actual[(db, k)] = (t.decode(), value, ttl != -1)
        # the counts and walks list exactly the keys found
        present = sorted(k for k in keys if (db, k) in actual)
        expires = sum(actual[(db, k)][2] for k in present)
        tl.check(c.call("DBSIZE") == len(present),
                 f"db {db}: DBSIZE {tl.fmt(c.call('DBSIZE'))}, but {len(present)} keys exist")
        ks = tl.info_keyspace(c).get(db, (0, 0))
        tl.check(ks == (len(present), expires),
                 f"db {db}: INFO keyspace keys={ks[0]},expires={ks[1]}, expected "
                 f"keys={len(present)},expires={expires}")
        scanned, cursor = set(), b"0"
        while True:
            cursor, batch = c.call("SCAN", cursor, "COUNT", 50)
            scanned.update(k.decode() for k in batch)
            if cursor == b"0":
                break
        tl.check(scanned == set(present),
                 f"db {db}: SCAN lists {sorted(scanned - set(present))[:5]} that do not exist "
                 f"and misses {sorted(set(present) - scanned)[:5]}")
    c.close()
    return actual


def view(th, actual):
    """th's part of the read-back state, in the model's shape."""
    priv = {}
    for db in DBS:
        for k in th.private_keys():
            o = actual.get((db, k))
            if o:
                priv[(db, k)] = [o[0], copy.deepcopy(o[1]), o[2]]
    shared = {}
    for db in DBS:
        for k in th.shared_hashes + th.shared_sets:
            o = actual.get((db, k))
            mine = ({f: v for f, v in o[1].items() if f.startswith(th.own)} if o and o[0] == "hash"
                    else {m for m in o[1] if m.startswith(th.own)} if o else None)
            if mine:
                shared[(db, k)] = mine
    return priv, shared


def normalized(state):
    priv, shared = state
    return priv, {k: v for k, v in shared.items() if v}


def candidates(th, actual):
    """The states th's keys may be in: the model with each admissible subset of the in-flight
    commands applied (yields (applied commands, state))."""
    inflight = [cmd for cmd in th.batch[th.acked:] if cmd[1][0] != "SELECT"]
    for mask in range(1 << len(inflight)):
        chosen = [i for i in range(len(inflight)) if mask >> i & 1]
        # on each key, the applied commands are a prefix of the in-flight ones
        if any(not mask >> j & 1 and inflight[j][2] & inflight[i][2]
               for i in chosen for j in range(i)):
            continue
        state = (copy.deepcopy(th.priv), copy.deepcopy(th.shared))
        ok = True
        for i in chosen:
            cmd = inflight[i]
            key = (cmd[0], cmd[1][1])
            if apply(th, state, cmd, actual=actual.get(key)) is Ellipsis:
                ok = False
                break
        if ok:
            yield [inflight[i] for i in chosen], state


def diff(model, got):
    """A short account of how got differs from model."""
    out = []
    mp, ms = model
    gp, gs = got
    for k in sorted(set(mp) | set(gp)):
        a, b = mp.get(k), gp.get(k)
        if a == b:
            continue
        if a is None or b is None:
            out.append(f"db {k[0]} {k[1]}: expected {'absent' if a is None else a[0]}, found "
                       f"{'absent' if b is None else b[0]} ({len((a or b)[1])} elements: "
                       f"{sorted((a or b)[1])[:8]})")
            continue
        if a[0] != b[0] or a[2] != b[2]:
            out.append(f"db {k[0]} {k[1]}: expected {a[0]} ttl={a[2]}, found {b[0]} ttl={b[2]}")
        out.append(elem_diff(k, a[1], b[1]))
    for k in sorted(set(ms) | set(gs)):
        if ms.get(k) != gs.get(k):
            out.append(elem_diff(k, ms.get(k) or set(), gs.get(k) or set()))
    return [x for x in out if x]


def elem_diff(k, a, b):
    if a == b:
        return ""
    if isinstance(a, dict) or isinstance(b, dict):
        a, b = a or {}, b or {}
        lost = sorted(f for f in a if f not in b)
        extra = sorted(f for f in b if f not in a)
        changed = sorted(f for f in a if f in b and a[f] != b[f])
        return (f"db {k[0]} {k[1]}: fields lost {lost[:6]}, extra {extra[:6]}, changed "
                f"{[(f, a[f], b[f]) for f in changed[:4]]}")
    return f"db {k[0]} {k[1]}: members lost {sorted(a - b)[:8]}, extra {sorted(b - a)[:8]}"


def check_threads(threads, actual, label):
    """Matches each connection's keys against its candidates; the match becomes its model."""
    applied_total = inflight_total = 0
    for th in threads:
        got = view(th, actual)
        inflight = [cmd for cmd in th.batch[th.acked:] if cmd[1][0] != "SELECT"]
        inflight_total += len(inflight)
        found = None
        for applied, state in candidates(th, actual):
            if normalized(state) == got:
                found = applied, state
                break
        if found is None:
            lines = diff(normalized((th.priv, th.shared)), got)
            tl.CHECKER.fail(
                f"{label}: connection {th.t}: its keys match no outcome of its acknowledged "
                f"commands plus a prefix-closed subset of its {len(inflight)} in-flight ones "
                f"({'; '.join(tl.fmt_cmd(a) for _, a, _ in inflight)[:600]}); against the "
                f"acknowledged model alone: " + " | ".join(lines[:8]))
            th.priv, th.shared = got  # go on from what is there
        else:
            applied_total += len(found[0])
            th.priv, th.shared = found[1]
        th.batch, th.acked = [], 0
    return applied_total, inflight_total


def crash_rounds(durability, rounds, rng):
    threads = [Conn(t) for t in range(THREADS)]
    with tl.Server(durability=durability, databases=16) as srv:
        for rnd in range(rounds):
            killed = threading.Event()
            wrs = [threading.Thread(target=worker, args=(th, srv.port, random.Random(rng.random()),
                                                         killed)) for th in threads]
            for w in wrs:
                w.start()
            time.sleep(rng.uniform(*RUN_S))
            killed.set()
            srv.kill9()
            for w in wrs:
                w.join(30)
                tl.check(not w.is_alive(),
                         f"{durability} round {rnd}: a connection hangs after the kill")
            srv.start()
            actual = read_back(srv, threads)
            applied, inflight = check_threads(threads, actual, f"{durability} round {rnd}")
            print(f"  {durability} round {rnd}: {sum(th.stats['acked'] for th in threads)} replies "
                  f"acknowledged so far, {inflight} commands in flight at the kill, {applied} of "
                  f"them applied; {len(actual)} keys", flush=True)
        # a clean restart keeps exactly the models
        tl.check(srv.stop() == 0, f"{durability}: exit status after SIGTERM is not 0")
        srv.start()
        actual = read_back(srv, threads)
        check_threads(threads, actual, f"{durability} after SIGTERM")


def test_kill9_under_fsync():
    crash_rounds("fsync", 4, random.Random(SEED))


def test_kill9_under_write():
    crash_rounds("write", 2, random.Random(SEED + 1))


SEED = int(os.environ.get("RINGKV_CRASH_SEED") or random.randrange(1 << 30))

if __name__ == "__main__":
    print(f"RINGKV_CRASH_SEED={SEED}")
    tl.main(globals(), shared_server=False)
