#!/usr/bin/env bash
# Set up (idempotent), then lint and run the whole test suite.
# Tiers: tests/unit (no Ray, fast), tests/integration (real local Ray, real engines, tiny
# models), tests/e2e (the pipeline on the embedded model, marked slow), tests/gpu (skipped
# without CUDA). Extra arguments go to pytest, e.g. `make test ARGS="-m 'not slow'"`.
# Two pytest-xdist workers by default (RLAIF_TEST_WORKERS; 0 runs in one process): most of a
# test's wall time is one single-threaded process starting while the other core idles, so two
# streams of tests overlap that (tests/conftest.py orders and groups them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${RLAIF_VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/rlaif/torch_extensions}
step() { printf '==> [test] %s\n' "$*"; }

step "ruff check and format"
ruff check .
ruff format --check --quiet .
step "mypy (strict on rlaif/core)"
mypy rlaif/core
step "pytest"
# One OpenMP thread per test process, and threads that sleep rather than spin when idle: two
# workers on two cores each starting 2-thread teams would spin at barriers against each other.
# Actors still get their role's thread count (rlaif.actors.pool.engine_env, trainer_env); the wait
# policy reaches them through the environment the local Ray cluster starts them in.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
set +e
python -m pytest -n "${RLAIF_TEST_WORKERS:-2}" --dist loadgroup --no-loadscope-reorder "$@"
rc=$?
set -e
# pytest's 5 means "no tests collected": a suite that ran nothing has failed.
exit $rc
