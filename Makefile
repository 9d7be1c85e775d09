# Two set-up commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

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

clean:
	rm -rf $(VENV) build *.egg-info
