"""`cobrowse-tls agent`: keeps a Windows certificate store in step with a truststore Secret.

Runs on each Windows node as a HostProcess container (DESIGN.md section 4), without any
Kubernetes API access: it reads the mounted ``ca.pem``, converges the store (see
:mod:`cobrowse_tls.agent.sync`) and reports only through a ready file that the pod's
readiness probe (``cobrowse-tls agent probe``) compares with the fingerprint carried in the
pod template.

This package imports neither kubernetes nor kopf, and ``cryptography`` only when a pass
parses ``ca.pem``, so the readiness probe starts fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import NoReturn

from cobrowse_tls.agent import state
from cobrowse_tls.agent.stores import LOCATIONS, STORE_NAMES, Store, StoreError, Target, thumbprint
from cobrowse_tls.agent.sync import sync_owner

__all__ = ["Config", "UsageError", "main", "parse_config", "run_pass"]

log = logging.getLogger("cobrowse_tls.agent")

ENV_PREFIX = "COBROWSE_AGENT_"
DEFAULT_INTERVAL = 30.0
CLEANED_PREFIX = "cleaned:"
_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_NAME = re.compile(r"[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?")


class UsageError(Exception):
    """Invalid arguments: one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


@dataclass(frozen=True)
class Config:
    fingerprint: str
    owner: str
    target: Target
    state_dir: Path
    ready_file: Path
    backend: str
    ca_file: Path | None = None
    file_store: Path | None = None
    interval: float = DEFAULT_INTERVAL
    once: bool = False
    cleanup: bool = False

    @property
    def ready_text(self) -> str:
        """What the ready file holds once the pass succeeded (what the probe expects)."""
        return (CLEANED_PREFIX if self.cleanup else "") + self.fingerprint


def _env(flag: str) -> str | None:
    return os.environ.get(ENV_PREFIX + flag.upper().replace("-", "_")) or None


def _parser() -> _Parser:
    parser = _Parser(prog="cobrowse-tls agent", description=__doc__.split("\n", 1)[0])
    verbs = parser.add_subparsers(dest="verb", metavar="run|probe", parser_class=_Parser)
    run = verbs.add_parser("run", help="keep the store in step with ca.pem")
    env = f" (env {ENV_PREFIX}<FLAG>)"
    run.add_argument("--ca-file", metavar="PATH", help="the mounted ca.pem" + env)
    run.add_argument("--fingerprint", metavar="sha256:HEX", help="the wanted fingerprint")
    run.add_argument("--owner", metavar="NAMESPACE/NAME", help="the CobrowseTLS")
    run.add_argument("--store", metavar="Root|CA")
    run.add_argument("--location", metavar="LocalMachine|Service|User")
    run.add_argument("--account", metavar="ACCOUNT", help="service name or user SID")
    run.add_argument("--state-dir", metavar="DIR", help="where the records of what was added live")
    run.add_argument("--ready-file", metavar="PATH")
    run.add_argument("--backend", metavar="windows|file")
    run.add_argument("--file-store", metavar="DIR", help="root of the file-backed store")
    run.add_argument("--interval", metavar="SECONDS", help=f"default {DEFAULT_INTERVAL:g}")
    run.add_argument("--once", action="store_true", help="one pass; exit 0 when in sync, else 1")
    run.add_argument("--mode", metavar="sync|cleanup")
    probe = verbs.add_parser("probe", help="readiness probe: does the ready file hold TEXT?")
    probe.add_argument("--ready-file", metavar="PATH", required=True)
    probe.add_argument("--expect", metavar="TEXT", required=True)
    return parser


def _path(value: str) -> Path:
    # HostProcess containers see their volumes under %CONTAINER_SANDBOX_MOUNT_POINT%, which
    # only the runtime knows; the kubelet cannot substitute it into args.
    return Path(os.path.expandvars(value))


def _pick(args: argparse.Namespace, flag: str, *, required: bool = True) -> str | None:
    value: str | None = getattr(args, flag.replace("-", "_")) or _env(flag)
    if value is None and required:
        raise UsageError(f"--{flag} is required (or {ENV_PREFIX}{flag.upper().replace('-', '_')})")
    return value


def _choice(value: str, choices: Sequence[str], flag: str) -> str:
    for choice in choices:
        if value.lower() == choice.lower():
            return choice
    raise UsageError(f"--{flag} must be one of {', '.join(choices)}, not {value!r}")


def parse_config(args: argparse.Namespace) -> Config:
    """Validate the ``run`` arguments (flags first, then COBROWSE_AGENT_* variables)."""
    mode = _choice(_pick(args, "mode", required=False) or "sync", ("sync", "cleanup"), "mode")
    cleanup = mode == "cleanup"
    fingerprint = str(_pick(args, "fingerprint"))
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise UsageError(
            f"--fingerprint must be sha256: and 64 lowercase hex digits: {fingerprint!r}"
        )
    owner = str(_pick(args, "owner"))
    namespace, _, name = owner.partition("/")
    if not (_NAMESPACE.fullmatch(namespace) and _NAME.fullmatch(name)):
        raise UsageError(f"--owner must be NAMESPACE/NAME of the CobrowseTLS: {owner!r}")
    location = _choice(str(_pick(args, "location")), LOCATIONS, "location")
    store = _choice(str(_pick(args, "store")), STORE_NAMES, "store")
    account = _pick(args, "account", required=False)
    if account in (".", ".."):
        raise UsageError(f"--account {account!r} is not an account")
    target = Target(location, store, account)
    from cobrowse_tls.agent.winstore import open_args

    try:
        open_args(target)
    except ValueError as exc:
        raise UsageError(f"--location/--account: {exc}") from None
    default_backend = "windows" if sys.platform == "win32" else "file"
    backend = _choice(
        _pick(args, "backend", required=False) or default_backend, ("windows", "file"), "backend"
    )
    file_store = _pick(args, "file-store", required=backend == "file")
    if backend == "windows" and sys.platform != "win32":
        raise UsageError("--backend windows runs only on Windows (use --backend file)")
    interval_text = _pick(args, "interval", required=False)
    try:
        interval = float(interval_text) if interval_text else DEFAULT_INTERVAL
    except ValueError:
        raise UsageError(f"--interval must be a number of seconds: {interval_text!r}") from None
    if not 0 < interval < 86400:
        raise UsageError(f"--interval must be between 0 and 86400 seconds: {interval_text!r}")
    ca_file = _pick(args, "ca-file", required=not cleanup)
    return Config(
        fingerprint=fingerprint,
        owner=owner,
        target=target,
        state_dir=_path(str(_pick(args, "state-dir"))),
        ready_file=_path(str(_pick(args, "ready-file"))),
        backend=backend,
        ca_file=_path(ca_file) if ca_file else None,
        file_store=_path(file_store) if file_store else None,
        interval=interval,
        once=bool(args.once),
        cleanup=cleanup,
    )


def store_opener(config: Config) -> Callable[[Target], Store]:
    """How to open any target with the configured backend."""
    if config.backend == "file":
        from cobrowse_tls.agent.filestore import FileStore, target_dir

        root = config.file_store
        assert root is not None  # parse_config requires it for the file backend

        def open_file(target: Target) -> Store:
            return FileStore(target_dir(root, target))

        return open_file
    if sys.platform == "win32":
        from cobrowse_tls.agent.winstore import WindowsStore

        def open_windows(target: Target) -> Store:
            try:
                return WindowsStore(target)
            except ValueError as exc:
                raise StoreError(str(exc)) from None

        return open_windows
    raise UsageError("--backend windows runs only on Windows")


def read_wanted(ca_file: Path, expected: str) -> tuple[dict[str, bytes] | None, str]:
    """(thumbprint -> DER of every certificate in ca.pem, "") when its fingerprint is the
    expected one; (None, why) otherwise, and then the store must not be touched."""
    from cobrowse_tls.core import certs

    try:
        data = ca_file.read_bytes()
    except OSError as exc:
        return None, f"{ca_file}: cannot read: {exc.strerror}"
    try:
        parsed = certs.parse_source(data, source=str(ca_file))
    except certs.CertificateError as exc:
        return None, f"{exc}; store left unchanged"
    found = certs.fingerprint(parsed)
    if found != expected:
        return None, (
            f"{ca_file} has {found}, waiting for {expected} (the kubelet refreshes a Secret"
            " volume with a delay); store left unchanged"
        )
    return {thumbprint(c.der): c.der for c in parsed}, ""


def run_pass(config: Config, open_store: Callable[[Target], Store]) -> tuple[bool, str]:
    """One pass; updates the ready file. Returns (in sync, a one-line summary)."""
    wanted: dict[str, bytes] = {}
    if not config.cleanup:
        assert config.ca_file is not None
        got, why = read_wanted(config.ca_file, config.fingerprint)
        if got is None:
            _set_ready(config, False)
            return False, why
        wanted = got
    try:
        result = sync_owner(
            config.state_dir,
            config.owner,
            config.target,
            wanted,
            open_store,
            cleanup=config.cleanup,
        )
    except state.StateError as exc:
        _set_ready(config, False)
        return False, f"{exc}; no store touched"
    for key, outcome in result.outcomes.items():
        for verb, thumbs in (
            ("added", outcome.added),
            ("removed", outcome.removed),
            ("kept (there before the agent)", outcome.adopted),
            ("kept (another CobrowseTLS still wants it)", outcome.left_to_others),
        ):
            if thumbs:
                log.info("%s: %s %s", key, verb, ", ".join(thumbs))
    _set_ready(config, result.in_sync)
    if result.in_sync:
        done = "cleaned up" if config.cleanup else f"in sync with {config.fingerprint}"
        problems = f" (other stores: {'; '.join(result.errors)})" if result.errors else ""
        return True, f"{config.target.key}: {done}, {len(wanted)} CA(s){problems}"
    return False, "not in sync: " + ("; ".join(result.errors) or "unknown reason")


def _set_ready(config: Config, ready: bool) -> None:
    if ready:
        state.atomic_write(config.ready_file, config.ready_text.encode("ascii"))
    else:
        config.ready_file.unlink(missing_ok=True)


def _run(config: Config) -> int:
    open_store = store_opener(config)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for name in ("SIGTERM", "SIGINT", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)
    # A ready file left by an earlier run says nothing about the store now.
    config.ready_file.unlink(missing_ok=True)
    log.info(
        "agent for %s: %s mode, store %s (%s backend), every %gs",
        config.owner,
        "cleanup" if config.cleanup else "sync",
        config.target.key,
        config.backend,
        config.interval,
    )
    last = ""
    while True:
        try:
            ready, message = run_pass(config, open_store)
        except Exception as exc:  # a failed pass must not end the agent: retry next interval
            ready, message = False, f"pass failed: {type(exc).__name__}: {exc}"
            config.ready_file.unlink(missing_ok=True)
        if message != last:
            log.log(logging.INFO if ready else logging.WARNING, "%s", message)
            last = message
        if config.once:
            return 0 if ready else 1
        deadline = time.monotonic() + config.interval
        # Short waits: on Windows a signal handler only runs when the main thread wakes up.
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            stop.wait(min(left, 1.0))
        if stop.is_set():
            log.info("stopping on signal")
            return 0


def probe(ready_file: Path, expect: str) -> tuple[int, str]:
    """(0, "") when ``ready_file`` holds ``expect``; (1, why) otherwise."""
    try:
        content = ready_file.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return 1, f"not ready: {ready_file} does not exist"
    except OSError as exc:
        return 1, f"not ready: {ready_file}: {exc.strerror}"
    if content != expect:
        return 1, f"not ready: {ready_file} holds {content[:80]!r}, expected {expect!r}"
    return 0, ""


def main(argv: Sequence[str]) -> int:
    try:
        args = _parser().parse_args(list(argv))
        if args.verb == "probe":
            code, why = probe(_path(args.ready_file), args.expect)
            if why:
                print(f"cobrowse-tls agent probe: {why}", file=sys.stderr)
            return code
        if args.verb != "run":
            raise UsageError("expected run or probe")
        config = parse_config(args)
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
        )
        return _run(config)
    except UsageError as exc:
        print(f"cobrowse-tls agent: {exc}", file=sys.stderr)
        return 2
