#!/usr/bin/env python3
"""Times the local control plane: the last cold build of the binaries (as recorded by
hack/build-binaries.sh) and warm starts, `dev-cluster up` until all nodes are Ready.

    .venv/bin/python hack/bench_cluster.py [--runs N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from cobrowse_tls.devcluster import LocalCluster  # noqa: E402
from cobrowse_tls.devcluster.binaries import bin_dir  # noqa: E402


def build_times(bins: Path) -> list[str]:
    """Each build run recorded by build-binaries.sh: its steps and their seconds."""
    record = bins / ".build-times"
    if not record.is_file():
        return ["not recorded (prebuilt binaries, e.g. from KUBEBUILDER_ASSETS)"]
    runs: list[str] = []
    for line in record.read_text().splitlines():
        if line.startswith("#"):
            runs.append(line.lstrip("# "))
        elif runs and line.strip():
            runs[-1] += f" | {line}s"
    return [f"{run} | total {_total(run)}s" for run in runs]


def _total(run: str) -> int:
    return sum(int(part.split()[-1].rstrip("s")) for part in run.split(" | ")[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    subprocess.run([str(REPO / "hack" / "build-binaries.sh")], check=True)
    bins = bin_dir()
    print(f"binaries:   {bins}")
    for line in build_times(bins):
        print(f"build:      {line}")
    times = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        cluster = LocalCluster(Path(tmp))
        for i in range(args.runs):
            start = time.monotonic()
            try:
                cluster.up(tie_to_parent=True)
                times.append(time.monotonic() - start)
            finally:
                cluster.down()
            print(f"warm up #{i + 1}: {times[-1]:.1f} s to all nodes Ready")
    print(f"warm up:    best {min(times):.1f} s, median {sorted(times)[len(times) // 2]:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
