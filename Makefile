.PHONY: run test lint format typecheck openapi bench

run:        ## start Rotor (embedded PostgreSQL unless DATABASE_URL is set)
	./scripts/serve

test:       ## lint, type-check and the whole test suite
	./scripts/test

lint:
	./scripts/bootstrap dev && .venv/bin/ruff check . && .venv/bin/ruff format --check .

format:
	./scripts/bootstrap dev && .venv/bin/ruff format . && .venv/bin/ruff check --fix .

typecheck:
	./scripts/bootstrap dev && .venv/bin/mypy

openapi:    ## regenerate the committed OpenAPI document
	./scripts/bootstrap && .venv/bin/rotor openapi > openapi/openapi.json

bench:      ## the benchmark (see bench/README.md)
	./scripts/bootstrap dev && .venv/bin/python -m bench
