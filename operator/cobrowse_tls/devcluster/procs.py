"""Starting and stopping component processes so that none is ever left behind.

Each component runs in its own session (process group), so one signal reaches it and any
child it forks, and a Ctrl-C in the terminal that ran ``up`` does not take the cluster down.
PIDs go to ``state.json`` in the cluster directory as soon as each process starts, so
``down`` from any other process, or after a crash half-way through ``up``, finds them all.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_EXITED: dict[int, int] = {}  # pid -> return code of reaped children (negative: signal)


@dataclass
class Proc:
    name: str
    pid: int
    argv0: str
    log: str
    port: int
    # The whole command line, so that a component can be restarted as it was started.
    argv: list[str] = field(default_factory=list)


def _die_with_parent() -> None:
    # The kernel kills the child if the process that started it dies, even by SIGKILL, which
    # no Python-level cleanup can cover. Runs in the child between fork and exec.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


# PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not the process: a
# component started again from a short-lived thread (a fault injector) would be killed as soon
# as that thread returned, silently. Tied children are therefore forked by this one thread,
# which lives as long as the process.
_FORKER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="devcluster-fork")


def spawn(name: str, argv: list[str], log: Path, port: int, tie_to_parent: bool, cwd: Path) -> Proc:
    def fork() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent if tie_to_parent else None,
            )

    popen = _FORKER.submit(fork).result() if tie_to_parent else fork()
    # Kept only so that Popen.__del__ does not warn about a running child: the processes
    # outlive this one when the CLI starts them, so liveness goes through /proc and state.json.
    _CHILDREN[popen.pid] = popen
    return Proc(name=name, pid=popen.pid, argv0=argv[0], log=str(log), port=port, argv=argv)


def exit_description(proc: Proc, wait: float = 2.0) -> str | None:
    """How a component this process started ended ("exit status 1", "killed by SIGKILL"),
    or None when that is unknown (started by another process, or still running after
    ``wait`` seconds: it may be on its way out)."""
    code = _EXITED.get(proc.pid)
    child = _CHILDREN.get(proc.pid)
    if code is None and child is not None:
        try:
            code = child.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return None
    if code is None:
        return None
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if need be): one up/down per cluster
    directory at a time, across processes. The kernel drops it if the holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def is_running(proc: Proc) -> bool:
    """True if the PID is alive, not a zombie, and still runs the recorded binary."""
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        _reap(proc.pid)
        return False
    return cmdline.split(b"\0", 1)[0] == proc.argv0.encode()


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (whatever it runs)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        _reap(pid)
        return False
    return True


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            _EXITED[pid] = child.returncode
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop(proc: Proc, grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after ``grace`` seconds."""
    if not is_running(proc):
        # Never signal a group whose leader is gone: after a reboot that PID may now lead
        # somebody's shell. The components fork no children, so nothing is left over.
        return
    _kill_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(proc.pid)
        if not is_running(proc) and not _group_alive(proc.pid):
            return
        time.sleep(0.05)
    _kill_group(proc.pid, signal.SIGKILL)
    for _ in range(100):
        _reap(proc.pid)
        if not is_running(proc) and not _group_alive(proc.pid):
            return
        time.sleep(0.02)


def signal_group(pgid: int, sig: signal.Signals) -> None:
    _kill_group(pgid, sig)


def wait_gone(proc: Proc, timeout: float = 10.0) -> None:
    """Until the process has exited and its port is free again. A killed process stops
    matching is_running while the kernel is still tearing it down, sockets included."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(proc.pid)
        try:
            gone = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
        except OSError:
            gone = True
        if gone and (not proc.port or port_free(proc.port)):
            return
        time.sleep(0.02)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process in the group? Zombies count as gone: whether they are
    reaped depends on what runs as PID 1, which differs between machines."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out as free; held together so that they are distinct."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class State:
    """``state.json``: the running components, rewritten after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.procs: list[Proc] = []
        self.info: dict[str, str] = {}

    @classmethod
    def load(cls, path: Path) -> State:
        state = cls(path)
        if path.is_file():
            data = json.loads(path.read_text())
            state.procs = [Proc(**p) for p in data.get("procs", [])]
            state.info = dict(data.get("info", {}))
        return state

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        data = {"procs": [asdict(p) for p in self.procs], "info": self.info}
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.path)

    def add(self, proc: Proc) -> None:
        self.procs.append(proc)
        self.save()

    def replace(self, old: Proc, new: Proc) -> None:
        self.procs = [new if p.pid == old.pid and p.name == old.name else p for p in self.procs]
        self.save()

    def clear(self) -> None:
        self.procs = []
        self.info = {}
        self.path.unlink(missing_ok=True)
