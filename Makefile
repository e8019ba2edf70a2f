# Developer entry points. `make help` lists them.
#
# `make image` and `make kind-e2e` run here with no image registry: hack/setup.sh installs
# Debian's docker.io, hack/engine.sh starts dockerd for the command (and stops it after), base
# images come from Debian packages (hack/images.sh), kind and its node image from the Go
# module proxy (hack/kind-node.sh); everything is cached outside the repository by its inputs.
# See README "Real pods".

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VERSION          ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE            ?= cobrowse-tls-operator
TAG              ?= $(VERSION)
PYTHON_IMAGE     ?= python:3.11.13-slim-bookworm
CONTAINER_ENGINE ?= docker
KIND_KUBECONFIG  ?= $(CURDIR)/out/kind/kubeconfig
RELEASE          ?= cobrowse-tls-operator
RELEASE_NS       ?= cobrowse-tls-system
CHART            := charts/cobrowse-tls-operator
# A helm built with `go install` assumes Kubernetes v1.20 offline: lint for the tested release.
KUBE_VERSION     ?= v1.36.2
# helm and kubectl: the pinned ones from hack/build-binaries.sh when built, else PATH.
BIN_DIR          := $(shell d=$${COBROWSE_TLS_BIN_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/cobrowse-tls/bin/k8s-v1.36.2_etcd-v3.6.10_kwok-v0.8.0_helm-v3.21.4}; [ -x $$d/helm ] && echo $$d)
HELM             ?= $(if $(BIN_DIR),$(BIN_DIR)/helm,helm)
KUBECTL          ?= $(if $(BIN_DIR),$(BIN_DIR)/kubectl,kubectl)
PYTEST           ?= .venv/bin/pytest

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: test
test: ## the whole suite (lint, types, unit, interop, e2e on the local control plane)
	hack/test.sh

.PHONY: alerts-test
alerts-test: ## the alerts and dashboard: promtool on the chart's rules, a real Prometheus on the operator
	hack/setup.sh
	eval "$$(hack/build-binaries.sh --print-env)" && eval "$$(hack/build-prometheus.sh --print-env)" && \
	  $(PYTEST) -ra tests/unit/test_metrics.py tests/alerts tests/e2e/test_alerts.py $(PYTEST_ARGS)

.PHONY: image
image: ## build the operator image $(IMAGE):$(TAG) (official Python base; local base without a registry)
	SKIP_BINARIES=1 hack/setup.sh
	hack/engine.sh run env PYTHON_IMAGE=$(PYTHON_IMAGE) OPERATOR_IMAGE=$(IMAGE):$(TAG) \
	  hack/images.sh operator

.PHONY: agent-image
agent-image: ## the Windows agent image (on a Windows host with a Windows container engine)
	rm -rf dist && python -m pip wheel --no-deps -w dist .
	$(CONTAINER_ENGINE) build -f images/agent/Dockerfile.windows -t cobrowse-tls-agent:$(TAG) .

.PHONY: chart-crds
chart-crds: ## copy the generated CRD into the chart (tests/chart fails while they differ)
	cp crds/cobrowsetlses.tls.cobrowse.io.yaml $(CHART)/crds/

.PHONY: chart-lint
chart-lint: ## helm lint the chart with default and non-default values
	$(HELM) lint --strict --kube-version $(KUBE_VERSION) $(CHART)
	for f in tests/chart/values/*.yaml; do $(HELM) lint --strict --kube-version $(KUBE_VERSION) $(CHART) -f $$f; done

.PHONY: chart-test
chart-test: ## the chart's template tests (real helm)
	$(PYTEST) tests/chart -q

.PHONY: kind-e2e
kind-e2e: ## the kind stage: images, kind cluster, the e2e suite with real pods, chart, stand-in
	hack/setup.sh
	hack/kind-e2e.sh $(PYTEST_ARGS)

.PHONY: kind-up
kind-up: ## start dockerd and the kind cluster, load the image, install the chart (kubeconfig in out/kind/)
	hack/setup.sh
	hack/engine.sh start
	PYTHON_IMAGE=$(PYTHON_IMAGE) OPERATOR_IMAGE=$(IMAGE):$(TAG) hack/images.sh operator
	hack/kind.sh up $(KIND_KUBECONFIG)
	hack/kind.sh load $(IMAGE):$(TAG)
	$(HELM) upgrade --install $(RELEASE) $(CHART) --kubeconfig $(KIND_KUBECONFIG) \
	  --namespace $(RELEASE_NS) --create-namespace \
	  --set image.repository=$(IMAGE) --set image.tag=$(TAG) --set image.pullPolicy=Never \
	  --set operator.logFormat=plain --set operator.resyncSeconds=2 \
	  --set agent.image=cobrowse-tls-agent:e2e \
	  --set 'mscapi.namespaceLabels.e2e\.tls\.cobrowse\.io/mscapi=allowed' \
	  --wait --timeout 5m

.PHONY: kind-down
kind-down: ## delete the kind cluster and stop the dockerd that kind-up started
	hack/kind.sh down
	hack/engine.sh stop
