# The two commands of the README.
#   make run   the daemon on http://127.0.0.1:8797: SQLite + db driver, nothing to install
#   make test  installs every test backend, then lint, format and type checks and the whole suite
#
# Both create .venv on first use and reinstall only when the package metadata
# changes (the install is editable, so code changes need nothing).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Generous: the slowest tests wait for ZooKeeper sessions to expire; a hang,
# not a slow test, is what this catches.
PYTEST_TIMEOUT ?= 300
# Test modules run in this many processes (pytest-xdist), each module whole in
# one (--dist loadfile): a module's servers start once, and its tests keep
# their order. Two, not one per core: the suite waits on servers far more
# than it computes, and more processes only load the backends they share.
PYTEST_WORKERS ?= 2

.PHONY: run test backends lint clean

run: $(VENV)/.installed
	$(BIN)/servicegroup db upgrade
	exec $(BIN)/servicegroup serve

# backends first: on a fresh machine it may apt-get what the venv step needs.
test: backends $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q --timeout=$(PYTEST_TIMEOUT) -n $(PYTEST_WORKERS) --dist loadfile

backends:
	@bash scripts/install-test-backends.sh

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.installed-test: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	@touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
