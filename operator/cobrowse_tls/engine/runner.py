"""`cobrowse-tls run`: the operator."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import sys
from collections.abc import Iterable
from datetime import timedelta

import kopf

from cobrowse_tls.core import agent_manifest
from cobrowse_tls.core import settings as settings_mod
from cobrowse_tls.engine import controller, kube, kubeconfig, leader, metrics


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="cobrowse-tls run",
        description="Run the CobrowseTLS operator. Every option also reads an environment"
        " variable (COBROWSE_TLS_<OPTION>), for the Helm chart.",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=None,
        metavar="NS",
        help="watch this namespace (repeatable; glob patterns allowed)",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (default)"
    )
    ha = p.add_mutually_exclusive_group()
    ha.add_argument(
        "--leader-elect",
        action="store_true",
        default=env("COBROWSE_TLS_LEADER_ELECT", "").lower() in ("1", "true", "yes"),
        help="run as one of several replicas: only the holder of a coordination.k8s.io Lease"
        " reconciles (default: standalone)",
    )
    ha.add_argument(
        "--peering",
        metavar="NAME",
        default=env("COBROWSE_TLS_PEERING"),
        help="kopf peering object instead of a Lease (needs kopf's peering CRDs; replicas may"
        " overlap during a hand-over: prefer --leader-elect)",
    )
    p.add_argument(
        "--lease-name",
        default=env("COBROWSE_TLS_LEASE_NAME", leader.DEFAULT_LEASE_NAME),
        help="name of the leader Lease",
    )
    p.add_argument(
        "--lease-namespace",
        default=env("COBROWSE_TLS_LEASE_NAMESPACE") or env("POD_NAMESPACE"),
        help="namespace of the leader Lease (default: $POD_NAMESPACE, the service account's"
        " namespace in a pod, else default)",
    )
    p.add_argument(
        "--leader-identity",
        default=env("COBROWSE_TLS_LEADER_IDENTITY"),
        help="this replica's holder identity (default: $POD_NAME or the host name, plus a"
        " random suffix)",
    )
    p.add_argument(
        "--lease-duration",
        type=float,
        default=float(env("COBROWSE_TLS_LEASE_DURATION_SECONDS", "15")),
        metavar="SECONDS",
        help="a standby takes the Lease after it saw no renew for this long",
    )
    p.add_argument(
        "--renew-deadline",
        type=float,
        default=float(env("COBROWSE_TLS_RENEW_DEADLINE_SECONDS", "10")),
        metavar="SECONDS",
        help="the leader stops writing, and exits, when it could not renew for this long"
        " (shorter than the lease duration)",
    )
    p.add_argument(
        "--retry-period",
        type=float,
        default=float(env("COBROWSE_TLS_RETRY_PERIOD_SECONDS", "2")),
        metavar="SECONDS",
        help="how often the Lease is renewed or tried",
    )
    p.add_argument(
        "--priority",
        type=int,
        default=int(env("COBROWSE_TLS_PRIORITY", "0")),
        help="this replica's peering priority",
    )
    p.add_argument(
        "--liveness",
        metavar="URL",
        default=env("COBROWSE_TLS_LIVENESS"),
        help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(env("COBROWSE_TLS_METRICS_PORT", "0")),
        help="serve Prometheus metrics on this port (0: off)",
    )
    p.add_argument(
        "--metrics-address",
        default=env("COBROWSE_TLS_METRICS_ADDRESS", "0.0.0.0"),  # noqa: S104
        help="address for the metrics server",
    )
    p.add_argument(
        "--log-format",
        choices=["plain", "full", "json"],
        default=env("COBROWSE_TLS_LOG_FORMAT", "full"),
        help="log format",
    )
    p.add_argument("--verbose", action="store_true", help="debug logging")
    p.add_argument(
        "--expiry-window",
        type=float,
        default=float(env("COBROWSE_TLS_EXPIRY_WINDOW_DAYS", "30")),
        metavar="DAYS",
        help="CertificatesValid turns ExpiringSoon this many days before expiry",
    )
    p.add_argument(
        "--resync",
        type=float,
        default=float(env("COBROWSE_TLS_RESYNC_SECONDS", "300")),
        metavar="SECONDS",
        help="re-check every CobrowseTLS this often (expiry, drift)",
    )
    p.add_argument(
        "--restart-window",
        type=float,
        default=float(env("COBROWSE_TLS_RESTART_WINDOW_SECONDS", "1")),
        metavar="SECONDS",
        help="changes arriving within this window give one restart",
    )
    p.add_argument(
        "--rollout-deadline",
        type=float,
        default=float(env("COBROWSE_TLS_ROLLOUT_DEADLINE_SECONDS", "600")),
        metavar="SECONDS",
        help="a restarted workload not rolled out by then is RolloutStalled",
    )
    p.add_argument(
        "--agent-image",
        default=env("COBROWSE_TLS_AGENT_IMAGE", agent_manifest.DEFAULT_IMAGE),
        help="image of the MSCAPI Windows agent DaemonSet",
    )
    p.add_argument(
        "--agent-command",
        default=env("COBROWSE_TLS_AGENT_COMMAND", " ".join(agent_manifest.AgentConfig().command)),
        help="how the agent image runs cobrowse-tls (words separated by spaces)",
    )
    p.add_argument(
        "--mscapi-namespace",
        action="append",
        default=_env_list("COBROWSE_TLS_MSCAPI_NAMESPACES"),
        metavar="NS",
        help="allow provider MSCAPI (the Windows agent DaemonSet) in this namespace"
        " (repeatable; default: nowhere)",
    )
    p.add_argument(
        "--mscapi-namespace-label",
        action="append",
        type=_label,
        default=[_label(v) for v in _env_list("COBROWSE_TLS_MSCAPI_NAMESPACE_LABELS")],
        metavar="KEY=VALUE",
        help="allow provider MSCAPI in namespaces carrying all these labels (repeatable;"
        " the operator then reads Namespace objects)",
    )
    p.add_argument(
        "--cleanup-timeout",
        type=float,
        default=float(env("COBROWSE_TLS_CLEANUP_TIMEOUT_SECONDS", "120")),
        metavar="SECONDS",
        help="deleting an MSCAPI CobrowseTLS waits at most this long for the agents to clean up",
    )
    p.add_argument(
        "--verify-connections",
        action="store_true",
        default=env("COBROWSE_TLS_VERIFY_CONNECTIONS", "").lower() in ("1", "true", "yes"),
        help="handshake with configServer and connections, trusting only the rendered CAs"
        " (sets ConnectionsVerified; the operator must reach those servers)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=int(env("COBROWSE_TLS_WORKERS", "4")),
        help="reconciles running at once",
    )
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG)")
    return p


def _env_list(name: str) -> list[str]:
    """A comma-separated environment variable as a list (absent or empty: none)."""
    return [v.strip() for v in os.environ.get(name, "").split(",") if v.strip()]


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    return key, value


def _limit_malloc_arenas() -> None:
    # glibc gives each thread that allocates its own malloc arena; with a reconcile pool of
    # many threads that multiplies the resident memory for no gain (the work is I/O bound).
    # Same effect as MALLOC_ARENA_MAX=2, but also when the operator is started by hand.
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
        except OSError:
            return  # not glibc (musl has no arenas to limit)
        m_arena_max = -8
        libc.mallopt(m_arena_max, 2)


_SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _lease_namespace(given: str | None) -> str:
    if given:
        return given
    try:
        with open(_SA_NAMESPACE, encoding="utf-8") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def main(argv: Iterable[str]) -> int:
    parser = _parser()
    args = parser.parse_args(list(argv))
    timing = leader.Timing(args.lease_duration, args.renew_deadline, args.retry_period)
    try:
        timing.check()
    except ValueError as exc:
        parser.error(str(exc))
    try:
        connection = kubeconfig.load(args.kubeconfig)
    except kubeconfig.ConfigError as exc:
        print(f"cobrowse-tls run: {exc}", file=sys.stderr)
        return 2
    _limit_malloc_arenas()
    log_format = {
        "plain": kopf.LogFormat.PLAIN,
        "full": kopf.LogFormat.FULL,
        "json": kopf.LogFormat.JSON,
    }[args.log_format]
    kopf.configure(verbose=args.verbose, log_format=log_format)
    logging.getLogger("cobrowse_tls").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        # kopf logs every handler call at INFO ("Handler 'secret_deleted' succeeded."), once
        # or more per watch event: noise, and formatting it costs more than the handler. Its
        # warnings and errors (a failing handler) still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)

    # Imported for their registrations with kopf's default registry.
    from cobrowse_tls.engine import handlers

    # Each reconcile may have two requests in flight (engine/act.py writes its outputs at once).
    client = kube.Client(connection, pool_size=max(kube.POOL_SIZE, 2 * args.workers + 4))
    settings = settings_mod.Settings(
        expiry_window=timedelta(days=args.expiry_window),
        restart_window=timedelta(seconds=args.restart_window),
        rollout_deadline=timedelta(seconds=args.rollout_deadline),
        agent=agent_manifest.AgentConfig(
            image=args.agent_image, command=tuple(args.agent_command.split())
        ),
        cleanup_timeout=timedelta(seconds=args.cleanup_timeout),
        verify_connections=args.verify_connections,
        mscapi_namespaces=frozenset(args.mscapi_namespace),
        mscapi_namespace_labels=tuple(sorted(dict(args.mscapi_namespace_label).items())),
    )
    memo = handlers.Memo()
    memo.kubeconfig = args.kubeconfig
    memo.elector = None
    if args.leader_elect:
        # A client of its own: renewing must not queue behind the reconciles' connections.
        lease_client = kube.Client(connection)
        memo.elector = leader.Elector(
            lease_client,
            _lease_namespace(args.lease_namespace),
            args.lease_name,
            args.leader_identity,
            timing,
        )
        client.fence = memo.elector.fence
    memo.controller = controller.Controller(
        client, settings, workers=args.workers, resync_seconds=args.resync
    )
    if args.metrics_port:
        metrics.serve(args.metrics_port, args.metrics_address)

    namespaces = args.namespace or ()

    async def operate() -> None:
        memo.stop = asyncio.Event()
        await kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=args.peering is None,
            peering_name=args.peering,
            priority=args.priority,
            liveness_endpoint=args.liveness,
            memo=memo,
            stop_flag=memo.stop,
        )

    asyncio.run(operate())
    if memo.elector is not None and memo.elector.lost:
        # Like client-go controllers: exit, and come back (the kubelet restarts the
        # container) as a standby with fresh caches.
        print("cobrowse-tls run: lost the leader Lease; exiting", file=sys.stderr)
        return 1
    return 0
