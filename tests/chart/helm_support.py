"""The real helm binary (from hack/build-binaries.sh, or PATH) and the chart under test."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from cobrowse_tls.devcluster.binaries import candidate_dirs

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "cobrowse-tls-operator"
# The Kubernetes release the chart is tested against (the local control plane's). Passed
# explicitly: a helm built with plain `go install` assumes v1.20 for offline rendering,
# which the chart's kubeVersion (>=1.30) rejects.
KUBE_VERSION = "v1.36.2"


def find_helm() -> str:
    """helm from COBROWSE_TLS_BIN_DIR / KUBEBUILDER_ASSETS / the build cache, else PATH.

    Fails (never skips) when there is none: a CI without helm must not pass by testing nothing.
    """
    if env := os.environ.get("HELM"):
        return env
    for d in candidate_dirs():
        if os.access(d / "helm", os.X_OK):
            return str(d / "helm")
    found = shutil.which("helm")
    if not found:
        pytest.fail(
            "helm not found: run hack/build-binaries.sh (or set HELM / COBROWSE_TLS_BIN_DIR)",
            pytrace=False,
        )
    return found


def run_helm(
    helm: str, *args: str, check: bool = True, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [helm, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def values_args(values: Mapping[str, Any] | None, tmp: Path | None) -> list[str]:
    if not values:
        return []
    assert tmp is not None
    path = tmp / f"values-{abs(hash(repr(values)))}.yaml"
    path.write_text(yaml.safe_dump(dict(values)))
    return ["-f", str(path)]


def template(
    helm: str,
    *args: str,
    values: Mapping[str, Any] | None = None,
    tmp: Path | None = None,
    release: str = "cbtls",
    namespace: str = "cbtls-system",
) -> list[dict[str, Any]]:
    """`helm template` output as a list of objects (empty documents dropped)."""
    out = run_helm(
        helm,
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        *values_args(values, tmp),
        *args,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(objs: Sequence[Mapping[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [dict(o) for o in objs if o["kind"] == kind]


def one(objs: Sequence[Mapping[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


class Release:
    """One helm release of the chart on a test cluster (``kubeconfig``); ``base`` are the
    --set values every install passes before the test's own."""

    def __init__(
        self, helm: str, kubeconfig: Path, namespace: str, prefix: str, *base: str
    ) -> None:
        self.helm = helm
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.base = base
        self.installed = False

    @property
    def fullname(self) -> str:
        return f"{self.name}-cobrowse-tls-operator"

    def run(self, *args: str, check: bool = True) -> str:
        return run_helm(
            self.helm, *args, "--namespace", self.namespace,
            "--kubeconfig", str(self.kubeconfig), check=check,
        ).stdout  # fmt: skip

    def install(self, *sets: str) -> str:
        args = [a for s in (*self.base, *sets) for a in ("--set", s)]
        # --wait: the Deployment really becomes available.
        out = self.run("install", self.name, str(CHART), *args, "--wait", "--timeout", "180s")
        self.installed = True
        return out

    def upgrade(self, *sets: str) -> str:
        args = [a for s in sets for a in ("--set", s)]
        return self.run(
            "upgrade", self.name, str(CHART), "--reuse-values", *args, "--wait", "--timeout", "180s"
        )

    def uninstall(self) -> None:
        self.run("uninstall", self.name, "--wait", "--timeout", "180s")
        self.installed = False


_R = TypeVar("_R", bound=Release)


@contextlib.contextmanager
def installed_after(release: _R) -> Iterator[_R]:
    """``release``, uninstalled afterwards when a test left it installed."""
    try:
        yield release
    finally:
        if release.installed:
            release.run("uninstall", release.name, "--wait", check=False)
