"""`cobrowse-tls render` reads Secrets and ConfigMaps as kubectl and the real API server do.

Each case goes through ``kubectl create --dry-run=server`` (kubectl's YAML-to-JSON conversion,
then the API server's decoding and validation, nothing stored) and through render's reader:
both accept with the same bytes, or both refuse. The one deliberate difference is checked
too: kubectl keeps the last of two equal keys, render refuses the ambiguous file.
"""

from __future__ import annotations

import base64
import json

import pytest

from cobrowse_tls import render_input
from e2e.cluster_backends import E2ECluster

DATA = bytes(range(256)) * 2
WRAPPED = base64.encodebytes(DATA).decode()  # 76-column lines, as `base64` writes them


def _secret(body: str) -> str:
    return "apiVersion: v1\nkind: Secret\nmetadata: {name: probe}\n" + body


def _config_map(body: str) -> str:
    return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\n" + body


def _indented(text: str, spaces: int) -> str:
    return "".join(" " * spaces + line + "\n" for line in text.splitlines())


CASES: dict[str, str] = {
    "plain base64": _secret("data: {k: YWJj}\n"),
    "base64 wrapped over lines": _secret("data:\n  k: |\n" + _indented(WRAPPED, 4)),
    "base64 with CRLF line breaks": _secret(
        'data: {k: "' + WRAPPED.replace("\n", "\\r\\n") + '"}\n'
    ),
    "base64 with a space": _secret("data: {k: YWJj ZGVm}\n"),
    "base64 without padding": _secret("data: {k: YQ}\n"),
    "base64 with data after the padding": _secret("data: {k: YQ==YQ==}\n"),
    "base64 with non-zero trailing bits": _secret("data: {k: YR==}\n"),
    "base64 with a URL-safe character": _secret("data: {k: YW-j}\n"),
    "empty base64": _secret("data: {k: ''}\n"),
    "null data value": _secret("data: {k: }\n"),
    "null stringData value": _secret("stringData: {k: , other: x}\n"),
    "stringData list": _secret("stringData: {k: [a, b]}\n"),
    "stringData number": _secret("stringData: {k: 8889}\n"),
    "stringData wins over data": _secret("data: {k: YWJj}\nstringData: {k: xyz}\n"),
    "data that is a list": _secret("data: [a]\n"),
    "Secret key with a slash": _secret("stringData: {a/b: x}\n"),
    "Secret key starting with two dots": _secret("stringData: {..a: x}\n"),
    "Secret over 1 MiB": _secret("stringData: {k: " + "x" * (1024 * 1024 + 1) + "}\n"),
    "Secret of exactly 1 MiB": _secret("stringData: {k: " + "x" * (1024 * 1024) + "}\n"),
    "ConfigMap number": _config_map("data: {k: 1}\n"),
    "ConfigMap exponent number": _config_map("data: {k: 1e3}\n"),
    "ConfigMap boolean": _config_map("data: {k: true}\n"),
    "ConfigMap date stays a string": _config_map("data: {k: 2001-01-01}\n"),
    "ConfigMap null value": _config_map("data: {k: , other: x}\n"),
    "ConfigMap integer and boolean keys": _config_map("data: {1: one, true: yes-text}\n"),
    "ConfigMap key in data and binaryData": _config_map("data: {k: x}\nbinaryData: {k: eA==}\n"),
    "ConfigMap binaryData wrapped": _config_map("binaryData:\n  k: |\n" + _indented(WRAPPED, 4)),
    "ConfigMap data that is a string": _config_map("data: foo\n"),
    "metadata that is a string": "apiVersion: v1\nkind: Secret\nmetadata: foo\n",
}


def _api_server(cluster: E2ECluster, namespace: str, text: str) -> dict[str, bytes] | None:
    result = cluster.kubectl(
        "create", "--dry-run=server", "-o", "json", "-n", namespace, "-f", "-",
        stdin=text, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        return None
    obj = json.loads(result.stdout)
    if obj["kind"] == "Secret":
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    out = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return out


def _render(text: str) -> dict[str, bytes] | None:
    try:
        (doc,) = render_input.load_documents("probe.yaml", text)
        reader = render_input.secret_data if doc.kind == "Secret" else render_input.config_map_data
        return reader(doc)[1]
    except render_input.InputError:
        return None


@pytest.mark.parametrize("name", sorted(CASES))
def test_render_reads_objects_as_the_api_server_does(
    cluster: E2ECluster, namespace: str, name: str
) -> None:
    text = CASES[name]
    assert _render(text) == _api_server(cluster, namespace, text)


def test_duplicate_keys_kubectl_keeps_the_last_render_refuses(
    cluster: E2ECluster, namespace: str
) -> None:
    text = _secret("stringData:\n  k: first\n  k: second\n")
    assert _api_server(cluster, namespace, text) == {"k": b"second"}
    with pytest.raises(render_input.InputError, match="duplicate key 'k'"):
        render_input.load_documents("probe.yaml", text)
