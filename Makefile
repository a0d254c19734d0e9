# Every developer command. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: help install run worker demo test test-fast test-system lint typecheck format bench bench-instructions chaos clean

help: ## List the targets
	@awk -F':.*## ' '/^[a-z-]+:.*## /{printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Python 3.11+ is needed (found: $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed ## Create the venv and install the project with its dev tools

run: install ## Private redis-server (unless REDIS_URL is set) + gunicorn + worker with scheduler
	APP_ENV=$${APP_ENV:-development} $(BIN)/agora-webhook dev

demo: install ## Service + worker + Agora simulator + S3: a clean recording and a failing one
	$(BIN)/python -m demo

worker: install ## One RQ worker with the scheduler, against REDIS_URL
	$(BIN)/python -m workers

# Two processes: the slow system tests mostly wait (RQ's takeover of a killed job, a
# failover, alert deadlines), and the rest of the suite runs meanwhile. One test at a
# time to each, longest first (tests/conftest.py), so neither ends up with the long tail.
TEST_PROCESSES ?= 2
PYTEST_PARALLEL = -n $(TEST_PROCESSES) --dist load --maxschedchunk 1

test: install lint typecheck ## What CI runs: lint, types, then the whole suite (own redis-servers)
	$(BIN)/pytest $(PYTEST_PARALLEL)

test-fast: install ## The suite without lint, types or the slow system tests
	$(BIN)/pytest $(PYTEST_PARALLEL) -m 'not system'

test-system: install ## Only the tests that start real processes
	$(BIN)/pytest $(PYTEST_PARALLEL) -m system

lint: install ## ruff check, ruff format --check, import contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install ## mypy strict on webhook/ and workers/
	$(BIN)/mypy

format: install ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install ## Ingestion vs the durable floor, reconciliation throughput, reads at 1k vs 100k sessions, Redis instructions per callback
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.reconcile
	$(BIN)/python -m bench.read
	@if command -v valgrind >/dev/null; then $(BIN)/python -m bench.instructions; \
	else echo "(valgrind is not installed: no instruction counts)"; fi

bench-instructions: install ## Redis's instructions per callback under callgrind: the record script vs the floor's SET
	$(BIN)/python -m bench.instructions

chaos: install ## Ledger under kill -9 of web and RQ workers and a Redis restart (20,000 callbacks)
	$(BIN)/python -m bench.chaos --callbacks $${CHAOS_CALLBACKS:-20000}

clean: ## Remove the venv, local Redis data and caches
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
