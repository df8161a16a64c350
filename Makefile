# The quick start: `make demo` and `make test` each work on a fresh machine with only
# python3 and make. They create .venv and install linnx into it when it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.linnx-installed
HOST_DEVICES := XLA_FLAGS=--xla_force_host_platform_device_count=8

.PHONY: demo test lint bench bench-quick bench-migrate docs docs-serve docs-check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,demo,docs]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/linnx demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks docs/hooks
	$(BIN)/ruff format --check src tests benchmarks docs/hooks
	$(BIN)/mypy

test: lint
	$(HOST_DEVICES) $(BIN)/python -m pytest -q $(PYTEST_ARGS)
	# The bridge and the spec again with every speed shortcut off (linnx.bridge._fast): the
	# general route must pass the same tests, and a shortcut that ignores the switch fails.
	LINNX_FAST=0 $(HOST_DEVICES) $(BIN)/python -m pytest -q -p no:randomly tests/bridge tests/spec

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_jit.py $(BENCH_JIT_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/bench.py --quick $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_jit.py --quick $(BENCH_JIT_ARGS)

# Checkpoint migration at real sizes (0.1 and 1.5 GiB; ~10 min, ~4 GiB of scratch disk).
bench-migrate: $(STAMP)
	$(BIN)/python benchmarks/bench_migrate.py $(BENCH_ARGS)

# The documentation site (mkdocs.yml): built into site/, warnings are errors.
DOCS_ENV := NO_MKDOCS_2_WARNING=1

docs: $(STAMP)
	$(DOCS_ENV) $(BIN)/mkdocs build --strict

docs-serve: $(STAMP)
	$(DOCS_ENV) $(BIN)/mkdocs serve

# The site as a reader sees it: headless Chromium (Debian package `chromium`) opens the home
# page and an API page, takes screenshots into docs-check-out/ and checks the navigation and a
# rendered code block. Not part of `make test`: a fresh machine has no Chromium.
docs-check: docs
	$(BIN)/python tests/docs/site_check.py site docs-check-out

clean:
	rm -rf $(VENV) demo-out bench-out site docs-check-out
