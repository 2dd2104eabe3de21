# One command to run the engine, one to run the tests; both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8765

.PHONY: setup run test test-fast lint bench clean

# `make run` installs the package alone: what the embedded default needs, nothing optional
$(BIN)/collab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	@touch $@

# `make test` adds the test tools, the AI extra (torch, transformers), whose backend is tested,
# and the disk extra (watchfiles), whose working-tree sync is tested
$(VENV)/.test-extras: $(BIN)/collab pyproject.toml
	$(BIN)/pip install -q -e '.[test,ai,disk]'
	@touch $@

tests/js/node_modules/.package-lock.json: tests/js/package.json tests/js/package-lock.json
	npm ci --prefix tests/js --no-audit --no-fund --loglevel=error

setup: $(VENV)/.test-extras tests/js/node_modules/.package-lock.json

run: $(BIN)/collab
	$(BIN)/collab serve --port $(PORT)

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q

test-fast: setup
	$(BIN)/pytest -q -m "not slow"

bench: setup
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python tests/bench/fanout_matrix.py --rounds 2 --duration 6

clean:
	rm -rf $(VENV) tests/js/node_modules .collab
