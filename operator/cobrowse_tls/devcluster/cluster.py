"""Bringing the local control plane up, reporting on it and taking it down."""

from __future__ import annotations

import re
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cobrowse_tls.devcluster import components, kubeconfig, nodes, procs
from cobrowse_tls.devcluster.api import Api, ApiError
from cobrowse_tls.devcluster.binaries import MissingBinaryError, bin_dir, cache_root, stages_dir
from cobrowse_tls.devcluster.pki import Pki, ensure_pki, issue_client

# Start order; down goes in reverse so that nothing complains about a vanished API server.
ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
_PORT_TAKEN = re.compile(r"(?:127\.0\.0\.1|localhost):(\d+).{0,40}address already in use")


class ClusterError(RuntimeError):
    """A one-line, actionable reason why the cluster cannot be brought up."""


class PortTakenError(ClusterError):
    """A component lost the race for its port to another process."""


# A port found free can be taken by another process before the component binds it (two ups at
# once): start again on fresh ports this many times.
PORT_ATTEMPTS = 4


def default_dir() -> Path:
    return cache_root() / "cluster"


@dataclass
class Status:
    components: dict[str, tuple[bool, int]] = field(default_factory=dict)
    api_ready: bool = False
    nodes: dict[str, tuple[str, bool]] = field(default_factory=dict)
    kubeconfig: Path | None = None

    @property
    def running(self) -> bool:
        return bool(self.components) and all(up for up, _ in self.components.values())


class LocalCluster:
    def __init__(self, directory: Path) -> None:
        self.dir = directory.resolve()
        self.state_path = self.dir / "state.json"
        self.lock_path = self.dir / "lock"
        self.pki = Pki(self.dir / "pki")

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        """JSON lines, one per write request (verb, user, object)."""
        return self.dir / "logs" / "audit.log"

    def user_kubeconfig(self, user: str, groups: tuple[str, ...] = ("system:masters",)) -> Path:
        """A kubeconfig for a user of its own (by default with the admin's rights)."""
        state = procs.State.load(self.state_path)
        port = state.info.get("apiserver_port")
        if not port:
            raise ClusterError(f"the cluster in {self.dir} is not running")
        cert, key = issue_client(self.pki, user, groups)
        path = self.dir / f"kubeconfig-{user}"
        kubeconfig.write_user(path, self.pki, int(port), user, cert, key)
        return path

    def _api(self, state: procs.State) -> Api | None:
        port = state.info.get("apiserver_port")
        return Api(int(port), self.pki) if port and self.pki.complete() else None

    # -- up ----------------------------------------------------------------------------

    def up(
        self,
        timeout: float = 90.0,
        tie_to_parent: bool = False,
        apiserver_port: int | None = None,
        *,
        flow_control: bool = False,
        watch_cache: bool = True,
    ) -> None:
        """Start every component and return once all fake nodes are Ready.

        ``tie_to_parent`` makes the kernel kill the components if this process dies, for test
        sessions; the CLI leaves it off so the cluster outlives ``up``. ``flow_control`` and
        ``watch_cache`` are the API server's (see components.kube_apiserver), for fault tests.
        Two ``up`` of one directory at once: the second waits and finds the cluster running.
        """
        deadline = time.monotonic() + timeout
        with procs.locked(self.lock_path):
            for attempt in range(PORT_ATTEMPTS):
                try:
                    self._up(deadline, tie_to_parent, apiserver_port, flow_control, watch_cache)
                    return
                except PortTakenError:
                    if attempt == PORT_ATTEMPTS - 1 or apiserver_port is not None:
                        raise

    def _up(
        self,
        deadline: float,
        tie_to_parent: bool,
        apiserver_port: int | None,
        flow_control: bool,
        watch_cache: bool,
    ) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        state = procs.State.load(self.state_path)
        if state.procs:
            if self.status().running:
                return
            self._down()  # a half-dead cluster from before: start afresh
            state = procs.State.load(self.state_path)
        try:
            bins = bin_dir()
        except MissingBinaryError as e:
            raise ClusterError(str(e)) from None
        if apiserver_port is not None and not procs.port_free(apiserver_port):
            raise ClusterError(f"port 127.0.0.1:{apiserver_port} is already in use")
        lay = components.Layout(self.dir, bins, ensure_pki(self.pki.dir))
        # Each up is a fresh cluster: old objects would only make tests order-dependent.
        shutil.rmtree(lay.etcd_data, ignore_errors=True)
        shutil.rmtree(lay.logs, ignore_errors=True)
        lay.logs.mkdir()
        etcd_port, peer_port, api_port, kwok_port = procs.free_ports(4)
        api_port = apiserver_port or api_port
        kubeconfig.write(lay.kubeconfig, lay.pki, api_port)
        lay.audit_policy.write_text(components.AUDIT_POLICY)
        state.info = {
            "apiserver_port": str(api_port),
            "bin_dir": str(bins),
            "tie_to_parent": str(tie_to_parent),
        }
        stages = sorted(stages_dir(bins).glob("*.yaml"))

        first: list[tuple[str, list[str], int]] = [
            ("etcd", components.etcd(lay, etcd_port, peer_port), etcd_port),
            (
                "kube-apiserver",
                components.kube_apiserver(
                    lay, api_port, etcd_port, flow_control=flow_control, watch_cache=watch_cache
                ),
                api_port,
            ),
        ]
        # Only after the API server is ready: the controller manager gives up (exits) when
        # /healthz is not ok within its own deadline, which a loaded machine can exceed.
        then: list[tuple[str, list[str], int]] = [
            ("kube-controller-manager", components.kube_controller_manager(lay), 0),
            ("kube-scheduler", components.kube_scheduler(lay), 0),
            ("kwok", components.kwok(lay, stages, kwok_port), kwok_port),
        ]
        try:
            for name, argv, port in first:
                state.add(procs.spawn(name, argv, lay.log(name), port, tie_to_parent, self.dir))
            api = Api(api_port, lay.pki)
            self._wait(state, api.ready, deadline, "the API server to be ready")
            for name, argv, port in then:
                state.add(procs.spawn(name, argv, lay.log(name), port, tie_to_parent, self.dir))
            for name, os_name in nodes.NODE_NAMES.items():
                self._create(api, "/api/v1/nodes", nodes.manifest(name, os_name))
            self._wait(state, lambda: self._nodes_ready(api), deadline, "schedulable Ready nodes")
        except BaseException:
            self._down()
            raise

    def _create(self, api: Api, path: str, body: dict[str, object]) -> None:
        try:
            api.request("POST", path, body)
        except ApiError as e:
            if e.status != 409:
                raise

    def _nodes_ready(self, api: Api) -> bool:
        try:
            items = api.request("GET", "/api/v1/nodes")["items"]
        except (OSError, ApiError):
            return False
        ready = {n["metadata"]["name"] for n in items if nodes.is_schedulable(n)}
        return ready >= set(nodes.NODE_NAMES)

    def _wait(
        self, state: procs.State, check: Callable[[], bool], deadline: float, what: str
    ) -> None:
        while True:
            for p in state.procs:
                # Seen in CI: a component reported dead at start-up that was still running two
                # seconds later. Only a PID that is gone or a zombie counts as a death here (a
                # PID cannot be reused within a start-up).
                if not procs.is_running(p) and not procs.pid_alive(p.pid):
                    raise self._death_reason(p)
            if check():
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out waiting for {what}; logs in {self.dir / 'logs'}")
            time.sleep(0.1)

    @staticmethod
    def _death_reason(p: procs.Proc) -> ClusterError:
        try:
            lines = Path(p.log).read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        text = "\n".join(lines[-40:])
        if m := _PORT_TAKEN.search(text):
            return PortTakenError(
                f"{p.name} could not listen: port 127.0.0.1:{m.group(1)} is already in use"
            )
        how = procs.exit_description(p) or "exited"
        last = next((ln.strip() for ln in reversed(lines) if ln.strip()), None)
        said = f"last output: {last[:300]}" if last else "it wrote nothing to its log"
        return ClusterError(f"{p.name} {how} during start-up ({p.log}): {said}")

    # -- down / status -----------------------------------------------------------------

    def down(self) -> list[str]:
        """Stop every recorded component; return the names of those that were running."""
        if not self.dir.is_dir():
            return []
        with procs.locked(self.lock_path):
            return self._down()

    def _down(self) -> list[str]:
        state = procs.State.load(self.state_path)
        rank = {name: i for i, name in enumerate(ORDER)}
        stopped = []
        for p in sorted(state.procs, key=lambda p: -rank.get(p.name, 0)):
            if procs.is_running(p):
                stopped.append(p.name)
            procs.stop(p)
        state.clear()
        return stopped

    # -- faults (for tests and hack/chaos.py) ----------------------------------------------

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal one running component (e.g. SIGKILL the API server) and wait until it is gone
        (for SIGKILL/SIGTERM); ``start`` brings it back as it was."""
        state = procs.State.load(self.state_path)
        proc = self._proc(state, name)
        procs.signal_group(proc.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            procs.stop(proc, grace=10.0)
            procs.wait_gone(proc)

    def start(self, name: str) -> None:
        """Start a stopped component again with its recorded command line."""
        state = procs.State.load(self.state_path)
        old = self._proc(state, name)
        if procs.is_running(old):
            return
        new = procs.spawn(
            name,
            old.argv,
            Path(old.log),
            old.port,
            state.info.get("tie_to_parent") == "True",
            self.dir,
        )
        state.replace(old, new)

    def restart(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        self.kill(name, sig)
        self.start(name)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the API server answers /readyz (after a restart of it or of etcd)."""
        state = procs.State.load(self.state_path)
        api = self._api(state)
        if api is None:
            raise ClusterError(f"the cluster in {self.dir} is not running")
        self._wait(state, api.ready, time.monotonic() + timeout, "the API server to be ready")

    def _proc(self, state: procs.State, name: str) -> procs.Proc:
        for p in state.procs:
            if p.name == name:
                if not p.argv:
                    raise ClusterError(f"{name} was started by an older version: run down, up")
                return p
        raise ClusterError(f"no component {name!r} in {self.dir}")

    def status(self) -> Status:
        state = procs.State.load(self.state_path)
        st = Status(kubeconfig=self.kubeconfig if state.procs else None)
        for p in state.procs:
            st.components[p.name] = (procs.is_running(p), p.port)
        api = self._api(state)
        if api and st.running and api.ready():
            st.api_ready = True
            try:
                items = api.request("GET", "/api/v1/nodes")["items"]
            except (OSError, ApiError):
                items = []  # ready a moment ago; status reports what it can
            for n in items:
                os_name = n["metadata"].get("labels", {}).get("kubernetes.io/os", "?")
                st.nodes[n["metadata"]["name"]] = (os_name, nodes.is_ready(n))
        return st
