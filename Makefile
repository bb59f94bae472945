# The two commands of the README: `make dev` runs the whole stack, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test lint typecheck pytest bench sandbox worker install system-packages clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) system-packages

system-packages:
	@bash scripts/install-system-packages.sh

dev: install
	$(BIN)/trialist dev

test: install lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	docker-compose -f docker-compose.yml --env-file .env.example config --quiet

typecheck: $(STAMP)
	$(BIN)/mypy

# One worker per core (at most 4); worksteal evens out the long end-to-end tests.
pytest: $(STAMP)
	$(BIN)/pytest -q -n auto --maxprocesses=4 --dist worksteal

sandbox: $(STAMP)
	$(BIN)/python -m sandbox

worker: $(STAMP)
	$(BIN)/python worker.py

bench: $(STAMP)
	$(BIN)/python bench/follow_up_throughput.py
	$(BIN)/python bench/realtime.py

clean:
	rm -rf $(VENV) .data .mypy_cache .ruff_cache .pytest_cache
