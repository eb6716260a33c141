# Two commands on a fresh machine:
#   make demo   install, start a local Ray cluster, build data, train, index, review, deploy,
#               answer sample requests
#   make test   install what is missing and run the whole test suite
# Also: make demo-down (stop the demo's cluster), make bench [BENCH_ARGS=--quick], make lint.
# The demo keeps its data apart from var/data: var/demo/<preset>/ (see cluster/demo.py).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
DEMO_PRESET ?= tiny
DEMO_CPUS ?= 2
DEMO_DASHBOARD_PORT ?= 8265
DEMO_HTTP_PORT ?= 8000
BENCH_ARGS ?=

.PHONY: browser install test test-unit test-integration lint demo demo-down bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

# The explain page's browser test drives Debian's chromium (never a downloaded browser); where it
# cannot be installed (no root, no apt), that one test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends chromium >/dev/null) ) || echo "chromium not installed: the browser test will skip"

test: install browser
	$(BIN)/python -m pytest tests --durations=25

test-unit: install
	$(BIN)/python -m pytest tests/unit

test-integration: install
	$(BIN)/python -m pytest tests/integration

lint: install
	$(BIN)/ruff check .

demo: install
	$(BIN)/python -m cluster.demo --preset $(DEMO_PRESET) --num-cpus $(DEMO_CPUS) \
		--dashboard-port $(DEMO_DASHBOARD_PORT) --http-port $(DEMO_HTTP_PORT)

demo-down: install
	$(BIN)/recsys down

bench: install
	$(BIN)/python -m benchmarks.run_all $(BENCH_ARGS)

clean:
	rm -rf var .pytest_cache .ruff_cache
