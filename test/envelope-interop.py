#!/usr/bin/python3
"""Independent opener for confsync envelopes, written from docs/envelope-format.md only.

usage: envelope-interop.py DIR
  DIR/envelope   the envelope text
  DIR/path       the logical path it is stored at
  DIR/identity   an identity file (one or more CONFSYNC-SECRET-KEY-1... lines)
Writes the plaintext bytes to stdout. Exit 0 ok, 1 cannot open, 3 PyNaCl missing.
"""
import base64
import hashlib
import re
import struct
import sys

try:
    import nacl.bindings as nb
except ImportError:
    sys.stderr.write("python3-nacl is missing: apt-get install python3-nacl\n")
    sys.exit(3)

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
GEN = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]


def fail(why):
    sys.stderr.write("cannot open: %s\n" % why)
    sys.exit(1)


def bech32_decode(text):
    """BIP-173 Bech32 -> (hrp, 32 bytes); the doc's recipient/secret-key text form."""
    if text != text.lower() and text != text.upper():
        fail("mixed case key")
    s = text.lower()
    sep = s.rfind("1")
    hrp, data = s[:sep], [CHARSET.find(c) for c in s[sep + 1:]]
    if sep < 1 or -1 in data or len(data) < 7:
        fail("not bech32")
    chk = 1
    for v in [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + data:
        top = chk >> 25
        chk = ((chk & 0x1FFFFFF) << 5) ^ v
        for i in range(5):
            if (top >> i) & 1:
                chk ^= GEN[i]
    if chk != 1:
        fail("bad bech32 checksum")
    acc, bits, out = 0, 0, bytearray()
    for w in data[:-6]:
        acc, bits = (acc << 5) | w, bits + 5
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    if bits >= 5 or acc & ((1 << bits) - 1) or len(out) != 32:
        fail("bad key length or padding")
    return hrp, bytes(out)


def fingerprint(pk):
    return hashlib.blake2b(pk, digest_size=32).digest()[:8]


def main(d):
    text = open(d + "/envelope", "rb").read().decode("ascii").rstrip(" \t\r\n")
    path = open(d + "/path", "rb").read().decode("utf-8")
    keys = []
    for line in open(d + "/identity", encoding="utf-8"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        hrp, sk = bech32_decode(line)
        if hrp != "confsync-secret-key-":
            fail("not a secret key line")
        keys.append((nb.crypto_scalarmult_base(sk), sk))

    prefix = "confsync:v1:"
    if not text.startswith("confsync:"):
        fail("not-an-envelope")
    if not text.startswith(prefix):
        fail("unsupported-version")
    b64 = text[len(prefix):]
    if not re.fullmatch(r"[A-Za-z0-9_-]*", b64) or len(b64) % 4 == 1:
        fail("bad base64url")
    body = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
    if base64.urlsafe_b64encode(body).decode().rstrip("=") != b64:
        fail("non-canonical base64url")

    n = body[0] if body else 0
    h = 1 + 88 * n
    if n == 0 or len(body) < h + 24 + 16:
        fail("truncated")
    stanzas = [(body[1 + 88 * i:9 + 88 * i], body[9 + 88 * i:89 + 88 * i]) for i in range(n)]
    nonce, sealed = body[h:h + 24], body[h + 24:]
    p = path.encode("utf-8")
    ad = prefix.encode("ascii") + struct.pack(">H", len(p)) + p + body[:h + 24]

    for fp, sealed_key in stanzas:
        for pk, sk in keys:
            if fingerprint(pk) != fp:
                continue
            try:
                data_key = nb.crypto_box_seal_open(sealed_key, pk, sk)
                plain = nb.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, ad, nonce, data_key)
            except Exception:
                continue
            sys.stdout.buffer.write(plain)
            return
    fail("no stanza opened")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write(__doc__)
        sys.exit(2)
    main(sys.argv[1])
