#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into tests/fuzz/corpus/<name>/.

Deterministic: the same script writes the same bytes. Every seed is made
here from kvtier's own formats (no third-party data); the safetensors seeds
come from kvtier-mkmodel (pass --mkmodel, default build/bin/kvtier-mkmodel).
Seeds a crash left behind (crash-*, regression-*) are never touched.

Usage: tests/fuzz/make_corpus.py [--mkmodel PATH]
"""
import argparse
import json
import os
import random
import struct
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(ROOT, "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def u16(n):
    return struct.pack("<H", n)


# --- protobuf wire format -----------------------------------------------
def varint(n):
    n &= (1 << 64) - 1
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def vi(field, n):
    return varint(field << 3) + varint(n)


def ld(field, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(field << 3 | 2) + varint(len(data)) + data


def f32(field, x):
    return varint(field << 3 | 5) + struct.pack("<f", x)


def packed(field, ints):
    return ld(field, b"".join(varint(i) for i in ints))


def msg(data):  # a length-prefixed message of the RPC targets
    return u16(len(data)) + data


NS = ld(1, "default") + ld(3, "f32") + vi(4, 16)
KEY = bytes(range(16))


# --- targets ---------------------------------------------------------------
def record_codec():
    write("record_codec", "fields", b"\x00\x07\x01\x01\x02\x03\x04\x02" + bytes(8) +
          b"\x03\x00\x00\x00\x00\x00\x00\xf0\x3f\x04\x03\x00abc")
    write("record_codec", "strings", b"\x04\x05\x00hello\x04\x00\x00\x04\x01\x00\xff")
    write("record_codec", "short", b"\x01\xff\xff\xff\xff")


def trace():
    mooncake = "".join(json.dumps({"timestamp": t * 10, "input_length": 700 + t,
                                   "output_length": 20, "hash_ids": [0, 1, t + 2]}) + "\n"
                       for t in range(4))
    write("trace", "mooncake", b"\x00" + mooncake.encode())
    azure = ("TIMESTAMP,ContextTokens,GeneratedTokens\r\n"
             "2023-11-16 18:15:46.6805900,374,44\r\n"
             "2023-11-16 18:15:50.9951690,1300,19\r\n")
    write("trace", "azure", b"\x01" + azure.encode())
    write("trace", "azure-shared", b"\x82" + azure.encode())
    csv = "time_ms,tenant,keys\n# a comment\n0,alice,a;b;c\n5,bob,a;b;d\n9,alice,a;e\n"
    write("trace", "csv", b"\x02" + csv.encode())


def auth():
    write("auth", "keys", "# tenants\nalice-key-0123456789 alice admin\n"
          "bob-key-0123456789ab bob group=team\ncarol-key-0123456789 carol group=team\n\n")
    write("auth", "one", "0123456789abcdef default\n")
    write("auth", "bad", "short alice\n")


def flags():
    write("flags", "flagset", b"\x00--listen\x00127.0.0.1:1\x00--no-flash\x00file\x00--dram-bytes=64M")
    write("flags", "bytes", b"\x0164KiB")
    write("flags", "tokens", b"\x011..64,7,9")
    write("flags", "number", b"\x012.5e3")
    config = {"listen": "127.0.0.1:0", "dram-bytes": "64M", "no-flash": True,
              "default-ttl": 300, "placement-fetch-budget": 0.5}
    write("flags", "config", b"\x02" + json.dumps(config).encode())
    write("flags", "args", b"\x03--listen\x00127.0.0.1:0\x00--dram-bytes\x0032M\x00--no-engine")


def llama2c_tokenizer_bin(extra):
    pieces = [(0.0, b"<unk>"), (0.0, b"\n<s>\n"), (0.0, b"\n</s>\n")]
    pieces += [(0.0, b"<0x%02X>" % b) for b in range(256)]
    pieces += [(0.0, bytes([c])) for c in range(32, 127)]
    for i, p in enumerate(extra):
        pieces.append((-float(i), p))
    out = struct.pack("<i", max(len(p) for _, p in pieces))
    for score, p in pieces:
        out += struct.pack("<fi", score, len(p)) + p
    return len(pieces), out


def sentencepiece_model():
    pieces = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3), ("\u2581", -1.0, 1)]
    for i, p in enumerate(["a", "b", "c", "h", "e", "l", "o", "\u2581a", "ab", "he", "ll",
                           "hell", "hello", "\u2581hello", "<user>"]):
        pieces.append((p, -2.0 - i, 4 if p == "<user>" else 1))
    out = b""
    for text, score, kind in pieces:
        out += ld(1, ld(1, text) + f32(2, score) + vi(3, kind))
    out += ld(2, vi(3, 2) + vi(40, 0) + vi(41, 1) + vi(42, 2))  # BPE
    out += ld(3, ld(1, "identity") + vi(3, 1) + vi(4, 1) + vi(5, 1))
    return out


def tokenizer():
    vocab, tok = llama2c_tokenizer_bin([b"ab", b" a", b"he", b"hel", b"hello", b" hello"])
    text = "hello ab \xe2\x82\xac!".encode("latin-1").decode("utf-8", "replace").encode()
    write("tokenizer", "llama2c", b"\x06" + u16(vocab) + u16(len(text)) + text + tok)
    sp = sentencepiece_model()
    text = b"hello abc <user> he"
    write("tokenizer", "sentencepiece", b"\x07" + u16(0) + u16(len(text)) + text + sp)
    write("tokenizer", "sentencepiece-empty-text", b"\x01" + u16(0) + u16(0) + sp)


def llama2c_checkpoint():
    dim, hidden, layers, heads, kv, vocab, seq = 8, 16, 1, 2, 1, 16, 4
    hd = dim // heads
    floats = (vocab * dim + layers * (2 * dim + dim * dim + 2 * kv * hd * dim + dim * dim +
                                      3 * hidden * dim) + dim)
    rng = random.Random(1)
    body = struct.pack("<%df" % floats, *[rng.uniform(-1, 1) for _ in range(floats)])
    rope = struct.pack("<%df" % (seq * hd), *[0.5] * (seq * hd))
    write("llama2c_checkpoint", "v0",
          struct.pack("<7i", dim, hidden, layers, heads, kv, vocab, seq) + body + rope)
    cls = struct.pack("<%df" % (vocab * dim), *[0.25] * (vocab * dim))
    write("llama2c_checkpoint", "v0-untied",
          struct.pack("<7i", dim, hidden, layers, heads, kv, -vocab, seq) + body + rope + cls)
    header = struct.pack("<Ii7iB", 0x616B3432, 1, dim, hidden, layers, heads, kv, vocab, seq, 1)
    write("llama2c_checkpoint", "v1", header + bytes(256 - len(header)) + body)


def safetensors(mkmodel):
    if not os.path.exists(mkmodel):
        print("skipping safetensors seeds: no", mkmodel)
        return
    for dtype in ("f32", "bf16"):
        with tempfile.TemporaryDirectory() as d:
            subprocess.run([mkmodel, "--dim", "8", "--hidden-dim", "16", "--layers", "1",
                            "--heads", "2", "--kv-heads", "1", "--vocab", "16", "--seq-len",
                            "4", "--dtype", dtype, "--out", d, "--name", "seed"] +
                           (["--untied"] if dtype == "bf16" else []),
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            config = open(os.path.join(d, "config.json"), "rb").read()
            model = open(os.path.join(d, "model.safetensors"), "rb").read()
            write("safetensors", dtype, u16(len(config)) + config + model)


def flash_recovery():
    rng = random.Random(2)
    # geometry, then records: region, epoch, seq, key, len(2), expiry, flags,
    # damage, where(2), junk
    def rec(region, seq, key, length, expiry=0, flags=1, damage=3, epoch=0):
        return bytes([region, epoch, seq, key]) + u16(length) + bytes([expiry, flags, damage]) + \
            u16(rng.randrange(65536)) + bytes([rng.randrange(256)])
    write("flash_recovery", "clean", b"\x04" + rec(0, 1, 0, 100) + rec(0, 2, 1, 5000) +
          rec(1, 3, 2, 4096) + rec(1, 4, 0, 17))
    write("flash_recovery", "erased-expired", b"\x07" + rec(0, 1, 0, 100, flags=0) +
          rec(0, 2, 1, 300, expiry=150) + rec(1, 3, 1, 20, expiry=200) + rec(2, 4, 3, 9))
    write("flash_recovery", "damaged", b"\x0a" + rec(0, 1, 0, 100, damage=0) +
          rec(1, 2, 1, 300, damage=1) + rec(1, 3, 2, 40, damage=2) + b"\x00" * 20 +
          rec(2, 5, 4, 64, epoch=250))


def rocks_meta():
    # key, kind, expiry, length(2), seed, raw length, extra
    def ent(key, kind, length, expiry=0, extra=1):
        return bytes([key, kind, expiry]) + u16(length) + bytes([key * 7 % 256, 8, extra])
    write("rocks_meta", "clean", ent(0, 2, 100) + ent(1, 3, 2000) + ent(2, 2, 1, expiry=200))
    write("rocks_meta", "bad", ent(0, 0, 10) + b"\x11" * 8 + ent(1, 1, 30) +
          ent(2, 3, 40, extra=10) + ent(3, 2, 50, extra=8) + ent(250, 2, 5) +
          ent(4, 2, 60, expiry=150))


def ledger():
    def fields(tenant, spoil, kind=0):
        return (bytes([tenant, 0, 0x10, spoil, kind, 0]) + bytes([1, 5] * 11) + bytes([0]) +
                u16(3) + b"\x04" + struct.pack("<I", 99))
    write("ledger", "records", b"\x00" + fields(0, 0) + fields(1, 3) + fields(0, 10, kind=1))
    write("ledger", "spoiled", b"\x02" + fields(0, 200) + fields(1, 201) + fields(2, 202) +
          fields(0, 203) + b"\x05abcde" + fields(0, 5))

    def cache(tenant, spoil, tokens):
        return (bytes([tenant, 0, spoil, 0, 0, 10, 200, len(tokens)]) + bytes(tokens))
    write("ledger", "caches", b"\x01" + cache(0, 0, [1, 2, 3]) + cache(1, 3, []) +
          cache(0, 7, [4, 5]))
    write("ledger", "caches-spoiled", b"\x03" + cache(0, 129, [1, 2]) + cache(1, 130, [3]) +
          cache(2, 131, [1]) + cache(0, 135, [9, 9]))


def block_store_rpc():
    tokens = list(range(1, 33))
    # selector: rpc (low 2 bits) + 4 * caller (1 alice, 2 bob)
    for caller, who in ((1, "alice"), (2, "bob")):
        s = 4 * caller
        write("block_store_rpc", "lookup-tokens-" + who,
              bytes([s]) + msg(ld(1, NS) + packed(2, tokens) + vi(4, 1)))
        write("block_store_rpc", "lookup-keys-" + who,
              bytes([s]) + msg(ld(3, KEY) + ld(3, KEY[::-1])))
        header = ld(1, ld(1, NS) + ld(2, KEY) + vi(5, 8) + vi(6, 60))
        write("block_store_rpc", "put-key-" + who,
              bytes([s + 1]) + msg(header) + msg(ld(2, b"abcd")) + msg(ld(2, b"efgh")))
        header = ld(1, ld(1, NS) + packed(4, tokens[:16]) + vi(5, 4))
        write("block_store_rpc", "put-tokens-" + who, bytes([s + 1]) + msg(header) +
              msg(ld(2, b"wxyz")))
        write("block_store_rpc", "get-" + who, bytes([s + 2]) + msg(ld(1, KEY) + vi(2, 1) +
                                                                   ld(3, NS)))
        write("block_store_rpc", "delete-" + who, bytes([s + 3]) + msg(ld(1, KEY) + ld(2, NS)))
    write("block_store_rpc", "lookup-nobody", b"\x00" + msg(packed(2, tokens)))


def context_cache_rpc():
    # selector: rpc (mod 6) + 6 * caller
    for caller, who in ((1, "alice"), (2, "bob")):
        s = 6 * caller
        write("context_cache_rpc", "generate-prompt-" + who,
              bytes([s]) + msg(ld(1, "Once upon a time") + vi(3, 2) + ld(12, "r1")))
        write("context_cache_rpc", "generate-ids-" + who,
              bytes([s]) + msg(packed(2, [1, 5, 9, 30]) + vi(3, 1) + f32(4, 0.7) + vi(6, 5)))
        write("context_cache_rpc", "generate-segments-" + who,
              bytes([s]) + msg(ld(11, ld(1, "a shared prefix") + ld(3, ld(1, "5m"))) +
                               ld(11, ld(1, "and a question")) + vi(3, 1)))
        write("context_cache_rpc", "create-" + who,
              bytes([s + 1]) + msg(packed(3, list(range(1, 40))) + vi(4, 300) +
                                   ld(6, "docs") + ld(8, "c1")))
        write("context_cache_rpc", "get-" + who,
              bytes([s + 2]) + msg(ld(2, "cachedContents/0123456789abcdef")))
        write("context_cache_rpc", "list-" + who, bytes([s + 3]) + msg(b""))
        write("context_cache_rpc", "update-" + who,
              bytes([s + 4]) + msg(ld(2, "cachedContents/0123456789abcdef") + vi(3, 120)))
        write("context_cache_rpc", "delete-" + who,
              bytes([s + 5]) + msg(ld(2, "cachedContents/0123456789abcdef")))
    write("context_cache_rpc", "generate-nobody", b"\x00" + msg(ld(1, "hi")))


def admin_rpc():
    for caller, who in ((0, "nobody"), (1, "alice"), (2, "bob")):
        s = 3 * caller
        write("admin_rpc", "health-" + who, bytes([s]) + msg(b""))
        write("admin_rpc", "stats-" + who, bytes([s + 1]) + msg(b""))
        write("admin_rpc", "explain-" + who,
              bytes([s + 2]) + msg(ld(1, KEY) + ld(2, NS) + ld(3, "bob")))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mkmodel", default=os.path.join(ROOT, "..", "..", "build", "bin",
                                                     "kvtier-mkmodel"))
    args = p.parse_args()
    record_codec()
    trace()
    auth()
    flags()
    tokenizer()
    llama2c_checkpoint()
    safetensors(args.mkmodel)
    flash_recovery()
    rocks_meta()
    ledger()
    block_store_rpc()
    context_cache_rpc()
    admin_rpc()


if __name__ == "__main__":
    main()
