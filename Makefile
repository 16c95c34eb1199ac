# iqa-study: the two commands of the README.
#   make demo   create .venv, install, run the main job on the embedded offline sample (runs/demo/)
#   make test   create/update .venv, run the test-suite (no network)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.iqa-study-installed
SHARED ?= $(or $(IQA_STUDY_SHARED),../shared)
SR2AFC := $(wildcard $(SHARED)/data/sr-preference-2afc/votes.csv)

.PHONY: demo test venv clean-demo bench repro repro-quick

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip==26.3"
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/iqa-study demo --out runs/demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/bench_harness.py --out reports/perf $(if $(SR2AFC),--sr2afc $(dir $(SR2AFC)))
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/bench_agree.py --out reports/perf
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/bench_train.py --out reports/perf

clean-demo:
	rm -rf runs/demo

# the paper at small scale (docs/repro.md): 3 seeds, resumable (rerun to continue); --quick = one seed
repro: $(STAMP)
	IQA_STUDY_SHARED=$(SHARED) HF_HUB_OFFLINE=1 $(BIN)/iqa-study repro --out runs/mini_repro --report reports/mini_repro

repro-quick: $(STAMP)
	IQA_STUDY_SHARED=$(SHARED) HF_HUB_OFFLINE=1 $(BIN)/iqa-study repro --quick --out runs/mini_repro_quick --report reports/mini_repro_quick
