# The README's two commands: `make reproduce` and `make test`. Both create .venv/ when it is missing.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= default
DATA_ROOT ?=
FRESH ?=

.PHONY: reproduce test lab student instructor bench gpu-check gpu-study mutation clean-build

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,lab]"
	@touch $(STAMP)

## Execute every notebook through papermill and publish results/ and figures/. Training runs and probe results
## whose config, data and code are unchanged are reused from build/; FRESH=1 trains and probes everything again.
reproduce: $(STAMP)
	$(PY) -m s2r2lib.reproduce --profile $(PROFILE) $(if $(DATA_ROOT),--data-root $(DATA_ROOT)) $(if $(FRESH),--fresh)
	$(PY) -m s2r2lib.readme

## Every notebook as a reader runs it (nbval), the unit tests and the notebooks' recorded numbers (papermill), on
## TEST_WORKERS processes of one thread each (pytest-xdist; the machines here have 2 cores; TEST_WORKERS=0 runs
## them in this process). The notebooks go to one worker, in order (conftest.py): a notebook's cells share a
## kernel, and 03 reads the run 02 made.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) notebooks tests

## JupyterLab in the same environment, notebooks/ as its root; its kernels' sockets encrypted where libzmq can
## (reproduce.kernel_encryption), so that ipykernel has no plain-TCP warning to print.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks \
		--KernelManager.transport_encryption=$$($(PY) -c 'from s2r2lib import reproduce; print(reproduce.kernel_encryption())')

## Course copies of the notebooks (python -m s2r2lib.course), generated, never edited by hand: build/student/ without
## the solutions and outputs (exercises, hints and answer checks kept), build/instructor/ with the solutions.
student instructor: $(STAMP)
	$(PY) -m s2r2lib.course $@

## Benchmarks; writes results/bench_*.csv.
bench: $(STAMP)
	S2R2_PUBLISH=1 $(PY) -m s2r2lib.bench all

## The device check (python -m s2r2lib.bench gpu): the paper's setting on one GPU in at most 8 minutes,
## rows to results/bench_gpu.csv (OUT_DIR=... elsewhere); a tiny CPU smoke where there is no GPU. Uses the
## venv's Python when there is one, else python3 (a GPU machine's own PyTorch); it installs nothing.
gpu-check:
	S2R2_PUBLISH=1 $(if $(wildcard $(PY)),$(PY),python3) -m s2r2lib.bench gpu $(if $(OUT_DIR),--out-dir $(OUT_DIR))

## Notebook 06's study on one GPU (python -m s2r2lib.study run --plan gpu; more than one 10-minute device call
## by estimate): rows to results/runs.csv (table study-gpu), verdicts to results/study_verdicts_gpu.csv; the
## results/ folder can be moved with S2R2_RESULTS_DIR=.... Stopped, it keeps each finished job's rows in
## build/study/journal.jsonl: put that file and build/study/budget-*.json into another machine's build/study/, and
## the study goes on there from where it stopped. Same Python as gpu-check; it installs nothing.
gpu-study:
	S2R2_PUBLISH=1 $(if $(wildcard $(PY)),$(PY),python3) -m s2r2lib.study run --plan gpu

## Mutation testing (mutmut) of the core modules, each with its own tests; writes results/mutation.csv.
## Not part of `make test`: about an hour a module here. MODULES="losses views" for some; SAMPLE=200 for a sample,
## SEED=6 for another sample (results/mutation.csv names each row's seed).
MODULES ?=
SAMPLE ?=
SEED ?=
mutation: $(STAMP)
	S2R2_PUBLISH=1 $(PY) mutation/run.py $(if $(MODULES),--modules $(MODULES)) $(if $(SAMPLE),--sample $(SAMPLE)) \
		$(if $(SEED),--seed $(SEED))

clean-build:
	rm -rf build
