# The two commands a newcomer needs: `make up` and `make test`. Everything else is a helper.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv/bin
PYTEST_ARGS ?=

.PHONY: help up down status logs test lint fmt bench clean

help:
	@echo "make up      install what is missing, start the whole system, print what runs where"
	@echo "make test    the whole test suite (starts the stack first)"
	@echo "make down | status | logs | lint | fmt | bench | clean"

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

lint:
	@scripts/bootstrap >/dev/null
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy
	$(VENV)/lint-imports

fmt:
	$(VENV)/ruff check --fix .
	$(VENV)/ruff format .

bench: up
	@if [ -f bench/__main__.py ]; then $(VENV)/python -m bench $(BENCH_ARGS); \
	else echo "no benchmarks yet (bench/__main__.py)"; fi

clean: down
	rm -rf .stack
