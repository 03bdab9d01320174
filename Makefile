# Two entry points: `make demo` (the main job on the embedded default) and `make test`.
# `make serve` serves the deployments against a Prefect server you run (PREFECT_API_URL).
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test bench setup serve clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "needs $(PYTHON) (or PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"

demo: setup
	$(BIN)/python flows/demo.py --workdir .demo

serve: setup
	$(BIN)/python flows/serve.py

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/pip install -q -e ".[bench]"
	for b in benchmarks/[a-z]*.py; do $(BIN)/python $$b --output benchmarks/results/$$(basename $$b .py).json || exit 1; done

clean:
	rm -rf .demo .pytest_cache .hypothesis
