# xwvm — the two commands: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install system clean bench

$(STAMP): pyproject.toml
	./scripts/install-system.sh
	./scripts/install-vm-host.sh
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

system:
	./scripts/install-system.sh

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	./scripts/install-system.sh
	./scripts/install-vm-host.sh
	$(BIN)/ruff check .
	$(BIN)/pytest -q -ra

demo: $(STAMP)
	./scripts/install-system.sh
	./scripts/install-vm-host.sh
	$(BIN)/python scripts/demo.py

bench: $(STAMP)
	$(BIN)/python bench/assign.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
