# `make test` is the whole check on a fresh machine: venv, LocalStack, Postgres, lint, all tests.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: test venv services lint unit integration bench clean

test: venv services lint
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS) tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

venv: $(BIN)/login-etl

$(BIN)/login-etl: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 2>&1 | grep -v '^WARNING' || true
	$(BIN)/pip install -q -e '.[test]' 2>&1 | grep -v '^WARNING' || true
	$(BIN)/python -c "import login_etl, pytest, hypothesis"
	touch $@

services:
	bash scripts/postgres.sh
	bash scripts/localstack.sh
	bash scripts/pgbouncer.sh
	bash scripts/chromium.sh

lint: venv
	$(BIN)/ruff check service tests benchmarks

unit: venv
	$(BIN)/pytest -q tests/unit

integration: venv services
	$(BIN)/pytest -q tests/integration

bench: venv services
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache
