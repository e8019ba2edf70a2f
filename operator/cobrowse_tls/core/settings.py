"""The operator's settings (from `cobrowse-tls run` options): an input of the pure decide step."""

from __future__ import annotations

import dataclasses
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
