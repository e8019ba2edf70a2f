"""ConnectionsVerified against real TLS servers (openssl s_server on 127.0.0.1)."""

from __future__ import annotations

from typing import Any

import pytest

import pki as p
import tls_servers
from cobrowse_tls.api import models
from cobrowse_tls.engine import connections

pytestmark = pytest.mark.interop


def spec(*conns: dict[str, Any], **extra: Any) -> models.CobrowseTLSSpec:
    return models.CobrowseTLSSpec.model_validate(
        {
            "provider": "PEM",
            "application": {"name": "CB"},
            "trustedCA": {"sources": [{"inline": "x"}]},
            "connections": list(conns),
            **extra,
        }
    )


def test_a_server_signed_by_the_ca_verifies(pki: p.PKI, servers: dict[str, int]) -> None:
    s = spec({"name": "MessageServer", "host": "127.0.0.1", "port": servers["good"]})
    assert connections.verify_all(s, p.pem(pki.root)) == (
        True,
        "Verified",
        "1 TLS endpoint(s) verified against the trust store",
    )


@pytest.mark.parametrize(
    ("server", "host", "fragment"),
    [
        ("other-ca", "127.0.0.1", "certificate verify failed"),
        ("wrong-name", "127.0.0.1", "IP address mismatch"),
    ],
)
def test_untrusted_or_misnamed_servers_fail_the_handshake(
    pki: p.PKI, servers: dict[str, int], server: str, host: str, fragment: str
) -> None:
    s = spec(
        {"name": "Good", "host": "127.0.0.1", "port": servers["good"]},
        {"name": "Bad", "host": host, "port": servers[server]},
    )
    ok, reason, message = connections.verify_all(s, p.pem(pki.root))
    assert (ok, reason) == (False, "HandshakeFailed")
    assert message.startswith(f"Bad {host}:{servers[server]}: ")
    assert fragment in message
    assert "Good" not in message


def test_closed_port_is_unreachable(pki: p.PKI) -> None:
    port = tls_servers.free_port()
    s = spec({"name": "ChatServer", "host": "127.0.0.1", "port": port})
    ok, reason, message = connections.verify_all(s, p.pem(pki.root), timeout=2)
    assert (ok, reason) == (False, "Unreachable")
    assert f"ChatServer 127.0.0.1:{port}" in message


def test_config_server_endpoints_follow_the_connection_mode() -> None:
    base = {"host": "cs.example", "port": 8889, "backupHost": "cs2.example", "backupPort": 8890}
    tls = spec(configServer={**base, "connectionMode": "TLS"})
    assert [(e.name, e.host, e.port) for e in connections.endpoints(tls)] == [
        ("configServer", "cs.example", 8889),
        ("configServer backup", "cs2.example", 8890),
    ]
    assert connections.endpoints(spec(configServer={**base, "connectionMode": "Upgrade"})) == []
