"""The TRL baselines, run in bench/.venv-trl (trl 1.12.0) in their own process; results come back as JSON.

    bench/.venv-trl/bin/python bench/trl_baseline.py reward CONFIG_JSON OUT_JSON
    bench/.venv-trl/bin/python bench/trl_baseline.py ppo CONFIG_JSON OUT_JSON

Imports nothing from rlaif (not installed there): the config names the model folders and
a JSONL data file written by the rlaif side (bench/reward.py, bench/ppo.py), so both sides
read the same data.

- reward: `trl.RewardTrainer` on chosen/rejected token ids the rlaif side wrote (a processed
  dataset, so TRL tokenises nothing), in file order; step times by wall clock between the
  ``on_step_end`` callbacks (the first from ``on_train_begin``).
- ppo: `trl.experimental.ppo.PPOTrainer` (removed from TRL after 1.12.0), reading the prompt
  file in file order (its own dataloader shuffles; it is replaced by an unshuffled one) with
  ``torch.set_num_threads(threads)``. An iteration lasts from one ``on_step_end`` callback to
  the next (the first from ``on_train_begin``): the trainer's whole loop, its logging, clean-up
  and garbage collection included. The time split comes from wrapping the trainer module's
  `batch_generation` (generation), `get_reward` on the reward model (scoring), `forward`
  without gradients and `get_reward` on the value model (learner forward); training is the
  rest of each iteration. The file rows each iteration generated for are recorded, so the
  caller can check both sides saw the same batches.
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


def _rows(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def reward(cfg: dict[str, Any]) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(cfg["model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # The start checkpoint already holds the scalar head both sides begin from.
    model = AutoModelForSequenceClassification.from_pretrained(cfg["model"], num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    # Token ids written by the rlaif side: TRL takes them as a processed dataset and tokenises nothing.
    rows = _rows(cfg["data"])
    data = Dataset.from_list([{"chosen_ids": r["chosen_ids"], "rejected_ids": r["rejected_ids"]} for r in rows])
    steps: list[float] = []
    inner: list[float] = []
    losses: list[float] = []
    marks = {"end": 0.0, "begin": 0.0}

    class Timer(TrainerCallback):
        """Wall time between step ends (collation, logging and all); `inner` is on_step_begin to on_step_end."""

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            marks["end"] = time.perf_counter()

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            marks["begin"] = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            now = time.perf_counter()
            steps.append(now - marks["end"])
            inner.append(now - marks["begin"])
            marks["end"] = now

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    beta1, beta2 = cfg["adam_betas"]
    args = RewardConfig(
        output_dir=cfg["out_dir"],
        per_device_train_batch_size=cfg["batch"],
        gradient_accumulation_steps=1,
        max_steps=cfg["steps"],
        max_length=cfg["max_len"],
        learning_rate=cfg["lr"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        adam_beta1=beta1,
        adam_beta2=beta2,
        adam_epsilon=1e-8,
        weight_decay=0.0,
        max_grad_norm=1.0,
        # The file's order, as rlaif takes the pairs.
        train_sampling_strategy="sequential",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=cfg["device"] == "cpu",
        bf16=cfg["device"] == "cuda",
        gradient_checkpointing=False,
        dataloader_num_workers=0,
        seed=0,
        disable_tqdm=True,
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, callbacks=[Timer()])
    if len(trainer.train_dataset) != len(rows):
        raise RuntimeError(f"TRL kept {len(trainer.train_dataset)} of {len(rows)} pairs (max_length filter)")
    started = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - started
    step = statistics.median(steps)
    return {
        "steps": len(steps),
        "step_s": steps,
        "step_s_median": step,
        "samples_per_s": cfg["batch"] / step,
        "inner_step_s": inner,
        "inner_step_s_median": statistics.median(inner),
        "losses": losses,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "train_wall_s": total,
        "optimizer": str(args.optim),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def ppo(cfg: dict[str, Any]) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from torch.utils.data import DataLoader
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as mod

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(cfg["model"], padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    policy = AutoModelForCausalLM.from_pretrained(cfg["model"], dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(cfg["model"], dtype=torch.float32)
    rm = AutoModelForSequenceClassification.from_pretrained(cfg["reward_model"], num_labels=1, dtype=torch.float32)
    value = AutoModelForSequenceClassification.from_pretrained(cfg["reward_model"], num_labels=1, dtype=torch.float32)
    prompts = [r["prompt"] for r in _rows(cfg["data"])]
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p in prompts
    ]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    data = Dataset.from_dict({"input_ids": ids})
    row_of = {tuple(x): i for i, x in enumerate(ids)}
    b, micro = cfg["batch"], cfg["micro_batch"]
    args = PPOConfig(
        output_dir=cfg["out_dir"],
        per_device_train_batch_size=micro,
        # TRL 1.12's batch is micro x accumulation steps, and its accelerator steps the optimizer once per that
        # many micro-batches: one step per mini-batch only with num_mini_batches=1, as in both settings here.
        gradient_accumulation_steps=b // micro,
        num_mini_batches=cfg["mini_batches"],
        total_episodes=b * cfg["iterations"],
        local_rollout_forward_batch_size=b,
        num_ppo_epochs=cfg["ppo_epochs"],
        response_length=cfg["new_tokens"],
        temperature=1.0,
        stop_token="eos",
        num_sample_generations=0,
        learning_rate=1e-6,
        kl_coef=0.05,
        report_to=[],
        save_strategy="no",
        use_cpu=cfg["device"] == "cpu",
        bf16=cfg["device"] == "cuda",
        gradient_checkpointing=False,
        seed=0,
        disable_tqdm=True,
    )
    phases = {"generation": 0.0, "scoring": 0.0, "learner_forward": 0.0}
    iters: list[dict[str, float]] = []
    response_tokens: list[float] = []
    rows_seen: list[list[int]] = []

    def wrap(fn: Any, pick: Any) -> Any:
        def inner(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            out = fn(*a, **kw)
            phase = pick(a)
            if phase:
                phases[phase] += time.perf_counter() - t
            return out

        return inner

    gen = mod.batch_generation

    def timed_generation(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        out = gen(*a, **kw)
        phases["generation"] += time.perf_counter() - t
        query_responses = out[0]
        resp = query_responses[:, a[1].shape[1] :]
        response_tokens.append(float((resp != tokenizer.pad_token_id).sum()) / resp.shape[0])
        rows_seen.append([file_row(q) for q in a[1].tolist()])
        return out

    def file_row(query: list[int]) -> int:
        """The prompt file's row of a left-padded query (-1: none)."""
        start = 0
        while start < len(query) and query[start] == tokenizer.pad_token_id:
            start += 1
        return row_of.get(tuple(query[start:]), -1)

    mod.batch_generation = timed_generation
    mod.get_reward = wrap(mod.get_reward, lambda a: "scoring" if a[0] is rm else "learner_forward")
    mod.forward = wrap(mod.forward, lambda a: None if torch.is_grad_enabled() else "learner_forward")
    marks = {"t": 0.0}

    class Split(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            marks["t"] = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            now = time.perf_counter()
            total = now - marks["t"]
            marks["t"] = now
            row = dict(phases)
            row["training"] = total - sum(phases.values())
            row["total"] = total
            iters.append(row)
            for k in phases:
                phases[k] = 0.0

    trainer = PPOTrainer(
        args=args,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref,
        reward_model=rm,
        train_dataset=data,
        value_model=value,
        callbacks=[Split()],
    )
    # In file order, as rlaif's ppo.prompt_file: the trainer built DataLoader(shuffle=True, drop_last=True)
    # and its loop reads self.dataloader; the same loader unshuffled, prepared by the same accelerator.
    trainer.dataloader = trainer.accelerator.prepare(
        DataLoader(
            data,
            batch_size=trainer.local_dataloader_batch_size,
            shuffle=False,
            collate_fn=trainer.data_collator,
            drop_last=True,
        )
    )
    started = time.perf_counter()
    trainer.train()
    return {
        "iterations": iters,
        "train_wall_s": time.perf_counter() - started,
        "response_tokens_mean": statistics.mean(response_tokens) if response_tokens else None,
        "torch_threads": torch.get_num_threads(),
        "ppo_epochs": args.num_ppo_epochs,
        "num_mini_batches": args.num_mini_batches,
        "rows_per_iteration": rows_seen,
    }


if __name__ == "__main__":
    mode, cfg, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    import trl

    result = {"reward": reward, "ppo": ppo}[mode](cfg)
    result["trl_version"] = trl.__version__
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
