# The two commands a new user needs (README.md): `make demo` and `make test`.
.PHONY: setup demo up down test lint clean

setup:
	scripts/setup.sh full

# The whole pipeline offline: Azurite + the dev host + a tiny Phi-3 fine-tuned on CPU + Prompt flow.
demo: setup
	.venv/bin/python -m devhost demo

# Keep the dev host running (POST /api/runs, status URLs, uploads to Azurite) / stop it.
up: setup
	.venv/bin/python -m devhost up

down:
	.venv/bin/python -m devhost down

# Lint + the whole offline test suite (replay, triggers, backends, validation, dev host, end to end).
test: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/python -m pytest

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

clean:
	rm -rf .venv .tools .run .pytest_cache .ruff_cache
