"""The MSCAPI agent with the file-backed store: sync, rotation, crash safety, cleanup, CLI."""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import importlib.metadata
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pki as pki_module
from cobrowse_tls import agent
from cobrowse_tls.agent import state
from cobrowse_tls.agent.filestore import FileStore, target_dir
from cobrowse_tls.agent.stores import Store, StoreError, Target, thumbprint
from cobrowse_tls.agent.sync import sync_owner
from cobrowse_tls.core import agent_manifest, certs

REPO = Path(__file__).resolve().parents[2]
ROOT = Target("LocalMachine", "Root")


class Env:
    """One host: a file store root, a state directory, a ready file per owner."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.stores = base / "stores"
        self.state = base / "state"

    def store(self, target: Target = ROOT) -> FileStore:
        return FileStore(target_dir(self.stores, target))

    def contents(self, target: Target = ROOT) -> set[str]:
        return self.store(target).list_thumbprints()

    def ca(self, *items: pki_module.CertKey, name: str = "ca.pem") -> tuple[Path, str]:
        """Write a ca.pem with ``items``; returns its path and fingerprint."""
        path = self.base / name
        path.write_bytes(pki_module.pem(*items))
        return path, certs.fingerprint(certs.parse_source(path.read_bytes(), source="t"))

    def config(
        self,
        ca: tuple[Path, str],
        owner: str = "ns/a",
        *,
        target: Target = ROOT,
        cleanup: bool = False,
    ) -> agent.Config:
        return agent.Config(
            fingerprint=ca[1],
            owner=owner,
            target=target,
            state_dir=self.state,
            ready_file=self.base / f"ready-{owner.replace('/', '_')}",
            backend="file",
            ca_file=ca[0],
            file_store=self.stores,
            cleanup=cleanup,
        )

    def run(self, config: agent.Config, opener: Callable[[Target], Store] | None = None) -> bool:
        ready, _ = agent.run_pass(config, opener or agent.store_opener(config))
        return ready

    def ready(self, config: agent.Config) -> str | None:
        path = config.ready_file
        return path.read_text() if path.exists() else None

    def record(self, owner: str = "ns/a") -> dict[str, dict[str, list[str]]] | None:
        path = state.record_path(self.state, owner)
        if not path.exists():
            return None
        stores: dict[str, dict[str, list[str]]] = json.loads(path.read_text())["stores"]
        return stores


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def tp(item: pki_module.CertKey) -> str:
    return thumbprint(item.der)


def test_first_sync_adds_every_ca_and_marks_ready(env: Env, pki: pki_module.PKI) -> None:
    config = env.config(env.ca(pki.root, pki.intermediate))
    assert env.run(config)
    assert env.contents() == {tp(pki.root), tp(pki.intermediate)}
    assert env.ready(config) == config.fingerprint
    assert env.record() == {
        "LocalMachine/Root": {
            "added": sorted([tp(pki.root), tp(pki.intermediate)]),
            "preexisting": [],
        }
    }
    # Stored as DER, named by the Windows thumbprint.
    assert (env.store().directory / f"{tp(pki.root)}.cer").read_bytes() == pki.root.der
    # A second pass changes nothing and stays ready.
    assert env.run(config)
    assert env.contents() == {tp(pki.root), tp(pki.intermediate)}


def test_rotation_adds_the_new_and_removes_only_the_old_it_added(
    env: Env, pki: pki_module.PKI
) -> None:
    now = pki.now
    lookalike = pki_module.make_cert(
        "Test Intermediate CA", not_before=now - pki_module.DAY, not_after=now + pki_module.DAY
    )
    assert lookalike.subject == pki.intermediate.subject
    env.store().add(lookalike.der)
    env.store().add(pki.no_bc.der)
    assert env.run(env.config(env.ca(pki.root, pki.intermediate)))

    rotated = env.config(env.ca(pki.root, pki.other_root))
    assert env.run(rotated)
    assert env.contents() == {tp(pki.root), tp(pki.other_root), tp(lookalike), tp(pki.no_bc)}
    assert env.ready(rotated) == rotated.fingerprint
    assert env.record() == {
        "LocalMachine/Root": {
            "added": sorted([tp(pki.root), tp(pki.other_root)]),
            "preexisting": [],
        }
    }


def test_a_certificate_there_before_the_agent_stays_forever(env: Env, pki: pki_module.PKI) -> None:
    env.store().add(pki.root.der)
    config = env.config(env.ca(pki.root, pki.intermediate))
    assert env.run(config)
    assert env.record() == {
        "LocalMachine/Root": {"added": [tp(pki.intermediate)], "preexisting": [tp(pki.root)]}
    }
    # Rotating away from it leaves it; so does cleanup.
    assert env.run(env.config(env.ca(pki.other_root)))
    assert env.contents() == {tp(pki.root), tp(pki.other_root)}
    assert env.run(env.config(env.ca(pki.root)))
    assert env.run(env.config(env.ca(pki.root), cleanup=True))
    assert env.contents() == {tp(pki.root)}
    assert env.record() is None


def test_a_pre_existing_certificate_removed_by_hand_and_wanted_becomes_ours(
    env: Env, pki: pki_module.PKI
) -> None:
    env.store().add(pki.root.der)
    config = env.config(env.ca(pki.root))
    assert env.run(config)
    env.store().remove(tp(pki.root))
    assert env.run(config)
    assert env.record() == {"LocalMachine/Root": {"added": [tp(pki.root)], "preexisting": []}}
    assert env.run(env.config(env.ca(pki.root), cleanup=True))
    assert env.contents() == set()


class Crash(Exception):
    """Stands for the agent process dying at that point."""


class CrashingStore:
    """A file store that dies right before or right after one operation."""

    def __init__(self, inner: FileStore, *, on: str, after: bool) -> None:
        self.inner, self.on, self.after = inner, on, after

    def list_thumbprints(self) -> set[str]:
        return self.inner.list_thumbprints()

    def contains(self, thumb: str) -> bool:
        return self.inner.contains(thumb)

    def _op(self, name: str, call: Callable[[], None]) -> None:
        if name == self.on and not self.after:
            raise Crash(name)
        call()
        if name == self.on:
            raise Crash(name)

    def add(self, der: bytes) -> None:
        self._op("add", lambda: self.inner.add(der))

    def remove(self, thumb: str) -> None:
        self._op("remove", lambda: self.inner.remove(thumb))


@pytest.mark.parametrize("after", [True, False], ids=["after-add", "before-add"])
def test_crash_around_an_add_then_rerun_converges(
    env: Env, pki: pki_module.PKI, after: bool
) -> None:
    config = env.config(env.ca(pki.root, pki.intermediate))

    def crashing(target: Target) -> Store:
        return CrashingStore(env.store(target), on="add", after=after)

    with pytest.raises(Crash):
        env.run(config, crashing)
    assert env.ready(config) is None
    # The intent was on disk before the add: the certificate is known to be ours.
    record = env.record()
    assert record is not None
    assert set(record["LocalMachine/Root"]["added"]) == {tp(pki.root), tp(pki.intermediate)}
    assert env.run(config)
    assert env.contents() == {tp(pki.root), tp(pki.intermediate)}
    # And so cleanup removes it rather than mistaking it for a pre-existing certificate.
    assert env.run(env.config(env.ca(pki.root, pki.intermediate), cleanup=True))
    assert env.contents() == set()


def test_crash_after_a_remove_then_rerun_converges(env: Env, pki: pki_module.PKI) -> None:
    assert env.run(env.config(env.ca(pki.root, pki.intermediate)))
    rotated = env.config(env.ca(pki.root))

    def crashing(target: Target) -> Store:
        return CrashingStore(env.store(target), on="remove", after=True)

    with pytest.raises(Crash):
        env.run(rotated, crashing)
    assert env.contents() == {tp(pki.root)}
    assert env.run(rotated)
    assert env.record() == {"LocalMachine/Root": {"added": [tp(pki.root)], "preexisting": []}}


def test_cleanup_removes_only_its_own(env: Env, pki: pki_module.PKI) -> None:
    env.store().add(pki.no_bc.der)
    env.store().add(pki.root.der)
    a = env.config(env.ca(pki.root, pki.intermediate, name="a.pem"), "ns/a")
    b = env.config(env.ca(pki.other_root, name="b.pem"), "ns/b")
    assert env.run(a)
    assert env.run(b)
    cleanup = env.config(env.ca(pki.root, pki.intermediate, name="a.pem"), "ns/a", cleanup=True)
    assert env.run(cleanup)
    assert env.contents() == {tp(pki.no_bc), tp(pki.root), tp(pki.other_root)}
    assert env.ready(cleanup) == "cleaned:" + a.fingerprint
    assert env.record("ns/a") is None
    assert env.record("ns/b") is not None
    # Cleanup needs no ca.pem and is idempotent.
    again = agent.Config(**{**cleanup.__dict__, "ca_file": None})
    assert env.run(again)


def test_two_owners_sharing_a_ca(env: Env, pki: pki_module.PKI) -> None:
    a = env.config(env.ca(pki.root, pki.intermediate, name="a.pem"), "ns/a")
    b = env.config(env.ca(pki.root, name="b.pem"), "other/b")
    assert env.run(a)
    assert env.run(b)
    assert env.record("other/b") == {
        "LocalMachine/Root": {"added": [tp(pki.root)], "preexisting": []}
    }
    # a stops wanting root: b still does, so it stays.
    assert env.run(env.config(env.ca(pki.intermediate, name="a.pem"), "ns/a"))
    assert env.contents() == {tp(pki.root), tp(pki.intermediate)}
    assert env.run(env.config(env.ca(pki.intermediate, name="a.pem"), "ns/a", cleanup=True))
    assert env.contents() == {tp(pki.root)}
    # Now only b lists it: b's cleanup removes it.
    assert env.run(env.config(env.ca(pki.root, name="b.pem"), "other/b", cleanup=True))
    assert env.contents() == set()


def test_cleanup_keeps_a_ca_another_owner_still_wants(env: Env, pki: pki_module.PKI) -> None:
    a = env.config(env.ca(pki.root, name="a.pem"), "ns/a")
    b = env.config(env.ca(pki.root, name="b.pem"), "ns/b")
    assert env.run(a)
    assert env.run(b)
    assert env.run(env.config(env.ca(pki.root, name="a.pem"), "ns/a", cleanup=True))
    assert env.contents() == {tp(pki.root)}
    assert env.run(b)


@pytest.mark.parametrize(
    "content",
    [
        b"garbage, not PEM",
        b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        b"",
    ],
    ids=["garbage", "bad-pem", "empty"],
)
def test_unusable_ca_pem_leaves_the_store_unchanged_and_not_ready(
    env: Env, pki: pki_module.PKI, content: bytes
) -> None:
    good = env.config(env.ca(pki.root))
    assert env.run(good)
    good.ca_file.write_bytes(content)  # type: ignore[union-attr]
    ready, message = agent.run_pass(good, agent.store_opener(good))
    assert not ready
    assert "store left unchanged" in message
    assert env.ready(good) is None
    assert env.contents() == {tp(pki.root)}
    assert env.record() == {"LocalMachine/Root": {"added": [tp(pki.root)], "preexisting": []}}


def test_a_ca_pem_not_yet_refreshed_leaves_the_store_unchanged(
    env: Env, pki: pki_module.PKI
) -> None:
    old = env.config(env.ca(pki.root))
    assert env.run(old)
    # The pod template already carries the new fingerprint; the volume still has the old file.
    _, new_fingerprint = env.ca(pki.other_root, name="new.pem")
    waiting = agent.Config(**{**old.__dict__, "fingerprint": new_fingerprint})
    ready, message = agent.run_pass(waiting, agent.store_opener(waiting))
    assert not ready
    assert f"waiting for {new_fingerprint}" in message
    assert env.contents() == {tp(pki.root)}
    assert env.ready(waiting) is None


def test_missing_ca_pem_is_not_ready(env: Env, pki: pki_module.PKI) -> None:
    config = env.config((env.base / "absent.pem", env.ca(pki.root)[1]))
    assert not env.run(config)
    assert env.contents() == set()


class FailingStore(FileStore):
    def add(self, der: bytes) -> None:
        raise StoreError("access denied")


def test_ready_only_when_in_sync(env: Env, pki: pki_module.PKI) -> None:
    config = env.config(env.ca(pki.root))
    config.ready_file.write_text(config.fingerprint)  # left by an earlier pod
    ready, message = agent.run_pass(config, lambda t: FailingStore(target_dir(env.stores, t)))
    assert not ready
    assert "access denied" in message
    assert env.ready(config) is None
    assert env.run(config)
    assert env.ready(config) == config.fingerprint


def test_an_unreadable_record_touches_no_store(env: Env, pki: pki_module.PKI) -> None:
    env.state.mkdir()
    (env.state / "ns_b.json").write_text("{not json")
    config = env.config(env.ca(pki.root))
    ready, message = agent.run_pass(config, agent.store_opener(config))
    assert not ready
    assert "ns_b.json" in message
    assert env.contents() == set()


def test_a_new_location_empties_the_old_store(env: Env, pki: pki_module.PKI) -> None:
    env.store().add(pki.no_bc.der)
    ca = env.ca(pki.root)
    assert env.run(env.config(ca))
    service = Target("Service", "Root", "CobrowseSvc")
    assert env.run(env.config(ca, target=service))
    assert env.contents() == {tp(pki.no_bc)}
    assert env.contents(service) == {tp(pki.root)}
    assert set(env.record() or {}) == {"Service/CobrowseSvc/Root"}


def test_sync_owner_reports_each_store(env: Env, pki: pki_module.PKI) -> None:
    wanted = {tp(pki.root): pki.root.der}
    result = sync_owner(env.state, "ns/a", ROOT, wanted, env.store)
    assert result.in_sync
    assert result.outcomes["LocalMachine/Root"].added == [tp(pki.root)]


# --- command line ------------------------------------------------------------------------


def test_probe_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ready = tmp_path / "ready"
    args = ["probe", "--ready-file", str(ready), "--expect", "sha256:abc"]
    assert agent.main(args) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    ready.write_text("sha256:old")
    assert agent.main(args) == 1
    assert "sha256:old" in capsys.readouterr().err
    ready.write_text("sha256:abc")
    assert agent.main(args) == 0
    assert capsys.readouterr().err == ""
    ready.write_text("cleaned:sha256:abc")
    assert agent.main(args) == 1
    assert agent.main([*args[:-1], "cleaned:sha256:abc"]) == 0


def _run_args(env: Env, ca: tuple[Path, str], *extra: str) -> list[str]:
    return [
        "run",
        "--ca-file", str(ca[0]),
        "--fingerprint", ca[1],
        "--owner", "ns/a",
        "--store", "Root",
        "--location", "LocalMachine",
        "--state-dir", str(env.state),
        "--ready-file", str(env.base / "ready"),
        "--backend", "file",
        "--file-store", str(env.stores),
        *extra,
    ]  # fmt: skip


GOOD_FP = "sha256:" + "0" * 64


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--fingerprint": "sha1:abc"}, "--fingerprint"),
        ({"--fingerprint": "sha256:" + "A" * 64}, "--fingerprint"),
        ({"--owner": "just-a-name"}, "--owner"),
        ({"--owner": "ns/../x"}, "--owner"),
        ({"--owner": "Upper/x"}, "--owner"),
        ({"--store": "My"}, "--store"),
        ({"--location": "CurrentUser"}, "--location"),
        ({"--location": "Service"}, "account is required"),
        ({"--location": "User", "--account": "alice"}, "SID"),
        ({"--location": "Service", "--account": "a\\b"}, "letters, digits"),
        ({"--location": "Service", "--account": ".."}, "must not be '.' or '..'"),
        ({"--account": "svc"}, "must be empty for LocalMachine"),
        ({"--backend": "windows"}, "only on Windows"),
        ({"--backend": "registry"}, "--backend"),
        ({"--interval": "soon"}, "--interval"),
        ({"--interval": "0"}, "--interval"),
        ({"--mode": "delete"}, "--mode"),
        ({"--file-store": None}, "--file-store is required"),
        ({"--ca-file": None}, "--ca-file is required"),
        ({"--state-dir": None}, "--state-dir is required"),
        ({"--bogus": "1"}, "unrecognized"),
    ],
)
def test_invalid_arguments_exit_2_with_one_line(
    env: Env,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    change: dict[str, str | None],
    message: str,
) -> None:
    for name in list(os.environ):
        if name.startswith(agent.ENV_PREFIX):
            monkeypatch.delenv(name)
    args = _run_args(env, (env.base / "ca.pem", GOOD_FP))
    if sys.platform == "win32" and change.get("--backend") == "windows":
        pytest.skip("the windows backend exists here")
    for flag, value in change.items():
        if flag in args:
            index = args.index(flag)
            del args[index : index + 2]
        if value is not None:
            args += [flag, value]
    assert agent.main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert message in err
    assert not (env.base / "ready").exists()


def test_environment_variables_stand_in_for_flags(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COBROWSE_AGENT_FINGERPRINT", GOOD_FP)
    monkeypatch.setenv("COBROWSE_AGENT_OWNER", "ns/from-env")
    monkeypatch.setenv("COBROWSE_AGENT_LOCATION", "User")
    monkeypatch.setenv("COBROWSE_AGENT_ACCOUNT", "S-1-5-21-1-2-3-1001")
    monkeypatch.setenv("COBROWSE_AGENT_STORE", "CA")
    monkeypatch.setenv("COBROWSE_AGENT_MODE", "cleanup")
    monkeypatch.setenv("COBROWSE_AGENT_INTERVAL", "5")
    args = argparse.Namespace(
        **{k: None for k in ("ca_file", "fingerprint", "owner", "store", "location", "account")},
        state_dir=str(env.state),
        ready_file="r",
        backend="file",
        file_store="s",
        interval=None,
        once=False,
        mode=None,
    )
    config = agent.parse_config(args)
    assert config.owner == "ns/from-env"
    assert config.target == Target("User", "CA", "S-1-5-21-1-2-3-1001")
    assert config.cleanup
    assert config.interval == 5
    assert config.ready_text == "cleaned:" + GOOD_FP
    # A flag wins over its variable.
    args.owner = "ns/from-flag"
    assert agent.parse_config(args).owner == "ns/from-flag"


def test_paths_expand_environment_variables(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTAINER_SANDBOX_MOUNT_POINT", str(env.base))
    args = argparse.Namespace(
        ca_file="$CONTAINER_SANDBOX_MOUNT_POINT/ca.pem",
        fingerprint=GOOD_FP,
        owner="ns/a",
        store="Root",
        location="LocalMachine",
        account=None,
        state_dir="$CONTAINER_SANDBOX_MOUNT_POINT/state",
        ready_file="${CONTAINER_SANDBOX_MOUNT_POINT}/ready",
        backend="file",
        file_store="s",
        interval=None,
        once=True,
        mode=None,
    )
    config = agent.parse_config(args)
    assert config.ca_file == env.base / "ca.pem"
    assert config.state_dir == env.base / "state"
    assert config.ready_file == env.base / "ready"


def test_the_rendered_agent_args_reach_the_mounted_ca_file(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The DaemonSet's --ca-file is %CONTAINER_SANDBOX_MOUNT_POINT%\var\run\...: the agent
    # expands it the Windows way (ntpath), also when hcsshim has not.
    monkeypatch.setenv("CONTAINER_SANDBOX_MOUNT_POINT", str(env.base))
    rendered = agent_manifest.CA_FILE.replace("\\", "/")
    assert rendered.startswith("%CONTAINER_SANDBOX_MOUNT_POINT%/")
    args = agent._parser().parse_args(_run_args(env, (env.base / "x", GOOD_FP)))
    args.ca_file = rendered
    config = agent.parse_config(args)
    assert config.ca_file == env.base / "var" / "run" / "cobrowse-tls" / "ca.pem"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    return subprocess.run(
        [sys.executable, "-m", "cobrowse_tls.cli", "agent", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )


def test_cli_run_once_with_the_file_backend(env: Env, pki: pki_module.PKI) -> None:
    ca = env.ca(pki.root, pki.intermediate)
    done = _cli(*_run_args(env, ca, "--once"))
    assert done.returncode == 0, done.stderr
    assert env.contents() == {tp(pki.root), tp(pki.intermediate)}
    assert (env.base / "ready").read_text() == ca[1]
    assert _cli("probe", "--ready-file", str(env.base / "ready"), "--expect", ca[1]).returncode == 0

    stale = _cli(*_run_args(env, (ca[0], GOOD_FP), "--once"))
    assert stale.returncode == 1
    assert "waiting for" in stale.stderr
    assert not (env.base / "ready").exists()

    cleaned = _cli(*_run_args(env, ca, "--once", "--mode", "cleanup"))
    assert cleaned.returncode == 0, cleaned.stderr
    assert env.contents() == set()
    assert (env.base / "ready").read_text() == "cleaned:" + ca[1]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_cli_loop_stops_cleanly_on_sigterm(env: Env, pki: pki_module.PKI) -> None:
    ca = env.ca(pki.root)
    environment = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cobrowse_tls.cli",
            "agent",
            *_run_args(env, ca, "--interval", "0.2"),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        deadline = time.monotonic() + 30
        while not (env.base / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (env.base / "ready").read_text() == ca[1]
        # The loop keeps converging: a CA deleted by hand comes back on a later pass.
        env.store().remove(tp(pki.root))
        deadline = time.monotonic() + 30
        while tp(pki.root) not in env.contents() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tp(pki.root) in env.contents()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopping (signal or console control event)" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_agent_imports_no_kubernetes_client() -> None:
    code = (
        "import sys, cobrowse_tls.cli as c; c.main(['agent', 'probe', '--ready-file', 'x',"
        " '--expect', 'y'])\n"
        "bad = [m for m in ('kubernetes', 'kopf', 'cryptography') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


SID = "S-1-5-21-3623811015-3361044348-30300820-1013"


def test_a_users_root_store_is_refused_but_can_still_be_cleaned(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _run_args(env, (env.base / "ca.pem", GOOD_FP))
    args += ["--location", "User", "--account", SID]  # the last --location wins
    assert agent.main(args) == 2
    err = capsys.readouterr().err
    assert "protected root list" in err
    assert "--location LocalMachine" in err
    # The CA store of a user is not protected, and cleanup removes what was added before.
    assert agent.main([*args, "--store", "CA", "--once"]) in (0, 1)
    cleanup = agent.parse_config(agent._parser().parse_args([*args, "--mode", "cleanup"]))
    assert cleanup.target == Target("User", "Root", SID)


class _HeldOpen:
    """Windows semantics for one file that another process (the probe) holds open: Python
    opens files with read and write sharing but not delete sharing, so a rename onto the
    file and its deletion fail with a sharing violation, while writing into it works."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
        self.path = path
        self.refused = 0
        real_replace, real_unlink = os.replace, os.unlink

        def replace(src: str | Path, dst: str | Path) -> None:
            self._check(dst)
            real_replace(src, dst)

        def unlink(target: str | Path, *, dir_fd: int | None = None) -> None:
            self._check(target)
            real_unlink(target, dir_fd=dir_fd)

        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "unlink", unlink)

    def _check(self, target: str | Path) -> None:
        if Path(target) == self.path and self.path.exists():
            self.refused += 1
            raise PermissionError(13, "The process cannot access the file", str(target))


def test_ready_file_updates_survive_a_reader_holding_it_open(
    env: Env, pki: pki_module.PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent, "READY_RETRIES", (0.0, 0.0))
    first = env.config(env.ca(pki.root))
    assert env.run(first)
    held = _HeldOpen(monkeypatch, first.ready_file)
    second = env.config(env.ca(pki.intermediate))
    assert env.run(second)  # replace refused: rewritten in place
    assert held.refused == 3
    assert agent.probe(second.ready_file, second.fingerprint) == (0, "")
    assert agent.probe(second.ready_file, first.fingerprint)[0] == 1
    # Not ready: the delete is refused too; emptied in place, the probe then fails.
    bad = env.config((env.base / "missing.pem", second.fingerprint))
    assert not env.run(bad)
    assert agent.probe(bad.ready_file, bad.fingerprint)[0] == 1
    assert bad.ready_file.read_bytes() == b""


def test_a_failed_pass_with_the_ready_file_held_open_does_not_end_the_agent(
    env: Env, pki: pki_module.PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent, "READY_RETRIES", (0.0,))
    config = dataclasses.replace(env.config(env.ca(pki.root)), once=True)
    assert env.run(config)
    _HeldOpen(monkeypatch, config.ready_file)

    def broken(target: Target) -> Store:
        raise RuntimeError("crypt32 went away")

    assert agent.loop(config, broken, threading.Event()) == 1
    assert config.ready_file.read_bytes() == b""


def test_a_console_shutdown_event_ends_the_loop_after_the_pass(
    env: Env, pki: pki_module.PKI, caplog: pytest.LogCaptureFixture
) -> None:
    config = dataclasses.replace(env.config(env.ca(pki.root)), interval=3600.0)
    stop, stopped = threading.Event(), threading.Event()
    codes: list[int] = []

    def run() -> None:
        try:
            codes.append(agent.loop(config, agent.store_opener(config), stop))
        finally:
            stopped.set()  # what _run does when the loop returns

    caplog.set_level(logging.INFO, logger="cobrowse_tls.agent")
    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while env.ready(config) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        # What Windows calls, in a thread of its own, when hcsshim stops the container.
        handler = agent.ConsoleStop(stop, stopped, grace=60.0)
        assert handler(agent.CTRL_SHUTDOWN_EVENT) == 1
        assert stopped.is_set()  # it returned only once the loop had ended
    finally:
        stop.set()
        thread.join(60)
    assert codes == [0]
    assert "stopping (signal or console control event)" in caplog.text
    assert env.ready(config) == config.fingerprint


def test_the_registered_console_handler_is_never_freed(
    env: Env, pki: pki_module.PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered: list[tuple[weakref.ref[Any], bool]] = []

    class Kernel32:
        def SetConsoleCtrlHandler(self, routine: Any, add: bool) -> int:
            registered.append((weakref.ref(routine), add))
            return 1

    # Windows as far as _run sees it: ctypes' stdcall callbacks are cdecl ones elsewhere.
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(ctypes, "WINFUNCTYPE", ctypes.CFUNCTYPE, raising=False)
    monkeypatch.setattr(ctypes, "WinDLL", lambda *a, **k: Kernel32(), raising=False)
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # keep pytest's own handlers
    monkeypatch.setattr(agent, "loop", lambda *a: 0)
    assert agent._run(env.config(env.ca(pki.root))) == 0
    gc.collect()
    [(routine, added)] = registered
    assert added
    # Still there for a CTRL_SHUTDOWN_EVENT after the loop ended: returns at once, handled.
    handler = routine()
    assert handler is not None
    assert handler(agent.CTRL_SHUTDOWN_EVENT) == 1


def test_the_console_handler_never_waits_past_its_grace() -> None:
    stop, never = threading.Event(), threading.Event()
    assert agent.ConsoleStop(stop, never, grace=0.01)(agent.CTRL_CLOSE_EVENT) == 1
    assert stop.is_set()


def test_check_loads_what_a_pass_needs(tmp_path: Path) -> None:
    environment = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    command = [sys.executable, "-m", "cobrowse_tls.cli", "agent", "check"]
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "cryptography" in done.stdout
    # An embedded Python without a usable cryptography: status 1, one line.
    broken = tmp_path / "cryptography"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('no _rust extension')\n")
    environment["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{REPO / 'operator'}"
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60)
    assert done.returncode == 1
    assert "cannot import what a pass needs: no _rust extension" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def _not_in_the_agent_image() -> list[str]:
    """The top-level modules of the package's dependencies that images/agent/Dockerfile.windows
    does not install (it installs cryptography, then the package with --no-deps)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {re.split(r"[^A-Za-z0-9._-]", d, maxsplit=1)[0] for d in project["dependencies"]}
    absent = {_dist_key(d) for d in wanted} - {"cryptography"}
    found = importlib.metadata.packages_distributions()
    return sorted(m for m, dists in found.items() if any(_dist_key(d) in absent for d in dists))


def _dist_key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_check_and_a_pass_need_only_what_the_windows_image_installs(
    env: Env, pki: pki_module.PKI
) -> None:
    blocked = _not_in_the_agent_image()
    assert {"jks", "pyasn1", "pyasn1_modules", "urllib3", "kopf"} <= set(blocked)
    # None in sys.modules: any import of these (or of a submodule) raises ImportError.
    prelude = (
        f"import sys\nsys.modules.update(dict.fromkeys({blocked!r}))\n"
        "from cobrowse_tls import cli\nsys.exit(cli.main(sys.argv[1:]))\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPO / "operator")}

    def agent_cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", prelude, "agent", *args]
        return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60)

    check = agent_cli("check")
    assert check.returncode == 0, check.stderr
    ca = env.ca(pki.root, pki.intermediate)
    one_pass = agent_cli(*_run_args(env, ca, "--once"))
    assert one_pass.returncode == 0, one_pass.stderr
    assert env.contents() == {tp(pki.root), tp(pki.intermediate)}
    assert (env.base / "ready").read_text() == ca[1]


def test_the_windows_image_build_fails_unless_the_agent_loads() -> None:
    dockerfile = (REPO / "images" / "agent" / "Dockerfile.windows").read_text()
    build = dockerfile.split("FROM ${HOSTPROCESS_BASE}")[0]
    # The smoke test runs `agent check` with the embedded python and wants status 0: an
    # import crash (status 1) fails the build.
    assert "C:\\agent\\python\\python.exe -m cobrowse_tls.cli agent check" in build
    assert "if ($LASTEXITCODE -ne 0) { throw" in build
    assert "-ne 1" not in build
