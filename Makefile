# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export CLOUDWASTE_HOME ?= $(CURDIR)/.cloudwaste
STAMP := $(VENV)/.installed

.PHONY: venv demo test ui lint format benchmark clean

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: venv ## simulated cloud -> embedded SQLite warehouse -> exports + model, then a summary
	$(BIN)/python -m cloudwaste_pipeline.demo

test: venv ## the whole suite (PostgreSQL tests skip with a reason when it is unreachable)
	scripts/test-tools
	$(BIN)/python -m pytest

ui: venv ## the Dagster UI on the demo instance, at http://127.0.0.1:3000
	$(BIN)/python -m cloudwaste_pipeline.demo --ui

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

benchmark: venv ## figures, not tests: loading the code location, the AWS and Azure scans, 100k user actions (embedded SQLite), training on 100k rows
	$(BIN)/python -m benchmarks.import_cost
	$(BIN)/python -m benchmarks.scan_aws
	$(BIN)/python -m benchmarks.scan_azure
	$(BIN)/python -m benchmarks.user_actions 2>/dev/null
	$(BIN)/python -m benchmarks.train

clean:
	rm -rf $(CLOUDWASTE_HOME)
