# The quickstart: `make up` serves the apps at http://localhost:8080/, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Extra flags, e.g. make up ARGS="--workers 3"   make test PYTEST_ARGS="-m 'not browser'"
ARGS ?=
PYTEST_ARGS ?=
PY_DIRS := bokeh_stack harness tests apps bench examples

.PHONY: up test test-fast lint check bench wheel clean

up: $(VENV)/.runtime
	$(BIN)/bokeh-stack up $(ARGS)

check: $(VENV)/.runtime
	$(BIN)/bokeh-stack check $(ARGS)

test: $(VENV)/.test .venv-salt/.installed
	@scripts/system-deps test
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)
	$(BIN)/python -m pytest --durations=30 $(PYTEST_ARGS)

# Unit tests only: no processes, a few seconds.
test-fast: $(VENV)/.test
	$(BIN)/python -m pytest -m "not stack and not docker and not salt and not redis" $(PYTEST_ARGS)

# The benchmarks against the alternatives (bench/README.md), 2 h 30 to 3 h 30 on 2 cores (as fast as the host),
# alone on the machine (the plain setups' churn to 5,000 sessions is most of it): writes docs/benchmarks.md and its
# chart. One part: make bench ARGS="static"; the workers: ARGS="--workers 3".
bench: $(VENV)/.test
	@scripts/system-deps test
	$(BIN)/python -m bench $(ARGS)

lint: $(VENV)/.test
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)

$(VENV)/.runtime: requirements.lock pyproject.toml
	@scripts/system-deps up
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

$(VENV)/.test: $(VENV)/.runtime requirements-test.lock
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-test.lock
	touch $@

# Salt in its own venv on Debian's python3, for the fast Salt tests (the real ones run Salt inside a container).
.venv-salt/.installed: requirements-salt.lock
	@scripts/system-deps test
	test -x .venv-salt/bin/python || /usr/bin/python3 -m venv .venv-salt
	.venv-salt/bin/pip install --quiet --disable-pip-version-check -r requirements-salt.lock
	touch $@

# The bokeh-stack wheel in dist/: what the Salt formula installs on a host (the images build their own the same way).
wheel: $(VENV)/.runtime
	rm -rf dist
	$(BIN)/pip wheel --quiet --disable-pip-version-check --no-deps -w dist .

clean:
	rm -rf $(VENV) .venv-salt .run dist build .pytest_cache .ruff_cache *.egg-info
