# Two commands do all set-up from a fresh clone: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sn40l-emu coe --json out/coe.json --out out/

test: $(STAMP)
	$(BIN)/ruff check sn40l_emu tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check sn40l_emu tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python bench/ring_chunks.py
	$(BIN)/python bench/allreduce_wall.py
	$(BIN)/python bench/tp_decode_bench.py
	$(BIN)/python bench/p2p_paths.py
	$(BIN)/python bench/coe_sweep_wall.py
	$(BIN)/python bench/bringup_wall.py

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache
