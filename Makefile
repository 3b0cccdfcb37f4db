# kneelib — set-up and the two commands the README promises.
#   make reproduce   create .venv, install kneelib, run the smoke profile (synthetic data, all tables/figures)
#   make test        create .venv, install kneelib + test tools, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kneelib-installed
PROFILE ?= smoke

.PHONY: setup test test-fast reproduce clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

reproduce: setup
	$(BIN)/kneelib reproduce --profile $(PROFILE)

clean:
	rm -rf runs/ .pytest_cache
