# Two entry points: `make run` (the whole exchange) and `make test` (the suite).
# Both bootstrap .venv from nothing but a Python 3.11+ interpreter.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install clean-data browser-deps

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found %s); set PYTHON=/path/to/python3.11" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python manage.py up

# The browser test needs Chromium: installed first when missing (see browser-deps).
test: $(STAMP) browser-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Deletes the embedded PostgreSQL and Redis data of `make run` (asks first).
clean-data:
	@read -p "Delete ./var (all local exchange data)? [y/N] " ok && [ "$$ok" = y ] && rm -rf var || true

# Chromium for the browser test (tests/e2e/test_browser.py), from Debian packages.
# Idempotent: does nothing when /usr/bin/chromium exists; installs it as root or
# with passwordless sudo; otherwise says how (the browser test then fails, clearly).
browser-deps:
	@if [ -x /usr/bin/chromium ]; then \
		echo "chromium: /usr/bin/chromium"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null && command -v apt-get >/dev/null; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else \
		echo "chromium is missing and cannot be installed here: run 'apt-get install -y chromium chromium-driver' as root"; \
	fi
