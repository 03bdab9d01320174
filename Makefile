# Two entry points: `make demo` (the main job on the embedded default) and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test bench setup clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "needs $(PYTHON) (or PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"

demo: setup
	$(BIN)/pamingest demo --workdir .demo

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf .demo .pytest_cache .hypothesis
