"""Test certificates, generated once per test session with ``cryptography``.

One shared module for every test that needs certificates: root CAs, an intermediate, server
certificates for 127.0.0.1/localhost, a leaf without CA basic constraints, expired CAs, and
every input format the operator accepts (PEM variants, DER, PKCS#12 modern and legacy;
the PKCS#12 files users bring are written by the real ``openssl`` and ``keytool``).
EC P-256 keys keep generation fast (a few milliseconds per certificate).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PASSWORD = b"p12-secret"
DAY = timedelta(days=1)


@dataclass(frozen=True)
class CertKey:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cobrowse-tls tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def make_cert(
    cn: str,
    *,
    issuer: CertKey | None = None,
    ca: bool | None = True,
    not_before: datetime,
    not_after: datetime,
    hosts: tuple[str, ...] = (),
) -> CertKey:
    """A certificate for ``cn``; self-signed unless ``issuer``. ``ca=None``: no basicConstraints."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(cn)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), False
        )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False
        )
    signer = issuer.key if issuer else key
    return CertKey(builder.sign(signer, hashes.SHA256()), key)


@dataclass(frozen=True)
class PKI:
    """The session's certificates. ``now`` is the instant they were made relative to."""

    now: datetime
    root: CertKey  # the CA that signs ``server``
    other_root: CertKey  # an unrelated CA that signs ``other_server``
    intermediate: CertKey  # CA signed by ``root``
    server: CertKey  # leaf for 127.0.0.1/localhost signed by ``root`` (basicConstraints CA=false)
    other_server: CertKey  # the same, signed by ``other_root``
    no_bc: CertKey  # self-signed, without any basicConstraints extension
    expired_ca: CertKey
    expired_ca2: CertKey


@functools.cache
def pki() -> PKI:
    """The session's certificates (generated on first use, then cached)."""
    # Validity is relative to the real clock: openssl and Java check it against their own.
    now = datetime.now(UTC).replace(microsecond=0)
    nb, na = now - DAY, now + 365 * DAY
    root = make_cert("Test Root CA", not_before=nb, not_after=na)
    other_root = make_cert("Other Root CA", not_before=nb, not_after=na)
    hosts = ("localhost", "127.0.0.1")
    return PKI(
        now=now,
        root=root,
        other_root=other_root,
        intermediate=make_cert("Test Intermediate CA", issuer=root, not_before=nb, not_after=na),
        server=make_cert(
            "localhost", issuer=root, ca=False, hosts=hosts, not_before=nb, not_after=na
        ),
        other_server=make_cert(
            "localhost", issuer=other_root, ca=False, hosts=hosts, not_before=nb, not_after=na
        ),
        no_bc=make_cert("No Basic Constraints", ca=None, not_before=nb, not_after=na),
        expired_ca=make_cert("Expired CA", not_before=now - 400 * DAY, not_after=now - 30 * DAY),
        expired_ca2=make_cert("Expired CA 2", not_before=now - 800 * DAY, not_after=now - DAY),
    )


# --- PEM variants ------------------------------------------------------------------------


def pem(*items: CertKey) -> bytes:
    """Plain concatenated PEM blocks."""
    return b"".join(item.pem for item in items)


def pem_crlf(*items: CertKey) -> bytes:
    """PEM with Windows line endings."""
    return pem(*items).replace(b"\n", b"\r\n")


def pem_with_text(*items: CertKey) -> bytes:
    """PEM with prose before, between and after the blocks (as in certifi's bundle)."""
    parts = [b"This bundle was exported for the Genesys servers.\n\n"]
    for item in items:
        parts.append(f"# Issuer: {item.subject}\n# Label: some label\n".encode())
        parts.append(item.pem)
        parts.append(b"\n")
    parts.append(b"-- end of bundle --\n")
    return b"".join(parts)


def pem_bag_attributes(main: CertKey, *extra: CertKey) -> bytes:
    """What ``openssl pkcs12 -nodes`` prints: bag attributes, subject/issuer, cert and key."""
    parts = []
    for index, item in enumerate((main, *extra)):
        attrs = b"    localKeyId: 01 02 03 04 \n" if index == 0 else b""
        parts.append(
            b"Bag Attributes\n"
            + attrs
            + b"    friendlyName: "
            + item.subject.encode()
            + b"\n"
            + f"subject={item.subject}\nissuer={item.cert.issuer.rfc4514_string()}\n".encode()
            + item.pem
        )
    parts.append(
        b"Bag Attributes\n    localKeyId: 01 02 03 04 \nKey Attributes: <No Attributes>\n"
        + main.key_pem
    )
    return b"".join(parts)


def pem_with_key(item: CertKey) -> bytes:
    """A private key followed by the certificate (a common 'combined' PEM)."""
    return item.key_pem + item.pem


# --- PKCS#12 -----------------------------------------------------------------------------


def pkcs12_modern(main: CertKey, *extra: CertKey, password: bytes = PASSWORD) -> bytes:
    """PKCS#12 with AES-256-CBC/PBKDF2 and a SHA-256 MAC (OpenSSL 3 default)."""
    return pkcs12.serialize_key_and_certificates(
        b"main",
        main.key,
        main.cert,
        [e.cert for e in extra] or None,
        serialization.BestAvailableEncryption(password),
    )


def pkcs12_3des(main: CertKey, *extra: CertKey, password: bytes = PASSWORD) -> bytes:
    """Legacy PKCS#12: pbeWithSHAAnd3-KeyTripleDES-CBC and a SHA-1 MAC (old Java, Windows)."""
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())  # noqa: S303  (the legacy format under test)
        .build(password)
    )
    return pkcs12.serialize_key_and_certificates(
        b"main", main.key, main.cert, [e.cert for e in extra] or None, encryption
    )


def pkcs12_no_password(main: CertKey, *extra: CertKey) -> bytes:
    """PKCS#12 without encryption (and with an empty password)."""
    return pkcs12.serialize_key_and_certificates(
        b"main", main.key, main.cert, [e.cert for e in extra] or None, serialization.NoEncryption()
    )


# Files written by the real exporters (made in test set-up, never committed): what users
# bring from OpenSSL and Java. Each entry says what cryptography must find in it.


@dataclass(frozen=True)
class Exported:
    """A PKCS#12 file as a real tool wrote it, its password and the certificates it holds."""

    data: bytes
    password: bytes | None  # what a user would put in the Secret (None: no password key)
    certificates: tuple[bytes, ...]  # DER, in the order cryptography returns them
    encryption: str  # the certificates' encryption as RFC 7292/8018 name it ("": none)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH: the PKCS#12 fixtures are made with it")
    return path


def _run(*args: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode:
        pytest.fail(f"{' '.join(args[:3])} failed ({done.returncode}): {done.stderr.strip()}")


# name -> (extra ``openssl pkcs12 -export`` options, password, certificate encryption)
OPENSSL_EXPORTS: dict[str, tuple[tuple[str, ...], bytes | None, str]] = {
    "openssl-modern": ((), PASSWORD, "PBES2"),
    "openssl-legacy": (("-legacy",), PASSWORD, "pbeWithSHAAnd40BitRC2-CBC"),
    "openssl-rc2-40": (
        ("-legacy", "-certpbe", "PBE-SHA1-RC2-40", "-keypbe", "PBE-SHA1-RC2-40"),
        PASSWORD,
        "pbeWithSHAAnd40BitRC2-CBC",
    ),
    "openssl-rc2-128": (
        ("-legacy", "-certpbe", "PBE-SHA1-RC2-128"),
        PASSWORD,
        "pbeWithSHAAnd128BitRC2-CBC",
    ),
    "openssl-3des": (
        ("-certpbe", "PBE-SHA1-3DES", "-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1"),
        PASSWORD,
        "pbeWithSHAAnd3-KeyTripleDES-CBC",
    ),
    "openssl-modern-empty-password": ((), b"", "PBES2"),
    "openssl-legacy-empty-password": (("-legacy",), b"", "pbeWithSHAAnd40BitRC2-CBC"),
    "openssl-no-password": (("-certpbe", "NONE", "-keypbe", "NONE", "-nomac"), None, ""),
}
KEYTOOL_PASSWORD = b"keytool-secret"
# name -> (extra keytool options, certificate encryption)
KEYTOOL_EXPORTS: dict[str, tuple[tuple[str, ...], str]] = {
    # Java 17's default PKCS12 keystore (AES-256, SHA-256 MAC) and the one older Java wrote.
    "keytool": ((), "PBES2"),
    "keytool-legacy": (("-J-Dkeystore.pkcs12.legacy",), "pbeWithSHAAnd40BitRC2-CBC"),
}


def export_pkcs12(pki: PKI, directory: Path) -> dict[str, Exported]:
    """Every PKCS#12 variant above, written by ``openssl pkcs12 -export`` and ``keytool``.

    OpenSSL files hold ``server`` with its key, then ``root`` and ``intermediate``; keytool
    files hold ``root`` and ``intermediate`` as trusted entries (a Java trust store).
    """
    openssl, keytool = _tool("openssl"), _tool("keytool")
    cert = write(directory, "server.pem", pki.server.pem)
    key = write(directory, "server-key.pem", pki.server.key_pem)
    chain = write(directory, "chain.pem", pem(pki.root, pki.intermediate))
    found: dict[str, Exported] = {}
    for name, (options, password, encryption) in OPENSSL_EXPORTS.items():
        out = directory / f"{name}.p12"
        passout = "pass:" + (password or b"").decode()
        _run(openssl, "pkcs12", "-export", *options, "-in", str(cert), "-inkey", str(key),
             "-certfile", str(chain), "-passout", passout, "-out", str(out))  # fmt: skip
        ders: tuple[bytes, ...] = (pki.server.der, pki.root.der, pki.intermediate.der)
        found[name] = Exported(out.read_bytes(), password, ders, encryption)
    for name, (options, encryption) in KEYTOOL_EXPORTS.items():
        out = directory / f"{name}.p12"
        for alias, item in (("root", pki.root), ("intermediate", pki.intermediate)):
            pem_file = write(directory, f"{alias}.pem", item.pem)
            _run(keytool, *options, "-importcert", "-noprompt", "-alias", alias,
                 "-file", str(pem_file), "-keystore", str(out), "-storetype", "PKCS12",
                 "-storepass", KEYTOOL_PASSWORD.decode())  # fmt: skip
        found[name] = Exported(
            out.read_bytes(), KEYTOOL_PASSWORD, (pki.root.der, pki.intermediate.der), encryption
        )
    return found


def private_key_markers(item: CertKey) -> list[bytes]:
    """Byte strings that reveal ``item``'s private key if found in an output."""
    raw = item.key.private_numbers().private_value.to_bytes(32, "big")
    pkcs8 = item.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return [raw, pkcs8, b"PRIVATE KEY"]


# --- files -------------------------------------------------------------------------------


def write(directory: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to ``directory/name`` (owner-only, as a key file should be)."""
    path = directory / name
    path.write_bytes(data)
    os.chmod(path, 0o600)
    return path


def write_server(directory: Path, item: CertKey, *, chain: tuple[CertKey, ...] = ()) -> Path:
    """Write ``item``'s certificate (plus ``chain``) and key for ``openssl s_server``."""
    write(directory, "server-key.pem", item.key_pem)
    return write(directory, "server.pem", pem(item, *chain))
