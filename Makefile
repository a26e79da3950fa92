# MemoryGuard developer entry points. `make install` then `make test` on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(CURDIR)/.tools/bin:$(PATH)

.PHONY: install test lint bench kernel-test demo chart-test chart-sync format clean

install:            ## everything a fresh machine needs: Debian packages, helm/kubectl, Python venv
	bash scripts/install-deps.sh

test:               ## unit, agent (real cgroup v1 here), operator (KMock), chart; not the QEMU kernel tier
	$(PY) -m pytest -q -m "not kernel and not cluster" tests

lint:               ## ruff, mypy, import-linter (the engine stays pure)
	$(VENV)/bin/ruff check operator tests
	$(VENV)/bin/ruff format --check operator tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format:
	$(VENV)/bin/ruff format operator tests
	$(VENV)/bin/ruff check --fix operator tests

chart-test:         ## helm lint/template, schema validation, deploy/ and docs/reference.md up to date
	$(PY) -m pytest -q tests/chart

chart-sync:         ## copy the CRD into the chart, re-render deploy/ and docs/reference.md
	bash scripts/sync-chart.sh

bench:              ## benchmarks reported in BENCHMARKS.md
	bash scripts/bench.sh

kernel-test:        ## cgroup v2 scenarios in a real kernel under QEMU (minutes)
	$(PY) -m pytest -q -m kernel tests/kernel

demo:               ## watch MemoryGuard prevent an OOM kill, no cluster needed
	$(PY) -m tests.kernel.demo

clean:
	rm -rf $(VENV) .tools build *.egg-info .pytest_cache .mypy_cache .ruff_cache
