"""The clusters the e2e suite runs against, chosen by E2E_CLUSTER (local | kind | existing)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import pytest
from kubernetes import client, config

from cobrowse_tls.devcluster import ClusterError, LocalCluster
from cobrowse_tls.devcluster.binaries import MissingBinaryError, bin_dir

REPO = Path(__file__).resolve().parents[2]
SAFE_CONTEXT_PREFIXES = ("kind-", "cobrowse-tls-")


@dataclass
class E2ECluster:
    backend: str
    kubeconfig: Path
    api_client: client.ApiClient
    kubectl_path: str
    local: LocalCluster | None = None

    @property
    def has_windows_nodes(self) -> bool:
        nodes = client.CoreV1Api(self.api_client).list_node(
            label_selector="kubernetes.io/os=windows"
        )
        return bool(nodes.items)

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        result = subprocess.run(
            [self.kubectl_path, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        if check and result.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result


def _kubectl_path() -> str:
    try:
        return str(bin_dir() / "kubectl")
    except MissingBinaryError:
        found = shutil.which("kubectl")
        if not found:
            pytest.fail("kubectl not found: run hack/build-binaries.sh")
        return found


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so fixture teardown (cluster down) still runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def local_cluster(directory: Path) -> Iterator[E2ECluster]:
    cluster = LocalCluster(directory)
    with _sigterm_as_interrupt():
        try:
            # tie_to_parent: even a SIGKILLed pytest takes the control plane with it.
            cluster.up(tie_to_parent=True)
        except ClusterError as e:
            # Fail, never skip: a CI without binaries must not pass by running nothing.
            pytest.fail(f"local cluster did not start: {e}", pytrace=False)
        try:
            api = config.new_client_from_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]  # unannotated
            yield E2ECluster("local", cluster.kubeconfig, api, _kubectl_path(), cluster)
        finally:
            cluster.down()


# Image names the suite's workloads use whose contents no test looks at: on kind they must
# exist in the nodes (there is no registry), so the pause image is loaded under these names.
PLACEHOLDER_IMAGES = ("genesys/cobrowse:test", "registry.invalid/cobrowse:1")
PLACEHOLDER_SOURCE = "registry.k8s.io/pause:3.10.2"


@contextmanager
def kind_cluster(workdir: Path) -> Iterator[E2ECluster]:
    """kind-config.yaml's cluster from the locally built node image (hack/kind.sh), with the
    images of E2E_KIND_LOAD (space-separated; the kind stage sets it) loaded into its nodes.
    Needs a running container engine: hack/kind-e2e.sh (or `hack/engine.sh run ...`)."""
    script = REPO / "hack" / "kind.sh"
    kubeconfig = workdir / "kubeconfig"
    with _sigterm_as_interrupt():
        try:
            up = subprocess.run([str(script), "up", str(kubeconfig)], check=False)
            if up.returncode != 0:
                pytest.fail(
                    f"hack/kind.sh up failed ({up.returncode}); is the engine running "
                    "(hack/engine.sh run ...)?",
                    pytrace=False,
                )
            docker = shutil.which("docker") or "docker"
            for name in PLACEHOLDER_IMAGES:
                subprocess.run([docker, "tag", PLACEHOLDER_SOURCE, name], check=True)
            load = [*PLACEHOLDER_IMAGES, *os.environ.get("E2E_KIND_LOAD", "").split()]
            subprocess.run([str(script), "load", *load], check=True)
            api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]  # unannotated
            yield E2ECluster("kind", kubeconfig, api, _kubectl_path())
        finally:
            if os.environ.get("E2E_KEEP") != "1":
                subprocess.run([str(script), "down"], check=False)


@contextmanager
def existing_cluster() -> Iterator[E2ECluster]:
    _, current = config.list_kube_config_contexts()  # type: ignore[no-untyped-call]  # unannotated
    name = current["name"]
    if not name.startswith(SAFE_CONTEXT_PREFIXES):
        pytest.fail(
            f"E2E_CLUSTER=existing refuses context {name!r}: the tests create and delete "
            f"cluster-wide objects, so only contexts named {' or '.join(SAFE_CONTEXT_PREFIXES)}* "
            "are used",
            pytrace=False,
        )
    path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config"
    api = config.new_client_from_config(context=name)  # type: ignore[no-untyped-call]  # unannotated
    yield E2ECluster("existing", Path(path).expanduser(), api, _kubectl_path())
