# Two commands do all set-up from a fresh clone: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: demo test test-fast test-under-load lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# An editable install compiles nothing; every socket actor imports the package, so its
# bytecode is written here (the driver refreshes it before actors start: cluster/bytecode.py).
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/python -m compileall -q sn40l_emu
	touch $(STAMP)

# The paper's CoE sweep (72 rows) on a local Ray; writes runs/coe-<UTC time>-<hash>/ and ends
# with a conclusion: latency at 150 experts, speedups, where each platform leaves HBM, paths.
demo: $(STAMP)
	$(BIN)/sn40l-emu coe

test: $(STAMP)
	$(BIN)/ruff check sn40l_emu tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

# The pure tier: no Ray, no cluster, no slow full-size runs (pytest markers in pyproject.toml); < 30 s.
# No test uses hypothesis, so its pytest plugin (seconds to import) stays off here.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -p no:hypothesispytest -m "not ray and not cluster and not slow"

# The whole suite beside two CPU-bound processes (tests/cpu_burner.py) that this target
# starts and stops itself, by pid, whatever the outcome: the suite must not flake on a busy machine.
test-under-load: $(STAMP)
	@set -e; \
	$(BIN)/python tests/cpu_burner.py & b1=$$!; \
	$(BIN)/python tests/cpu_burner.py & b2=$$!; \
	trap 'kill $$b1 $$b2 2>/dev/null || true' EXIT INT TERM; \
	echo "load: cpu burners pid $$b1 and $$b2"; \
	$(MAKE) --no-print-directory test

lint: $(STAMP)
	$(BIN)/ruff check sn40l_emu tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python bench/ring_chunks.py
	$(BIN)/python bench/allreduce_wall.py
	$(BIN)/python bench/tp_decode_bench.py
	$(BIN)/python bench/p2p_paths.py
	$(BIN)/python bench/wall_per_message.py
	$(BIN)/python bench/serve_wall.py
	$(BIN)/python bench/fleet_cluster.py
	$(BIN)/python bench/coe_sweep_wall.py
	$(BIN)/python bench/bringup_wall.py --no-bytecode
	$(BIN)/python bench/idle_threads.py
	$(BIN)/python bench/fleet_bringup.py --rounds 2

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache
