# The README's two commands: `make reproduce` and `make test`. Both create .venv/ when it is missing.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= default
DATA_ROOT ?=

.PHONY: reproduce test lab bench gpu-check clean-build

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,lab]"
	@touch $(STAMP)

## Execute every notebook through papermill; regenerate results/ and figures/.
reproduce: $(STAMP)
	$(PY) -m s2r2lib.reproduce --profile $(PROFILE) $(if $(DATA_ROOT),--data-root $(DATA_ROOT))

## Unit tests, notebooks (nbval) and the notebooks' recorded numbers (papermill).
test: $(STAMP)
	$(PY) -m pytest

## JupyterLab in the same environment, notebooks/ as its root.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

## Benchmarks; writes results/bench_*.csv.
bench: $(STAMP)
	$(PY) -m s2r2lib.bench all

## The device check (python -m s2r2lib.bench gpu): the paper's setting on one GPU in at most 8 minutes,
## rows to results/bench_gpu.csv (OUT_DIR=... elsewhere); a tiny CPU smoke where there is no GPU. Uses the
## venv's Python when there is one, else python3 (a GPU machine's own PyTorch); it installs nothing.
gpu-check:
	$(if $(wildcard $(PY)),$(PY),python3) -m s2r2lib.bench gpu $(if $(OUT_DIR),--out-dir $(OUT_DIR))

clean-build:
	rm -rf build
