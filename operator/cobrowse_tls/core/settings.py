"""The operator's settings (from `cobrowse-tls run` options): an input of the pure decide step."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import timedelta

from cobrowse_tls.core import agent_manifest


@dataclasses.dataclass(frozen=True)
class Settings:
    expiry_window: timedelta = timedelta(days=30)
    # Changes arriving within this window give one restart, not one each.
    restart_window: timedelta = timedelta(seconds=1)
    # A rollout that completes no sooner than this is reported RolloutStalled.
    rollout_deadline: timedelta = timedelta(minutes=10)
    # How often a rollout in progress is looked at.
    rollout_poll: float = 1.0
    agent: agent_manifest.AgentConfig = dataclasses.field(
        default_factory=agent_manifest.AgentConfig
    )
    # Deleting an MSCAPI CobrowseTLS waits at most this long for the agents to clean up.
    cleanup_timeout: timedelta = timedelta(minutes=2)
    # Handshake with configServer and connections (the operator needs to reach them).
    verify_connections: bool = False
    # MSCAPI is opt-in by a cluster admin: the Windows agent (a HostProcess DaemonSet running
    # as SYSTEM) is created only in these namespaces, or in namespaces carrying all these
    # labels. Both empty: nowhere.
    mscapi_namespaces: frozenset[str] = frozenset()
    mscapi_namespace_labels: tuple[tuple[str, str], ...] = ()

    def mscapi_allowed(self, namespace: str, labels: Mapping[str, str] | None) -> bool:
        """Whether MSCAPI agents may run in ``namespace`` (``labels``: the Namespace's)."""
        if namespace in self.mscapi_namespaces:
            return True
        if not self.mscapi_namespace_labels or labels is None:
            return False
        return all(labels.get(k) == v for k, v in self.mscapi_namespace_labels)
