"""One reconcile of one CobrowseTLS: observe, decide, act.

observe (engine/observe.py) makes every read, decide (core/decide.py, pure) says what to write
and what the status becomes, act (engine/act.py) makes the writes in order. Running it again
with nothing changed decides no write at all.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cobrowse_tls.core import decide
from cobrowse_tls.core import settings as settings_mod
from cobrowse_tls.engine import act, kube, observe

log = logging.getLogger("cobrowse_tls.engine.reconciler")


def reconcile(
    client: kube.Api,
    body: Mapping[str, Any],
    settings: settings_mod.Settings,
    now: datetime,
    pool: concurrent.futures.Executor | None = None,
) -> decide.Decision:
    """Reconcile one CobrowseTLS given as the API's dict. Raises kube.KubeError to retry.
    ``pool`` runs the writes act may make at once (see engine/act.py)."""
    snapshot = observe.observe(client, body, settings, now)
    decision = decide.decide(snapshot, settings, now)
    for note in decision.notes:
        log.warning("%s: %s", kube.key_of(body), note)
    act.act(client, body, decision.writes, pool)
    return decision
