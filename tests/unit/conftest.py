"""Fixtures of the unit tests (the certificates themselves come from ``tests/pki.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import pki as pki_module
from unit.builders import Doc, secret_doc, tls_doc

JKS_PASSWORD = b"s3cret-Password"


@pytest.fixture
def standard_inputs(pki: pki_module.PKI) -> Callable[..., list[Doc]]:
    """``standard_inputs(provider, **spec)``: a CobrowseTLS plus the Secrets it reads."""

    def build(provider: str = "PEM", **spec: Any) -> list[Doc]:
        return [
            secret_doc("genesys-ca", {"ca.crt": pki_module.pem(pki.root)}),
            secret_doc("jks-password", {"password": JKS_PASSWORD}),
            tls_doc(provider, **spec),
        ]

    return build
