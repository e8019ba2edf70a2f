"""Builders of CobrowseTLS documents and of the Secrets/ConfigMaps they read (unit tests).

Certificates come from the one fixture module (``pki``); these only wrap them in the dict
and YAML shapes that ``render`` and ``cobrowse-tls render`` read.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import yaml

Doc = dict[str, Any]


def tls_doc(provider: str = "PEM", **spec: Any) -> Doc:
    """A valid CobrowseTLS document; ``spec`` keys (camelCase) replace the defaults."""
    body: Doc = {
        "provider": provider,
        "application": {"type": "Node", "name": "CB_Node_1"},
        "configServer": {"host": "confserv.genesys.svc", "port": 8889},
    }
    if provider != "Disabled":
        body["trustedCA"] = {"sources": [{"secret": {"name": "genesys-ca", "key": "ca.crt"}}]}
    if provider == "JKS":
        body["truststore"] = {"passwordSecretRef": {"name": "jks-password", "key": "password"}}
    body.update(copy.deepcopy(spec))
    return {
        "apiVersion": "tls.cobrowse.io/v1alpha1",
        "kind": "CobrowseTLS",
        "metadata": {"name": "cobrowse", "namespace": "genesys"},
        "spec": body,
    }


def secret_doc(name: str, data: dict[str, bytes], *, string_data: bool = False) -> Doc:
    """A v1 Secret with ``data`` base64-encoded (or ``stringData`` when asked)."""
    doc: Doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}}
    if string_data:
        doc["stringData"] = {k: v.decode() for k, v in data.items()}
    else:
        doc["data"] = {k: base64.b64encode(v).decode() for k, v in data.items()}
    return doc


def config_map_doc(name: str, data: dict[str, str]) -> Doc:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def dump(*docs: Doc) -> str:
    return yaml.safe_dump_all(list(docs), sort_keys=False)
