"""Shared pytest fixtures. Test certificates come from the one fixture module, ``pki``."""

from __future__ import annotations

import pytest

import pki as pki_module


@pytest.fixture(scope="session")
def pki() -> pki_module.PKI:
    """The session's test certificates (generated once)."""
    return pki_module.pki()
