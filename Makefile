# The two commands: `make run` starts the helpdesk on embedded defaults,
# `make test` runs the whole test suite. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast install install-test lint format

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Browser tests drive Debian's chromium; it is installed once, never downloaded
# by a test tool.
install-test: install
	@command -v chromium >/dev/null 2>&1 || command -v /usr/bin/chromium >/dev/null 2>&1 || \
		{ echo "Installing Debian's chromium for the browser tests"; \
		  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
		  sudo sh -c 'apt-get update -qq && apt-get install -y -qq chromium >/dev/null'; }
	@# nginx is the multi-host test's load balancer; promtool (Debian's
	@# prometheus package) checks the example alert rules.
	@command -v nginx >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || \
		{ echo "Installing Debian's nginx and prometheus for the deployment tests"; \
		  (apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx prometheus >/dev/null) || \
		  sudo sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx prometheus >/dev/null'; }

run: install
	$(BIN)/python -m helpdesk.launcher run

test: install-test
	$(BIN)/python -m helpdesk.launcher test $(PYTEST_ARGS)

# The tests that stay in the pytest process: no browser, no server or process
# of their own (the markers are described in pyproject.toml).
test-fast: install
	$(BIN)/python -m helpdesk.launcher test -m "not browser and not e2e" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
