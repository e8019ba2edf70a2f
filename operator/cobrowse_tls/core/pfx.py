"""A small PKCS#12 (RFC 7292) certificate reader, the fallback behind cryptography's.

cryptography decrypts PKCS#12 through OpenSSL, and OpenSSL 3 only knows the legacy
RC2-40/3DES encryption that older Windows and Java tools export when its "legacy" provider
is available (not so in FIPS builds, some distributions, or with
``CRYPTOGRAPHY_OPENSSL_NO_LEGACY``). It also reports a wrong password and undecryptable data
with the same error. This reader verifies the MAC itself (so a wrong password is told apart)
and decrypts certificate bags with RC2 and 3DES from pycryptodomex (a dependency of pyjks)
or AES through PBES2. It only extracts certificates: key bags are skipped, never decrypted.

Pure: no I/O. Only DER is supported (which is what every exporter writes).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC


class Pkcs12Error(Exception):
    """Malformed or unsupported PKCS#12 data (the message never holds secret material)."""


class WrongPasswordError(Pkcs12Error):
    """The MAC does not verify with the given password."""


# --- DER ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TLV:
    tag: int
    value: bytes

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)


def _read_tlv(data: bytes, pos: int) -> tuple[_TLV, int]:
    if pos + 2 > len(data):
        raise Pkcs12Error("truncated")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise Pkcs12Error("unsupported DER tag")
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0:
            raise Pkcs12Error("BER indefinite length is not supported")
        if count > 4 or pos + count > len(data):
            raise Pkcs12Error("truncated")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise Pkcs12Error("truncated")
    return _TLV(tag, data[pos:end]), end


def _children(value: bytes) -> Iterator[_TLV]:
    pos = 0
    while pos < len(value):
        tlv, pos = _read_tlv(value, pos)
        yield tlv


def _seq(tlv: _TLV, tag: int = 0x30) -> list[_TLV]:
    if tlv.tag != tag:
        raise Pkcs12Error(f"expected tag 0x{tag:02x}, found 0x{tlv.tag:02x}")
    return list(_children(tlv.value))


def _oid(tlv: _TLV) -> str:
    if tlv.tag != 0x06 or not tlv.value:
        raise Pkcs12Error("expected an OBJECT IDENTIFIER")
    first = tlv.value[0]
    parts = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    acc = 0
    for byte in tlv.value[1:]:
        acc = (acc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(acc)
            acc = 0
    return ".".join(str(p) for p in parts)


def _int(tlv: _TLV) -> int:
    if tlv.tag != 0x02:
        raise Pkcs12Error("expected an INTEGER")
    return int.from_bytes(tlv.value, "big", signed=True)


def _octets(tlv: _TLV) -> bytes:
    # Constructed OCTET STRINGs (and [0] IMPLICIT ones) are the concatenation of their parts.
    if tlv.constructed:
        return b"".join(_octets(part) for part in _children(tlv.value))
    return tlv.value


def _explicit(tlv: _TLV) -> _TLV:
    if tlv.tag != 0xA0:
        raise Pkcs12Error("expected [0] EXPLICIT")
    return _read_tlv(tlv.value, 0)[0]


def tlv_total_length(data: bytes) -> int | None:
    """The length that the first DER element of ``data`` declares (header included)."""
    if len(data) < 2:
        return None
    length = data[1]
    if not length & 0x80:
        return 2 + length
    count = length & 0x7F
    if count == 0 or count > 4 or len(data) < 2 + count:
        return None
    return 2 + count + int.from_bytes(data[2 : 2 + count], "big")


def looks_like_pfx(data: bytes) -> bool:
    """True when ``data`` starts like a PFX: SEQUENCE { INTEGER 3, ContentInfo ... }."""
    # Only the first bytes are checked so that truncated files are still recognised as
    # PKCS#12 and reported as such.
    try:
        if tlv_total_length(data) is None or data[0] != 0x30:
            return False
        header = 2 + (data[1] & 0x7F if data[1] & 0x80 else 0)
        return data[header : header + 3] == b"\x02\x01\x03"
    except IndexError:
        return False


# --- OIDs --------------------------------------------------------------------------------

_DATA = "1.2.840.113549.1.7.1"
_ENCRYPTED_DATA = "1.2.840.113549.1.7.6"
_CERT_BAG = "1.2.840.113549.1.12.10.1.3"
_SAFE_CONTENTS_BAG = "1.2.840.113549.1.12.10.1.6"
_X509_CERTIFICATE = "1.2.840.113549.1.9.22.1"
_LOCAL_KEY_ID = "1.2.840.113549.1.9.21"

_HASHES: dict[str, Callable[[], hashlib._Hash]] = {
    "1.3.14.3.2.26": hashlib.sha1,
    "2.16.840.1.101.3.4.2.4": hashlib.sha224,
    "2.16.840.1.101.3.4.2.1": hashlib.sha256,
    "2.16.840.1.101.3.4.2.2": hashlib.sha384,
    "2.16.840.1.101.3.4.2.3": hashlib.sha512,
}
_HMACS: dict[str, hashes.HashAlgorithm] = {
    # Legacy algorithms are needed to read what old exporters wrote; they protect nothing here.
    "1.2.840.113549.2.7": hashes.SHA1(),  # noqa: S303
    "1.2.840.113549.2.8": hashes.SHA224(),
    "1.2.840.113549.2.9": hashes.SHA256(),
    "1.2.840.113549.2.10": hashes.SHA384(),
    "1.2.840.113549.2.11": hashes.SHA512(),
}
# PKCS#12 PBE schemes (RFC 7292 appendix C): name, key length, RC2 effective bits or 0 = 3DES.
_PKCS12_PBE: dict[str, tuple[int, int]] = {
    "1.2.840.113549.1.12.1.3": (24, 0),  # pbeWithSHAAnd3-KeyTripleDES-CBC
    "1.2.840.113549.1.12.1.4": (16, 0),  # pbeWithSHAAnd2-KeyTripleDES-CBC
    "1.2.840.113549.1.12.1.5": (16, 128),  # pbeWithSHAAnd128BitRC2-CBC
    "1.2.840.113549.1.12.1.6": (5, 40),  # pbewithSHAAnd40BitRC2-CBC
}
_PBES2 = "1.2.840.113549.1.5.13"
_PBKDF2 = "1.2.840.113549.1.5.12"
_AES_CBC = {
    "2.16.840.1.101.3.4.1.2": 16,
    "2.16.840.1.101.3.4.1.22": 24,
    "2.16.840.1.101.3.4.1.42": 32,
}
_DES_EDE3_CBC = "1.2.840.113549.3.7"


# --- PKCS#12 key derivation (RFC 7292 appendix B) -----------------------------------------


def _bmp_password(password: bytes) -> bytes:
    try:
        text = password.decode("utf-8")
    except UnicodeDecodeError:
        raise WrongPasswordError("password is not UTF-8") from None
    return text.encode("utf-16-be") + b"\x00\x00" if text or password else b""


def _pkcs12_kdf(
    hash_new: Callable[[], hashlib._Hash],
    purpose: int,
    password: bytes,
    salt: bytes,
    iterations: int,
    size: int,
) -> bytes:
    h = hash_new()
    v = h.block_size
    d = bytes([purpose]) * v

    def fill(b: bytes) -> bytes:
        if not b:
            return b""
        n = v * ((len(b) + v - 1) // v)
        return (b * (n // len(b) + 1))[:n]

    i = bytearray(fill(salt) + fill(password))
    out = b""
    while len(out) < size:
        a = d + bytes(i)
        for _ in range(iterations):
            h = hash_new()
            h.update(a)
            a = h.digest()
        out += a
        b = int.from_bytes(fill(a), "big") + 1
        for j in range(0, len(i), v):
            block = (int.from_bytes(i[j : j + v], "big") + b) % (1 << (8 * v))
            i[j : j + v] = block.to_bytes(v, "big")
    return out[:size]


# --- decryption --------------------------------------------------------------------------


def _unpad(data: bytes, block: int) -> bytes:
    if not data or len(data) % block:
        raise Pkcs12Error("bad encrypted length")
    pad = data[-1]
    if not 1 <= pad <= block or data[-pad:] != bytes([pad]) * pad:
        raise Pkcs12Error("bad padding")
    return data[:-pad]


def _decrypt(algorithm: _TLV, ciphertext: bytes, password: bytes) -> bytes:
    parts = _seq(algorithm)
    oid = _oid(parts[0])
    if oid in _PKCS12_PBE:
        key_len, rc2_bits = _PKCS12_PBE[oid]
        params = _seq(parts[1])
        salt, iterations = _octets(params[0]), _int(params[1])
        bmp = _bmp_password(password)
        key = _pkcs12_kdf(hashlib.sha1, 1, bmp, salt, iterations, key_len)
        iv = _pkcs12_kdf(hashlib.sha1, 2, bmp, salt, iterations, 8)
        if rc2_bits:
            from Cryptodome.Cipher import ARC2

            # The stub omits effective_keylen, which RC2-40 needs (key 5 bytes, 40 bits).
            rc2 = ARC2.new(  # type: ignore[call-arg]  # noqa: S304
                key, ARC2.MODE_CBC, iv=iv, effective_keylen=rc2_bits
            )
            return _unpad(rc2.decrypt(ciphertext), 8)
        from Cryptodome.Cipher import DES3

        if key_len == 16:
            key += key[:8]
        des = DES3.new(key, DES3.MODE_CBC, iv=iv)
        return _unpad(des.decrypt(ciphertext), 8)
    if oid == _PBES2:
        kdf_alg, enc_alg = _seq(parts[1])
        kdf_parts = _seq(kdf_alg)
        if _oid(kdf_parts[0]) != _PBKDF2:
            raise Pkcs12Error("unsupported PBES2 key derivation")
        kdf = _seq(kdf_parts[1])
        salt, iterations = _octets(kdf[0]), _int(kdf[1])
        prf: hashes.HashAlgorithm = hashes.SHA1()  # noqa: S303  (RFC 8018 default PRF)
        for extra in kdf[2:]:
            if extra.tag == 0x30:
                prf_oid = _oid(_seq(extra)[0])
                if prf_oid not in _HMACS:
                    raise Pkcs12Error("unsupported PBKDF2 PRF")
                prf = _HMACS[prf_oid]
        enc_parts = _seq(enc_alg)
        enc_oid, iv = _oid(enc_parts[0]), _octets(enc_parts[1])
        if enc_oid in _AES_CBC:
            size = _AES_CBC[enc_oid]
            key = PBKDF2HMAC(prf, size, salt, iterations).derive(password)
            dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
            return _unpad(dec.update(ciphertext) + dec.finalize(), 16)
        if enc_oid == _DES_EDE3_CBC:
            from Cryptodome.Cipher import DES3

            key = PBKDF2HMAC(prf, 24, salt, iterations).derive(password)
            return _unpad(DES3.new(key, DES3.MODE_CBC, iv=iv).decrypt(ciphertext), 8)
        raise Pkcs12Error("unsupported PBES2 cipher")
    raise Pkcs12Error(f"unsupported encryption algorithm {oid}")


# --- PFX ---------------------------------------------------------------------------------


def _verify_mac(mac_data: _TLV, auth_safe: bytes, password: bytes) -> None:
    parts = _seq(mac_data)
    digest_info = _seq(parts[0])
    hash_oid = _oid(_seq(digest_info[0])[0])
    expected = _octets(digest_info[1])
    salt = _octets(parts[1])
    iterations = _int(parts[2]) if len(parts) > 2 else 1
    hash_new = _HASHES.get(hash_oid)
    if hash_new is None:
        raise Pkcs12Error("unsupported MAC algorithm")
    key = _pkcs12_kdf(
        hash_new, 3, _bmp_password(password), salt, iterations, hash_new().digest_size
    )
    actual = hmac.new(key, auth_safe, hash_new).digest()
    if not hmac.compare_digest(actual, expected):
        raise WrongPasswordError("MAC does not verify")


def _bags(safe_contents: bytes, out: list[tuple[bool, bytes]]) -> None:
    for bag in _children(safe_contents):
        parts = _seq(bag)
        bag_id = _oid(parts[0])
        if bag_id == _SAFE_CONTENTS_BAG:
            _bags(_explicit(parts[1]).value, out)
            continue
        if bag_id != _CERT_BAG:
            continue  # key bags and others: never decrypted, never kept
        cert_bag = _seq(_explicit(parts[1]))
        if _oid(cert_bag[0]) != _X509_CERTIFICATE:
            continue
        has_key = False
        if len(parts) > 2:
            for attribute in _seq(parts[2], 0x31):
                if _oid(_seq(attribute)[0]) == _LOCAL_KEY_ID:
                    has_key = True
        out.append((has_key, _octets(_explicit(cert_bag[1]))))


def certificates(data: bytes, password: bytes) -> list[bytes]:
    """DER certificates of a PFX: the one paired with a key first, then the others in order.

    That is the order cryptography's ``load_pkcs12`` gives (``cert``, ``additional_certs``).
    Raises :class:`WrongPasswordError` when the MAC does not verify, :class:`Pkcs12Error`
    when the data is malformed or uses an unsupported algorithm.
    """
    try:
        pfx = _read_tlv(data, 0)[0]
        parts = _seq(pfx)
        if _int(parts[0]) != 3:
            raise Pkcs12Error("not PFX version 3")
        auth_parts = _seq(parts[1])
        if _oid(auth_parts[0]) != _DATA:
            raise Pkcs12Error("public-key integrity mode is not supported")
        auth_safe = _octets(_explicit(auth_parts[1]))
        if len(parts) > 2:
            _verify_mac(parts[2], auth_safe, password)
        found: list[tuple[bool, bytes]] = []
        for content_info in _children(_read_tlv(auth_safe, 0)[0].value):
            ci = _seq(content_info)
            kind = _oid(ci[0])
            if kind == _DATA:
                _bags(_read_tlv(_octets(_explicit(ci[1])), 0)[0].value, found)
            elif kind == _ENCRYPTED_DATA:
                encrypted = _seq(_explicit(ci[1]))
                eci = _seq(encrypted[1])
                if len(eci) < 3:
                    continue
                ciphertext = _octets(eci[2])
                plain = _decrypt(eci[1], ciphertext, password)
                _bags(_read_tlv(plain, 0)[0].value, found)
    except (IndexError, ValueError):
        # Missing sequence elements or undecodable fields: the file is damaged.
        raise Pkcs12Error("malformed") from None
    return [der for has_key, der in found if has_key] + [
        der for has_key, der in found if not has_key
    ]
