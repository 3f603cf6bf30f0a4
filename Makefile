# One entry point for set-up, run, test and bench. Every target sets up first (idempotent).
ARGS ?=

.PHONY: setup run test test-fast lint bench

setup:
	bash scripts/setup.sh

run: setup
	.venv/bin/python -m rlaif.run $(ARGS)

test:
	bash scripts/test.sh $(ARGS)

# Lint and tests/unit only (no Ray, no engines; a couple of minutes). CI runs `make test`.
test-fast:
	bash scripts/test.sh tests/unit $(ARGS)

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy rlaif/core

# Every benchmark, results in bench/results/ (README "Benchmarks"); e.g. make bench ARGS="--quick".
bench: setup
	bash bench/setup.sh
	.venv/bin/python -m bench $(ARGS)
