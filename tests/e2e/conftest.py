"""Fixtures of the end-to-end suite: one cluster per session, one namespace per test."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from e2e.cluster_backends import E2ECluster, existing_cluster, kind_cluster, local_cluster
from e2e.operator_support import api, operator_kubeconfig  # noqa: F401 - shared fixtures


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the item (item.rep_call): fixtures print diagnostics on
    failure only."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ECluster]:
    backend = os.environ.get("E2E_CLUSTER", "local")
    if backend == "local":
        with local_cluster(tmp_path_factory.mktemp("cluster")) as c:
            yield c
    elif backend == "kind":
        with kind_cluster(tmp_path_factory.mktemp("kind")) as c:
            yield c
    elif backend == "existing":
        with existing_cluster() as c:
            yield c
    else:
        pytest.fail(f"E2E_CLUSTER={backend!r}: expected local, kind or existing", pytrace=False)


@pytest.fixture
def core(cluster: E2ECluster) -> client.CoreV1Api:
    return client.CoreV1Api(cluster.api_client)


@pytest.fixture
def apps(cluster: E2ECluster) -> client.AppsV1Api:
    return client.AppsV1Api(cluster.api_client)


@pytest.fixture
def namespace(request: pytest.FixtureRequest, core: client.CoreV1Api) -> Iterator[str]:
    """A fresh namespace whose default ServiceAccount exists (pods need it), deleted after."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    name = f"e2e-{slug}-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    deadline = time.monotonic() + 60
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except ApiException as e:
            if e.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        yield name
    finally:
        core.delete_namespace(name)
