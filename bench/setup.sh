#!/usr/bin/env bash
# Set up the benchmarks, idempotently:
# - matplotlib (the `bench` extra of pyproject.toml) in rlaif's own .venv, for the plots;
# - bench/.venv-trl: the TRL baseline's own environment, pinned: trl 1.12.0 (the last release
#   with `trl.experimental.ppo`), the same torch CPU build, transformers, accelerate and
#   datasets versions as rlaif's .venv, so both sides run the same kernels.
# A second run with nothing changed only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."

MAIN_VENV=${RLAIF_VENV:-.venv}
TRL_VENV=${RLAIF_TRL_VENV:-bench/.venv-trl}
PYTHON=${PYTHON:-python3}
MATPLOTLIB=matplotlib==3.11.2            # keep equal to the `bench` extra in pyproject.toml
TRL_PINS=(torch==2.13.0 trl==1.12.0 transformers==5.19.0 accelerate==1.15.0 datasets==5.2.0 safetensors)
step() { printf '==> [bench setup] %s\n' "$*"; }

if [ ! -x "$MAIN_VENV/bin/python" ]; then
  step "no $MAIN_VENV: running scripts/setup.sh first"
  bash scripts/setup.sh
fi
if "$MAIN_VENV/bin/python" -c "import matplotlib" 2>/dev/null; then
  step "matplotlib present in $MAIN_VENV"
else
  step "installing $MATPLOTLIB into $MAIN_VENV"
  "$MAIN_VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off "$MATPLOTLIB"
fi

want=$(printf '%s\n' "${TRL_PINS[@]}" | sha256sum | cut -c1-16)
stamp="$TRL_VENV/.bench-installed"
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  step "TRL baseline environment $TRL_VENV is up to date"
else
  if [ ! -x "$TRL_VENV/bin/python" ]; then
    step "creating $TRL_VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$TRL_VENV"
  fi
  pip=("$TRL_VENV/bin/python" -m pip --disable-pip-version-check)
  # torch first, alone: the CPU build comes from pip's find-links, and nothing later may pull a CUDA one.
  step "installing torch 2.13.0 (CPU build) into $TRL_VENV"
  "${pip[@]}" install --progress-bar off torch==2.13.0 2>&1 | grep -E '^(Collecting|Successfully)' | sed 's/^/    /' || true
  step "installing ${TRL_PINS[*]:1} into $TRL_VENV"
  "${pip[@]}" install --progress-bar off "${TRL_PINS[@]}" 2>&1 | grep -E '^(Collecting|Successfully)' | sed 's/^/    /' || true
  "${pip[@]}" install --quiet "${TRL_PINS[@]}"  # fails loudly here if the line above hid an error
  "$TRL_VENV/bin/python" - <<'PY'
import torch, transformers, trl
from trl.experimental.ppo import PPOConfig, PPOTrainer  # noqa: F401  (removed from TRL after 1.12.0)
assert torch.__version__.startswith("2.13.0"), torch.__version__
print(f"    trl {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__}")
PY
  echo "$want" > "$stamp"
fi
step "done"
