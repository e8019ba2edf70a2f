"""ConnectionsVerified: a TLS handshake with each Genesys server, trusting only the rendered CAs.

It catches what the manual procedure gets wrong most often: a non-secure port, a server whose
certificate was signed by another CA, a host name the certificate does not carry. The only
network edge of the operator besides the Kubernetes API; off unless ``--verify-connections``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import socket
import ssl

from cobrowse_tls.api import models

VERIFIED = "Verified"
HANDSHAKE_FAILED = "HandshakeFailed"
UNREACHABLE = "Unreachable"


@dataclasses.dataclass(frozen=True)
class Endpoint:
    name: str
    host: str
    port: int


@dataclasses.dataclass(frozen=True)
class Result:
    endpoint: Endpoint
    reason: str
    detail: str


def endpoints(spec: models.CobrowseTLSSpec) -> list[Endpoint]:
    """The TLS endpoints of the spec (Upgrade and Unsecured Configuration Server modes excluded:
    they do not start with a TLS handshake)."""
    out: list[Endpoint] = []
    cs = spec.config_server
    if cs is not None and cs.connection_mode is models.ConnectionMode.TLS:
        out.append(Endpoint("configServer", cs.host, cs.port))
        if cs.backup_host is not None and cs.backup_port is not None:
            out.append(Endpoint("configServer backup", cs.backup_host, cs.backup_port))
    out += [Endpoint(c.name, c.host, c.port) for c in spec.connections]
    return out


def check(endpoint: Endpoint, ca_pem: bytes, timeout: float) -> Result:
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    context.check_hostname = True
    try:
        with (
            socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=endpoint.host) as tls,
        ):
            tls.version()
    except ssl.SSLCertVerificationError as exc:
        return Result(
            endpoint, HANDSHAKE_FAILED, f"certificate verify failed: {exc.verify_message}"
        )
    except ssl.SSLError as exc:
        return Result(endpoint, HANDSHAKE_FAILED, exc.reason or str(exc))
    except OSError as exc:
        return Result(endpoint, UNREACHABLE, exc.strerror or str(exc) or type(exc).__name__)
    return Result(endpoint, VERIFIED, "")


def verify_all(
    spec: models.CobrowseTLSSpec, ca_pem: bytes, timeout: float = 3.0
) -> tuple[bool, str, str]:
    """(all verified, reason, message) for the ConnectionsVerified condition."""
    targets = endpoints(spec)
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(targets) or 1)) as pool:
        results = list(pool.map(lambda e: check(e, ca_pem, timeout), targets))
    failed = [r for r in results if r.reason != VERIFIED]
    if not failed:
        return True, VERIFIED, f"{len(results)} TLS endpoint(s) verified against the trust store"
    # Unreachable is the weaker finding: report a trust failure first when there is one.
    failed.sort(key=lambda r: r.reason != HANDSHAKE_FAILED)
    parts = [f"{r.endpoint.name} {r.endpoint.host}:{r.endpoint.port}: {r.detail}" for r in failed]
    return False, failed[0].reason, "; ".join(parts)
