# Two commands a newcomer needs: `make run` (the relay, embedded default) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 0.0.0.0
PORT ?= 8888

.PHONY: venv run test lint bench clean

$(BIN)/wslarkbot: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/wslarkbot

## Run the relay on $(HOST):$(PORT), in memory, no other service needed.
run: venv
	$(BIN)/wslarkbot serve --host $(HOST) --port $(PORT)

## Run the whole test suite (installs into .venv on first use).
test: venv
	$(BIN)/pytest $(PYTEST_ARGS)

## ruff and mypy, as CI runs them.
lint: venv
	$(BIN)/ruff check src tests examples bench
	$(BIN)/mypy

## Benchmarks: our relay against nginx+nchan, one run (see docs/performance.md).
bench: venv
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
