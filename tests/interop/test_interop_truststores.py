"""The trust stores against their real consumers: keytool, a Java TLS client, openssl.

These tools are part of the test contract: when one is missing the tests fail (never skip).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

import pki as p
from cobrowse_tls.core.certs import parse_source, select
from cobrowse_tls.core.truststores import jks_truststore, pem_bundle
from tls_servers import tool

pytestmark = pytest.mark.interop

JAVA_SOURCE = Path(__file__).parent / "java" / "TlsProbe.java"
STOREPASS = "s3cret-store-pass"


@dataclass(frozen=True)
class Stores:
    jks: Path
    pem: Path
    aliases: list[str]
    sha256s: list[str]


@pytest.fixture(scope="module")
def stores(
    pki: p.PKI, tmp_path_factory: pytest.TempPathFactory, exported_pkcs12: dict[str, p.Exported]
) -> Stores:
    """A JKS and PEM bundle rendered from two sources; the CA of ``server`` comes second."""
    directory = tmp_path_factory.mktemp("stores")
    found = parse_source(
        p.pem_with_text(pki.intermediate, pki.expired_ca), source="a"
    ) + parse_source(
        exported_pkcs12["keytool-legacy"].data, source="b", password=p.KEYTOOL_PASSWORD
    )
    chosen = select(found, allow_non_ca=False, now=pki.now).certificates
    assert [c.der for c in chosen] == [pki.intermediate.der, pki.root.der]
    jks_path = p.write(
        directory, "truststore.jks", jks_truststore(chosen, alias="root", password=STOREPASS)
    )
    pem_path = p.write(directory, "ca.pem", pem_bundle(chosen))
    return Stores(jks_path, pem_path, ["root", "root-2"], [c.sha256 for c in chosen])


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compiled Java client (classes directory)."""
    classes = tmp_path_factory.mktemp("java")
    subprocess.run(
        [tool("javac"), "-d", str(classes), str(JAVA_SOURCE)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return classes


def run_probe(probe: Path, port: int, store: Path, password: str = STOREPASS) -> tuple[int, str]:
    result = subprocess.run(
        [tool("java"), "-cp", str(probe), "TlsProbe", "127.0.0.1", str(port), str(store), password],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, (result.stdout + result.stderr).strip()


# --- keytool -----------------------------------------------------------------------------


def test_keytool_lists_trusted_cert_entries(stores: Stores) -> None:
    out = subprocess.run(
        [tool("keytool"), "-list", "-keystore", str(stores.jks), "-storepass", STOREPASS],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "Keystore type: JKS" in out
    assert "Your keystore contains 2 entries" in out
    entries = [line.split(",")[0] for line in out.splitlines() if "trustedCertEntry" in line]
    assert sorted(entries) == sorted(stores.aliases)
    assert "PrivateKeyEntry" not in out


def test_keytool_verbose_fingerprints_match(stores: Stores) -> None:
    out = subprocess.run(
        [tool("keytool"), "-list", "-v", "-keystore", str(stores.jks), "-storepass", STOREPASS],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    blocks = out.split("Alias name: ")[1:]
    found = {}
    for block in blocks:
        alias = block.splitlines()[0].strip()
        line = next(x for x in block.splitlines() if x.strip().startswith("SHA256:"))
        found[alias] = line.split("SHA256:")[1].strip().replace(":", "").lower()
    assert found == dict(zip(stores.aliases, stores.sha256s, strict=True))


def test_keytool_rejects_wrong_password(stores: Stores) -> None:
    result = subprocess.run(
        [tool("keytool"), "-list", "-keystore", str(stores.jks), "-storepass", "nope-nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "password was incorrect" in result.stdout + result.stderr


# --- Java TLS client -----------------------------------------------------------------------


def test_java_handshake_with_jks(stores: Stores, probe: Path, servers: dict[str, int]) -> None:
    code, out = run_probe(probe, servers["good"], stores.jks)
    assert (code, out.split()[0]) == (0, "OK"), out


def test_java_handshake_with_pem_bundle(
    stores: Stores, probe: Path, servers: dict[str, int]
) -> None:
    code, out = run_probe(probe, servers["good"], stores.pem)
    assert (code, out.split()[0]) == (0, "OK"), out


def test_java_rejects_server_of_another_ca(
    stores: Stores, probe: Path, servers: dict[str, int]
) -> None:
    code, out = run_probe(probe, servers["other-ca"], stores.jks)
    assert code == 1, out
    assert out.startswith("FAIL"), out
    assert "PKIX path building failed" in out


def test_java_checks_host_name(stores: Stores, probe: Path, servers: dict[str, int]) -> None:
    code, out = run_probe(probe, servers["wrong-name"], stores.jks)
    assert code == 1, out
    assert "No subject alternative names matching IP address 127.0.0.1" in out


# --- openssl s_client --------------------------------------------------------------------


def s_client(port: int, ca_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            tool("openssl"),
            "s_client",
            "-brief",
            "-connect",
            f"127.0.0.1:{port}",
            "-CAfile",
            str(ca_file),
            "-verify_return_error",
            "-verify_ip",
            "127.0.0.1",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_openssl_verifies_with_pem_bundle(stores: Stores, servers: dict[str, int]) -> None:
    result = s_client(servers["good"], stores.pem)
    assert result.returncode == 0, result.stderr
    assert "Verification: OK" in result.stderr


def test_openssl_rejects_server_of_another_ca(stores: Stores, servers: dict[str, int]) -> None:
    result = s_client(servers["other-ca"], stores.pem)
    assert result.returncode != 0
    assert "unable to get local issuer certificate" in result.stderr
