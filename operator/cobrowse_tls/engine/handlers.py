"""kopf registrations: thin. Each handler hands its event to the controller.

Only event handlers are used: they need no per-object bookkeeping in the watched objects, so
kopf writes nothing to CobrowseTLS resources (no last-handled-configuration, no progress
annotations) and nothing at all to Secrets and ConfigMaps.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from cobrowse_tls.api import models
from cobrowse_tls.engine import controller as controller_mod


class Memo(kopf.Memo):
    """Operator-wide state handed to every handler by kopf."""

    controller: controller_mod.Controller


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Memo, **_: Any) -> None:
    # Events are posted by the reconciler, with our own reasons; kopf's would be noise.
    settings.posting.level = logging.CRITICAL
    # A short batch window: source changes should reach the reconciler quickly.
    settings.batching.batch_window = 0.05
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    memo.controller.start()


@kopf.on.cleanup()
async def cleanup(memo: Memo, **_: Any) -> None:
    await memo.controller.stop()


@kopf.on.event(models.GROUP, models.VERSION, models.PLURAL)
async def cobrowse_tls_event(event: kopf.RawEvent, memo: Memo, **_: Any) -> None:
    memo.controller.on_cobrowse_tls(event["type"], event["object"])


@kopf.on.event("", "v1", "secrets")
async def secret_event(event: kopf.RawEvent, memo: Memo, **_: Any) -> None:
    memo.controller.on_source("Secret", event["type"], event["object"])


@kopf.on.event("", "v1", "configmaps")
async def config_map_event(event: kopf.RawEvent, memo: Memo, **_: Any) -> None:
    memo.controller.on_source("ConfigMap", event["type"], event["object"])
