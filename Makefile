# Vision Paper Study Notebooks. `make help` lists the targets.
# Every target makes .venv when it is missing and reinstalls it when pyproject.toml changed.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp

# ZOO: zoo entries to build (empty = all); DEVICE: where to build them (empty = auto)
# NB: notebook(s) to run (03_deit, 03 or notebooks/03_deit.ipynb); empty = all of them
# PROFILE: smoke | study | paper; empty = the notebook's own default (study)
# PARAMS: more papermill arguments, e.g. PARAMS='-p seed 1'
NB          ?=
ZOO         ?=
DEVICE      ?=
PROFILE     ?=
PARAMS      ?=
PYTEST_ARGS ?=

RUN_DIR    := runs/$(shell date +%Y%m%d-%H%M%S)
REPORT_PROFILE = $(or $(PROFILE),$(COURSE_PROFILE),study)

# Jupyter inside the venv prefers the venv's kernelspecs over ~/.local ones.
# (MPLBACKEND is left alone here: Agg would hide the figures of `make run` and `make lab`.)
export JUPYTER_PREFER_ENV_PATH := 1

.PHONY: help venv run record lab test test-fast clean-notebooks refresh-outputs check-notebooks readme bench zoo

help: ## list the targets
	@echo "Vision Paper Study Notebooks"
	@echo
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  make \1\t/' | expand -t 26
	@echo
	@echo "  variables: NB=03_deit  PROFILE=smoke|study|paper  PARAMS='-p seed 1'  PYTEST_ARGS='-k deit'"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -U pip
	$(BIN)/pip install -e '.[dev]'
	touch $@

venv: $(STAMP) ## create or refresh .venv (pip install -e '.[dev]')

# shell snippet: the notebook stems named by NB (all notebooks when NB is empty) -> $$nbs
define RESOLVE_NBS
nbs=""; \
for want in $(or $(NB),$(patsubst notebooks/%.ipynb,%,$(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb)))); do \
  stem=$$(basename "$$want" .ipynb); \
  match=(notebooks/$$stem*.ipynb); \
  if [ -f "notebooks/$$stem.ipynb" ]; then match=("notebooks/$$stem.ipynb"); fi; \
  if [ ! -f "$${match[0]}" ] || [ $${#match[@]} -ne 1 ]; then \
    echo "NB=$$want: no single notebook matches; have: $$(ls notebooks | grep ipynb | tr '\n' ' ')" >&2; exit 2; fi; \
  nbs="$$nbs $$(basename "$${match[0]}" .ipynb)"; \
done; \
if [ -z "$$nbs" ]; then echo "no notebooks in notebooks/" >&2; exit 2; fi
endef

# A user's run never writes a tracked file: executed notebooks and results go to runs/<time>/.
run: $(STAMP) ## run notebook(s) headless with papermill into runs/<time>/ (results too), then print "paper vs. ours"
	@$(RESOLVE_NBS); \
	mkdir -p $(RUN_DIR); failed=""; \
	export COURSE_RESULTS_DIR="$(CURDIR)/$(RUN_DIR)" COURSE_HEADLESS=1; \
	for nb in $$nbs; do \
	  echo "== $$nb -> $(RUN_DIR)/$$nb.ipynb (cell outputs follow; results: $(RUN_DIR)/$$nb/)"; \
	  $(BIN)/papermill notebooks/$$nb.ipynb $(RUN_DIR)/$$nb.ipynb --cwd notebooks -k python3 \
	    --log-output --no-progress-bar \
	    $(if $(PROFILE),-p profile $(PROFILE)) $(PARAMS) || failed="$$failed $$nb"; \
	done; \
	for nb in $$nbs; do \
	  case " $$failed " in *" $$nb "*) continue;; esac; \
	  echo; echo "== paper vs. ours: $$nb ($(REPORT_PROFILE))"; \
	  $(BIN)/python -m course_lib report --notebook $$nb --profile $(REPORT_PROFILE) || failed="$$failed $$nb(report)"; \
	done; \
	echo; echo "run notebooks and results: $(RUN_DIR)/"; \
	if [ -n "$$failed" ]; then echo "FAILED:$$failed" >&2; exit 1; fi

zoo: $(STAMP) ## build the course zoo (pretrained models, model cards) for PROFILE (default study); ZOO='dino_vit ...' DEVICE=cuda
	$(BIN)/python -m course_lib zoo build $(ZOO) --profile $(or $(PROFILE),study) $(if $(DEVICE),--device $(DEVICE))

record: $(STAMP) ## maintainers: record NB=... (study profile) from a clean commit into results/<nb>/
	@test -n "$(NB)" || { echo "usage: make record NB=03_deit [PROFILE=study] [PARAMS='-p seed 1']" >&2; exit 2; }
	@$(RESOLVE_NBS); \
	for nb in $$nbs; do \
	  $(BIN)/python tools/record.py $$nb --profile $(or $(PROFILE),study) $(PARAMS); \
	done

lab: $(STAMP) ## open JupyterLab on notebooks/ (registers the kernels first)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ipykernel)"
	$(BIN)/python -m ipykernel install --user --name course-lib --display-name "Python (course-lib)"
	$(BIN)/jupyter lab notebooks/

test: $(STAMP) ## the whole test suite, notebooks included (what CI runs)
	MPLBACKEND=Agg $(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP) ## the test suite without executing notebooks
	MPLBACKEND=Agg $(BIN)/python -m pytest -q -m "not notebook" $(PYTEST_ARGS)

clean-notebooks: $(STAMP) ## strip outputs of notebooks/*.ipynb except NBVAL_CHECK_OUTPUT cells
	@shopt -s nullglob; nbs=(notebooks/*.ipynb); \
	if [ $${#nbs[@]} -eq 0 ]; then echo "no notebooks"; else $(BIN)/python tools/nbclean.py "$${nbs[@]}"; fi

refresh-outputs: $(STAMP) ## re-run NB=... in the smoke profile and store its checked outputs
	@test -n "$(NB)" || { echo "usage: make refresh-outputs NB=03_deit" >&2; exit 2; }
	@$(RESOLVE_NBS); \
	$(BIN)/python tools/nbclean.py --execute $$(for nb in $$nbs; do echo notebooks/$$nb.ipynb; done)

check-notebooks: $(STAMP) ## check notebooks against the notebook standard (no execution)
	@shopt -s nullglob; nbs=(notebooks/*.ipynb); \
	if [ $${#nbs[@]} -gt 0 ]; then $(BIN)/python tools/nbclean.py --check "$${nbs[@]}"; fi
	MPLBACKEND=Agg $(BIN)/python -m pytest -q tests/test_notebooks.py -m "not notebook"

readme: $(STAMP) ## refresh the notebooks table in README.md
	$(BIN)/python -m course_lib readme

bench: $(STAMP) ## run the benchmarks in benchmarks/ (bench_*.py)
	@shopt -s nullglob; scripts=(benchmarks/bench_*.py); \
	if [ $${#scripts[@]} -eq 0 ]; then echo "no benchmarks/bench_*.py yet"; fi; \
	for s in "$${scripts[@]}"; do echo "== $$s"; $(BIN)/python "$$s"; done
