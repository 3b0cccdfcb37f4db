# kneelib — set-up and the two commands the README promises.
#   make reproduce   create .venv, install kneelib, run the smoke profile (synthetic data, all tables/figures)
#   make test        create .venv, install kneelib + test tools + Ray, run the unit tests, then the smoke sweep
#                    (finished runs are skipped) and nbval on the committed notebooks
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kneelib-installed
# this venv's JupyterLab saves widget state on save: a notebook run and saved there reopens with its widgets
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.d/kneelib.json
PROFILE ?= smoke

.PHONY: setup test test-fast reproduce clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,ray]'
	@touch $(STAMP)

$(LAB_OVERRIDES): | $(STAMP)
	@mkdir -p $(dir $@)
	@printf '{"@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": true}}\n' > $@

setup: $(STAMP) $(LAB_OVERRIDES)

test: setup
	$(BIN)/python -m pytest -q tests
	$(BIN)/kneelib reproduce --profile smoke
	$(BIN)/python -m pytest -q --nbval-lax notebooks

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" tests

reproduce: setup
	$(BIN)/kneelib reproduce --profile $(PROFILE)

clean:
	rm -rf runs/ .pytest_cache
