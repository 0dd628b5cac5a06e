# One-line targets; `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-slow lint bench docs clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/tunetext train --data sms_spam --model minilm-l6 --output runs/demo --overwrite
	$(BIN)/tunetext predict runs/demo 'You are a winner you have been specially selected to receive $$1000 cash or a $$2000 award.' "Hey, just wanted to check if we're still on for dinner tonight? Let me know!"

test: setup lint
	scripts/ensure-chromium && $(BIN)/pytest

test-slow: setup
	$(BIN)/pytest -m slow

lint: setup
	$(BIN)/ruff check tunetext tests benchmarks && $(BIN)/mypy tunetext && $(BIN)/lint-imports

bench: setup
	$(BIN)/python benchmarks/train_speed.py

docs: setup
	$(BIN)/python -c "from tunetext.data.builtin import BUILTIN; from tunetext.data.cards import cards_markdown; print(cards_markdown(BUILTIN.values()), end='')" > docs/datasets.md

clean:
	rm -rf $(VENV) runs build *.egg-info
