# Two commands run the study:   make repro        (default profile; PROFILE=ci|default|paper|paper_smoke)
#                                make test         (the test suite; make test-fast: without the slow tests)
# Overrides for one run (Hydra syntax, as `dvc exp run -S`): make repro PROFILE=ci SET='masks.alpha=1e-4'
# The reviewer's path (no training): make figures   (figures + paper from results/default)
# Every target installs what it needs into .venv first, once (re-installs when the lock changes).
# Without TeX: make repro PAPER=0   (everything but the PDF; params: paper.pdf: false)
# Share a run: make publish REMOTE=/path/to/folder   ->   in a clone: make pull REMOTE=/path/to/folder
PROFILE ?= default
SET ?=
# PAPER=0: the paper stage writes data/paper/NO_PDF.txt instead of the PDF (no TeX needed)
PAPER ?= 1
# a DVC remote's name, or a folder / URL to use as the default remote (kept in .dvc/config.local)
REMOTE ?=
# RAY=1: install the lock with the optional Ray extra (requirements/lock-ray.txt)
RAY ?=
# UPGRADE=1: `make lock` moves every package to its newest release (else: keeps the pins)
UPGRADE ?=
CONTROL ?=
NAME ?= control
RESULTS ?= $(firstword $(wildcard results/default) results/ci)
# tqdm bars refresh at most every 10 s in logs (the pipeline log is not a terminal)
export TQDM_MININTERVAL ?= 10
DVC = PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LOCK := requirements/lock$(if $(filter 1,$(RAY)),-ray,).txt
STAMP := $(VENV)/.installed-$(notdir $(basename $(LOCK)))
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install lock test test-fast lint preflight repro figures results readme tex bench \
	clean-venv control publish pull validate

install: $(STAMP)

# Every package from the lock (exact versions, sha256-checked by pip), then this project without
# dependencies. An already installed torch (e.g. a CUDA build, for GPU users) is kept: every
# other package still comes from the lock, and `pip check` then only warns.
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) requirements/lockfile.py check $(LOCK)
	@if $(PY) -c "import torch" 2>/dev/null; then \
	  echo "keeping the installed torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	  $(PY) requirements/lockfile.py without torch $(LOCK) > $(VENV)/lock-without-torch.txt && \
	  $(PY) -m pip install -q --require-hashes -r $(VENV)/lock-without-torch.txt && \
	  $(PY) -m pip install -q --no-deps --no-build-isolation -e . && \
	  { $(PY) -m pip check || echo "warning: the kept torch's requirements differ from the lock's (above)"; }; \
	else \
	  $(PY) -m pip install -q --require-hashes -r $(LOCK) && \
	  $(PY) -m pip install -q --no-deps --no-build-isolation -e . && \
	  $(PY) -m pip check; \
	fi
	$(PY) -c "import core, figures, torch, xarray, dvc, papermill"
	@touch $@ $(VENV)/.installed-lock

# Refresh the locks from pyproject.toml (pip-compile; keeps the current pins unless UPGRADE=1),
# then environment.yml from the lock. lock-ray.txt starts from lock.txt, so both pin the
# packages they share alike (tests/test_lock.py checks). A few minutes.
LOCK_FLAGS := --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	--no-emit-find-links
lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m piptools --version >/dev/null 2>&1 || $(PY) -m pip install -q pip-tools
	$(PY) -m piptools compile $(LOCK_FLAGS) $(if $(filter 1,$(UPGRADE)),--upgrade,) --extra dev \
	  -o requirements/lock.txt pyproject.toml
	cp requirements/lock.txt requirements/lock-ray.txt
	$(PY) -m piptools compile $(LOCK_FLAGS) --extra dev --extra ray -o requirements/lock-ray.txt \
	  pyproject.toml
	$(PY) requirements/lockfile.py environment requirements/lock.txt

# pytest exits 5 when it collects no test: that is not a failure here.
test: install
	$(PY) -m pytest -q $(PYTEST_ARGS) || [ $$? -eq 5 ]

# The edit-test loop: every test but those marked @pytest.mark.slow (each over ~10 s of CPU).
test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS) || [ $$? -eq 5 ]

lint: install
	$(VENV)/bin/ruff check .
	git ls-files -z '*.ipynb' | xargs -0 -r $(VENV)/bin/nbstripout --verify

# TeX for the paper stage, from Debian, when missing and when we may install system packages.
tex:
	@command -v latexmk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      latexmk texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended >/dev/null; \
	  else echo "note: latexmk not found and cannot install TeX here (not root); without TeX:" \
	    "make repro PAPER=0"; fi; }

# Every system tool the run of params.yaml needs (TeX unless paper.pdf is false, git, ...), found
# before the first stage, each with its install hint (core/preflight.py).
preflight: install
	$(PY) -m core.preflight --params params.yaml

PAPER_SET := $(if $(filter 0,$(PAPER)),paper.pdf=false,)

# params.yaml = conf/ composed for PROFILE + SET (the bytes `dvc exp run -S profile=... -S ...`
# writes); then DVC re-runs exactly the stages whose params, code or inputs changed.
repro: install $(if $(filter 0,$(PAPER)),,tex)
	$(PY) -m core.config compose --profile $(PROFILE) $(SET) $(PAPER_SET)
	$(PY) -m core.preflight --params params.yaml
	@# stage wall times go to build/repro-$(PROFILE).log (read by benchmarks/pipeline.py)
	$(DVC) repro 2>&1 | $(PY) -m benchmarks.timelog build/repro-$(PROFILE).log

# Every figure and the paper from the committed results of a reference run (no training, no
# data generation): build/$(RESULTS)/{figures,paper}. Checks the results against the code first.
figures: install $(if $(filter 0,$(PAPER)),,tex)
	$(PY) -m core.results check $(RESULTS)
	$(PY) -m figures --params $(RESULTS)/params.yaml --metrics $(RESULTS)/metrics \
	  --raven $(RESULTS)/raven --out build/$(RESULTS)/figures
	$(PY) -m paper --params $(RESULTS)/params.yaml --metrics $(RESULTS)/metrics \
	  --figures build/$(RESULTS)/figures --out build/$(RESULTS)/paper \
	  --generated build/$(RESULTS)/generated \
	  $(if $(wildcard $(RESULTS)/control.json),--control $(RESULTS)/control.json,) \
	  $(if $(filter 0,$(PAPER)),--numbers-only,)

# Push every output of the last `make repro` (the cache of each stage's outputs, as dvc.lock
# records them) to the DVC remote: REMOTE (a remote's name, or a folder / URL, then kept as the
# default remote in .dvc/config.local), else the default remote. The workspace must match
# dvc.lock; commit dvc.lock and params.yaml with the run so that a clone can pull it.
publish: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m core.remote publish $(if $(REMOTE),--remote '$(REMOTE)',)

# In a clone: fetch the outputs that the committed dvc.lock names from the remote and check
# them out (no stage runs), then check that `dvc status` is clean.
pull: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m core.remote pull $(if $(REMOTE),--remote '$(REMOTE)',)

# Copy the small results of the last `make repro` (metrics, summary, params, a few example
# problems, provenance) to results/<profile>/ for committing. Refuses a checkout whose code
# differs from HEAD or metrics made at another commit (commit, then repro), metrics of other
# params, and a results/<profile> holding files export did not write; validates before writing.
results: install
	@P=$$($(PY) -c "from core.config import load; print(load('params.yaml').profile)"); \
	  $(PY) -m core.results export --params params.yaml --out results/$$P --force \
	  $$(test -f build/repro-$$P.log && echo --timing build/repro-$$P.log)

# README.md's generated parts (the commands' measured times, the results) from the committed
# default-profile results and results/test_times.json; results/control/README.md from the control results.
readme: install
	$(PY) -m core.results check results/default
	$(PY) -m paper readme --params results/default/params.yaml --metrics results/default/metrics \
	  --readme README.md --control results/default/control.json --control results/control \
	  --control-readme results/control/README.md

# The composite positive control (core/control.py) outside the pipeline, which runs it at the
# profile's settings (the control_train and control stages): two SCLs trained on colour-rule /
# size-rule problems only, logits summed, masked; CONTROL: core.control options over the
# params, NAME: the result's name under results/control/ (results/control/README.md lists every
# file there: control.json first). The committed ones (all but control*.json: straight-through):
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

# The mask method's validation suite at the profile's mask settings (+ SET='masks.key=value'
# overrides): planted recovery, the planted complement protocol, the composite control,
# faithfulness and continuation on the profile's trained networks and its control (both from the
# pipeline, made first if needed).
# Writes results/validation/<profile>[-overrides].json and prints the table.
validate: install
	$(PY) -m core.config compose --profile $(PROFILE)
	$(DVC) repro train control
	$(PY) -m core.validate --profile $(PROFILE) $(SET)

bench: install
	$(PY) -m benchmarks $(if $(QUICK),--quick,)

clean-venv:
	rm -rf $(VENV)
