"""Trust-store encoders: the normalized PEM bundle and the Java KeyStore (JKS).

Pure and deterministic: the same certificates in the same order always give the same bytes
(no clock: JKS entry timestamps are the certificates' notBefore).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jks

from cobrowse_tls.core.certs import CACertificate

__all__ = ["jks_aliases", "jks_truststore", "pem_bundle"]


# Five dashes start and end every PEM boundary ("-----BEGIN CERTIFICATE-----"); some readers,
# the project's own among them, look for boundaries anywhere in a line.
_PEM_DASHES = re.compile(r"-{5,}")


def _comment(text: str) -> str:
    # Subjects come from the input: keep each comment on one line so that no subject can end
    # the comment early or smuggle a PEM marker into the bundle, and keep the bundle ASCII
    # (as certifi's is) for consumers that do not expect UTF-8: escape like certifi does.
    if not (text.isascii() and text.isprintable()):
        text = "".join(
            ch if " " <= ch <= "~" else ch.encode("unicode_escape").decode("ascii") for ch in text
        )
    # No run of five dashes survives, so no PEM boundary can appear outside the PEM blocks.
    return _PEM_DASHES.sub(lambda m: "\\x2d" * len(m.group()), text)


def pem_bundle(certs: Sequence[CACertificate]) -> bytes:
    """The PEM bundle: each certificate preceded by ``# subject:`` and ``# sha256:`` lines.

    ASCII only, LF line endings and a trailing newline; readable by ``openssl -CAfile`` and Java's
    ``CertificateFactory`` (both skip text outside the PEM blocks).
    """
    parts = [
        f"# subject: {_comment(cert.subject)}\n# sha256: {cert.sha256}\n{cert.pem}"
        for cert in certs
    ]
    return "".join(parts).encode("ascii")


def jks_aliases(base: str, count: int) -> list[str]:
    """Aliases for ``count`` certificates: ``base``, ``base-2``, ``base-3``, ...

    Lowercased: JKS aliases are case-insensitive and stored lowercase (keytool, pyjks), so
    the names reported in status are the ones ``keytool -list`` shows.
    """
    base = base.lower()
    return [base if i == 1 else f"{base}-{i}" for i in range(1, count + 1)]


def jks_truststore(certs: Sequence[CACertificate], *, alias: str, password: str) -> bytes:
    """A JKS of ``trustedCertEntry`` entries, aliases from :func:`jks_aliases` in the given order.

    Each entry's timestamp is its certificate's notBefore (pyjks would otherwise stamp the
    current time and every render would change the bytes, restarting workloads for nothing).
    """
    aliases = jks_aliases(alias, len(certs))
    entries = []
    for name, cert in zip(aliases, certs, strict=True):
        # Built directly rather than with TrustedCertEntry.new(), which reads the clock.
        # pyjks packs the timestamp unsigned, so a (theoretical) pre-1970 notBefore is clamped.
        millis = max(0, int(cert.not_before.timestamp()) * 1000)
        entries.append(
            jks.TrustedCertEntry(
                alias=name, timestamp=millis, cert=cert.der, type="X.509", store_type="jks"
            )
        )
    store = jks.KeyStore.new("jks", entries)
    data: bytes = store.saves(password)
    return data
