# The two commands users need are documented in README.md.
.PHONY: setup test lint clean

setup:
	scripts/setup.sh dev

# Lint + the whole offline test suite (replay, triggers, backends, validation, Azurite).
test: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/python -m pytest

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

clean:
	rm -rf .venv .tools .pytest_cache .ruff_cache
