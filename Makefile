# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO    ?= resources/graphs/digits_compare.json
DEMO_OUT ?= runs/demo
PYTEST_ARGS ?=

export TF_CPP_MIN_LOG_LEVEL ?= 2
export QT_QPA_PLATFORM ?= offscreen

.PHONY: venv demo test lint bench docs clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python -m compileall -q engine nodes app >/dev/null  # bytecode, as an installed package has it
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/heiti run $(DEMO) --out $(DEMO_OUT)
	@echo "results: $(DEMO_OUT)  (report: $(DEMO_OUT)/report.html)"

lint: $(STAMP)
	$(BIN)/ruff check engine nodes app tests bench

test: $(STAMP) lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

docs: $(STAMP)
	$(BIN)/heiti nodes --markdown > docs/nodes.md

clean:
	rm -rf $(VENV) .heiti runs .pytest_cache
