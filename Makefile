# One command to run the engine, one to run the tests; both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8765

WEB := collab/web

.PHONY: setup web chromium run test test-fast lint bench bench-web bench-cluster clean redis-server

# `make run` installs the package alone: what the embedded default needs, nothing optional
$(BIN)/collab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	@touch $@

# `make test` adds the test tools, the AI extra (torch, transformers), whose backend is tested,
# the cluster extra (redis), whose store and bus are tested against a real redis-server, and the
# disk extra (watchfiles), whose working-tree sync is tested
$(VENV)/.test-extras: $(BIN)/collab pyproject.toml
	$(BIN)/pip install -q -e '.[test,ai,cluster,disk]'
	@touch $@

# the tests start redis-servers of their own; Debian's package where there is none
redis-server:
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }

tests/js/node_modules/.package-lock.json: tests/js/package.json tests/js/package-lock.json
	npm ci --prefix tests/js --no-audit --no-fund --loglevel=error

# the web editor: its pinned npm packages (playwright-core too, for its browser tests), built
# by esbuild into collab/web/dist, which `collab serve` serves at /
$(WEB)/node_modules/.package-lock.json: $(WEB)/package.json $(WEB)/package-lock.json
	npm ci --prefix $(WEB) --no-audit --no-fund --loglevel=error

$(WEB)/dist/index.html: $(WEB)/node_modules/.package-lock.json $(WEB)/build.mjs $(wildcard $(WEB)/src/*)
	npm run --prefix $(WEB) --silent build

web: $(WEB)/dist/index.html

# the browser tests drive Debian's Chromium (installed here where it is missing; needs root)
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk fonts-noto-color-emoji; }

setup: $(VENV)/.test-extras tests/js/node_modules/.package-lock.json redis-server web chromium

run: $(BIN)/collab web
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

# keystroke to paint between two browsers, ours beside the reference y-websocket server
bench-web: setup
	$(BIN)/python tests/bench/web_keystroke.py --keys 500 --rounds 2

# Hocuspocus and its Redis extension (pinned), the anchor of the cluster benchmark only
tests/bench/hocuspocus/node_modules/.package-lock.json: tests/bench/hocuspocus/package.json tests/bench/hocuspocus/package-lock.json
	npm ci --prefix tests/bench/hocuspocus --no-audit --no-fund --loglevel=error

bench-cluster: setup tests/bench/hocuspocus/node_modules/.package-lock.json
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python tests/bench/cluster_fanout.py

clean:
	rm -rf $(VENV) tests/js/node_modules tests/bench/hocuspocus/node_modules $(WEB)/node_modules \
		$(WEB)/dist .collab test-artifacts
