#!/usr/bin/env python3
# Independent reference for appliance/she.ts: writes test/she/vectors.json.
# Written from the SHE spec text, not from the TypeScript: bit strings are built as Python
# integers, AES and CMAC come from pyca/cryptography (OpenSSL), not from our own CMAC code.
# Run once after changing the vector list:  python3 test/she/gen-vectors.py > test/she/vectors.json
import hashlib
import json
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

ENC_C = bytes.fromhex("010153484500800000000000000000b0")
MAC_C = bytes.fromhex("010253484500800000000000000000b0")


def aes_ecb(key: bytes, data: bytes) -> bytes:
    e = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return e.update(data) + e.finalize()


def aes_cbc0(key: bytes, data: bytes) -> bytes:
    e = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).encryptor()
    return e.update(data) + e.finalize()


def cmac(key: bytes, msg: bytes) -> bytes:
    c = CMAC(algorithms.AES(key))
    c.update(msg)
    return c.finalize()


def mp(data: bytes) -> bytes:
    h = bytes(16)
    for i in range(0, len(data), 16):
        x = data[i:i + 16]
        e = aes_ecb(h, x)
        h = bytes(a ^ b ^ c for a, b, c in zip(e, x, h))
    return h


def kdf(key: bytes, c: bytes) -> bytes:
    return mp(key + c)


def messages(uid: bytes, key_id: int, auth_id: int, auth_key: bytes, new_key: bytes, counter: int, flags: int):
    k1, k2 = kdf(auth_key, ENC_C), kdf(auth_key, MAC_C)
    k3, k4 = kdf(new_key, ENC_C), kdf(new_key, MAC_C)
    m1 = ((int.from_bytes(uid, "big") << 8) | (key_id << 4) | auth_id).to_bytes(16, "big")
    head = ((counter << 100) | (flags << 95)).to_bytes(16, "big")
    m2 = aes_cbc0(k1, head + new_key)
    m3 = cmac(k2, m1 + m2)
    m4 = m1 + aes_ecb(k3, ((counter << 100) | (1 << 99)).to_bytes(16, "big"))
    m5 = cmac(k4, m4)
    return m1, m2, m3, m4, m5


def det(label: str, n: int) -> bytes:
    return hashlib.sha256(label.encode()).digest()[:n]


# Self-check against the SHE specification's worked example before writing anything.
spec = messages(bytes.fromhex("000000000000000000000000000001"), 4, 1,
                bytes.fromhex("000102030405060708090a0b0c0d0e0f"),
                bytes.fromhex("0f0e0d0c0b0a09080706050403020100"), 1, 0)
assert [m.hex() for m in spec] == [
    "00000000000000000000000000000141",
    "2b111e2d93f486566bcbba1d7f7a9797c94643b050fc5d4d7de14cff682203c3",
    "b9d745e5ace7d41860bc63c2b9f5bb46",
    "00000000000000000000000000000141b472e8d8727d70d57295e74849a27917",
    "820d8d95dc11b4668878160cb2a4e23e",
], "reference does not reproduce the SHE spec example"

CMAX = (1 << 28) - 1
cases = [
    # name, uid, keyId, authKeyId, counter, flags
    ("spec example", "000000000000000000000000000001", 4, 1, 1, 0),
    ("WRITE_PROT", None, 4, 1, 1, 0x10),
    ("BOOT_PROT", None, 5, 1, 1, 0x08),
    ("DEBUGGER_PROT", None, 6, 1, 1, 0x04),
    ("KEY_USAGE", None, 7, 1, 1, 0x02),
    ("WILDCARD with real UID", None, 8, 1, 1, 0x01),
    ("all flags", None, 9, 1, 1, 0x1F),
    ("counter 0", None, 4, 4, 0, 0),
    ("counter 0 all flags", None, 4, 1, 0, 0x1F),
    ("counter 1 KEY_USAGE|WILDCARD", None, 10, 10, 1, 0x03),
    ("counter max", None, 13, 1, CMAX, 0),
    ("counter max all flags", None, 13, 1, CMAX, 0x1F),
    ("counter max WILDCARD", None, 15, 15, CMAX, 0x01),
    ("counter 0x1234567 WRITE|DEBUGGER", None, 2, 1, 0x1234567, 0x14),
    ("wildcard UID + WILDCARD", "000000000000000000000000000000", 4, 1, 1, 0x01),
    ("wildcard UID + all flags", "000000000000000000000000000000", 1, 1, 7, 0x1F),
    ("MASTER_ECU_KEY self", None, 1, 1, 2, 0x10),
    ("RAM_KEY id 14", None, 14, 4, 1, 0),
    ("UID all ff", "ffffffffffffffffffffffffffffff", 15, 1, CMAX, 0x1F),
]

out = {"messages": [], "cmac": [], "kdf": []}
for name, uid, kid, aid, ctr, fl in cases:
    uid_b = bytes.fromhex(uid) if uid else det("uid/" + name, 15)
    auth = bytes.fromhex("000102030405060708090a0b0c0d0e0f") if name == "spec example" else det("auth/" + name, 16)
    new = bytes.fromhex("0f0e0d0c0b0a09080706050403020100") if name == "spec example" else det("new/" + name, 16)
    m = messages(uid_b, kid, aid, auth, new, ctr, fl)
    out["messages"].append({
        "name": name, "uid": uid_b.hex(), "keyId": kid, "authKeyId": aid,
        "authKey": auth.hex(), "newKey": new.hex(), "counter": ctr, "flags": fl,
        "m1": m[0].hex(), "m2": m[1].hex(), "m3": m[2].hex(), "m4": m[3].hex(), "m5": m[4].hex(),
    })

for n in (0, 1, 15, 16, 17, 31, 32, 33, 48, 64, 100):
    key, msg = det(f"cmac-key/{n}", 16), (det(f"cmac-msg/{n}", 32) * 4)[:n]
    out["cmac"].append({"key": key.hex(), "msg": msg.hex(), "tag": cmac(key, msg).hex()})

for i in range(4):
    key = det(f"kdf/{i}", 16)
    out["kdf"].append({"key": key.hex(), "enc": kdf(key, ENC_C).hex(), "mac": kdf(key, MAC_C).hex()})

json.dump(out, sys.stdout, indent=1)
sys.stdout.write("\n")
