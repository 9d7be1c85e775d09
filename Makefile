# Two set-up commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Where torch 2.13.0 comes from. Empty: pip's own sources (here a CPU build lies on disk). On a
# machine without it, `make TORCH_INDEX=https://download.pytorch.org/whl/cpu ...` takes the CPU
# build from PyTorch's index instead of PyPI's CUDA one (gigabytes).
TORCH_INDEX ?=
# The real trace excerpts beside the repository, when they are there (tests that need them skip
# with the reason otherwise); an exported KPILOT_TRACES wins.
export KPILOT_TRACES ?= $(abspath $(wildcard ../shared/traces))

.PHONY: demo test bench e2e-kind kind-down clean

$(STAMP): pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch pulls a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	# The exact versions the tests passed with (constraints.txt), within pyproject's ranges.
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# `make demo TRAIN=1` trains a fresh, short policy first (kpilot demo --train) and evaluates that.
demo: $(STAMP)
	$(BIN)/kpilot demo $(if $(TRAIN),--train)

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
