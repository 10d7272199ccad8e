# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-faults bench bench-backlog lint typecheck check clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/blobflow validate providers workflows schemas
	$(BIN)/blobflow dev

test: $(STAMP) lint typecheck
	$(BIN)/pytest -m "not faults"

# Real `blobflow serve` processes under injected faults; minutes, not seconds.
test-faults: $(STAMP)
	$(BIN)/pytest -m faults tests/faults

# The standard workload against blobflow and the hand-written floor (bench/run.py).
bench: $(STAMP)
	$(BIN)/python -m bench.run

# 10,000 queued events worked off by one replica: peak memory and tasks (bench/backlog.py).
bench-backlog: $(STAMP)
	$(BIN)/python -m bench.backlog

lint: $(STAMP)
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
