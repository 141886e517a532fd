# servebench: export -> serve -> measure. Every target installs what it needs first.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
PY := $(CURDIR)/$(VENV)/bin/python
STORE := model_store
export PYTHONPATH := $(CURDIR)
export OMP_NUM_THREADS ?= 1
export TF_CPP_MIN_LOG_LEVEL ?= 2

EXPORT_INPUTS := $(shell find exporters -name '*.py') $(wildcard contract/*.py) services/torchserve/handler.py services/tfserving/config.py

.PHONY: help install export demo test up down status logs bench bench-gateway chaos soak loadtest-ui k8s k8s-plan lock clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.lock requirements-edge.lock
	@echo "==> creating $(VENV) (pip + venv; torch==2.13.0 CPU build)"
	$(PYTHON) -m venv $(VENV)
	@# The lock is a complete `pip freeze --all` (every package pinned, setuptools and wheel too),
	@# so the resolver has nothing to decide: --no-deps skips it (a fresh venv in 2.2 min on an
	@# idle machine; with the resolver, 19.7 min at load ~10 against 4.6 without). Byte-compiling
	@# is done after, on every core: pip's own is serial, and skipping it is no option where
	@# PYTHONDONTWRITEBYTECODE is set (every process would compile its imports from source:
	@# `python -m locust --version` 3.3 s instead of 1.2 s). compileall -j 0: 78 s here.
	$(VENV)/bin/pip install --quiet --no-deps --no-compile -r requirements.lock
	@# ExecuTorch without its declared dependencies (coremltools, ...): see the file's header.
	$(VENV)/bin/pip install --quiet --no-deps --no-compile -r requirements-edge.lock
	@# (|| true: a few packages ship templates that are not Python; those are never imported.)
	$(VENV)/bin/python -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	@touch $@

install: $(VENV)/.installed ## build .venv from requirements.lock

$(STORE)/.examples.stamp: $(VENV)/.installed $(EXPORT_INPUTS)
	@echo "==> exporting the example models to every format (parity-checked)"
	@# Exit 1 = some artifacts failed (each says why in the table and its manifest; its runtime
	@# then does not serve that model); exit 2 = a source could not be built: stop.
	$(PY) -m exporters examples --store $(STORE) || [ $$? -eq 1 ]
	@touch $@

export: $(STORE)/.examples.stamp ## train + export the example models into model_store/

demo: export ## the main job: install, export, serve, quick load test, report, down
	@$(PY) -m exporters show --store $(STORE)
	GATEWAY_SHADOW='{"*": {"fraction": 0.01}}' $(PY) -m services.supervisor up
	@$(PY) -m loadtests bench --profile quick; rc=$$?; $(PY) -m services.supervisor down; exit $$rc

test: export ## run the test suite (installs and exports first)
	$(PY) -m pytest

up: export ## start every runtime + the gateway as local processes (detached)
	$(PY) -m services.supervisor up

down: ## stop everything `make up` started
	@if [ -x $(PY) ]; then $(PY) -m services.supervisor down; fi

status: ## what serves where
	$(PY) -m services.supervisor status

logs: ## follow the logs of every service
	$(PY) -m services.supervisor logs -f

bench: export ## headless Locust benchmark (PROFILE=quick|full|smoke, MODELS=a,b, LATENCY_MS=ms|a=ms,b=ms, ENCODING=auto|json|binary) against `make up`
	$(PY) -m loadtests bench --profile $(or $(PROFILE),quick)$(if $(MODELS), --models $(MODELS))$(if $(LATENCY_MS), --latency-target-ms $(LATENCY_MS))$(if $(ENCODING), --encoding $(ENCODING))

bench-gateway: export ## gateway overhead: direct vs through the gateway (ONNX Runtime, digits-cnn-torch)
	$(PY) -m loadtests.gateway_overhead --model digits-cnn-torch

chaos: export ## fault benchmark: kill -9 / SIGSTOP each runtime under load; lost requests, recovery s
	$(PY) -m loadtests.chaos

soak: export ## paced soak on its own stack (DURATION=600 s): non-2xx, p50/p99 per minute, RSS growth
	$(PY) -m loadtests.soak --duration $(or $(DURATION),600)

k8s: export ## render the Kubernetes / KServe manifests into deploy/kubernetes/ and validate them
	$(PY) -m deploy render
	$(PY) -m deploy validate

k8s-plan: install ## capacity plan: RESULTS=<bench results.json> RATE=<req/s> LATENCY_MS=<p99 target>
	$(PY) -m deploy plan --results $(RESULTS) --rate $(or $(RATE),1000) --latency-ms $(or $(LATENCY_MS),50)

loadtest-ui: install ## Locust web UI against the gateway on 127.0.0.1:8089
	$(PY) -m loadtests ui

lock: ## re-resolve requirements.lock from pyproject.toml in a scratch venv
	rm -rf /tmp/servebench-lock && $(PYTHON) -m venv /tmp/servebench-lock
	/tmp/servebench-lock/bin/pip install --quiet $$($(PYTHON) -c "import tomllib;d=tomllib.load(open('pyproject.toml','rb'))['project'];print(' '.join(d['dependencies']+d['optional-dependencies']['test']))")
	/tmp/servebench-lock/bin/pip freeze --all | grep -v '^pip==' | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/' > requirements.lock

clean: down ## remove the model store, run dir and reports (keeps .venv)
	rm -rf $(STORE)/*/ $(STORE)/.examples.stamp .run loadtests/reports
