#!/usr/bin/env bash
# Set up the benchmarks, idempotently:
# - matplotlib (the `bench` extra of pyproject.toml) in rlaif's own .venv, for the plots;
# - bench/.venv-trl: the TRL PPO baseline's own environment, pinned: trl 1.12.0 (the last release
#   with `trl.experimental.ppo`), the same torch CPU build, transformers, accelerate and
#   datasets versions as rlaif's .venv, so both sides run the same kernels;
# - bench/.venv-trl-grpo: the TRL GRPO baseline's, the same pins but trl 1.16.0 (see TRL_GRPO_PINS).
# A second run with nothing changed only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."

MAIN_VENV=${RLAIF_VENV:-.venv}
TRL_VENV=${RLAIF_TRL_VENV:-bench/.venv-trl}
TRL_GRPO_VENV=${RLAIF_TRL_GRPO_VENV:-bench/.venv-trl-grpo}
PYTHON=${PYTHON:-python3}
MATPLOTLIB=matplotlib==3.11.2            # keep equal to the `bench` extra in pyproject.toml
TRL_PINS=(torch==2.13.0 trl==1.12.0 transformers==5.19.0 accelerate==1.15.0 datasets==5.2.0 safetensors)
# trl 1.16.0 is the newest release, and its GRPOTrainer the live peer. Its wheel asks for
# transformers>=4.56.2, accelerate>=1.10.1, datasets>=4.7.0 and nothing of torch, so rlaif's own
# versions hold here too. A venv of its own: 1.16 no longer has the PPO trainer the other one needs.
TRL_GRPO_PINS=(torch==2.13.0 trl==1.16.0 transformers==5.19.0 accelerate==1.15.0 datasets==5.2.0 safetensors)
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

# trl_venv VENV CHECK PIN...: VENV with exactly the PINs (torch first), then the Python CHECK; a stamp
# of the pins makes a second run with the same pins a no-op.
trl_venv() {
  local venv=$1 check=$2
  shift 2
  local want stamp
  want=$(printf '%s\n' "$@" | sha256sum | cut -c1-16)
  stamp="$venv/.bench-installed"
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    step "TRL baseline environment $venv is up to date"
    return
  fi
  if [ ! -x "$venv/bin/python" ]; then
    step "creating $venv with $($PYTHON --version)"
    "$PYTHON" -m venv "$venv"
  fi
  local pip=("$venv/bin/python" -m pip --disable-pip-version-check)
  # torch first, alone: the CPU build comes from pip's find-links, and nothing later may pull a CUDA one.
  step "installing $1 (CPU build) into $venv"
  "${pip[@]}" install --progress-bar off "$1" 2>&1 | grep -E '^(Collecting|Successfully)' | sed 's/^/    /' || true
  step "installing ${*:2} into $venv"
  "${pip[@]}" install --progress-bar off "$@" 2>&1 | grep -E '^(Collecting|Successfully)' | sed 's/^/    /' || true
  "${pip[@]}" install --quiet "$@"  # fails loudly here if the line above hid an error
  "$venv/bin/python" -c "$check"
  echo "$want" > "$stamp"
}

trl_venv "$TRL_VENV" '
import torch, transformers, trl
from trl.experimental.ppo import PPOConfig, PPOTrainer  # noqa: F401  (removed from TRL after 1.12.0)
assert torch.__version__.startswith("2.13.0"), torch.__version__
print(f"    trl {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__}")
' "${TRL_PINS[@]}"
trl_venv "$TRL_GRPO_VENV" '
import torch, transformers, trl
from trl import GRPOConfig, GRPOTrainer  # noqa: F401
assert torch.__version__.startswith("2.13.0"), torch.__version__
assert trl.__version__ == "1.16.0" and transformers.__version__ == "5.19.0", (trl.__version__, transformers.__version__)
print(f"    trl {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__}")
' "${TRL_GRPO_PINS[@]}"
step "done"
