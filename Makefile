# Two commands on a fresh machine (README): `make repro` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: help venv repro study robustness test test-fast lock clean-venv

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	@touch $@

venv: $(VENV)/.installed  ## create .venv and install the pinned requirements

repro: venv  ## run the whole pipeline (dvc repro) on the synthetic default
	dvc repro

study: venv  ## five variants x 8 seeds + the curation-precision ablation as a DVC experiment; report in reports/study/
	python scripts/studies.py study

robustness: venv  ## the default re-run on emulated other machines and in other worlds; reports/robustness.md
	python scripts/studies.py robustness
	python scripts/studies.py table

test: venv  ## the whole test suite
	pytest -q

test-fast: venv  ## the fast suite (no slow end-to-end tests)
	pytest -q -m "not slow"

lock: venv  ## re-pin requirements.txt from the installed environment
	{ head -n 2 requirements.txt; $(VENV)/bin/pip freeze --exclude-editable; echo "-e ."; } > requirements.lock.tmp && mv requirements.lock.tmp requirements.txt

clean-venv:  ## remove the virtual environment
	rm -rf $(VENV)
