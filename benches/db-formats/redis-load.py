#!/usr/bin/env python3
"""Redis protocol (RESP) for `redis-cli --pipe`: a realistic key mix, or a 1% change of it.

    redis-load.py fill   KEYS SEED | redis-cli -p PORT --pipe
    redis-load.py change KEYS SEED PERCENT | redis-cli -p PORT --pipe

`fill` writes KEYS keys: 50% strings (mostly 40-400 bytes of JSON-like text, 1% of them
4-64 KiB), 20% hashes (5-20 fields), 10% lists (5-60 items), 10% sets (half integer
sets, half strings), 10% sorted sets (5-40 members, 1% of them 200-400 so Redis keeps a
skiplist). Values are word text with numbers, about as compressible as application data.
Key i has type `i % 10` so types are interleaved in the keyspace.

`change` rewrites PERCENT% of the keys, picked at random over the whole keyspace (a
string gets a new value of the same size class, a hash one field, a list one pushed item,
a set one member, a sorted set one score): what a day of application writes does to a
cache or session store. Existing keys keep their place in Redis' hash table, so the RDB
keeps its order. Deterministic for a given SEED.
"""
import random
import sys

WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
    "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee "
    "zulu order customer invoice session cart item price total status pending shipped "
    "delivered user email name street city country token expires created updated"
).split()


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def text(rng, n):
    parts = []
    size = 0
    while size < n:
        w = rng.choice(WORDS)
        if rng.random() < 0.3:
            w = "%s:%d" % (w, rng.randrange(10**6))
        parts.append(w)
        size += len(w) + 1
    return " ".join(parts)[:n]


def json_value(rng):
    if rng.random() < 0.01:
        return text(rng, rng.randrange(4096, 65536))
    fields = rng.randrange(2, 12)
    body = ",".join(
        '"%s":"%s"' % (rng.choice(WORDS), text(rng, rng.randrange(4, 40))) for _ in range(fields)
    )
    return "{%s}" % body


def key(i):
    kind = ["str", "str", "str", "str", "str", "hash", "hash", "list", "set", "zset"][i % 10]
    return kind, "%s:%08d" % (kind, i)


def fill(n, seed, w):
    rng = random.Random(seed)
    for i in range(n):
        kind, k = key(i)
        if kind == "str":
            w(resp("SET", k, json_value(rng)))
        elif kind == "hash":
            args = []
            for f in range(rng.randrange(5, 21)):
                args += ["f%d_%s" % (f, rng.choice(WORDS)), text(rng, rng.randrange(4, 60))]
            w(resp("HSET", k, *args))
        elif kind == "list":
            items = [text(rng, rng.randrange(10, 120)) for _ in range(rng.randrange(5, 61))]
            w(resp("RPUSH", k, *items))
        elif kind == "set":
            if rng.random() < 0.5:
                members = [rng.randrange(10**9) for _ in range(rng.randrange(5, 50))]
            else:
                members = ["%s-%d" % (rng.choice(WORDS), rng.randrange(10**6)) for _ in range(rng.randrange(5, 40))]
            w(resp("SADD", k, *members))
        else:
            count = rng.randrange(200, 401) if rng.random() < 0.01 else rng.randrange(5, 41)
            args = []
            for _ in range(count):
                args += ["%.3f" % rng.uniform(0, 10**6), "m-%s-%d" % (rng.choice(WORDS), rng.randrange(10**7))]
            w(resp("ZADD", k, *args))


def change(n, seed, percent, w):
    rng = random.Random(seed)
    picked = rng.sample(range(n), int(n * percent / 100))
    for i in picked:
        kind, k = key(i)
        if kind == "str":
            w(resp("SET", k, json_value(rng)))
        elif kind == "hash":
            w(resp("HSET", k, "f0_changed", text(rng, rng.randrange(4, 60))))
        elif kind == "list":
            w(resp("RPUSH", k, text(rng, rng.randrange(10, 120))))
        elif kind == "set":
            w(resp("SADD", k, rng.randrange(10**9)))
        else:
            w(resp("ZADD", k, "%.3f" % rng.uniform(0, 10**6), "m-changed-%d" % rng.randrange(10**7)))


def main():
    out = sys.stdout.buffer
    mode, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if mode == "fill":
        fill(n, seed, out.write)
    elif mode == "change":
        change(n, seed, float(sys.argv[4]), out.write)
    else:
        sys.exit("usage: redis-load.py fill KEYS SEED | change KEYS SEED PERCENT")
    out.flush()


if __name__ == "__main__":
    main()
