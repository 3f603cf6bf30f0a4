"""A tiny randomly initialised Llama, built on the fly, for fast tests and benchmarks.

A development helper: it lives beside the benchmarks, outside the installed package; the tests
import it as ``bench.tiny`` from the repository root.

It uses the embedded model's tokenizer so that prompts, chat templates and option
tokens are real; only the network is small (about 6 M parameters, mostly the
embedding; head_dim 64, which
vLLM-CPU's attention kernels support). Weights are drawn with a fixed seed and a wide init so that the
next-token distribution is peaked: greedy decoding then has no near-ties, and the
two engine backends agree token for token.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


def build_tiny_llama(dest: Path, tokenizer_dir: Path, seed: int = 0, hidden_size: int = 128, layers: int = 2) -> Path:
    """Write a tiny Llama (safetensors + tokenizer) to `dest` and return it."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (dest / "model.safetensors").is_file():
        return dest
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    return save_model_folder(model, tokenizer, dest)


def save_model_folder(model: Any, tokenizer: Any, dest: Path) -> Path:
    """Write a model (safetensors) and its tokenizer to `dest` atomically: a `.tmp` sibling, then a rename."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest
