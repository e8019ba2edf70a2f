"""Real TLS servers for tests (``openssl s_server`` on 127.0.0.1), shared by every layer.

The tools are part of the test contract: when one is missing the tests fail (never skip).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import pki as p


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} not found on PATH: the interop tests need keytool, javac, java, openssl"
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def openssl_servers(pki: p.PKI, workdir: Path) -> Iterator[dict[str, int]]:
    """``openssl s_server`` on 127.0.0.1, one per server certificate; name -> port.

    ``good`` is signed by ``pki.root`` for 127.0.0.1/localhost, ``other-ca`` by
    ``pki.other_root``, ``wrong-name`` by ``pki.root`` for another host name.
    """
    openssl = tool("openssl")
    now = pki.now
    wrong_name = p.make_cert(
        "wrong.example",
        issuer=pki.root,
        ca=False,
        hosts=("wrong.example",),
        not_before=now - p.DAY,
        not_after=now + p.DAY,
    )
    certificates = {"good": pki.server, "other-ca": pki.other_server, "wrong-name": wrong_name}
    processes: list[subprocess.Popen[bytes]] = []
    ports: dict[str, int] = {}
    try:
        for name, item in certificates.items():
            directory = workdir / f"server-{name}"
            directory.mkdir(parents=True, exist_ok=True)
            cert = p.write_server(directory, item)
            port = free_port()
            processes.append(
                subprocess.Popen(
                    [
                        openssl,
                        "s_server",
                        "-quiet",
                        "-accept",
                        f"127.0.0.1:{port}",
                        "-cert",
                        str(cert),
                        "-key",
                        str(directory / "server-key.pem"),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            ports[name] = port
        for (name, port), process in zip(ports.items(), processes, strict=True):
            wait_listening(port, process, name)
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_listening(port: int, process: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"openssl s_server ({name}) exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"openssl s_server ({name}) did not listen on port {port}")
