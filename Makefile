# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv (Python 3.11) and installs the project into it if needed.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install demo test test-fast bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# The main job on the embedded default: local Ray started in-process, Parquet history
# under history/, synthetic fundus data generated in memory.
demo: install
	$(VENV)/bin/arc run configs/fundus-cpu.yaml --cycles 3

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow and not cluster" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
