# `make demo` and `make test` work on a fresh machine: they create .venv when missing and
# install aicc (editable) with its dev extra before doing anything else.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.aicc-installed

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	AICC_DISABLE_PLUGIN_AUTOLOAD=1 $(PY) -m pytest -q -n 2 tests

bench: $(STAMP)
	$(PY) benchmarks/compile_scaling.py

clean:
	rm -rf $(VENV) aicc-ir demo-out
