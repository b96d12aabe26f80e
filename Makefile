# ffem: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DATA   ?=
DEMO   ?= demo_out
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install test test-fast demo bench lint lfw-view1 clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile

demo: install
	DATA="$(DATA)" DEMO="$(DEMO)" bash docs/demo.sh

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lfw-view1: install
	$(BIN)/python bench/lfw_view1.py

lint: install
	$(BIN)/ruff check ffem_cli tests bench
	$(BIN)/ruff format --check ffem_cli tests bench

clean:
	rm -rf $(DEMO) .pytest_cache
