# Aegis developer entry points. `make test` is the one command CI runs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
# Control-plane binaries (kube-apiserver, etcd, helm) live outside the repo.
AEGIS_TESTBIN_ROOT ?= $(HOME)/.cache/aegis/testbin
export AEGIS_TESTBIN_ROOT

.PHONY: help venv source-tree postgres pgbouncer promtool testbin cluster-deps cluster cluster-down chart-sync lint typecheck pytest test test-fast demo bench bench-injector bench-budgets clean

help:
	@echo "make demo   - offline demo: fake upstreams + sidecar + openai client"
	@echo "make test   - install everything, then ruff, mypy and pytest"
	@echo "make test-fast - the pure and single-process tests, random order (< 2 min)"
	@echo "make bench  - proxy benchmark: overhead, streams, ledger, feature tables (BENCH_ARGS=--quick, LITELLM_VENV=..., GO_FLOOR=1)"
	@echo "make bench-budgets - budget and rate-limit decisions across 16 sidecar processes"
	@echo "make fuzz   - long random API fuzzing (FUZZ_EXAMPLES per endpoint; report in build/)"
	@echo "make soak   - mixed good and hostile traffic for SOAK_SECONDS, figures printed"
	@echo "make cluster      - a one-node Kubernetes cluster with Aegis's image (root)"
	@echo "make cluster-down - remove it, and check that nothing of it is left"

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install --quiet --disable-pip-version-check "uv>=0.4,<1"
	$(UV) pip install --quiet --python $(PY) -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

# PostgreSQL server binaries from Debian when the machine has none.
postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "postgres: found $$( (command -v postgres || ls /usr/lib/postgresql/*/bin/postgres) | head -n1)"; \
	else \
	  echo "postgres: installing from Debian packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	fi

# PgBouncer (Debian's package) for the ledger tests through a connection pooler.
pgbouncer:
	@if command -v pgbouncer >/dev/null 2>&1 || test -x /usr/sbin/pgbouncer; then \
	  echo "pgbouncer: found $$(command -v pgbouncer || echo /usr/sbin/pgbouncer)"; \
	else \
	  echo "pgbouncer: installing from Debian packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null; \
	fi

# promtool (Debian's prometheus package) for the alert-rule tests.
promtool:
	@if command -v promtool >/dev/null 2>&1; then \
	  echo "promtool: found $$(command -v promtool)"; \
	else \
	  echo "promtool: installing from Debian packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	fi

testbin: venv
	$(PY) -m tests.controlplane.build

# The one-node cluster (tests/cluster): containerd, runc, the CNI plugins, iptables and
# conntrack run it; buildah, mmdebstrap and a static libc build its images.
CLUSTER_PACKAGES := containerd runc containernetworking-plugins iptables conntrack \
	buildah mmdebstrap gcc libc6-dev binutils
cluster-deps:
	@missing=0; \
	for cmd in containerd containerd-shim-runc-v2 runc ctr iptables conntrack buildah mmdebstrap gcc strip nsenter unshare; do \
	  command -v $$cmd >/dev/null 2>&1 || missing=1; \
	done; \
	for file in /usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/portmap /usr/lib/x86_64-linux-gnu/libc.a; do \
	  test -e $$file || missing=1; \
	done; \
	if [ $$missing = 0 ]; then \
	  echo "cluster-deps: found $$(containerd --version | cut -d' ' -f3), runc $$(runc --version | head -n1 | cut -d' ' -f3), buildah $$(buildah --version | cut -d' ' -f3)"; \
	else \
	  echo "cluster-deps: installing from Debian packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(CLUSTER_PACKAGES) >/dev/null; \
	fi

# Builds what is missing (node binaries, images), starts the cluster or reuses a healthy
# one; the last line printed is `export KUBECONFIG=...`.
cluster: venv cluster-deps
	@$(PY) -m tests.cluster up

cluster-down: venv
	@$(PY) -m tests.cluster down

# mypy and import-linter cannot follow setuptools' editable finder, so they read the
# packages through a symlinked aegis/ tree under build/ (never committed).
source-tree:
	@mkdir -p build/typecheck/aegis
	@ln -sfn ../../../sidecar build/typecheck/aegis/sidecar
	@ln -sfn ../../../operator build/typecheck/aegis/operator

# ruff, and the import-graph contracts of pyproject.toml (layers, no cycles, pure cores).
lint: venv source-tree
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PYTHONPATH=build/typecheck $(VENV)/bin/lint-imports --no-cache

typecheck: venv source-tree
	MYPYPATH=build/typecheck $(VENV)/bin/mypy -p aegis.sidecar -p aegis.operator
	MYPYPATH=build/typecheck $(VENV)/bin/mypy tests

# The chart carries byte-identical copies of crds/ and operator/rbac.yaml (helm cannot
# read outside the chart); run this after changing them. A test fails on drift.
chart-sync: venv
	$(PY) -m tests.helm.sync

# Two tiers. Fast: no PostgreSQL, no API server, nothing marked slow (the markers come
# from the fixtures a test uses, tests/conftest.py), in random order (pytest-randomly;
# the seed is printed, `-p randomly --randomly-seed=N` repeats an order). Slow: the
# rest, in file order (package-scoped servers start once), as two pytest processes at
# once, tests/sidecar (PostgreSQL, sidecar fleets, real-time windows) and everything
# else (API server, node, helm): both mostly wait, each starts its own servers under
# its own basetemp, and the sidecar half's output is printed after the other's.
FAST := not postgres and not kube and not slow
SLOW := not ($(FAST))

test-fast: venv promtool
	$(PY) -m pytest -p randomly -m "$(FAST)" $(PYTEST_ARGS)

pytest: venv postgres pgbouncer promtool testbin cluster-deps
	$(PY) -m pytest -p randomly -m "$(FAST)" $(PYTEST_ARGS)
	@base=$$(mktemp -d /tmp/aegis-slow.XXXXXX); \
	$(PY) -m pytest -m "$(SLOW)" --durations=15 --basetemp=$$base/sidecar -p no:cacheprovider \
	  tests/sidecar $(PYTEST_ARGS) > $$base/sidecar.log 2>&1 & sidecar=$$!; \
	trap 'kill $$sidecar 2>/dev/null' INT TERM; \
	$(PY) -m pytest -m "$(SLOW)" --durations=15 --basetemp=$$base/rest --ignore=tests/sidecar \
	  $(PYTEST_ARGS) && rest=0 || rest=$$?; \
	wait $$sidecar && side=0 || side=$$?; \
	echo "== slow tier, tests/sidecar (ran alongside the above) =="; cat $$base/sidecar.log; \
	echo "slow tier: tests/sidecar exit $$side, the rest exit $$rest"; \
	if [ $$side -eq 0 ] && [ $$rest -eq 0 ]; then rm -rf $$base; else exit 1; fi

test: lint typecheck pytest

demo: venv
	$(PY) -m aegis.sidecar.demo

# Four tables from one run (tests/bench/sidecar_overhead.py). BENCH_ARGS=--quick for a
# smoke run; LITELLM_VENV=<venv with litellm[proxy]> adds LiteLLM's proxy as a row,
# GO_FLOOR=1 Go's reverse proxy (built with the local Go toolchain: a compiled floor).
BENCH_ARGS ?=
LITELLM_VENV ?=
GO_FLOOR ?=
bench: venv
	$(PY) tests/bench/sidecar_overhead.py $(if $(LITELLM_VENV),--litellm $(LITELLM_VENV)) \
		$(if $(GO_FLOOR),--go-floor) $(BENCH_ARGS)

# The API fuzz tests with random seeds and many more examples than `make test` runs;
# what was tried (answers by endpoint, status and code) goes to build/fuzz-report.json.
FUZZ_EXAMPLES ?= 5000
fuzz: venv
	AEGIS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/sidecar/test_fuzz_api.py \
	  -p no:logging -q --hypothesis-show-statistics -o timeout=0
	@cat build/fuzz-report.json

SOAK_SECONDS ?= 600
soak: venv
	$(PY) tests/bench/soak.py --seconds $(SOAK_SECONDS)

bench-injector: venv
	$(PY) tests/bench/injector_admission.py

# Budget (+ rate-limit) decisions across 16 sidecar processes on one PostgreSQL, and
# round trips per 100 decisions, beside the single-budget run (tests/bench/budget_decisions.py).
bench-budgets: venv
	$(PY) tests/bench/budget_decisions.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
