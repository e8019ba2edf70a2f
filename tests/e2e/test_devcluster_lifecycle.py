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


def test_ups_at_once_share_a_directory_or_keep_apart(tmp_path: Path) -> None:
    """Parallel CI jobs or a second checkout: two ups of one directory give one cluster, an up
    of another directory at the same time gets ports of its own."""
    bin_dir()
    env = {**os.environ, "PYTHONPATH": str(OPERATOR_SRC)}
    dirs = [tmp_path / "shared", tmp_path / "shared", tmp_path / "other"]
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "cobrowse_tls.cli", "dev-cluster", "up", "--dir", str(d)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for d in dirs
    ]
    try:
        results = [(r.wait(timeout=180), *r.communicate()) for r in runs]
        assert [code for code, _, _ in results] == [0, 0, 0], results
        shared = json.loads((tmp_path / "shared" / "state.json").read_text())
        other = json.loads((tmp_path / "other" / "state.json").read_text())
        assert len(shared["procs"]) == len(other["procs"]) == 5
        assert all(_pid_alive(p["pid"]) for p in shared["procs"] + other["procs"])
        ports = [p["port"] for p in shared["procs"] + other["procs"] if p["port"]]
        assert len(ports) == len(set(ports))
        assert cli("status", "--dir", str(tmp_path / "shared")).returncode == 0
        assert cli("status", "--dir", str(tmp_path / "other")).returncode == 0
    finally:
        for d in dirs[1:]:
            cli("down", "--dir", str(d))


def test_a_component_that_dies_during_start_up_is_explained(tmp_path: Path) -> None:
    """Not "no output": how it ended (here SIGKILL, as the OOM killer would) and where its
    log is."""
    real = bin_dir()
    fake = tmp_path / "bin"
    fake.mkdir()
    for entry in real.iterdir():
        (fake / entry.name).symlink_to(entry)
    (fake / "etcd").unlink()
    (fake / "etcd").write_text("#!/bin/sh\nkill -KILL $$\n")
    (fake / "etcd").chmod(0o755)
    result = cli("up", "--dir", str(tmp_path / "c"), env={"COBROWSE_TLS_BIN_DIR": str(fake)})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("dev-cluster: etcd killed by SIGKILL during start-up (")
    assert lines[0].endswith("etcd.log): it wrote nothing to its log")


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
