# The quick start: `make demo` and `make test` each work on a fresh machine with only
# python3 and make. They create .venv and install linnx into it when it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.linnx-installed
HOST_DEVICES := XLA_FLAGS=--xla_force_host_platform_device_count=8

.PHONY: demo test lint bench bench-quick clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,demo]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/linnx demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test: lint
	$(HOST_DEVICES) $(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_jit.py $(BENCH_JIT_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/bench.py --quick $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_jit.py --quick $(BENCH_JIT_ARGS)

clean:
	rm -rf $(VENV) demo-out bench-out
