"""The TRL GRPO baseline, run in bench/.venv-trl-grpo (trl 1.16.0) in its own process; results come back as JSON.

    bench/.venv-trl-grpo/bin/python bench/trl_grpo_baseline.py CONFIG_JSON OUT_JSON

Imports nothing from rlaif (not installed there): the config names the model folders and the
JSONL prompt file bench/grpo.py wrote, which rlaif's side reads too (`ppo.prompt_file`).

`trl.GRPOTrainer` with the scalar-head reward model as its one reward function; completions
sampled by transformers' `generate` (``use_vllm=False``). One iteration is one optimizer
step on the next `prompts` rows of the file x `generations` completions each:
``per_device_train_batch_size`` = the micro-batch, ``gradient_accumulation_steps`` =
prompts x generations / micro-batch, and ``steps_per_generation`` left to default to that,
so ``generation_batch_size`` = prompts x generations and each generation feeds exactly one
step; ``num_iterations=1`` (one pass, so TRL needs no old-log-prob pass); ``shuffle_dataset=False``
(TRL's `RepeatSampler` then walks the file in order). The rest of the config mirrors the
rlaif overrides bench/grpo.py passes; it says why for each.

The time split wraps three of the trainer's methods on the instance: `_generate` (chat
template, tokenisation, sampling, decoding: generation), `_calculate_rewards` (scoring),
`_get_per_token_logps_and_entropies` without gradients (the reference pass: learner_forward);
training is the rest of each iteration, whose ends are `on_step_end` callbacks (wall clock
from one to the next; the first from `on_train_begin`).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")

PHASES = ("generation", "scoring", "learner_forward")


def grpo(cfg: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(cfg["threads"])
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    dtype = torch.bfloat16 if cfg["device"] == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(cfg["model"], padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    policy = AutoModelForCausalLM.from_pretrained(cfg["model"], dtype=dtype)
    rm_tokenizer = AutoTokenizer.from_pretrained(cfg["reward_model"])
    rm = AutoModelForSequenceClassification.from_pretrained(cfg["reward_model"], num_labels=1, dtype=dtype)
    with open(cfg["data"]) as f:
        prompts = [json.loads(line)["prompt"] for line in f if line.strip()]
    row_of = {p: i for i, p in enumerate(prompts)}
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts])
    b, g, micro = cfg["prompts"], cfg["generations"], cfg["micro_batch"]
    if (b * g) % micro:
        raise ValueError(f"prompts x generations ({b} x {g}) must be a multiple of the micro-batch ({micro})")
    args = GRPOConfig(
        output_dir=cfg["out_dir"],
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=b * g // micro,
        num_generations=g,
        num_iterations=1,
        max_steps=cfg["iterations"],
        shuffle_dataset=False,
        max_completion_length=cfg["new_tokens"],
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        use_vllm=False,
        # The KL to the reference as a loss term, k3 per token, no importance weight on it (rlaif's kl_in=loss, k3).
        beta=cfg["beta"],
        use_bias_correction_kl=False,
        # Per micro-batch mean over its tokens, over the accumulation steps: rlaif's loss_agg=token_mean.
        loss_type=cfg["loss_type"],
        scale_rewards=cfg["scale_rewards"],
        epsilon=0.2,
        learning_rate=1e-6,
        lr_scheduler_type="constant",
        max_grad_norm=1.0,
        mask_truncated_completions=False,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=cfg["device"] == "cpu",
        bf16=cfg["device"] == "cuda",
        # TRL turns both on by default; rlaif's learner runs neither on CPU.
        gradient_checkpointing=False,
        dataloader_num_workers=0,
        seed=0,
        disable_tqdm=True,
    )
    phases = dict.fromkeys(PHASES, 0.0)
    iters: list[dict[str, float]] = []
    response_tokens: list[float] = []
    prompt_rows: list[list[int]] = []
    marks = {"t": 0.0}

    class Split(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            marks["t"] = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            now = time.perf_counter()
            row = {**phases, "sync": 0.0, "total": now - marks["t"]}
            row["training"] = row["total"] - sum(phases.values())
            iters.append(row)
            marks["t"] = now
            for k in phases:
                phases[k] = 0.0

    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=rm,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        reward_processing_classes=rm_tokenizer,
        callbacks=[Split()],
    )
    generate, rewards, logps = (
        trainer._generate,
        trainer._calculate_rewards,
        trainer._get_per_token_logps_and_entropies,
    )

    def timed_generate(batch: list[Any]) -> Any:
        prompt_rows.append([row_of[p[-1]["content"]] for p in batch[::g]])
        t = time.perf_counter()
        out = generate(batch)
        phases["generation"] += time.perf_counter() - t
        completion_ids = out[1]
        response_tokens.append(statistics.mean(len(c) for c in completion_ids))
        return out

    def timed_rewards(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        out = rewards(*a, **kw)
        phases["scoring"] += time.perf_counter() - t
        return out

    def timed_logps(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        out = logps(*a, **kw)
        if not torch.is_grad_enabled():
            phases["learner_forward"] += time.perf_counter() - t
        return out

    trainer._generate = timed_generate
    trainer._calculate_rewards = timed_rewards
    trainer._get_per_token_logps_and_entropies = timed_logps
    started = time.perf_counter()
    trainer.train()
    a = trainer.args
    return {
        "iterations": iters,
        "train_wall_s": time.perf_counter() - started,
        "response_tokens_mean": statistics.mean(response_tokens) if response_tokens else None,
        "prompt_rows": prompt_rows,
        "torch_threads": torch.get_num_threads(),
        "generation_backend": "transformers generate (use_vllm=False)",
        # What the trainer made of the config, to check the batch arithmetic against rlaif's.
        "effective": {
            "generation_batch_size": a.generation_batch_size,
            "steps_per_generation": a.steps_per_generation,
            "gradient_accumulation_steps": a.gradient_accumulation_steps,
            "per_device_train_batch_size": a.per_device_train_batch_size,
            "num_generations": a.num_generations,
            "num_iterations": a.num_iterations,
            "shuffle_dataset": a.shuffle_dataset,
            "beta": a.beta,
            "loss_type": a.loss_type,
            "scale_rewards": a.scale_rewards,
            "reference_model": trainer.ref_model is not None,
            "dtype": str(policy.dtype),
        },
    }


if __name__ == "__main__":
    cfg, out = json.loads(sys.argv[1]), sys.argv[2]
    import trl

    result = grpo(cfg)
    result["trl_version"] = trl.__version__
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
