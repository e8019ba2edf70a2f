#!/usr/bin/env python3
"""Benchmark: render a real-world bundle into PEM and JKS, against the manual keytool way.

The bundle is the one that the ``certifi`` package ships (about 120-150 root CAs) plus one
generated CA. One render = parse both sources + select + PEM bundle + JKS, as the operator
does on every reconcile. Prints the median time over ``--runs`` renders, the peak memory of
one render (tracemalloc), and the time of ``keytool -importcert -noprompt`` once per
certificate into a new JKS, with the ratio. Target: under 100 ms per render.

Usage: hack/bench_truststores.py [--runs N] [--skip-keytool]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

import certifi  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from cobrowse_tls.core.certs import parse_source, select  # noqa: E402
from cobrowse_tls.core.truststores import jks_truststore, pem_bundle  # noqa: E402

PASSWORD = "bench-password"


def generated_ca(now: datetime) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Genesys Bench CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def render(bundle: bytes, extra: bytes, now: datetime) -> tuple[bytes, bytes, int]:
    found = parse_source(bundle, source="configmap certifi key cacert.pem")
    found += parse_source(extra, source="secret genesys-ca key certificateCA.crt")
    chosen = select(found, allow_non_ca=False, now=now).certificates
    pem = pem_bundle(chosen)
    store = jks_truststore(chosen, alias="root", password=PASSWORD)
    return pem, store, len(chosen)


def keytool_way(pems: list[bytes], keytool: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        files = []
        for index, pem in enumerate(pems, start=1):
            path = directory / f"ca-{index}.crt"
            path.write_bytes(pem)
            files.append(path)
        store = directory / "truststore.jks"
        start = time.perf_counter()
        for index, path in enumerate(files, start=1):
            alias = "root" if index == 1 else f"root-{index}"
            subprocess.run(
                [
                    keytool,
                    "-importcert",
                    "-noprompt",
                    "-trustcacerts",
                    "-alias",
                    alias,
                    "-file",
                    str(path),
                    "-keystore",
                    str(store),
                    "-storetype",
                    "JKS",
                    "-storepass",
                    PASSWORD,
                ],
                check=True,
                capture_output=True,
            )
        return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="renders to time (median)")
    parser.add_argument("--skip-keytool", action="store_true", help="skip the manual way")
    args = parser.parse_args()

    # One certifi root has a negative serial number, which cryptography warns about.
    warnings.simplefilter("ignore")
    now = datetime.now(UTC)
    bundle = Path(certifi.where()).read_bytes()
    extra = generated_ca(now)

    pem, store, count = render(bundle, extra, now)  # warm-up (imports, caches)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        again = render(bundle, extra, now)
        times.append(time.perf_counter() - start)
        if again[:2] != (pem, store):
            print("error: two renders gave different bytes", file=sys.stderr)
            return 1
    tracemalloc.start()
    render(bundle, extra, now)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    median_ms = statistics.median(times) * 1000
    print(f"bundle: certifi {certifi.__version__} ({len(bundle)} bytes) + 1 generated CA")
    print(f"certificates in the stores: {count}; PEM {len(pem)} bytes, JKS {len(store)} bytes")
    print(
        f"render (parse + select + PEM + JKS): median {median_ms:.1f} ms over {args.runs} runs "
        f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}); "
        f"peak memory {peak / 1024 / 1024:.2f} MiB (tracemalloc: Python allocations only)"
    )
    # tracemalloc misses what cryptography's Rust/OpenSSL side allocates: show the process too.
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process max RSS so far (interpreter + libraries included): {max_rss:.0f} MiB")
    print(f"target < 100 ms: {'met' if median_ms < 100 else 'MISSED'}")
    if args.skip_keytool:
        return 0
    keytool = shutil.which("keytool")
    if keytool is None:
        print("error: keytool not found on PATH", file=sys.stderr)
        return 1
    chosen = select(
        parse_source(bundle, source="certifi") + parse_source(extra, source="ca"),
        allow_non_ca=False,
        now=now,
    ).certificates
    manual = keytool_way([c.pem.encode() for c in chosen], keytool)
    print(
        f"manual way (keytool -importcert once per certificate, {len(chosen)} runs): "
        f"{manual:.1f} s, {manual * 1000 / len(chosen):.0f} ms per certificate"
    )
    print(f"ratio: the manual way takes {manual * 1000 / median_ms:.0f}x as long as one render")
    return 0


if __name__ == "__main__":
    sys.exit(main())
