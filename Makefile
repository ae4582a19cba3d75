# The README's two commands: `make reproduce` and `make test`. Both create .venv/ when it is missing.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= default
DATA_ROOT ?=
FRESH ?=

.PHONY: reproduce test lab bench clean-build

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,lab]"
	@touch $(STAMP)

## Execute every notebook through papermill and publish results/ and figures/. Training runs and probe results
## whose config, data and code are unchanged are reused from build/; FRESH=1 trains and probes everything again.
reproduce: $(STAMP)
	$(PY) -m s2r2lib.reproduce --profile $(PROFILE) $(if $(DATA_ROOT),--data-root $(DATA_ROOT)) $(if $(FRESH),--fresh)

## Unit tests, notebooks (nbval) and the notebooks' recorded numbers (papermill).
test: $(STAMP)
	$(PY) -m pytest

## JupyterLab in the same environment, notebooks/ as its root.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

## Benchmarks; writes results/bench_*.csv.
bench: $(STAMP)
	S2R2_PUBLISH=1 $(PY) -m s2r2lib.bench all

clean-build:
	rm -rf build
