"""Status writes: a merge patch that also removes what is gone, and no write when unchanged."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cobrowse_tls.core import conditions
from cobrowse_tls.engine import reconciler

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def test_merge_patch_names_changes_and_removals() -> None:
    old = {"a": 1, "b": {"x": 1, "y": [1, 2]}, "gone": True}
    new = {"a": 1, "b": {"x": 2, "y": [1, 2]}, "added": "z"}
    assert reconciler.merge_patch(old, new) == {"gone": None, "b": {"x": 2}, "added": "z"}
    assert reconciler.merge_patch(new, new) == {}


class StatusClient:
    """Applies status patches the way the API server does (RFC 7386)."""

    def __init__(self) -> None:
        self.status: dict[str, Any] = {}
        self.patches: list[dict[str, Any]] = []

    def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.patches.append(patch)
        self.status = _apply(self.status, patch)

    def create_event(self, *_: Any, **__: Any) -> None:
        pass


def _apply(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _apply(out[key], value)
        else:
            out[key] = value
    return out


def report(client: StatusClient, windows: dict[str, Any]) -> None:
    body = {"metadata": {"name": "cb", "namespace": "ns", "generation": 1},
            "status": client.status}  # fmt: skip
    obs = [conditions.Observation("TrustStoreReady", True, "Rendered", "ok")]
    reconciler._report(client, body, client.status, obs, {"count": 1}, NOW, 1, windows=windows)  # type: ignore[arg-type]


def test_a_key_that_is_gone_is_removed_and_then_nothing_is_written() -> None:
    client = StatusClient()
    report(client, {"desired": 2, "ready": 1, "notSynced": ["win-2"]})
    report(client, {"desired": 2, "ready": 2})
    assert client.status["windows"] == {"desired": 2, "ready": 2}
    assert client.patches[-1]["windows"] == {"ready": 2, "notSynced": None}
    writes = len(client.patches)
    report(client, {"desired": 2, "ready": 2})
    report(client, {"desired": 2, "ready": 2})
    assert len(client.patches) == writes
