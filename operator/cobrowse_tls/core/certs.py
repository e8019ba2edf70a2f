"""Certificate inputs: parse PEM, DER and PKCS#12 sources into CA certificates and select them.

Pure module: no I/O, no clock (callers pass ``now``), no randomness. Errors are
:class:`CertificateError` with a condition ``reason`` and the human label of the source;
their messages never contain passwords or key material.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12

__all__ = [
    "CACertificate",
    "CertificateError",
    "Selection",
    "fingerprint",
    "parse_source",
    "select",
]

INVALID_CERTIFICATE = "InvalidCertificate"
WRONG_PASSWORD = "WrongPassword"
NOT_A_CA = "NotACertificateAuthority"
NO_CERTIFICATES = "NoCertificates"

# Label used when an error concerns the merged set rather than one source.
ALL_SOURCES = "trustedCA.sources"


class CertificateError(Exception):
    """A source (or the merged set) cannot give a usable trust store.

    ``reason`` is the condition reason (``InvalidCertificate``, ``WrongPassword``,
    ``NotACertificateAuthority``, ``NoCertificates``); ``source`` the human label of the source.
    """

    def __init__(self, reason: str, source: str, detail: str) -> None:
        super().__init__(f"{source}: {detail}")
        self.reason = reason
        self.source = source
        self.detail = detail


@dataclass(frozen=True)
class CACertificate:
    """One certificate as found in a source (DER bytes plus the facts the operator reports)."""

    der: bytes
    sha256: str
    subject: str
    not_before: datetime
    not_after: datetime
    source: str
    is_ca: bool

    @property
    def pem(self) -> str:
        """The certificate as one PEM block (LF line endings, trailing newline)."""
        b64 = base64.b64encode(self.der).decode("ascii")
        lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
        return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"

    @classmethod
    def from_x509(
        cls, cert: x509.Certificate, *, source: str, der: bytes | None = None
    ) -> CACertificate:
        """From a parsed certificate; ``der``: its encoding when known (saves re-encoding)."""
        if der is None:
            der = cert.public_bytes(Encoding.DER)
        return cls(
            der=der,
            sha256=hashlib.sha256(der).hexdigest(),
            subject=cert.subject.rfc4514_string(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            source=source,
            is_ca=_is_ca(cert),
        )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        ext = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return bool(ext.value.ca)


# --- parsing -----------------------------------------------------------------------------

_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_CERT_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE"}


def parse_source(data: bytes, *, source: str, password: bytes | None = None) -> list[CACertificate]:
    """All certificates found in ``data``, in file order.

    The format is detected: PEM (one or many certificates, any text around the blocks,
    CRLF line endings), DER, or PKCS#12 (modern and legacy encryption). Private keys are
    ignored. ``password`` is only used for PKCS#12.
    """
    if not data.strip():
        raise CertificateError(NO_CERTIFICATES, source, "empty, no certificate")
    if b"-----BEGIN " in data:
        return [
            CACertificate.from_x509(c, source=source, der=der)
            for c, der in _parse_pem(data, source)
        ]
    return [
        CACertificate.from_x509(c, source=source) for c in _parse_binary(data, source, password)
    ]


def _pem_blocks(text: bytes) -> Iterator[tuple[bytes, bytes | None]]:
    """(label, body) of each PEM block in order; body None when the END line is missing."""
    # Plain find() rather than one regex over the whole text: a lazy DOTALL pattern with a
    # back-reference made parsing a 140-certificate bundle several times slower.
    pos = 0
    while match := _PEM_BEGIN.search(text, pos):
        label, start = match.group(1), match.end()
        end_marker = b"-----END " + label + b"-----"
        end = text.find(end_marker, start)
        following = text.find(b"-----BEGIN ", start)
        if end == -1 or -1 < following < end:
            yield label, None
            pos = start
            continue
        yield label, text[start:end]
        pos = end + len(end_marker)


def _parse_pem(data: bytes, source: str) -> list[tuple[x509.Certificate, bytes]]:
    # Windows tools write CRLF; a stray CR would break base64 decoding.
    text = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    certs: list[tuple[x509.Certificate, bytes]] = []
    index = 0
    for label, body in _pem_blocks(text):
        # Only certificate blocks count; keys, CRLs and requests are skipped, never kept.
        if label not in _CERT_LABELS:
            continue
        index += 1
        if body is None:
            raise CertificateError(
                INVALID_CERTIFICATE, source, f"PEM certificate block {index} has no END line"
            )
        # RFC 1421 headers (rare for certificates) end with a blank line before the base64.
        if b":" in body.lstrip(b"\n").split(b"\n", 1)[0]:
            body = body.split(b"\n\n", 1)[-1]
        try:
            der = base64.b64decode(b"".join(body.split()), validate=True)
        except (binascii.Error, ValueError):
            raise CertificateError(
                INVALID_CERTIFICATE, source, f"PEM certificate block {index} is not valid base64"
            ) from None
        if label == b"TRUSTED CERTIFICATE":
            # OpenSSL's trusted form appends trust settings after the certificate itself.
            der = der[: _tlv_total_length(der) or len(der)]
        try:
            certs.append((x509.load_der_x509_certificate(der), der))
        except ValueError:
            raise CertificateError(
                INVALID_CERTIFICATE,
                source,
                f"PEM certificate block {index} is not a valid X.509 certificate",
            ) from None
    if not certs:
        raise CertificateError(NO_CERTIFICATES, source, "no certificate in PEM data")
    return certs


def _tlv_total_length(data: bytes) -> int | None:
    """The length that the first DER element of ``data`` declares (header included)."""
    # Only the header is read, so the length a truncated file declares can be reported.
    if len(data) < 2:
        return None
    length = data[1]
    if not length & 0x80:
        return 2 + length
    count = length & 0x7F
    if count == 0 or count > 4 or len(data) < 2 + count:
        return None
    return 2 + count + int.from_bytes(data[2 : 2 + count], "big")


def _looks_like_pfx(data: bytes) -> bool:
    """True when ``data`` starts like a PFX: SEQUENCE { INTEGER 3, ContentInfo ... }."""
    # Only the first bytes are checked so that truncated files are still recognised as
    # PKCS#12 and reported as such.
    if _tlv_total_length(data) is None or data[0] != 0x30:
        return False
    header = 2 + (data[1] & 0x7F if data[1] & 0x80 else 0)
    return data[header : header + 3] == b"\x02\x01\x03"


def _parse_binary(data: bytes, source: str, password: bytes | None) -> list[x509.Certificate]:
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        pass
    if not _looks_like_pfx(data):
        declared = _tlv_total_length(data)
        if data[:1] == b"\x30" and declared is not None and declared > len(data):
            raise CertificateError(
                INVALID_CERTIFICATE,
                source,
                f"truncated DER or PKCS#12 data ({len(data)} of {declared} bytes)",
            )
        raise CertificateError(INVALID_CERTIFICATE, source, "not PEM, DER or PKCS#12 data")
    return _parse_pkcs12(data, source, password)


def _parse_pkcs12(data: bytes, source: str, password: bytes | None) -> list[x509.Certificate]:
    if password is not None and not _is_utf8(password):
        # cryptography raises a TypeError for such a password instead of a ValueError.
        raise CertificateError(WRONG_PASSWORD, source, "the PKCS#12 password is not UTF-8 text")
    try:
        loaded = pkcs12.load_pkcs12(data, password)
    except ValueError:
        # cryptography says "invalid password or PKCS12 data" for both; the MAC tells.
        _pkcs12_failure(data, source, password)
    found = ([loaded.cert.certificate] if loaded.cert else []) + [
        c.certificate for c in loaded.additional_certs
    ]
    if not found:
        raise CertificateError(NO_CERTIFICATES, source, "no certificate in PKCS#12 data")
    return found


def _pkcs12_failure(data: bytes, source: str, password: bytes | None) -> NoReturn:
    # Imported here, not at the top: pfx needs pyjks and pyasn1, which the Windows agent image
    # does not install (the agent parses only the PEM the operator wrote).
    from cobrowse_tls.core import pfx

    try:
        pfx.check(data, password)
    except pfx.WrongPasswordError:
        if password is None:
            raise CertificateError(
                WRONG_PASSWORD,
                source,
                "PKCS#12 data is password-protected and no password was given",
            ) from None
        raise CertificateError(WRONG_PASSWORD, source, "wrong PKCS#12 password") from None
    except pfx.Pkcs12Error as exc:
        raise CertificateError(
            INVALID_CERTIFICATE, source, f"invalid PKCS#12 data: {exc}"
        ) from None


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --- selection ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """The outcome of :func:`select`.

    ``certificates``: usable (CA or allowed non-CA, not expired), unique by SHA-256, in order of
    first appearance. ``expired``: left out because expired (unique). ``non_ca``: the
    certificates among ``certificates`` that are not CAs and were kept only because
    ``allowNonCA`` is set.
    """

    certificates: tuple[CACertificate, ...]
    expired: tuple[CACertificate, ...]
    non_ca: tuple[CACertificate, ...]


def select(certs: Iterable[CACertificate], *, allow_non_ca: bool, now: datetime) -> Selection:
    """Keep the usable certificates: CA (unless ``allow_non_ca``), not expired at ``now``."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    seen: set[str] = set()
    usable: list[CACertificate] = []
    expired: list[CACertificate] = []
    non_ca: list[CACertificate] = []
    for cert in certs:
        if cert.sha256 in seen:
            continue
        seen.add(cert.sha256)
        if not cert.is_ca and not allow_non_ca:
            raise CertificateError(
                NOT_A_CA,
                cert.source,
                f"certificate {_quote(cert.subject)} is not a certificate authority "
                "(no basicConstraints CA=true); set allowNonCA to trust it anyway",
            )
        if cert.not_after < now:
            expired.append(cert)
            continue
        usable.append(cert)
        if not cert.is_ca:
            non_ca.append(cert)
    if not usable:
        if expired:
            count = len(expired)
            what = "the only certificate has" if count == 1 else f"all {count} certificates have"
            raise CertificateError(NO_CERTIFICATES, ALL_SOURCES, f"{what} expired")
        raise CertificateError(NO_CERTIFICATES, ALL_SOURCES, "no certificate")
    return Selection(tuple(usable), tuple(expired), tuple(non_ca))


def expiring(
    certs: Iterable[CACertificate], *, now: datetime, within: timedelta
) -> tuple[CACertificate, ...]:
    """The certificates that expire within ``within`` of ``now`` (for ExpiringSoon)."""
    return tuple(c for c in certs if c.not_after - now <= within)


def fingerprint(certs: Sequence[CACertificate]) -> str:
    """``sha256:<hex>`` of the set: the sorted unique SHA-256s, one per line. Order-free."""
    joined = "\n".join(sorted({c.sha256 for c in certs}))
    return "sha256:" + hashlib.sha256(joined.encode("ascii")).hexdigest()


def _quote(subject: str) -> str:
    # A subject is attacker-controlled text that ends up in one-line messages and events.
    cleaned = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in subject)
    return f'"{cleaned}"' if cleaned else '"(empty subject)"'
