"""`cobrowse-tls dev-cluster` as a user drives it: up, status and down from separate
processes, nothing left behind, and one-line errors for the usual mistakes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cobrowse_tls.devcluster import LocalCluster
from cobrowse_tls.devcluster.binaries import bin_dir
from cobrowse_tls.devcluster.procs import port_listening

pytestmark = pytest.mark.e2e
OPERATOR_SRC = Path(__file__).resolve().parents[2] / "operator"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cobrowse_tls.cli", "dev-cluster", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONPATH": str(OPERATOR_SRC), **(env or {})},
    )


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def test_up_status_down_leave_nothing_behind(tmp_path: Path) -> None:
    bin_dir()  # fails loudly, not a skip, when the binaries are missing
    directory = tmp_path / "c"
    up = cli("up", "--dir", str(directory))
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.strip() == f"export KUBECONFIG={directory / 'kubeconfig'}"
        state = json.loads((directory / "state.json").read_text())
        pids = [p["pid"] for p in state["procs"]]
        ports = [p["port"] for p in state["procs"] if p["port"]]
        ports.append(int(state["info"]["apiserver_port"]))
        assert len(pids) == 5
        assert all(_pid_alive(pid) for pid in pids)

        status = cli("status", "--dir", str(directory))
        assert status.returncode == 0, status.stdout + status.stderr
        assert "API server: ready" in status.stdout
        assert status.stdout.count(" Ready") == 4
    finally:
        down = cli("down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    assert "stopped: kwok" in down.stdout
    assert [pid for pid in pids if _pid_alive(pid)] == []
    assert [port for port in ports if port_listening(port)] == []
    assert cli("status", "--dir", str(directory)).returncode == 3


def test_taken_port_is_reported(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = cli("up", "--dir", str(tmp_path), "--apiserver-port", str(port))
    assert result.returncode == 1
    assert result.stderr.strip() == f"dev-cluster: port 127.0.0.1:{port} is already in use"


def test_missing_binaries_are_reported(tmp_path: Path) -> None:
    env = {
        "COBROWSE_TLS_CACHE": str(tmp_path),
        "COBROWSE_TLS_BIN_DIR": "",
        "KUBEBUILDER_ASSETS": "",
    }
    result = cli("up", "--dir", str(tmp_path / "c"), env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "not found" in lines[0]
    assert "hack/build-binaries.sh" in lines[0]


def test_down_without_cluster_is_harmless(tmp_path: Path) -> None:
    assert LocalCluster(tmp_path).down() == []
    assert cli("down", "--dir", str(tmp_path)).stdout.strip() == "nothing was running"
