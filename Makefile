# The README's two set-up commands are `make demo` and `make test`. Each creates
# .venv when it is missing: torch first (pinned by TORCH), then the project, so that
# pip never resolves an unpinned torch for it.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.regulab-installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "regulab needs Python >= 3.11; run: make PYTHON=python3.11 ..."; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	touch $(STAMP)

demo: $(STAMP)  ## the weight-decay experiment; extra options: make demo ARGS="--seeds 10"
	$(BIN)/regulab demo $(ARGS)

test: $(STAMP)  ## the test suite; extra options: make test ARGS="-k cli"
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check

bench: $(STAMP)  ## every benchmark in benchmarks/, quick mode
	for f in benchmarks/*.py; do $(BIN)/python $$f --quick || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache src/*.egg-info
