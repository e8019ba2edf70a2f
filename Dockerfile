# The operator image (`cobrowse-tls run`): the package installed as a wheel on a slim Python,
# running as an unprivileged user. Build from the repository root: `make image`.
#
# Base pinning: the tag below names an exact Python patch release on a fixed Debian release
# (bookworm), so rebuilds do not move to another Python or Debian. A tag can still be
# re-pushed (security rebuilds of the same version), so production builds should pin the
# digest too: `make image PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:<digest>`, with the
# digest from `docker buildx imagetools inspect python:3.11.13-slim-bookworm`. The digest is
# not committed here because it was written on a machine without registry access to look it
# up; record it in CI (or let Renovate/Dependabot maintain it) when the image is published.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---- build: wheels for the package and every dependency --------------------------------------
FROM ${PYTHON_IMAGE} AS build
# twofish (a pyjks dependency) ships no wheels: compile it here, never in the runtime image.
# The official image has Python's headers; a base made from Debian's python3 (hack/images.sh,
# for machines without a registry) gets them from python3-dev.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
    $(python -c 'import os, sysconfig; print("" if os.path.exists(sysconfig.get_paths()["include"] + "/Python.h") else "python3-dev")') \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
# An optional CA bundle for pip (`--secret id=host-ca,src=...`), where TLS to the package index
# goes through a proxy with its own CA: a secret, so it never lands in a layer.
RUN --mount=type=secret,id=host-ca \
    if [ -s /run/secrets/host-ca ]; then export PIP_CERT=/run/secrets/host-ca; fi \
 && python -m pip wheel --no-cache-dir --wheel-dir /wheels .

# ---- runtime ----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="cobrowse-tls-operator" \
      org.opencontainers.image.description="Declarative TLS trust for Genesys Co-browse Server" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# Install from the builder's wheels only (no index, no compiler), then drop pip/setuptools:
# nothing installs packages at run time. The generated kubernetes client is not a runtime
# dependency (engine/kube.py talks to the API over urllib3, kopf brings its own aiohttp client).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links=/wheels cobrowse-tls-operator \
 && ! python -c 'import kubernetes' 2>/dev/null \
 && cobrowse-tls --help >/dev/null \
 && python -m pip uninstall -y pip setuptools wheel
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The same numeric user as the chart's securityContext (runAsUser/runAsGroup 65532); the root
# filesystem can be mounted read-only. The user has a passwd entry: kopf names the operator
# after getpass.getuser(), which fails for a uid without one (found by the kind stage); USER
# covers a uid that a platform picks (OpenShift's restricted SCC).
RUN groupadd --gid 65532 cobrowse-tls \
 && useradd --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin cobrowse-tls
ENV USER=cobrowse-tls
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["cobrowse-tls"]
CMD ["run"]
