"""Shared pytest fixtures. Test certificates come from the one fixture module, ``pki``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import fake_crypt32
import pki as pki_module
import tls_servers


@pytest.fixture(scope="session")
def pki() -> pki_module.PKI:
    """The session's test certificates (generated once)."""
    return pki_module.pki()


@pytest.fixture(scope="session")
def servers(
    pki: pki_module.PKI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, int]]:
    """Real TLS servers on 127.0.0.1 (see ``tls_servers.openssl_servers``); name -> port."""
    with tls_servers.openssl_servers(pki, tmp_path_factory.mktemp("tls-servers")) as ports:
        yield ports


@pytest.fixture(scope="session")
def exported_pkcs12(
    pki: pki_module.PKI, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, pki_module.Exported]:
    """PKCS#12 files written by the real ``openssl pkcs12 -export`` and ``keytool``; by name."""
    return pki_module.export_pkcs12(pki, tmp_path_factory.mktemp("pkcs12"))


@pytest.fixture(scope="session")
def crypt32_library(tmp_path_factory: pytest.TempPathFactory) -> fake_crypt32.FakeCrypt32:
    """The fake crypt32 (``tests/native/fake_crypt32.c``), compiled once per session."""
    return fake_crypt32.FakeCrypt32(fake_crypt32.build(tmp_path_factory.mktemp("crypt32")))


@pytest.fixture
def crypt32(crypt32_library: fake_crypt32.FakeCrypt32) -> fake_crypt32.FakeCrypt32:
    """The fake crypt32 with no stores, counters at zero and nothing injected."""
    crypt32_library.reset()
    return crypt32_library
