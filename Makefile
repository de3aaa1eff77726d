# The two commands a newcomer needs: `make up` and `make test`. Everything else is a helper.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv/bin
PYTEST_ARGS ?=

.PHONY: help up down status logs test test-faults lint fmt bench clean ops-screenshot checkout-screenshot

help:
	@echo "make up      install what is missing, start the whole system, print what runs where"
	@echo "make test    the whole test suite (starts the stack first)"
	@echo "make test-faults   the fault suite alone, larger, printing its table"
	@echo "make down | status | logs | lint | fmt | bench | clean"
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

test: up
	$(VENV)/pytest $(PYTEST_ARGS)

# The fault suite alone, larger, with its table printed (make test runs it at the default size).
test-faults: up
	FAULT_PAYMENTS=$${FAULT_PAYMENTS:-300} $(VENV)/pytest -s --show-capture=no tests/faults $(PYTEST_ARGS)

lint:
	@scripts/bootstrap >/dev/null
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy
	$(VENV)/lint-imports

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
