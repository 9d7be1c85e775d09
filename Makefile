# Two set-up commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench e2e-kind kind-down clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: the CPU build of 2.13.0 lies on disk; an unpinned torch pulls CUDA.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/kpilot demo

test: $(STAMP)
	$(BIN)/python -m kpilot.sim.warmup
	$(BIN)/python -m pytest -n 2 -q

bench: $(STAMP)
	$(BIN)/kpilot bench

# The kind tier (needs docker, kind, kubectl and internet): a kind cluster with Knative Serving
# 1.23 and the operator built from this checkout, then tests/e2e/test_kind.py against it.
e2e-kind: $(STAMP)
	bash tests/e2e/kind-up.sh
	KPILOT_KIND_E2E=1 $(BIN)/python -m pytest -q tests/e2e

kind-down:
	kind delete cluster --name $$(sed -n 's/^name: *//p' kind-config.yaml)

clean:
	rm -rf $(VENV) build *.egg-info
