"""The GitOps examples and the operator Dockerfile: consistent with the chart and the CLI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart.helm_support import CHART, KUBE_VERSION, REPO, find_helm, run_helm
from cobrowse_tls.core.restart_plan import ANNOTATION_RESTARTED_FOR
from cobrowse_tls.devcluster.binaries import candidate_dirs

GITOPS = REPO / "examples" / "gitops"


def kubectl() -> str:
    for d in candidate_dirs():
        if os.access(d / "kubectl", os.X_OK):
            return str(d / "kubectl")
    found = shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: run hack/build-binaries.sh", pytrace=False)
    return found


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_kustomization_renders_offline(tmp_path: Path) -> None:
    """What the CI example runs: kustomize build piped into `cobrowse-tls render`."""
    built = subprocess.run(
        [kubectl(), "kustomize", str(GITOPS / "genesys")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(built) if d)
    assert kinds == ["CobrowseTLS", "ConfigMap", "Namespace", "StatefulSet"]
    assert ANNOTATION_RESTARTED_FOR not in built  # Git never sets the operator's annotation
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cobrowse_tls.cli",
            "render",
            "-f",
            "-",
            "--output-dir",
            str(tmp_path / "out"),
        ],
        input=built,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "ca.pem",
        "connections.yaml",
        "security-options.cfg",
        "security.cfg",
        "setenv.bat",
        "setenv.sh",
        "truststore-password",
        "truststore.jks",
    ]
    assert (
        "trusted-ca=/opt/genesys/cobrowse/security/truststore.jks"
        in (out / "security.cfg").read_text()
    )


def test_argocd_application_ignores_the_restart_annotation() -> None:
    (app,) = load(GITOPS / "argocd" / "genesys.yaml")
    ignored = app["spec"]["ignoreDifferences"]
    by_manager = {
        i["kind"] for i in ignored if "cobrowse-tls-operator" in i.get("managedFieldsManagers", [])
    }
    by_path = {
        i["kind"]
        for i in ignored
        if any(ANNOTATION_RESTARTED_FOR in p for p in i.get("jqPathExpressions", []))
    }
    assert {"StatefulSet", "Deployment"} <= by_manager
    assert {"StatefulSet", "Deployment"} <= by_path
    assert "RespectIgnoreDifferences=true" in app["spec"]["syncPolicy"]["syncOptions"]


def _helm_values_accepted(values: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    run_helm(
        find_helm(),
        "template",
        "x",
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        "-f",
        str(path),
    )


def test_argocd_operator_values_match_the_chart(tmp_path: Path) -> None:
    (app,) = load(GITOPS / "argocd" / "operator.yaml")
    assert app["spec"]["source"]["path"] == "charts/cobrowse-tls-operator"
    _helm_values_accepted(app["spec"]["source"]["helm"]["valuesObject"], tmp_path)


def test_flux_helmrelease_values_match_the_chart(tmp_path: Path) -> None:
    release = next(d for d in load(GITOPS / "flux" / "operator.yaml") if d["kind"] == "HelmRelease")
    assert release["spec"]["chart"]["spec"]["chart"] == "charts/cobrowse-tls-operator"
    _helm_values_accepted(release["spec"]["values"], tmp_path)


def test_dockerfile_is_small_non_root_pinned_and_wheel_based() -> None:
    text = (REPO / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base is not None
    # An exact patch release on a named Debian release, never a floating tag.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base.group(1))
    assert len(re.findall(r"^FROM ", text, re.M)) == 2  # builder + runtime
    assert "pip wheel" in text
    assert "--no-index" in text
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user == ["65532:65532"]  # numeric, so runAsNonRoot can verify it
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert "runAsUser: 65532" in deployment
    assert 'ENTRYPOINT ["cobrowse-tls"]' in text
    makefile = (REPO / "Makefile").read_text()
    assert f"PYTHON_IMAGE     ?= {base.group(1)}" in makefile


def test_kind_config_matches_the_locally_built_node_image() -> None:
    """kind-config.yaml names what hack/kind-node.sh builds: the node image at the pinned
    Kubernetes version, etcd at the pinned etcd version (hack/build-binaries.sh)."""
    assert "hack/kind-e2e.sh" in (REPO / "Makefile").read_text()
    build = (REPO / "hack" / "build-binaries.sh").read_text()
    k8s = re.search(r"^K8S_VERSION=(v\S+)$", build, re.M)
    etcd = re.search(r"^ETCD_VERSION=v(\S+)$", build, re.M)
    assert k8s is not None
    assert etcd is not None
    assert f"K8S_VERSION={k8s.group(1)}" in (REPO / "hack" / "kind-node.sh").read_text()
    config = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker", "worker"]
    assert {n["image"] for n in config["nodes"]} == {f"cobrowse-tls/kind-node:{k8s.group(1)}"}
    assert config["networking"]["disableDefaultCNI"] is True  # no kindnetd image
    patches = [yaml.safe_load(p) for p in config["kubeadmConfigPatches"]]
    kubelet = next(p for p in patches if p["kind"] == "KubeletConfiguration")
    assert kubelet["failCgroupV1"] is False
    cluster = next(p for p in patches if p["kind"] == "ClusterConfiguration")
    assert cluster["etcd"]["local"]["imageTag"] == f"{etcd.group(1)}-0"
