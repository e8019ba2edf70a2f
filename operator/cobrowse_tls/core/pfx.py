"""What cryptography's PKCS#12 loader cannot tell: a wrong password from damaged data.

cryptography (through OpenSSL) decodes every PKCS#12 file; when it fails it only says
"invalid password or PKCS12 data". This module answers the question the operator must
report: it decodes the PFX structure with pyasn1-modules (RFC 7292) and checks the MAC with
pyjks's RFC 7292 key derivation. It never decrypts anything: certificates always come from
cryptography.

Pure: no I/O.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Callable
from typing import NoReturn

from jks import rfc7292 as jks_kdf
from pyasn1.codec.ber import decoder
from pyasn1.error import PyAsn1Error, SubstrateUnderrunError
from pyasn1.type import univ
from pyasn1_modules import rfc5652, rfc7292


class Pkcs12Error(Exception):
    """Malformed or unreadable PKCS#12 data (the message never holds secret material)."""


class WrongPasswordError(Pkcs12Error):
    """The MAC does not verify with the given password."""


# Digest algorithms a PKCS#12 MAC may name (RFC 7292 and RFC 9579 list these).
_MAC_HASHES: dict[str, Callable[..., hashlib._Hash]] = {
    "1.3.14.3.2.26": hashlib.sha1,
    "2.16.840.1.101.3.4.2.4": hashlib.sha224,
    "2.16.840.1.101.3.4.2.1": hashlib.sha256,
    "2.16.840.1.101.3.4.2.2": hashlib.sha384,
    "2.16.840.1.101.3.4.2.3": hashlib.sha512,
}

# Names for the error message when the MAC verifies but cryptography still cannot decrypt
# (an OpenSSL without its legacy provider, as in FIPS builds).
_ENCRYPTIONS = {
    "1.2.840.113549.1.12.1.3": "pbeWithSHAAnd3-KeyTripleDES-CBC",
    "1.2.840.113549.1.12.1.4": "pbeWithSHAAnd2-KeyTripleDES-CBC",
    "1.2.840.113549.1.12.1.5": "pbeWithSHAAnd128BitRC2-CBC",
    "1.2.840.113549.1.12.1.6": "pbeWithSHAAnd40BitRC2-CBC",
    "1.2.840.113549.1.5.13": "PBES2",
}


def _decode(data: bytes, spec: univ.Asn1Item) -> univ.Asn1Item:
    try:
        value, _rest = decoder.decode(data, asn1Spec=spec)
    except SubstrateUnderrunError:
        raise Pkcs12Error("truncated") from None
    except PyAsn1Error:
        raise Pkcs12Error("malformed") from None
    return value


def _bmp_passwords(password: bytes | None) -> list[bytes]:
    """The BMPString encodings (RFC 7292 B.1) OpenSSL may have used for ``password``."""
    if not password:
        # OpenSSL writes the MAC of an empty password either over the two-byte terminator
        # alone or over no bytes at all, and tries both when reading.
        return [b"\x00\x00", b""]
    texts = []
    with contextlib.suppress(UnicodeDecodeError):
        texts.append(password.decode("utf-8"))
    # OpenSSL encodes bytes that are not UTF-8 one byte per BMP character, as Latin-1 does.
    if (latin1 := password.decode("latin-1")) not in texts:
        texts.append(latin1)
    return [text.encode("utf-16-be") + b"\x00\x00" for text in texts]


def _mac_key(hash_new: Callable[..., hashlib._Hash], bmp: bytes, salt: bytes, rounds: int) -> bytes:
    # pyjks takes the password as text: "" for no bytes, else UTF-16BE plus the terminator.
    # The derivation repeats the password bytes to fill whole hash blocks (RFC 7292 B.2
    # step 3), so the terminator alone derives the same key as (block size / 2 - 1) NUL
    # characters plus the terminator.
    if bmp == b"\x00\x00":
        text = "\x00" * (hash_new().block_size // 2 - 1)
    else:
        text = bmp[:-2].decode("utf-16-be")
    size = hash_new().digest_size
    key: bytes = jks_kdf.derive_key(
        hash_new, jks_kdf.PURPOSE_MAC_MATERIAL, text, salt, rounds, size
    )
    return key


def check(data: bytes, password: bytes | None) -> NoReturn:
    """Why cryptography could not load ``data`` with ``password``.

    Raises :class:`WrongPasswordError` when the PFX has a MAC that ``password`` does not
    verify, :class:`Pkcs12Error` when the data is malformed, truncated or uses an
    encryption that cryptography's OpenSSL cannot decrypt although the password is right.
    """
    pfx = _decode(data, rfc7292.PFX())
    if int(pfx["version"]) != 3:
        raise Pkcs12Error("not PFX version 3")
    auth_safe = pfx["authSafe"]
    if auth_safe["contentType"] != rfc5652.id_data:
        raise Pkcs12Error("public-key integrity mode is not supported")
    content = bytes(_decode(bytes(auth_safe["content"]), univ.OctetString()))
    mac_data = pfx["macData"]
    if mac_data.isValue:
        _verify_mac(mac_data, content, password)
    safes = _decode(content, rfc7292.AuthenticatedSafe())
    encryptions = []
    for info in safes:
        if info["contentType"] == rfc5652.id_encryptedData:
            encrypted = _decode(bytes(info["content"]), rfc5652.EncryptedData())
            algorithm = encrypted["encryptedContentInfo"]["contentEncryptionAlgorithm"]
            oid = str(algorithm["algorithm"])
            encryptions.append(_ENCRYPTIONS.get(oid, oid))
    if not mac_data.isValue and encryptions:
        if not password:
            raise WrongPasswordError("encrypted, no MAC")
        raise Pkcs12Error("wrong password or undecryptable data (no MAC to tell which)")
    if encryptions:
        raise Pkcs12Error(f"cannot decrypt {', '.join(sorted(set(encryptions)))}")
    raise Pkcs12Error("malformed")


def _verify_mac(mac_data: rfc7292.MacData, content: bytes, password: bytes | None) -> None:
    digest_info = mac_data["mac"]
    hash_oid = str(digest_info["digestAlgorithm"]["algorithm"])
    hash_new = _MAC_HASHES.get(hash_oid)
    if hash_new is None:
        raise Pkcs12Error(f"unsupported MAC algorithm {hash_oid}")
    expected = bytes(digest_info["digest"])
    salt = bytes(mac_data["macSalt"])
    rounds = int(mac_data["iterations"])
    for bmp in _bmp_passwords(password):
        key = _mac_key(hash_new, bmp, salt, rounds)
        if hmac.compare_digest(hmac.new(key, content, hash_new).digest(), expected):
            return
    raise WrongPasswordError("MAC does not verify")
