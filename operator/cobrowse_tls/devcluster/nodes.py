"""The fake nodes kwok plays: two Linux and two Windows, as the operator's users run them."""

from __future__ import annotations

from typing import Any

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
# Windows Server 2022, the build most Co-browse Windows hosts run.
WINDOWS_BUILD = "10.0.20348"
WINDOWS_TAINT = {"key": "os", "value": "windows", "effect": "NoSchedule"}

NODE_NAMES: dict[str, str] = {
    "cobrowse-tls-linux-1": "linux",
    "cobrowse-tls-linux-2": "linux",
    "cobrowse-tls-windows-1": "windows",
    "cobrowse-tls-windows-2": "windows",
}


def manifest(name: str, os_name: str) -> dict[str, Any]:
    labels = {
        "kubernetes.io/os": os_name,
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "type": "kwok",
    }
    spec: dict[str, Any] = {}
    if os_name == "windows":
        labels["node.kubernetes.io/windows-build"] = WINDOWS_BUILD
        spec["taints"] = [WINDOWS_TAINT]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": spec,
    }


def is_ready(node: dict[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def is_schedulable(node: dict[str, Any]) -> bool:
    """Ready and without the not-ready taint that the node lifecycle controller puts on new
    nodes and lifts a moment after they report Ready: only then do pods land on them."""
    taints = node.get("spec", {}).get("taints") or []
    lifecycle = any(t.get("key", "").startswith("node.kubernetes.io/") for t in taints)
    return is_ready(node) and not lifecycle
