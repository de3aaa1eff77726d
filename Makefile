# The two commands a newcomer needs: `make up` and `make test`. Everything else is a helper.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv/bin
PYTEST_ARGS ?=
# The stack's layout, passed to scripts/stack through the environment (make exports command-line
# variables): make up WORKERS=3 KAFKA_BROKERS=3 STACK_PORT_OFFSET=100. Unset, scripts/stack uses
# what this checkout's stack was made with (.stack/layout.json, .env), else 1 worker, 1 broker, 0.

.PHONY: help up down status logs test test-faults lint fmt bench clean ops-screenshot checkout-screenshot

help:
	@echo "make up      install what is missing, start the whole system, print what runs where"
	@echo "make test    the whole test suite (starts the stack first)"
	@echo "make test-faults   the fault suite alone, larger, printing its table"
	@echo "make down | status | logs | lint | fmt | bench | clean"
	@echo "layout: make up WORKERS=3 KAFKA_BROKERS=3 STACK_PORT_OFFSET=100 (kept for later commands)"
	@echo "make ops-screenshot   save docs/ops.png of the running /ops page"
	@echo "make checkout-screenshot   pay on /checkout, save docs/checkout.png"

up:
	@scripts/bootstrap
	@scripts/stack up

down:
	@if [ -x $(VENV)/python ]; then scripts/stack down; else echo "nothing to stop"; fi

status:
	@scripts/stack status

logs:
	@scripts/stack logs $(NAME)

# Tests read the stack's settings from .env (Settings); the few that read API_URL / HOOKS_URL /
# WORKER_URL from the environment get this stack's, so a stack on shifted ports is the one tested.
STACK_URLS = API_URL=$${API_URL:-$$(sed -n 's/^API_URL=//p' .env)} \
	HOOKS_URL=$${HOOKS_URL:-$$(sed -n 's/^HOOKS_URL=//p' .env)} \
	WORKER_URL=$${WORKER_URL:-$$(sed -n 's/^WORKER_URL=//p' .env)}

test: up
	$(STACK_URLS) $(VENV)/pytest $(PYTEST_ARGS)

# The fault suite alone, larger, with its table printed (make test runs it at the default size).
test-faults: up
	$(STACK_URLS) FAULT_PAYMENTS=$${FAULT_PAYMENTS:-300} \
	  $(VENV)/pytest -s --show-capture=no tests/faults $(PYTEST_ARGS)

lint:
	@scripts/bootstrap >/dev/null
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy
	$(VENV)/lint-imports
	$(VENV)/python scripts/audit_deps.py

fmt:
	$(VENV)/ruff check --fix .
	$(VENV)/ruff format .

ops-screenshot:
	$(VENV)/python -m tests.screenshots ops

checkout-screenshot:
	$(VENV)/python -m tests.screenshots checkout

bench: up
	@if [ -f bench/__main__.py ]; then $(VENV)/python -m bench $(BENCH_ARGS); \
	else echo "no benchmarks yet (bench/__main__.py)"; fi

clean: down
	rm -rf .stack
