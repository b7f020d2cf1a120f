# A newcomer's targets: setup, demo, demo-federation, test, lint, typecheck, check (= lint +
# typecheck + a short fuzz run + test).
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo demo-federation test lint format typecheck check bench clean fuzz fuzz-short fuzz-corpus

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(PY) -m spoke.demo $(DEMO_ARGS)

# The national hub and two provinces' hubs, each a member of it (hubs under hubs).
demo-federation: setup
	$(PY) -m spoke.fedemo $(DEMO_ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup
	$(PY) bench/e2e.py --write $(BENCH_ARGS)

typecheck: setup
	$(VENV)/bin/mypy

check: lint typecheck fuzz-short test  # the tests last: their summary closes the output

# Coverage-guided fuzzing of every decoder of untrusted bytes (fuzz/README.md): a million
# inputs per target, and a short run of all of them (a minute divided among them) that check
# includes.
fuzz: setup
	$(PY) fuzz/run.py --runs 1000000 $(FUZZ_ARGS)

fuzz-short: setup
	$(PY) fuzz/run.py --total-seconds 60 --fresh $(FUZZ_ARGS)

# Recapture the seed corpus from the real code (fuzz/capture.py); commit what changed.
fuzz-corpus: setup
	$(PY) fuzz/capture.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis scratch fuzz/work
