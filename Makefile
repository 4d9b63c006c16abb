# Every target bootstraps itself: a fresh machine needs only Python 3.11+ and pip.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_WORKERS ?= 2

.PHONY: setup demo test bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/tongka demo

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q

bench: $(STAMP)
	$(BIN)/python -m pytest bench --benchmark-enable --benchmark-only -p no:xdist -q -s

lint: $(STAMP)
	$(BIN)/ruff check clearing tariffs readers settlement tests bench tools
	$(BIN)/mypy clearing tariffs readers settlement

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks
