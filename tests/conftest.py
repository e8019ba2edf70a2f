"""Shared pytest fixtures. Test certificates come from the one fixture module, ``pki``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
