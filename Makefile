# Every target bootstraps itself: a fresh machine needs only Python 3.11+ and pip.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_WORKERS ?= 2

.PHONY: setup demo serve test test-deep bench lint lock clean

# Installs exactly the versions in requirements.lock (the ones CI tested), within pyproject's ranges.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/tongka demo

# The clearing centre over HTTP on a demo day kept in .tongka-demo (made on first use);
# create keys with: .venv/bin/tongka --data-dir .tongka-demo keys create --role finance
DEMO_HOME := .tongka-demo
serve: $(STAMP)
	test -d $(DEMO_HOME) || $(BIN)/tongka demo --keep $(DEMO_HOME)
	$(BIN)/tongka --data-dir $(DEMO_HOME) serve --demo-keys

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q

# Ten times every property test's examples, randomised: slower, for nightly runs.
test-deep: $(STAMP)
	TONGKA_HYPOTHESIS_PROFILE=deep $(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q

# Re-pin requirements.lock to what is installed now (after changing pyproject.toml's ranges).
lock: $(STAMP)
	{ echo "# The versions CI tested: make installs with these as constraints (pip install -c)."; \
	  echo "# Regenerate after changing pyproject.toml: make lock"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v -i '^tongka'; } > requirements.lock

bench: $(STAMP)
	$(BIN)/python -m pytest bench --benchmark-enable --benchmark-only -p no:xdist -q -s

lint: $(STAMP)
	$(BIN)/ruff check clearing tariffs readers settlement tongka tests bench tools
	$(BIN)/mypy clearing tariffs readers settlement tongka
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks
