# Two entry points: `make run` (the whole exchange) and `make test` (the suite).
# Both bootstrap .venv from nothing but a Python 3.11+ interpreter.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install clean-data

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found %s); set PYTHON=/path/to/python3.11" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python manage.py up

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Deletes the embedded PostgreSQL and Redis data of `make run` (asks first).
clean-data:
	@read -p "Delete ./var (all local exchange data)? [y/N] " ok && [ "$$ok" = y ] && rm -rf var || true
