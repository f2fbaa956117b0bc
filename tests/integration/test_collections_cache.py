#!/usr/bin/python3
"""test_collections_cache: hashes and sets far larger than the value cache.  A server with
storage.cache_size=1mb (the smallest) holds thousands of small hashes and sets, so every
command evicts: pipelines of random HGET, HMGET, HSET, HINCRBY, HDEL, HGETALL, HLEN, SADD,
SREM, SISMEMBER, SMEMBERS, SCARD, DEL and EXPIRE over them are checked reply by reply
against an in-memory model, and every key once more at the end (and after a restart).  It
found a use after free: an element's kentry evicted while its key's was being released.
Redis runs it too (RINGKV_TEST_TARGET=redis: no cache setting, same model).

test_spop_of_large_sets_against_a_model: SPOP of sets of thousands of members, mixed with SREM,
SADD, SMOVE and SCARD under the same cache, checked against a model (a popped member is one the
set holds, never twice), and the sets compared whole after a restart.

test_pipeline_of_big_hsets: one connection pipelines hundreds of HSETs of 1000 fields
without reading; the records waiting for the index at once (INFO storage
pending_writes_peak) stay near the proactor's bound on unfinished arguments, not the
whole pipeline (300 k records, 0.5 GB, before that bound), and every reply and field
arrives."""

import os
import random
import sys
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringkv_testlib as tl  # noqa: E402

KEYS = tl.scaled(3000, 300)
FIELDS = 12
ROUNDS = tl.scaled(60, 10)
PIPE = 200
SEED = int(os.environ.get("RINGKV_TEST_SEED", "7"))


def hkey(i):
    return f"h:{i}"


def skey(i):
    return f"s:{i}"


class Model:
    def __init__(self):
        self.h = {}  # key -> {field: value}
        self.s = {}  # key -> set of members

    def fill(self, c):
        cmds = []
        for i in range(KEYS):
            fields = {f"f{j}": f"v{i}-{j}" for j in range(FIELDS)}
            self.h[hkey(i)] = dict(fields)
            cmds.append(["HSET", hkey(i)] + [x for kv in fields.items() for x in kv])
            members = {f"m{j}" for j in range(FIELDS)}
            self.s[skey(i)] = set(members)
            cmds.append(["SADD", skey(i)] + sorted(members))
        for start in range(0, len(cmds), PIPE):
            got = c.pipeline(cmds[start:start + PIPE])
            tl.check(all(g == FIELDS for g in got), f"fill: replies {got[:4]}...")

    def op(self, rnd):
        """A random command and the reply the model expects (a callable for loose ones)."""
        i = rnd.randrange(KEYS)
        f = f"f{rnd.randrange(FIELDS + 4)}"
        m = f"m{rnd.randrange(FIELDS + 4)}"
        h, s = self.h.get(hkey(i)), self.s.get(skey(i))
        k = rnd.randrange(13)
        if k == 0:
            return ["HGET", hkey(i), f], h[f].encode() if h is not None and f in h else None
        if k == 1:
            fs = [f, f"f{rnd.randrange(FIELDS + 4)}"]
            return ["HMGET", hkey(i)] + fs, [h[x].encode() if h is not None and x in h else None
                                             for x in fs]
        if k == 2:
            v = f"w{rnd.randrange(1000)}"
            new = 0 if h is not None and f in h else 1
            self.h.setdefault(hkey(i), {})[f] = v
            return ["HSET", hkey(i), f, v], new
        if k == 3:
            cur = (h or {}).get(f, "0")
            if not cur.lstrip("-").isdigit():
                return ["HINCRBY", hkey(i), f, 1], tl.E("ERR hash value is not an integer")
            self.h.setdefault(hkey(i), {})[f] = str(int(cur) + 1)
            return ["HINCRBY", hkey(i), f, 1], int(cur) + 1
        if k == 4:
            gone = 1 if h is not None and f in h else 0
            if gone:
                del h[f]
                if not h:
                    del self.h[hkey(i)]
            return ["HDEL", hkey(i), f], gone
        if k == 5:
            want = sorted((h or {}).items())
            return ["HGETALL", hkey(i)], tl.Matcher(
                lambda a, want=want: type(a) is list and sorted(
                    zip([x.decode() for x in a[::2]], [x.decode() for x in a[1::2]])) == want,
                f"the pairs {want}")
        if k == 6:
            return ["HLEN", hkey(i)], len(h or {})
        if k == 7:
            new = 0 if s is not None and m in s else 1
            self.s.setdefault(skey(i), set()).add(m)
            return ["SADD", skey(i), m], new
        if k == 8:
            gone = 1 if s is not None and m in s else 0
            if gone:
                s.discard(m)
                if not s:
                    del self.s[skey(i)]
            return ["SREM", skey(i), m], gone
        if k == 9:
            return ["SISMEMBER", skey(i), m], 1 if s is not None and m in s else 0
        if k == 10:
            want = sorted(s or ())
            return ["SMEMBERS", skey(i)], tl.Matcher(
                lambda a, want=want: type(a) is list and sorted(x.decode() for x in a) == want,
                f"the members {want}")
        if k == 11:
            return ["SCARD", skey(i)], len(s or ())
        # DEL of one of the two, refilled at once so the keyspace stays full
        key, fields = (hkey(i), h) if rnd.randrange(2) else (skey(i), s)
        existed = 1 if fields is not None else 0
        if key.startswith("h:"):
            self.h[key] = {"f0": "fresh"}
        else:
            self.s[key] = {"m0"}
        return ["DEL", key], existed

    def refill_cmd(self, cmd):
        """The command that recreates what op() assumed after a DEL (the model has it)."""
        key = cmd[1]
        if key.startswith("h:"):
            return ["HSET", key, "f0", "fresh"]
        return ["SADD", key, "m0"]

    def check_all(self, c, what):
        bad = 0
        for start in range(0, KEYS, PIPE):
            idx = range(start, min(start + PIPE, KEYS))
            got = c.pipeline([["HGETALL", hkey(i)] for i in idx] +
                             [["SMEMBERS", skey(i)] for i in idx])
            for n, i in enumerate(idx):
                g = got[n]
                pairs = dict(zip([x.decode() for x in g[::2]], [x.decode() for x in g[1::2]]))
                if pairs != self.h.get(hkey(i), {}):
                    bad += 1
                    if bad <= 3:
                        tl.check(False, f"{what}: HGETALL {hkey(i)} = {pairs}, model"
                                        f" {self.h.get(hkey(i), {})}")
                members = {x.decode() for x in got[len(idx) + n]}
                if members != self.s.get(skey(i), set()):
                    bad += 1
                    if bad <= 3:
                        tl.check(False, f"{what}: SMEMBERS {skey(i)} = {members}, model"
                                        f" {self.s.get(skey(i), set())}")
        tl.check(bad == 0, f"{what}: {bad} keys differ from the model")


def test_random_pipelines_under_eviction():
    srv = tl.Server(durability="write", sets={"storage.cache_size": "1mb"})
    srv.start()
    try:
        c = srv.client()
        model = Model()
        model.fill(c)
        rnd = random.Random(SEED)
        for r in range(ROUNDS):
            cmds, wants = [], []
            for _ in range(PIPE):
                cmd, want = model.op(rnd)
                cmds.append(cmd)
                wants.append(want)
                if cmd[0] == "DEL":
                    cmds.append(model.refill_cmd(cmd))
                    wants.append(1)
            tl.expect_pipeline(c, cmds, wants)
            if not srv.alive():
                tl.check(False, f"the server died in round {r}")
                return
        model.check_all(c, "after the rounds")
        c.close()
        if not srv.is_redis:
            srv.stop()
            srv.start()
            c = srv.client()
            model.check_all(c, "after a restart")
            c.close()
    finally:
        srv.stop()
        srv.cleanup()


SPOP_SETS = 3
SPOP_MEMBERS = tl.scaled(4000, 1000)


def test_spop_of_large_sets_against_a_model():
    """SPOP of sets of thousands of members mixed with SREM, SADD, SMOVE between the sets and
    SCARD, under the 1 MB cache: every popped member was in the model's set (never twice,
    never after SREM), SCARD matches, and the sets end as the model after a restart."""
    srv = tl.Server(durability="write", threads=1, sets={"storage.cache_size": "1mb"})
    srv.start()
    try:
        c = srv.client()
        rnd = random.Random(SEED)
        sets = {f"pop:{i}": set() for i in range(SPOP_SETS)}
        for name, members in sets.items():
            for start in range(0, SPOP_MEMBERS, 500):
                batch = [f"{name}:m{j}" for j in range(start, min(start + 500, SPOP_MEMBERS))]
                c.call("SADD", name, *batch)
                members.update(batch)
        bad, pops, fresh = [], 0, 0
        while any(sets.values()) and not bad:
            cmds = []
            for _ in range(200):
                name = rnd.choice(list(sets))
                r = rnd.random()
                if r < 0.75:
                    cmds.append(["SPOP", name])
                elif r < 0.85 and sets[name]:
                    cmds.append(["SREM", name, rnd.choice(sorted(sets[name]))])
                elif r < 0.9:
                    fresh += 1
                    cmds.append(["SADD", name, f"{name}:new{fresh}"])
                elif r < 0.95 and sets[name]:
                    cmds.append(["SMOVE", name, rnd.choice(list(sets)),
                                 rnd.choice(sorted(sets[name]))])
                else:
                    cmds.append(["SCARD", name])
            for cmd, got in zip(cmds, c.pipeline(cmds)):
                op, name = cmd[0], cmd[1]
                if op == "SPOP":
                    if got is None:
                        if sets[name]:
                            bad.append(f"SPOP {name}: nil with {len(sets[name])} members")
                    elif got.decode() not in sets[name]:
                        bad.append(f"SPOP {name}: {got!r} is not a member")
                    else:
                        sets[name].discard(got.decode())
                        pops += 1
                elif op == "SREM":  # (a SPOP before it in the pipeline may have taken it)
                    if got != int(cmd[2] in sets[name]):
                        bad.append(f"SREM {name} {cmd[2]}: {got!r}")
                    sets[name].discard(cmd[2])
                elif op == "SADD":
                    sets[name].add(cmd[2])
                elif op == "SMOVE":
                    there = cmd[3] in sets[name]
                    if got != int(there):
                        bad.append(f"{cmd}: {got!r}")
                    if there:
                        sets[name].discard(cmd[3])
                        sets[cmd[2]].add(cmd[3])
                elif got != len(sets[name]):
                    bad.append(f"SCARD {name}: {got!r}, model {len(sets[name])}")
            if not srv.alive():
                bad.append("the server died")
        tl.check(not bad, "; ".join(bad[:3]))
        tl.check(pops > SPOP_SETS * SPOP_MEMBERS // 2, f"only {pops} pops")
        c.close()
        if not srv.is_redis:
            srv.stop()
            srv.start()
        c = srv.client()
        for name, members in sets.items():
            got = {m.decode() for m in c.call("SMEMBERS", name)}
            tl.check(got == members, f"{name} after a restart: {len(got)} members, model "
                                     f"{len(members)}")
        c.close()
    finally:
        srv.stop()
        srv.cleanup()


BIG_HSETS = tl.scaled(300, 150)
BIG_FIELDS = 1000


def test_pipeline_of_big_hsets():
    srv = tl.Server(durability="write", threads=1, sets={"storage.cache_size": "1mb"})
    srv.start()
    try:
        raw = tl.raw_connect(srv.port, timeout=120)
        cmds = []
        for i in range(BIG_HSETS):
            fields = [x for j in range(BIG_FIELDS) for x in (f"f{i}:{j}", f"v{j}")]
            cmds.append(tl.resp_cmd("HSET", "big", *fields))
        sender = threading.Thread(target=raw.sendall, args=(b"".join(cmds),))
        sender.start()
        replies = [raw.reply() for _ in range(BIG_HSETS)]
        sender.join()
        tl.check(all(r == b":%d\r\n" % BIG_FIELDS for r in replies),
                 f"HSET replies: {sorted(set(replies))[:4]}")
        raw.close()
        c = srv.client()
        tl.expect(c, ["HLEN", "big"], BIG_HSETS * BIG_FIELDS)
        if not srv.is_redis:
            peak = sum(s["pending_writes_peak"] for s in tl.info_shards(c))
            # NET_PENDING_ARGS_MAX arguments are 32 k fields; the requests of the last
            # input read (a few) and the index batch (1 MiB cache: 2 k keys) come on top.
            bound = (1 << 15) + 8 * BIG_FIELDS + 4096
            tl.check(0 < peak <= bound,
                     f"pending_writes_peak {peak}: more than {bound} records waited at once"
                     f" of the {BIG_HSETS * BIG_FIELDS} pipelined")
        c.close()
    finally:
        srv.stop()
        srv.cleanup()


if __name__ == "__main__":
    tl.main(globals(), shared_server=False)
