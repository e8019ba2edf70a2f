"""A minimal HTTPS client for the few API calls ``up`` and ``status`` make.

Plain ``http.client`` instead of the kubernetes package: importing that costs about half a
second, a noticeable share of a warm start, and these calls need none of its machinery.
"""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any

from cobrowse_tls.devcluster.pki import Pki


class ApiError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


class Api:
    def __init__(self, port: int, pki: Pki, timeout: float = 5.0) -> None:
        self.port = port
        self.timeout = timeout
        self.ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        self.ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))

    def request(self, method: str, path: str, body: object | None = None) -> Any:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self.ctx, timeout=self.timeout
        )
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Accept": "application/json", "Content-Type": "application/json"}
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode(errors="replace")
        finally:
            conn.close()
        if resp.status >= 300:
            raise ApiError(resp.status, text)
        return json.loads(text) if text.startswith(("{", "[")) else text

    def ready(self) -> bool:
        try:
            return bool(self.request("GET", "/readyz") == "ok")
        except (OSError, ApiError, http.client.HTTPException):
            return False
