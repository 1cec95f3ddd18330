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

.PHONY: help venv postgres promtool testbin chart-sync lint typecheck pytest test demo bench bench-injector clean

help:
	@echo "make demo   - offline demo: fake upstreams + sidecar + openai client"
	@echo "make test   - install everything, then ruff, mypy and pytest"
	@echo "make bench  - sidecar overhead benchmark against a minimal proxy"

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

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy cannot follow setuptools' editable finder, so it reads the packages through
# a symlinked aegis/ tree under build/ (never committed).
typecheck: venv
	@mkdir -p build/typecheck/aegis
	@ln -sfn ../../../sidecar build/typecheck/aegis/sidecar
	@ln -sfn ../../../operator build/typecheck/aegis/operator
	MYPYPATH=build/typecheck $(VENV)/bin/mypy -p aegis.sidecar -p aegis.operator
	MYPYPATH=build/typecheck $(VENV)/bin/mypy tests

# The chart carries byte-identical copies of crds/ and operator/rbac.yaml (helm cannot
# read outside the chart); run this after changing them. A test fails on drift.
chart-sync: venv
	$(PY) -m tests.helm.sync

pytest: venv postgres promtool testbin
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

demo: venv
	$(PY) -m aegis.sidecar.demo

bench: venv
	$(PY) tests/bench/sidecar_overhead.py

bench-injector: venv
	$(PY) tests/bench/injector_admission.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
