"""Where the pinned control-plane binaries are, and a clear error when they are not there."""

from __future__ import annotations

import os
from pathlib import Path

# Keep in step with hack/build-binaries.sh, which builds into the same keyed directory.
K8S_VERSION = "v1.36.2"
ETCD_VERSION = "v3.6.10"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.21.4"
VERSION_KEY = f"k8s-{K8S_VERSION}_etcd-{ETCD_VERSION}_kwok-{KWOK_VERSION}_helm-{HELM_VERSION}"

REQUIRED = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubectl",
)


class MissingBinaryError(RuntimeError):
    pass


def cache_root() -> Path:
    if env := os.environ.get("COBROWSE_TLS_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "cobrowse-tls"


def candidate_dirs() -> list[Path]:
    dirs = [os.environ.get("COBROWSE_TLS_BIN_DIR"), os.environ.get("KUBEBUILDER_ASSETS")]
    found = [Path(d) for d in dirs if d]
    found.append(cache_root() / "bin" / VERSION_KEY)
    return found


def bin_dir() -> Path:
    """The first candidate directory that holds every required binary."""
    candidates = candidate_dirs()
    for d in candidates:
        if all(os.access(d / name, os.X_OK) for name in REQUIRED) and _has_stages(d):
            return d
    first = candidates[0]
    missing = [n for n in REQUIRED if not os.access(first / n, os.X_OK)]
    if not _has_stages(first):
        missing.append("kwok stages/")
    raise MissingBinaryError(
        f"{', '.join(missing)} not found in {first}: run hack/build-binaries.sh "
        "(or point COBROWSE_TLS_BIN_DIR / KUBEBUILDER_ASSETS at prebuilt binaries)"
    )


def _has_stages(directory: Path) -> bool:
    return (stages_dir(directory) / "pod-ready.yaml").is_file()


def stages_dir(binaries: Path) -> Path:
    """kwok's stage files, copied from its module next to the binaries by the build script."""
    return binaries / "stages"
