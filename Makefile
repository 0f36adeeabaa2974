# Two commands run the study:   make repro        (default profile; PROFILE=ci|default|paper|paper_smoke)
#                                make test         (the test suite)
# Overrides for one run (Hydra syntax, as `dvc exp run -S`): make repro PROFILE=ci SET='masks.alpha=1e-4'
# The reviewer's path (no training): make figures   (figures + paper from results/default)
# Every target installs what it needs into .venv first, once (re-installs when pyproject changes).
PROFILE ?= default
SET ?=
CONTROL ?=
NAME ?= control
RESULTS ?= $(firstword $(wildcard results/default) results/ci)
# tqdm bars refresh at most every 10 s in logs (the pipeline log is not a terminal)
export TQDM_MININTERVAL ?= 10
DVC = PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install test lint repro figures results readme tex bench clean-venv control

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# torch first, on its own: an already installed build (e.g. CUDA, for GPU users) is kept.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -c "import core, figures, torch, xarray, dvc, papermill"
	@touch $@

# pytest exits 5 when it collects no test: that is not a failure here.
test: install
	$(PY) -m pytest -q $(PYTEST_ARGS) || [ $$? -eq 5 ]

lint: install
	$(VENV)/bin/ruff check .
	git ls-files -z '*.ipynb' | xargs -0 -r $(VENV)/bin/nbstripout --verify

# TeX for the paper stage, from Debian, when missing and when we may install system packages.
tex:
	@command -v latexmk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      latexmk texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended >/dev/null; \
	  else echo "note: latexmk not found and cannot install TeX here; the paper stage will say so"; fi; }

# params.yaml = conf/ composed for PROFILE + SET (the bytes `dvc exp run -S profile=... -S ...`
# writes); then DVC re-runs exactly the stages whose params, code or inputs changed.
repro: install tex
	$(PY) -m core.config compose --profile $(PROFILE) $(SET)
	@# stage wall times go to build/repro-$(PROFILE).log (read by benchmarks/pipeline.py)
	$(DVC) repro 2>&1 | $(PY) -m benchmarks.timelog build/repro-$(PROFILE).log

# Every figure and the paper from the committed results of a reference run (no training, no
# data generation): build/$(RESULTS)/{figures,paper}. Checks the results against the code first.
figures: install tex
	$(PY) -m core.results check $(RESULTS)
	$(PY) -m figures --params $(RESULTS)/params.yaml --metrics $(RESULTS)/metrics \
	  --raven $(RESULTS)/raven --out build/$(RESULTS)/figures
	$(PY) -m paper --params $(RESULTS)/params.yaml --metrics $(RESULTS)/metrics \
	  --figures build/$(RESULTS)/figures --out build/$(RESULTS)/paper \
	  --generated build/$(RESULTS)/generated --control results/control

# Copy the small results of the last `make repro` (metrics, summary, params, a few example
# problems, provenance) to results/<profile>/ for committing. Refuses a checkout whose code
# differs from HEAD or metrics made at another commit (commit, then repro), metrics of other
# params, and a results/<profile> holding files export did not write; validates before writing.
results: install
	@P=$$($(PY) -c "from core.config import load; print(load('params.yaml').profile)"); \
	  $(PY) -m core.results export --params params.yaml --out results/$$P --force \
	  $$(test -f build/repro-$$P.log && echo --timing build/repro-$$P.log)

# The README's results section, generated from the committed default-profile results.
readme: install
	$(PY) -m core.results check results/default
	$(PY) -m paper readme --params results/default/params.yaml --metrics results/default/metrics \
	  --readme README.md --control results/control

# The composite positive control (core/control.py): two SCLs trained on colour-rule / size-rule
# problems only, logits summed, masked with the profile's mask settings; CONTROL: core.control
# options, NAME: the result's name under results/control/ (the README and the paper report
# every file there: control.json first). The committed ones:
#   make control                                  (~20 min on 2 cores: control.json)
#   make control CONTROL='--steps 2000' NAME=control_steps2000   (~15 min more, reuses the nets)
#   make control CONTROL='--steps 6000 --lr 0.01 --readout -1' \
#     NAME=control_steps6000_lr001_readout-1                     (~40 min more)
#   make control CONTROL='--steps 2000 --lr 0.01' NAME=control_steps2000_lr001
#   make control CONTROL='--steps 2000 --lr 0.03 --noise-anneal 0.5' \
#     NAME=control_steps2000_lr003_noise05
#   make control CONTROL='--steps 2000 --lr 0.01 --noise-anneal 0.5' \
#     NAME=control_steps2000_lr001_noise05        (these three with specialists trained on another
#                                                  machine: their unmasked accuracies differ)
control: install
	$(PY) -m core.config compose --profile $(PROFILE) $(SET)
	$(PY) -m core.control run --params params.yaml --out data/control $(CONTROL)
	mkdir -p results/control && cp data/control/control.json results/control/$(NAME).json

bench: install
	$(PY) -m benchmarks $(if $(QUICK),--quick,)

clean-venv:
	rm -rf $(VENV)
