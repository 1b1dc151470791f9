#!/usr/bin/python3
"""Independent sealer and opener for confsync envelopes, written from docs/envelope-format.md only.

usage: envelope-interop.py DIR          open (format v1 or v2)
  DIR/envelope   the envelope text
  DIR/path       the logical path it is stored at
  DIR/identity   an identity file (one or more CONFSYNC-SECRET-KEY-1... lines)
  Writes the plaintext bytes to stdout and the sealed version (decimal, 0 for v1)
  to DIR/opened-version.
usage: envelope-interop.py --seal DIR   seal (format v2)
  DIR/plaintext  the bytes to seal
  DIR/path       the logical path
  DIR/recipient  one recipient per line (confsync1...)
  DIR/version    the sealed version to write (decimal ms since the epoch)
  Writes the envelope text and a newline to stdout.
Exit 0 ok, 1 cannot open, 3 PyNaCl missing.
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

    if not text.startswith("confsync:"):
        fail("not-an-envelope")
    if text.startswith("confsync:v1:"):
        prefix, s = "confsync:v1:", 0
    elif text.startswith("confsync:v2:"):
        prefix, s = "confsync:v2:", 8
    else:
        fail("unsupported-version")
    b64 = text[len(prefix):]
    if not re.fullmatch(r"[A-Za-z0-9_-]*", b64) or len(b64) % 4 == 1:
        fail("bad base64url")
    body = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
    if base64.urlsafe_b64encode(body).decode().rstrip("=") != b64:
        fail("non-canonical base64url")

    if len(body) < s + 1:
        fail("truncated")
    version = struct.unpack(">Q", body[:8])[0] if s else 0
    if s and not 1 <= version <= 2**53 - 1:
        fail("sealed version out of range")
    n = body[s]
    h = s + 1 + 88 * n
    if n == 0 or len(body) < h + 24 + 16:
        fail("truncated")
    stanzas = [(body[s + 1 + 88 * i:s + 9 + 88 * i], body[s + 9 + 88 * i:s + 89 + 88 * i]) for i in range(n)]
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
            open(d + "/opened-version", "w").write("%d\n" % version)
            sys.stdout.buffer.write(plain)
            return
    fail("no stanza opened")


def seal(d):
    plain = open(d + "/plaintext", "rb").read()
    path = open(d + "/path", "rb").read().decode("utf-8").encode("utf-8")
    version = int(open(d + "/version").read().strip())
    pks = []
    for line in open(d + "/recipient", encoding="utf-8"):
        if line.strip():
            hrp, pk = bech32_decode(line.strip())
            if hrp != "confsync":
                fail("not a recipient line")
            pks.append(pk)
    data_key = nb.randombytes(32)
    nonce = nb.randombytes(24)
    header = struct.pack(">QB", version, len(pks))
    for pk in pks:
        header += fingerprint(pk) + nb.crypto_box_seal(data_key, pk)
    header += nonce
    ad = b"confsync:v2:" + struct.pack(">H", len(path)) + path + header
    sealed = nb.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, ad, nonce, data_key)
    text = base64.urlsafe_b64encode(header + sealed).decode("ascii").rstrip("=")
    sys.stdout.write("confsync:v2:" + text + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--seal":
        seal(sys.argv[2])
    elif len(sys.argv) == 2:
        main(sys.argv[1])
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)
