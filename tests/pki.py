"""Test certificates, generated once per test session with ``cryptography``.

One shared module for every test that needs certificates: root CAs, an intermediate, server
certificates for 127.0.0.1/localhost, a leaf without CA basic constraints, expired CAs, and
every input format the operator accepts (PEM variants, DER, PKCS#12 modern and legacy).
EC P-256 keys keep generation fast (a few milliseconds per certificate).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

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


# A minimal DER writer for the RC2-40 file: cryptography can read but not write RC2, and the
# tests should not need the openssl binary for it.


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _seq(*items: bytes) -> bytes:
    return _der(0x30, b"".join(items))


def _oid(dotted: str) -> bytes:
    nums = [int(x) for x in dotted.split(".")]
    body = bytes([40 * nums[0] + nums[1]])
    for n in nums[2:]:
        chunk = [n & 0x7F]
        n >>= 7
        while n:
            chunk.append(0x80 | (n & 0x7F))
            n >>= 7
        body += bytes(reversed(chunk))
    return _der(0x06, body)


def _int(n: int) -> bytes:
    return _der(0x02, n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big"))


def _octets(data: bytes) -> bytes:
    return _der(0x04, data)


def _explicit0(data: bytes) -> bytes:
    return _der(0xA0, data)


def _kdf(purpose: int, password: bytes, salt: bytes, iterations: int, size: int) -> bytes:
    # pyjks's RFC 7292 key derivation: an implementation independent of the operator's.
    from jks import rfc7292

    key: bytes = rfc7292.derive_key(
        hashlib.sha1, purpose, password.decode(), salt, iterations, size
    )
    return key


def pkcs12_rc2_40(main: CertKey, *extra: CertKey, password: bytes = PASSWORD) -> bytes:
    """Legacy PKCS#12 as old Windows/Java export it: certificates under RC2-40, SHA-1 MAC.

    The key sits in a plain keyBag (so tests can check that it is never picked up).
    """
    from Cryptodome.Cipher import ARC2

    key_id = b"\x01\x02\x03\x04"
    local_key_id = _der(0x31, _seq(_oid("1.2.840.113549.1.9.21"), _der(0x31, _octets(key_id))))
    cert_bags = []
    for index, item in enumerate((main, *extra)):
        cert_bag = _seq(
            _oid("1.2.840.113549.1.12.10.1.3"),
            _explicit0(_seq(_oid("1.2.840.113549.1.9.22.1"), _explicit0(_octets(item.der)))),
            *([local_key_id] if index == 0 else []),
        )
        cert_bags.append(cert_bag)
    plain = _seq(*cert_bags)
    salt, iterations = b"\x11" * 8, 2048
    rc2_key = _kdf(1, password, salt, iterations, 5)
    iv = _kdf(2, password, salt, iterations, 8)
    pad = 8 - len(plain) % 8
    # RC2 is the point of this fixture; the stub lacks effective_keylen.
    cipher = ARC2.new(  # type: ignore[call-arg]  # noqa: S304
        rc2_key, ARC2.MODE_CBC, iv=iv, effective_keylen=40
    )
    encrypted = cipher.encrypt(plain + bytes([pad]) * pad)
    encrypted_info = _seq(
        _oid("1.2.840.113549.1.7.6"),
        _explicit0(
            _seq(
                _int(0),
                _seq(
                    _oid("1.2.840.113549.1.7.1"),
                    _seq(_oid("1.2.840.113549.1.12.1.6"), _seq(_octets(salt), _int(iterations))),
                    _der(0x80, encrypted),
                ),
            )
        ),
    )
    pkcs8 = main.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_bag = _seq(_oid("1.2.840.113549.1.12.10.1.1"), _explicit0(pkcs8), local_key_id)
    data_info = _seq(_oid("1.2.840.113549.1.7.1"), _explicit0(_octets(_seq(key_bag))))
    auth_safe = _seq(encrypted_info, data_info)
    mac_salt = b"\x22" * 8
    mac_key = _kdf(3, password, mac_salt, iterations, 20)
    mac = hmac.new(mac_key, auth_safe, hashlib.sha1).digest()
    mac_data = _seq(
        _seq(_seq(_oid("1.3.14.3.2.26"), b"\x05\x00"), _octets(mac)),
        _octets(mac_salt),
        _int(iterations),
    )
    return _seq(
        _int(3), _seq(_oid("1.2.840.113549.1.7.1"), _explicit0(_octets(auth_safe))), mac_data
    )


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
