#!/usr/bin/env python3
"""Writes keyring-v1.json: keyring-wrapped data keys and key blocks, computed from the text of
docs/envelope-v1.md §6 with the `cryptography` package, not with docstore, so that the Rust test
checks docstore against an independent reading of the spec.

Run: python3 crates/docstore/tests/vectors/keyring_v1.py  (needs `pip install cryptography`)
"""
import base64
import json
import pathlib
import struct

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

AAD_PREFIX = b"docstore keyring v1\x00"


def context_bytes(pairs):
    """§3: u16 count, then per pair u16 len + key, u16 len + value, sorted by key bytes."""
    out = struct.pack(">H", len(pairs))
    for k, v in sorted(pairs, key=lambda p: p[0].encode()):
        for s in (k.encode(), v.encode()):
            out += struct.pack(">H", len(s)) + s
    return out


def key_block(entries):
    """§6: 01, u16 count, then per entry u16 + provider, u16 + key id, u32 + ciphertext."""
    out = b"\x01" + struct.pack(">H", len(entries))
    for provider, key_id, ct in entries:
        for s in (provider.encode(), key_id.encode()):
            out += struct.pack(">H", len(s)) + s
        out += struct.pack(">I", len(ct)) + ct
    return out


def case(name, master, key_id, nonce, data_key, pairs, extra=()):
    aad = AAD_PREFIX + key_id.encode() + b"\x00" + context_bytes(pairs)
    wrapped = nonce + AESGCM(master).encrypt(nonce, data_key, aad)
    entries = [("keyring", key_id, wrapped), *extra]
    return {
        "name": name,
        "master_key_b64": base64.b64encode(master).decode(),
        "key_id": key_id,
        "data_key": data_key.hex(),
        "context": [list(p) for p in pairs],
        "aad": aad.hex(),
        "wrapped": wrapped.hex(),
        "key_block": key_block(entries).hex(),
    }


def main():
    master = bytes(range(0x40, 0x60))
    data_key = bytes(range(0x80, 0xA0))
    doc = [
        ("docstore.document", "doc-1"),
        ("docstore.version_id", "00000000-0000-4000-8000-000000000001"),
    ]
    rendition = [
        ("docstore.version_id", "00000000-0000-4000-8000-000000000001#text@1"),
        ("docstore.document", "doc-1"),
    ]
    vectors = [
        case("a version's data key", master, "local-00000000-0000-4000-8000-0000000000aa",
             bytes(range(12)), data_key, doc),
        case("a rendition's data key, pairs given out of order", master,
             "local-00000000-0000-4000-8000-0000000000aa", bytes(range(12, 24)),
             bytes(reversed(data_key)), rendition),
        case("two entries: keyring and a KMS ciphertext blob kept as is", bytes(32), "k",
             b"\xff" * 12, bytes(32), doc,
             extra=[("kms", "arn:aws:kms:us-east-1:000000000000:key/x", b"\x01\x02\x03")]),
    ]
    path = pathlib.Path(__file__).with_name("keyring-v1.json")
    path.write_text(json.dumps(vectors, indent=2) + "\n")


if __name__ == "__main__":
    main()
