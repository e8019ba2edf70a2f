"""`cobrowse-tls dev-cluster up|down|status [--dir DIR]`."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from cobrowse_tls.devcluster.cluster import ClusterError, LocalCluster, default_dir


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cobrowse-tls dev-cluster",
        description="A local Kubernetes control plane with fake Linux and Windows nodes.",
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument(
        "--dir",
        type=Path,
        default=default_dir(),
        help="data, logs, keys and kubeconfig of the cluster (default: %(default)s)",
    )
    parser.add_argument(
        "--apiserver-port", type=int, help="fixed API server port (default: any free port)"
    )
    parser.add_argument(
        "--timeout", type=float, default=90.0, help="seconds to wait for Ready nodes"
    )
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    cluster = LocalCluster(args.dir)
    try:
        if args.action == "up":
            start = time.monotonic()
            cluster.up(timeout=args.timeout, apiserver_port=args.apiserver_port)
            took = time.monotonic() - start
            print(f"# dev-cluster up: all nodes Ready after {took:.1f}s", file=sys.stderr)
            print(f"export KUBECONFIG={shlex.quote(str(cluster.kubeconfig))}")
        elif args.action == "down":
            stopped = cluster.down()
            print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        else:
            return _status(cluster)
    except ClusterError as e:
        print(f"dev-cluster: {e}", file=sys.stderr)
        return 1
    return 0


def _status(cluster: LocalCluster) -> int:
    st = cluster.status()
    if not st.components:
        print(f"not running ({cluster.dir})")
        return 3
    print(f"cluster dir: {cluster.dir}")
    for name, (up, port) in st.components.items():
        where = f"127.0.0.1:{port}" if port else ""
        print(f"  {name:<24} {'running' if up else 'STOPPED':<8} {where}")
    print(f"API server: {'ready' if st.api_ready else 'not ready'}")
    for node, (os_name, ready) in sorted(st.nodes.items()):
        print(f"  node {node:<24} {os_name:<8} {'Ready' if ready else 'NotReady'}")
    print(f"export KUBECONFIG={shlex.quote(str(st.kubeconfig))}")
    return 0 if st.running and st.api_ready else 1
