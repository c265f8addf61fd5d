# The two commands a new user needs (README.md): `make demo` and `make test`.
.PHONY: setup demo demo-azure up down check test lint clean

setup:
	scripts/setup.sh full

# The whole pipeline offline: Azurite + the dev host + a tiny Phi-3 fine-tuned on CPU + Prompt flow.
demo: setup
	.venv/bin/python -m devhost demo

# The same demo through the app's Azure code path (BACKEND=azureml: azure-ai-ml, azure-identity, mlflow
# over HTTPS) against the Azure ML emulator, which runs the job and the deployments on the offline stack.
demo-azure: setup
	.venv/bin/python -m devhost demo --azure

# Keep the dev host running (POST /api/runs, status URLs, uploads to Azurite) / stop it.
up: setup
	.venv/bin/python -m devhost up

down:
	.venv/bin/python -m devhost down

# The static checks, each failing the target: lint and format; the layer contracts of
# [tool.importlinter] (pyproject.toml); types ([tool.mypy]) in the packages that carry the
# pipeline's logic; no unaudited secret in any tracked file (scripts/check_secrets.sh).
check: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports --no-logo --cache-dir .tools/cache/import-linter
	.venv/bin/mypy core orchestrators activities backends storage dashboard
	scripts/check_secrets.sh

# The static checks + the whole offline test suite (replay, triggers, backends, validation, dev host,
# end to end), test files spread over 2 workers (pytest-xdist; a file's tests stay on one worker, in order).
test: check
	.venv/bin/python -m pytest -n 2 --dist loadfile

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

clean:
	rm -rf .venv .tools .run .pytest_cache .ruff_cache
