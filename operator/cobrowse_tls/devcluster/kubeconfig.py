"""The admin kubeconfig, with certificates inlined so it can be copied anywhere."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from cobrowse_tls.devcluster.pki import Pki

# `existing` e2e mode only accepts contexts with this prefix, so it never hits a real cluster.
CONTEXT = "cobrowse-tls-local"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write(path: Path, pki: Pki, port: int) -> None:
    """The admin kubeconfig."""
    write_user(path, pki, port, "admin", pki.admin_cert.read_bytes(), pki.admin_key.read_bytes())


def write_user(path: Path, pki: Pki, port: int, user: str, cert: bytes, key: bytes) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {
                    "server": f"https://127.0.0.1:{port}",
                    "certificate-authority-data": _b64(pki.ca_cert),
                },
            }
        ],
        "users": [
            {
                "name": f"{CONTEXT}-{user}",
                "user": {
                    "client-certificate-data": base64.b64encode(cert).decode(),
                    "client-key-data": base64.b64encode(key).decode(),
                },
            }
        ],
        "contexts": [
            {"name": CONTEXT, "context": {"cluster": CONTEXT, "user": f"{CONTEXT}-{user}"}}
        ],
        "current-context": CONTEXT,
        "preferences": {},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)
