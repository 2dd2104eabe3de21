# One command to run the engine, one to run the tests; both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8765

.PHONY: setup run test test-fast lint bench bench-cluster clean redis-server

# `make run` installs the package alone: what the embedded default needs, nothing optional
$(BIN)/collab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	@touch $@

# `make test` adds the test tools, the AI extra (torch, transformers), whose backend is tested,
# and the cluster extra (redis), whose store and bus are tested against a real redis-server
$(VENV)/.test-extras: $(BIN)/collab pyproject.toml
	$(BIN)/pip install -q -e '.[test,ai,cluster]'
	@touch $@

# the tests start redis-servers of their own; Debian's package where there is none
redis-server:
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }

tests/js/node_modules/.package-lock.json: tests/js/package.json tests/js/package-lock.json
	npm ci --prefix tests/js --no-audit --no-fund --loglevel=error

setup: $(VENV)/.test-extras tests/js/node_modules/.package-lock.json redis-server

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

# Hocuspocus and its Redis extension (pinned), the anchor of the cluster benchmark only
tests/bench/hocuspocus/node_modules/.package-lock.json: tests/bench/hocuspocus/package.json tests/bench/hocuspocus/package-lock.json
	npm ci --prefix tests/bench/hocuspocus --no-audit --no-fund --loglevel=error

bench-cluster: setup tests/bench/hocuspocus/node_modules/.package-lock.json
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python tests/bench/cluster_fanout.py

clean:
	rm -rf $(VENV) tests/js/node_modules tests/bench/hocuspocus/node_modules .collab
