#!/usr/bin/env python3
"""Two `mongodump --archive` streams of a shop database, before and after a 1% change.

    mongo-archive.py OUT1 OUT2 [SCALE]

MongoDB and mongo-tools are not Debian packages and cannot be downloaded on the project
machine, so this builds the archives mongodump would write, following mongo-tools'
archive specification (common/archive/spec.md): the magic number 0x8199e26d
(little-endian), a header document, one metadata document per collection, the
terminator 0xffffffff, then namespace segments (namespace header {db, collection,
EOF: false, CRC: 0}, BSON documents, terminator) and per collection an EOF header {EOF:
true, CRC: CRC-64-ECMA of all its documents} and a terminator. Documents are real BSON
(pymongo's `bson`, PyPI `pymongo`; CRC with PyPI `crcmod`).

As mongodump does (four collections in parallel, --numParallelCollections=4), each
collection's documents are written in buffers of up to 16 MiB (MaxBSONSize) and the
buffers of the collections are interleaved in the order they fill, which varies from run
to run: each archive interleaves with its own seed.

Collections (SCALE = 1: about 150 MB): customers (60,000 x ~600 B), orders (150,000
x ~700 B with line items), events (400,000 x ~150 B), products (5,000 x ~2 KB). The
second archive has 1% of the documents of each collection updated in place (status,
counters, a timestamp, an appended note), natural order kept as WiredTiger keeps a
document's record id on update.
"""
import datetime
import random
import struct
import sys

import bson
import crcmod
from bson.objectid import ObjectId

MAGIC = struct.pack("<I", 0x8199E26D)
TERMINATOR = b"\xff\xff\xff\xff"
SEGMENT = 16 * 1024 * 1024
crc64 = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, rev=True, xorOut=0xFFFFFFFFFFFFFFFF)

WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
    "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee "
    "zulu red green blue small large steel wood glass paper cotton wool"
).split()
CITIES = "Berlin Paris Madrid Rome Vienna Prague Warsaw Lisbon Dublin Oslo".split()
BASE = datetime.datetime(2026, 1, 1)


def words(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def oid(rng):
    return ObjectId(bytes(rng.getrandbits(8) for _ in range(12)))


def customers(rng, n):
    for i in range(n):
        yield {
            "_id": oid(rng),
            "customer_no": i,
            "name": words(rng, 2).title(),
            "email": "%s.%d@example.com" % (rng.choice(WORDS), i),
            "address": {"street": "%s %d" % (words(rng, 2).title(), rng.randrange(1, 300)),
                        "city": rng.choice(CITIES), "zip": "%05d" % rng.randrange(10**5)},
            "tags": [rng.choice(WORDS) for _ in range(rng.randrange(0, 6))],
            "notes": words(rng, rng.randrange(10, 60)),
            "created": BASE + datetime.timedelta(seconds=rng.randrange(10**7)),
            "orders": rng.randrange(0, 50),
            "balance": round(rng.uniform(-100, 5000), 2),
        }


def orders(rng, n):
    for i in range(n):
        yield {
            "_id": oid(rng),
            "order_no": i,
            "customer_no": rng.randrange(60000),
            "status": rng.choice(["pending", "paid", "shipped", "delivered"]),
            "items": [{"sku": "SKU-%06d" % rng.randrange(5000), "qty": rng.randrange(1, 5),
                       "price": round(rng.uniform(1, 300), 2), "title": words(rng, 3)}
                      for _ in range(rng.randrange(1, 8))],
            "shipping": {"city": rng.choice(CITIES), "method": rng.choice(["std", "express"])},
            "created": BASE + datetime.timedelta(seconds=rng.randrange(10**7)),
        }


def events(rng, n):
    for i in range(n):
        yield {
            "_id": oid(rng),
            "ts": BASE + datetime.timedelta(milliseconds=i * 1500 + rng.randrange(1000)),
            "type": rng.choice(["view", "click", "cart", "search"]),
            "user": rng.randrange(60000),
            "path": "/%s/%d" % (rng.choice(WORDS), rng.randrange(5000)),
        }


def products(rng, n):
    for i in range(n):
        yield {
            "_id": "SKU-%06d" % i,
            "title": words(rng, 4).title(),
            "description": words(rng, rng.randrange(100, 400)),
            "price": round(rng.uniform(1, 300), 2),
            "stock": rng.randrange(0, 1000),
            "attributes": {w: words(rng, 2) for w in rng.sample(WORDS, 6)},
        }


def change(rng, doc):
    """An in-place update as an application makes one."""
    if "status" in doc:
        doc["status"] = rng.choice(["paid", "shipped", "delivered", "returned"])
        doc["updated"] = BASE + datetime.timedelta(seconds=rng.randrange(10**7, 2 * 10**7))
    elif "stock" in doc:
        doc["stock"] = rng.randrange(0, 1000)
        doc["price"] = round(doc["price"] * 1.05, 2)
    elif "orders" in doc:
        doc["orders"] += 1
        doc["balance"] = round(rng.uniform(-100, 5000), 2)
        doc["notes"] += " " + words(rng, 3)
    else:
        doc["type"] = "view"
        doc["seen"] = True


COLLECTIONS = [("customers", customers, 60000), ("orders", orders, 150000),
               ("events", events, 400000), ("products", products, 5000)]


def collections(scale, changed_seed):
    """{name: [bson bytes]}: the same documents for a seed, 1% changed when changed_seed."""
    out = {}
    for k, (name, gen, n) in enumerate(COLLECTIONS):
        n = int(n * scale)
        docs = list(gen(random.Random(100 + k), n))
        if changed_seed is not None:
            rng = random.Random(changed_seed + k)
            for i in rng.sample(range(n), n // 100):
                change(rng, docs[i])
        out[name] = [bson.encode(d) for d in docs]
    return out


def segments(docs):
    buf, size = [], 0
    for d in docs:
        if size + len(d) > SEGMENT and buf:
            yield b"".join(buf)
            buf, size = [], 0
        buf.append(d)
        size += len(d)
    if buf:
        yield b"".join(buf)


def archive(path, colls, seed):
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.write(MAGIC)
        f.write(bson.encode({"concurrent_collections": 4, "version": "0.1",
                             "server_version": "7.0.14", "tool_version": "100.10.0"}))
        for name, docs in colls.items():
            meta = ('{"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},'
                    '"name":"_id_"}],"uuid":"%032x","collectionName":"%s","type":"collection"}'
                    % (random.Random(name).getrandbits(128), name))
            f.write(bson.encode({"db": "shop", "collection": name, "metadata": meta,
                                 "size": sum(map(len, docs)), "type": ""}))
        f.write(TERMINATOR)
        pending = {name: segments(docs) for name, docs in colls.items()}
        crcs = {name: crc64(b"".join(docs)) for name, docs in colls.items()}
        while pending:
            name = rng.choice(sorted(pending))
            seg = next(pending[name], None)
            if seg is None:
                del pending[name]
                f.write(bson.encode({"db": "shop", "collection": name, "EOF": True,
                                     "CRC": bson.Int64(crcs[name] - (1 << 64) if crcs[name] >= 1 << 63 else crcs[name])}))
                f.write(TERMINATOR)
                continue
            f.write(bson.encode({"db": "shop", "collection": name, "EOF": False,
                                 "CRC": bson.Int64(0)}))
            f.write(seg)
            f.write(TERMINATOR)


def main():
    out1, out2 = sys.argv[1], sys.argv[2]
    scale = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    archive(out1, collections(scale, None), seed=1)
    archive(out2, collections(scale, 7), seed=2)


if __name__ == "__main__":
    main()
