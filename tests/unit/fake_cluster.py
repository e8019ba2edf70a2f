"""The one in-memory API server of the unit tests: kube.Api without a network.

It keeps objects as the API's dicts, by (kind, namespace, name), with the server's own
bookkeeping where the reconcile depends on it: resourceVersion on every change, generation on a
spec change, merge patches of status, finalizers only at the observed version, a CR gone when
its last finalizer is. Every request is recorded in order; a request can be made to fail.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cobrowse_tls.api import models
from cobrowse_tls.engine import kube

Key = tuple[str, str, str]  # kind, namespace, name


class FakeCluster:
    def __init__(self, *objects: Mapping[str, Any]) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, str]] = []  # (verb, kind, name), in order
        self.events: list[tuple[str, str, str]] = []  # (type, reason, message)
        self.failures: dict[tuple[str, str, str], kube.KubeError] = {}
        self._version = 0
        self._applied: dict[Key, str] = {}
        for obj in objects:
            self.put(obj)

    # -- test set-up and inspection ----------------------------------------------------------

    def put(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace ``obj`` as someone else would (kind and namespace required)."""
        stored = copy.deepcopy(dict(obj))
        meta = stored.setdefault("metadata", {})
        old = self.objects.get(_key(stored))
        meta.setdefault("generation", 1 if old is None else old["metadata"]["generation"])
        meta["resourceVersion"] = self._next_version()
        self.objects[_key(stored)] = stored
        return copy.deepcopy(stored)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def fail(self, verb: str, kind: str, name: str, error: kube.KubeError) -> None:
        """Make every ``verb`` request on that object fail with ``error`` from now on."""
        self.failures[(verb, kind, name)] = error

    @property
    def writes(self) -> list[tuple[str, str, str]]:
        return [r for r in self.requests if r[0] not in ("get", "list")]

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def _request(self, verb: str, kind: str, name: str) -> None:
        self.requests.append((verb, kind, name))
        error = self.failures.get((verb, kind, name))
        if error is not None:
            raise error

    # -- kube.Reader -------------------------------------------------------------------------

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._request("get", "Secret", name)
        return self.get("Secret", namespace, name)

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._request("get", "ConfigMap", name)
        return self.get("ConfigMap", namespace, name)

    def get_workload(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self._request("get", kind, name)
        return self.get(kind, namespace, name)

    def list_workloads(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        self._request("list", kind, selector)
        return self._list(kind, namespace, selector)

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self._request("list", "Pod", selector)
        return self._list("Pod", namespace, selector)

    def get_namespace(self, name: str) -> dict[str, Any] | None:
        self._request("get", "Namespace", name)
        return self.get("Namespace", "", name)

    def list_events(
        self, namespace: str, kind: str, name: str, reason: str
    ) -> list[dict[str, Any]]:
        self._request("list", "Event", f"{kind} {name} {reason}")
        return [
            e
            for e in self._list("Event", namespace, "")
            if e.get("involvedObject", {}).get("kind") == kind
            and e.get("involvedObject", {}).get("name") == name
            and e.get("reason") == reason
        ]

    def _list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        found = [
            copy.deepcopy(obj)
            for (k, ns, _), obj in sorted(self.objects.items())
            if k == kind and ns == namespace and _matches(selector, obj)
        ]
        return found

    # -- kube.Writer -------------------------------------------------------------------------

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        key = _key(obj)
        self._request("apply", key[0], key[2])
        old = self.objects.get(key)
        new = _merge(old or {}, copy.deepcopy(dict(obj)))
        meta = new["metadata"]
        if old is None:
            meta["generation"] = 1
        elif old.get("spec") != new.get("spec"):
            meta["generation"] = old["metadata"]["generation"] + 1
        if new != old:
            meta["resourceVersion"] = self._next_version()
        self.objects[key] = new
        self._applied[key] = meta["resourceVersion"]
        return copy.deepcopy(new)

    def delete_daemon_set(self, namespace: str, name: str) -> None:
        self._request("delete", "DaemonSet", name)
        self.objects.pop(("DaemonSet", namespace, name), None)

    def set_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> None:
        self._request("finalizers", models.KIND, name)
        obj = self._cr(namespace, name)
        if obj["metadata"]["resourceVersion"] != resource_version:
            raise kube.KubeError(409, "the object has been modified")
        obj["metadata"]["finalizers"] = list(finalizers)
        obj["metadata"]["resourceVersion"] = self._next_version()
        if obj["metadata"].get("deletionTimestamp") and not finalizers:
            del self.objects[(models.KIND, namespace, name)]

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self._request("status", models.KIND, name)
        obj = self._cr(namespace, name)
        obj["status"] = merge_patched(obj.get("status") or {}, status)
        obj["metadata"]["resourceVersion"] = self._next_version()

    def create_event(
        self,
        involved: Mapping[str, Any],
        *,
        type_: str,
        reason: str,
        message: str,
        now: datetime | None = None,
    ) -> None:
        self._request("event", "Event", reason)
        self.events.append((type_, reason, message))

    def _cr(self, namespace: str, name: str) -> dict[str, Any]:
        obj = self.objects.get((models.KIND, namespace, name))
        if obj is None:
            raise kube.KubeError(404, f"{models.PLURAL} {name!r} not found")
        return obj

    # -- kube.Api ----------------------------------------------------------------------------

    def is_own_write(self, kind: str, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata", {})
        version = self._applied.get((kind, meta.get("namespace", ""), meta.get("name", "")))
        return version is not None and version == meta.get("resourceVersion")

    def forget(self, kind: str, namespace: str, name: str) -> None:
        self._applied.pop((kind, namespace, name), None)


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj["metadata"]
    return str(obj["kind"]), str(meta.get("namespace", "")), str(meta["name"])


def _merge(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Server-side apply as far as our objects need it: maps merge, everything else replaces."""
    out = dict(old)
    for key, value in new.items():
        before = out.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            out[key] = _merge(before, value)
        else:
            out[key] = value
    return out


def merge_patched(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``target`` with the JSON merge patch (RFC 7386) ``patch`` applied."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_patched(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


_REQUIREMENT = re.compile(r"\s*([^,()]+?(?:\s+(?:in|notin)\s+\([^)]*\))?)\s*(?:,|$)")


def _matches(selector: str, obj: Mapping[str, Any]) -> bool:
    """A label selector in the API's string form (equality, set and existence requirements)."""
    labels = obj.get("metadata", {}).get("labels") or {}
    for req in _REQUIREMENT.findall(selector):
        if not req:
            continue
        in_set = re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", req)
        if in_set is not None:
            key, op, values = in_set.groups()
            inside = labels.get(key) in {v.strip() for v in values.split(",")}
            if inside != (op == "in"):
                return False
        elif "=" in req:
            key, value = req.split("=", 1)
            if labels.get(key) != value:
                return False
        elif req.startswith("!"):
            if req[1:] in labels:
                return False
        elif req not in labels:
            return False
    return True
