"""The manual's table of releases and application objects, enforced by the real API server.

The same rows as the model test (tests/manual_table.py): the CRD's CEL rules must accept what
the manual allows and refuse the rest with the model's message, so `kubectl apply` and
`cobrowse-tls render` agree. Server-side dry run: nothing is stored.
"""

from __future__ import annotations

import json

import pytest
from kubernetes import client

import manual_table
from cobrowse_tls.api import models
from e2e.operator_support import Api, cobrowse_tls


@pytest.mark.parametrize("row", manual_table.ROWS, ids=[r.id for r in manual_table.ROWS])
def test_the_api_server_applies_the_manuals_table(api: Api, row: manual_table.Row) -> None:
    spec = {
        "provider": "PEM",
        "application": row.application(),
        "trustedCA": {"sources": [{"secret": {"name": "genesys-ca", "key": "ca.crt"}}]},
        "connections": [{"name": "MessageServer", "host": "msgserver", "port": 9021}],
    }
    body = cobrowse_tls("default", "manual-table", spec)

    def create() -> None:
        api.custom.create_namespaced_custom_object(
            models.GROUP, models.VERSION, "default", models.PLURAL, body, dry_run="All"
        )

    if row.refusal is None:
        create()
        return
    with pytest.raises(client.ApiException) as refused:
        create()
    assert refused.value.status == 422
    causes = json.loads(str(refused.value.body))["details"]["causes"]
    # The same text as the model's (messageExpression): the one line `render` prints.
    assert row.refusal in [c["message"].removeprefix("Invalid value: ") for c in causes]
    assert all(c["field"] == "spec.application" for c in causes)
