# Two commands do all set-up on a fresh machine:
#   make demo   - create/reuse .venv, install the pinned set, run the main job on the built-in default
#   make test   - create/reuse .venv, install the pinned set, check the import layers (lint-imports), run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# pytest-xdist workers (each runs whole test files; every test is single-threaded)
JOBS   ?= 2

.PHONY: demo test setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -c constraints.txt -e '.[torch,test,fast]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ms-ddpm verify $(ARGS)

test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest parity_tests -n $(JOBS) --dist loadfile $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .cache rank_0
