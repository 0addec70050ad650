# Entry points: `make repro` (the pipeline), `make test` (the test suite), `make verify` (do our numbers come back?).
# All create .venv on first use from pyproject.toml + requirements/constraints.txt (+ test-constraints.txt).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(abspath $(VENV)/bin)
STAMP  := $(VENV)/.installed
# DVC stages call `python`; this makes it the project's interpreter.
export PATH := $(BIN):$(PATH)

.PHONY: install repro verify test smoke lab lint clean-venv

$(STAMP): pyproject.toml requirements/constraints.txt requirements/test-constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -c requirements/test-constraints.txt -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name vlrepro --display-name "vlrepro (.venv)" >/dev/null
	touch $(STAMP)

install: $(STAMP)

repro: install  # matrix runs in parallel (one per core, recorded in dvc.lock), then the rest of the pipeline
	$(BIN)/python -m vlrepro.matrix
	$(BIN)/dvc repro

verify: install  # re-run the pipeline (or STAGES="smcim data ...") in a scratch clone; compare with the committed metrics
	$(BIN)/python -m vlrepro.verify $(STAGES)

test: lint
	$(BIN)/python -m pytest

smoke: install  # the pipeline on tiny data, in a scratch copy (what the test suite runs)
	$(BIN)/python -m pytest -m pipeline -v

lab: install
	$(BIN)/jupyter lab notebooks/

lint: install
	$(BIN)/ruff check src tests benchmarks

clean-venv:
	rm -rf $(VENV)
