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
import ntpath
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
from typing import TYPE_CHECKING, NoReturn

from cobrowse_tls.agent import state
from cobrowse_tls.agent.stores import LOCATIONS, STORE_NAMES, Store, StoreError, Target, thumbprint
from cobrowse_tls.agent.sync import sync_owner
from cobrowse_tls.api import accounts

if TYPE_CHECKING:
    from cobrowse_tls.agent.winstore import Crypt32

__all__ = [
    "Config",
    "ConsoleStop",
    "UsageError",
    "check",
    "loop",
    "main",
    "parse_config",
    "publish_ready",
    "run_pass",
    "store_opener",
]

log = logging.getLogger("cobrowse_tls.agent")

ENV_PREFIX = "COBROWSE_AGENT_"
DEFAULT_INTERVAL = 30.0
CLEANED_PREFIX = "cleaned:"
_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_NAME = re.compile(r"[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?")
# wincon.h: the console control events. hcsshim stops a HostProcess container with
# CTRL_SHUTDOWN_EVENT and ends its job object about 5 s later.
CTRL_C_EVENT, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT = 0, 1, 2
CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT = 5, 6
SHUTDOWN_GRACE = 4.0  # seconds the console handler waits for the pass in progress
# A reader (the readiness probe) holding the ready file open makes a replace or delete fail on
# Windows; these are the pauses before trying again, then it is rewritten in place.
READY_RETRIES = (0.05, 0.1, 0.2)
USER_ROOT_REFUSED = (
    "--location User with --store Root is refused: when a user's programs open their Root"
    " store, Windows drops the certificates there that are not on the protected root list"
    " (CertOpenStore, CERT_SYSTEM_STORE_UNPROTECTED_FLAG), which this agent, writing as SYSTEM,"
    " cannot add to; use --location LocalMachine (trusted by every account) or --store CA"
)


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
    verbs = parser.add_subparsers(dest="verb", metavar="run|probe|check", parser_class=_Parser)
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
    verbs.add_parser(
        "check", help="exit 0 when all a pass needs loads (cryptography; crypt32 on Windows)"
    )
    return parser


def _path(value: str) -> Path:
    # HostProcess containers see their volumes under %CONTAINER_SANDBOX_MOUNT_POINT%, which
    # only the runtime knows; the kubelet cannot substitute it into args. ntpath's expansion
    # (%VAR%, $VAR, ${VAR}) is the one Windows uses, so it is also the one tested on Linux.
    return Path(ntpath.expandvars(value))


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
    # Exactly what the CRD and the model accept: the same rule, from the api package.
    problem = accounts.problem(location, account)
    if problem is not None:
        raise UsageError(f"--location/--account {account!r}: {problem}")
    target = Target(location, store, account)
    from cobrowse_tls.agent.winstore import open_args

    try:
        open_args(target)
    except ValueError as exc:
        raise UsageError(f"--location/--account: {exc}") from None
    if location == "User" and store == "Root" and not cleanup:
        # Cleanup stays possible: it removes what an earlier version of the agent added there.
        raise UsageError(USER_ROOT_REFUSED)
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


def store_opener(config: Config, crypt32: Crypt32 | None = None) -> Callable[[Target], Store]:
    """How to open any target with the configured backend (``crypt32``: the library the
    Windows backend calls, by default the system's)."""
    if config.backend == "file":
        from cobrowse_tls.agent.filestore import FileStore, target_dir

        root = config.file_store
        assert root is not None  # parse_config requires it for the file backend

        def open_file(target: Target) -> Store:
            return FileStore(target_dir(root, target))

        return open_file
    from cobrowse_tls.agent.winstore import WindowsStore

    def open_windows(target: Target) -> Store:
        try:
            return WindowsStore(target, crypt32)
        except ValueError as exc:
            raise StoreError(str(exc)) from None

    return open_windows


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
    publish_ready(config.ready_file, config.ready_text if ready else None)


def publish_ready(path: Path, text: str | None) -> bool:
    """Make the ready file hold ``text`` (None: not ready). Never raises: False, logged, when
    the file could not be updated (the next pass tries again).

    On Windows a file that another process has open (the probe reading it) can be neither
    replaced nor deleted, but it can be written, as Python opens files with read and write
    sharing: after a few retries the content is rewritten in place. A reader may then see a
    mix of old and new bytes, which never equals the expected text unless the file already
    did, so the probe errs only towards "not ready" for one period.
    """
    data = text.encode("ascii") if text is not None else b""
    for pause in (*READY_RETRIES, None):
        try:
            if text is None:
                path.unlink(missing_ok=True)
            else:
                state.atomic_write(path, data)
            return True
        except PermissionError:
            if pause is None:
                break
            time.sleep(pause)
        except OSError as exc:
            log.warning("ready file %s: cannot update: %s", path, exc.strerror or exc)
            return False
    try:
        with open(path, "r+b") as handle:
            handle.write(data)
            handle.truncate()
        return True
    except OSError as exc:
        log.warning("ready file %s: cannot update: %s", path, exc.strerror or exc)
        return False


class ConsoleStop:
    """The console control handler (``SetConsoleCtrlHandler``) of the agent on Windows.

    Python turns neither CTRL_SHUTDOWN_EVENT nor CTRL_CLOSE_EVENT into a signal, and the
    process ends as soon as a handler returns from them: so the handler, which runs in a
    thread of its own, asks the loop to stop and waits (at most ``grace`` seconds, inside the
    5 s hcsshim allows) until the pass in progress has finished.
    """

    def __init__(
        self, stop: threading.Event, stopped: threading.Event, grace: float = SHUTDOWN_GRACE
    ) -> None:
        self.stop, self.stopped, self.grace = stop, stopped, grace

    def __call__(self, event: int) -> int:
        self.stop.set()
        self.stopped.wait(self.grace)
        return 1  # TRUE: handled


# The registered console handler: Windows may call it until the process is gone (it is never
# unregistered), so it must never be freed.
_console_handler: object = None


def _install_console_handler(handler: ConsoleStop) -> object:
    """Register ``handler`` on Windows; returns what must stay referenced while it is."""
    if sys.platform != "win32":
        return None
    import ctypes

    routine = ctypes.WINFUNCTYPE(ctypes.c_int32, ctypes.c_uint32)(handler)
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    if not kernel32.SetConsoleCtrlHandler(routine, True):
        log.warning("SetConsoleCtrlHandler failed: %s", ctypes.FormatError(ctypes.get_last_error()))
    return routine


def _run(config: Config) -> int:
    open_store = store_opener(config)
    stop, stopped = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for name in ("SIGTERM", "SIGINT", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)
    global _console_handler
    _console_handler = _install_console_handler(ConsoleStop(stop, stopped))
    try:
        return loop(config, open_store, stop)
    finally:
        stopped.set()


def loop(config: Config, open_store: Callable[[Target], Store], stop: threading.Event) -> int:
    """Passes every interval until ``stop`` is set (0) or, with ``once``, one pass."""
    # A ready file left by an earlier run says nothing about the store now.
    publish_ready(config.ready_file, None)
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
            publish_ready(config.ready_file, None)
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
            log.info("stopping (signal or console control event)")
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


def check() -> tuple[int, str]:
    """(0, what loaded) when everything a pass needs can be loaded; (1, why) otherwise. The
    image build runs it, so that a broken embedded Python fails the build."""
    try:
        import cryptography
        import cryptography.x509  # what core.certs parses ca.pem with

        from cobrowse_tls.core import certs  # noqa: F401
    except ImportError as exc:
        return 1, f"cannot import what a pass needs: {exc}"
    loaded = f"cryptography {cryptography.__version__}"
    if sys.platform == "win32":
        from cobrowse_tls.agent import winstore

        try:
            winstore.load_crypt32()
        except (OSError, AttributeError, StoreError) as exc:
            return 1, f"cannot load crypt32: {exc}"
        loaded += ", crypt32"
    return 0, loaded


def main(argv: Sequence[str]) -> int:
    try:
        args = _parser().parse_args(list(argv))
        if args.verb == "check":
            code, what = check()
            print(f"cobrowse-tls agent check: {what}", file=sys.stderr if code else sys.stdout)
            return code
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
