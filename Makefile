# `make test` is the whole check on a fresh machine: venv, LocalStack, Postgres, lint, all tests.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: test venv services lint unit integration compose-test bench bench-capacity bench-ledger profile mutate clean

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
	bash scripts/debian-package.sh pgbouncer pgbouncer
	bash scripts/debian-package.sh faketime faketime libfaketime
	bash scripts/debian-package.sh chromium chromium

lint: venv
	$(BIN)/ruff check service tests benchmarks
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q tests/unit

integration: venv services
	$(BIN)/pytest -q tests/integration

# `docker compose up` end to end with local stand-in images (also part of `make test`,
# as tests/integration/test_compose.py).
compose-test:
	bash scripts/compose-test.sh

# `make bench BENCH_ARGS=--strict` exits 1 when a target is missed.
BENCH_ARGS ?=
bench: venv services
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/capacity.py

# Capacity figures for docs/scaling.md: writers direct and through PgBouncer, the worker's CPU.
bench-capacity: venv services
	$(BIN)/python benchmarks/capacity.py

# Where the worker's CPU goes per message, by stage (py-spy under load; docs/performance.md).
profile: venv services
	$(BIN)/pip install -q 'py-spy>=0.3.14' 2>&1 | grep -v '^WARNING' || true
	$(BIN)/python benchmarks/profile.py

# The ledger before/after: bytes per message, Postgres CPU per row, pruning 1M vs 10M ids.
bench-ledger: venv services
	$(BIN)/python benchmarks/ledger.py

# Mutation score of tests/unit over messages, masking, retrying, settings and pipeline (mutmut,
# then the module-level constants): tens of minutes on 2 cores, so not part of `make test`.
# MUTATE_MODULES=retrying limits it to some modules.
MUTATE_MODULES ?=
mutate: venv
	$(BIN)/pip install -q 'mutmut==3.8.1' 2>&1 | grep -v '^WARNING' || true
	$(BIN)/python scripts/mutate.py $(MUTATE_MODULES); a=$$?; \
	  $(BIN)/python scripts/mutate_constants.py $(MUTATE_MODULES); b=$$?; \
	  [ $$a -eq 0 ] && [ $$b -eq 0 ]

clean:
	rm -rf $(VENV) .pytest_cache build/mutate build/mutate-constants
