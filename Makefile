# Two commands a newcomer needs: `make run` (the relay, embedded default) and `make test`.
# Each bootstraps .venv: `run` installs only what the relay needs, `test` adds the development tools.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 0.0.0.0
PORT ?= 8888

.PHONY: venv run test lint bench clean system-deps

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Stamp files: reinstall when pyproject.toml changes.
$(VENV)/.relay-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[relay]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.dev-installed

## Run the relay on $(HOST):$(PORT), in memory, no other service needed.
run: $(VENV)/.relay-installed
	$(BIN)/wslarkbot serve --host $(HOST) --port $(PORT)

## Run the whole test suite (installs into .venv on first use).
test: $(VENV)/.dev-installed
	$(BIN)/pytest $(PYTEST_ARGS)

## The system programs some tests need (Debian/Ubuntu, as root): without them those tests skip and say so.
system-deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  redis-server nginx libnginx-mod-nchan libnginx-mod-http-lua lua-cjson apache2-utils chromium systemd >/dev/null

## ruff and mypy, as CI runs them.
lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests examples bench
	$(BIN)/mypy

## Benchmarks: our relay against nginx+nchan, one run (see docs/performance.md; needs wrk).
bench: $(VENV)/.dev-installed
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
