# tradewarden: the two commands a newcomer needs are `make demo` and `make test`.
# Every target installs what it needs; the control plane binaries are built once and cached in
# ~/.cache/tradewarden (or $XDG_CACHE_HOME/tradewarden), outside the repository.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CLUSTER := $(PY) tests/cluster/localcluster.py
TOOLS := $(PY) tests/cluster/tools.py
# TRADEWARDEN_CLUSTER=current targets the current kubeconfig context instead of the local control plane.
TRADEWARDEN_CLUSTER ?= local
export TRADEWARDEN_CLUSTER
PYTEST_ARGS ?=
# pytest-xdist workers sharing the one cluster (tests/conftest.py says how the tests are grouped). 0 (one
# process) until two workers have a record of green runs: see docs/TESTING.md, "Two workers, one cluster".
PYTEST_WORKERS ?= 0
PYTEST_PARALLEL = $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadgroup)

.PHONY: help venv lint crds crds-check test test-unit cluster-build cluster-up cluster-down demo bench lock clean test-suite \
	helm prometheus chart-lint e2e-kind images

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@echo "==> creating the virtualenv in $(VENV) and installing pinned dependencies"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(STAMP) ## Create the virtualenv and install the pinned dependencies

lint: $(STAMP) ## ruff, mypy (strict for api and controller) and the import-linter layer contracts
	@echo "==> ruff"
	@$(VENV)/bin/ruff check operator tests benchmarks scripts
	@echo "==> mypy"
	@MYPY_CACHE_DIR=$${XDG_CACHE_HOME:-$$HOME/.cache}/tradewarden/mypy-$$($(PY) -c 'import sys, mypy.version; print(f"{sys.version_info[0]}.{sys.version_info[1]}-{mypy.version.__version__}")') \
	  $(VENV)/bin/mypy
	@echo "==> import-linter"
	@$(VENV)/bin/lint-imports

crds: $(STAMP) ## Regenerate crds/ and the chart's CRD templates from the API models
	@$(PY) -m tradewarden.api.crds

crds-check: $(STAMP)
	@$(PY) -m tradewarden.api.crds --check

cluster-build: $(STAMP) ## Build (or reuse) the control plane and node binaries (etcd, kube-*, kubelet)
	@$(CLUSTER) build

cluster-up: $(STAMP) ## Start the local one-node cluster (as root; installs containerd & co. from Debian)
	@$(CLUSTER) up

cluster-down: $(STAMP) ## Stop the local cluster and remove its state (also after a crash)
	@$(CLUSTER) down

images: $(STAMP) ## Build the operator and runner images with buildah; load them into a running node
	@$(PY) tests/cluster/images.py build
	@if $(CLUSTER) status >/dev/null 2>&1; then $(PY) tests/cluster/images.py load >/dev/null; fi

# Each build step prints how long it took (all are cached outside the repository after the first run).
timed = start=$$(date +%s); $(1); rc=$$?; echo "==> $(2): $$(( $$(date +%s) - start )) s"; [ $$rc = 0 ]

test: lint ## Lint, then every test (starts a local one-node cluster for the session)
	@echo "==> tests"
	@if [ "$$TRADEWARDEN_CLUSTER" = local ]; then $(call timed,$(CLUSTER) build >/dev/null,cluster binaries); fi
	@if [ "$$TRADEWARDEN_CLUSTER" = local ]; then $(call timed,$(PY) tests/cluster/images.py build >/dev/null,images); fi
	@$(call timed,$(TOOLS) helm >/dev/null,helm)
	@$(call timed,$(TOOLS) prometheus >/dev/null,prometheus with Kubernetes discovery)
	@$(MAKE) --no-print-directory prometheus
	@# One cluster for every worker: reused if `make cluster-up` left one running, else started and stopped.
	@if [ "$$TRADEWARDEN_CLUSTER" = local ]; then $(CLUSTER) run -- $(MAKE) --no-print-directory test-suite; \
	  else $(MAKE) --no-print-directory test-suite; fi

# The suite on the cluster `test` gave it: on the workers, then alone what changes the CRDs every test
# relies on (mark `serial`); then, alone (one node per machine), the recovery test, which kills that
# cluster and brings it back.
test-suite:
	@# (pytest exits 5 when a phase selects no test: PYTEST_ARGS may name only some.)
	@if [ -n "$(PYTEST_PARALLEL)" ]; then \
	  { $(PY) -m pytest $(PYTEST_PARALLEL) -m "not serial" $(PYTEST_ARGS) || [ $$? = 5 ]; } && \
	  { $(PY) -m pytest -m serial $(PYTEST_ARGS) || [ $$? = 5 ]; }; \
	else $(PY) -m pytest $(PYTEST_ARGS); fi
	@if [ "$$TRADEWARDEN_CLUSTER" = local ]; then TRADEWARDEN_RECOVERY_TEST=1 $(PY) -m pytest tests/recovery $(PYTEST_ARGS); fi

test-unit: $(STAMP) prometheus ## Only the tests that need no cluster
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

helm: $(STAMP) ## Build (or reuse) helm from the Go module proxy, cached in ~/.cache/tradewarden/tools
	@$(TOOLS) helm

# Debian's prometheus package: promtool for the metrics and alert-rule tests, prometheus for
# tests/integration/test_prometheus.py. Its postinst asks invoke-rc.d to start the packaged service: in
# containers /usr/sbin/policy-rc.d usually refuses (exit 101; so on our machines, without systemd), and
# elsewhere a system prometheus may start on :9090. The tests never use it: they start their own on a
# free loopback port with a temporary config and storage.
prometheus: ## Install prometheus and promtool from Debian's packages (apt-get, as root) unless present
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then \
	  echo "==> prometheus: $$(command -v prometheus) ($$(prometheus --version 2>&1 | head -n1))"; \
	else \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "==> prometheus: not installed; running: $$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends prometheus"; \
	  $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; \
	fi

chart-lint: $(STAMP) ## helm lint charts/tradewarden with the default and the all-flags values
	@HELM=$$($(TOOLS) helm) && $$HELM lint --strict charts/tradewarden \
	  && $$HELM lint --strict charts/tradewarden -f tests/chart/values-all.yaml

e2e-kind: $(STAMP) ## Needs Docker and kind: build the images, install the chart on kind, run a bot
	@tests/e2e/kind.sh

demo: $(STAMP) ## Bring up the control plane, the operator and example bots; Ctrl-C stops everything
	@$(PY) scripts/demo.py

bench: $(STAMP) ## Run the benchmarks (see docs/BENCHMARKS.md)
	@$(PY) -m pytest benchmarks -m benchmark -s -p no:cacheprovider

lock: ## Re-resolve and pin every Python dependency into constraints.txt
	@rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install --quiet -e '.[dev]'
	@{ echo "# Pinned versions of every Python dependency, used as pip constraints by the Makefile."; \
	   echo "# Regenerate with: make lock"; .lock-venv/bin/pip freeze --exclude-editable | grep -vi '^tradewarden'; } > constraints.txt
	@rm -rf .lock-venv

clean: ## Remove the virtualenv and local state (not the cached binaries)
	@-$(CLUSTER) down 2>/dev/null
	@rm -rf $(VENV) .cluster .demo .mypy_cache .ruff_cache .pytest_cache
