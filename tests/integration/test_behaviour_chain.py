"""A known-answer run of the whole learning chain on the tiny model (a few minutes).

contrastive pairs labelled by construction -> the reward model learns them -> PPO raises the
reward model's score -> the evaluate stage's refusal rate moves the expected way.

The random tiny model follows no context and never writes a refusal, so the test first teaches it
(plain torch, seconds) two habits that stand in for what the embedded model does with exemplars:
after the constitution's in-context setting it always declines; after a bare prompt it declines
now and then (about a quarter of samples) and otherwise complies. From that policy, pairs built
with and without the setting are a refusal against (mostly) a compliance, the positive always the
refusal, and the construction labels say so. A reward model trained on them prefers refusals, so
PPO against it raises the refusal share of bare-prompt samples, and greedy answers to the held-out
red-team prompts turn from compliance (the starting policy's likelier habit) to refusal. The taught
policy stands in for the SFT model, so the chain runs from the preferences stage on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir

from rlaif.config import RunConfig, register_configs, to_run_config
from rlaif.core.cai import context_turns
from rlaif.core.constitution import load_constitution
from rlaif.core.contrastive import LabelSource, PairBuilder, positive_slot
from rlaif.core.io import read_jsonl, read_manifest, write_manifest
from rlaif.core.preference_records import read_labels, read_pairs
from rlaif.core.prompts import load_prompts, split_train_heldout
from rlaif.core.refusal import is_refusal
from rlaif.core.sink import NullSink
from rlaif.stages import preferences
from rlaif.stages.pair_builders import pair_id
from rlaif.stages.pipeline import StageContext, run_stages
from rlaif.stages.preferences import select_prompts
from rlaif.stages.registry import STAGES
from rlaif.stages.reward_model import load_reward_pairs

CONF = Path(__file__).resolve().parents[2] / "conf"
register_configs()

REFUSAL = "I'm sorry, but I can't help with that."
COMPLIANCE = "Sure, here is how you do it, step by step."
CONSTITUTION = """\
name: chain-test
version: "1"
principles:
  - id: harmless
    critique_request: Point out anything harmful in the reply.
    revision_request: Write the reply again without the harm.
    choice_question: Which reply does less harm?
    guideline: I decline harmful requests.
critique_few_shot: []
judge_few_shot: []
exemplars:
  - kind: harmful
    prompt: Help me hurt someone.
    response: I'm sorry, but I can't help with that.
"""


def compose_run(overrides: list[str]) -> RunConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return to_run_config(compose(config_name="config", overrides=overrides))


def _two_habit_policy(tiny_model: Path, dest: Path, constitution_file: Path, refuse_bare: float) -> Path:
    """The tiny model taught to decline after the in-context setting, and `refuse_bare` of the time without it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    constitution = load_constitution(constitution_file)
    turns = context_turns(constitution.exemplars, constitution.principles[0])
    setting = [{"role": t.role, "content": t.content} for t in turns]
    train, _ = split_train_heldout(load_prompts("builtin:red_team"), 0.1, 0)
    # Per prompt: (token ids, where the answer starts) with the setting -> refusal, and without it
    # -> refusal and -> compliance; a draw picks one of the bare two each time, so the bare habit
    # is a share of samples, not a per-prompt answer.
    setting_rows, bare_rows = [], []
    for record in train:
        user = [{"role": "user", "content": record.prompt}]
        setting_rows.append(_tokens(tokenizer, setting + user, REFUSAL))
        bare_rows.append((_tokens(tokenizer, user, REFUSAL), _tokens(tokenizer, user, COMPLIANCE)))
    generator = torch.Generator().manual_seed(0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    head = model.get_output_embeddings()
    for _ in range(100):
        picks = torch.randint(len(train), (16,), generator=generator).tolist()
        refuse = (torch.rand(16, generator=generator) < refuse_bare).tolist()
        batch = [setting_rows[i] for i in picks] + [
            bare_rows[i][0 if r else 1] for i, r in zip(picks, refuse, strict=True)
        ]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (tokens, _) in enumerate(batch):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        # The vocabulary projection only where an answer token is predicted: most of the cost otherwise.
        at = torch.tensor(
            [(row, t) for row, (tokens, start) in enumerate(batch) for t in range(start - 1, len(tokens) - 1)]
        )
        loss = torch.nn.functional.cross_entropy(head(hidden[at[:, 0], at[:, 1]]), ids[at[:, 0], at[:, 1] + 1])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def _tokens(tokenizer: Any, chat: list[dict[str, str]], answer: str) -> tuple[list[int], int]:
    """The chat plus `answer` as token ids, and the index of the answer's first token."""
    start = len(tokenizer.apply_chat_template(chat, add_generation_prompt=True)["input_ids"])
    full = tokenizer.apply_chat_template([*chat, {"role": "assistant", "content": answer}])["input_ids"]
    return list(full), start


@pytest.mark.usefixtures("ray_cluster")
def test_construction_labels_teach_a_reward_model_that_ppo_follows_to_more_refusals(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_judge(*args: object, **kwargs: object) -> None:
        raise AssertionError("label.source=construction started the judge")

    # label.source=construction needs no judge: none may start.
    monkeypatch.setattr(preferences, "judge_pairs", no_judge)
    constitution_file = tmp_path / "constitution.yaml"
    constitution_file.write_text(CONSTITUTION)
    # The taught policy plays the SFT model (the initial model too): the chain starts after SFT.
    policy = _two_habit_policy(tiny_model, tmp_path / "run" / "sft" / "model", constitution_file, refuse_bare=0.25)
    write_manifest(tmp_path / "run" / "sft", {"examples": 0}, {"taught_by": "test_behaviour_chain"})
    run = compose_run(
        [
            f"model.name={policy}",
            f"run_dir={tmp_path / 'run'}",
            f"constitution={constitution_file}",
            "engine.max_model_len=512",
            "label.pairs=contrastive",
            "label.source=construction",
            "label.num_prompts=64",
            # The harmful direction only: the taught policy knows no benign setting.
            "label.num_sensitive=0",
            "label.max_new_tokens=16",
            "reward_model.steps=24",
            "reward_model.lr=1e-3",
            "reward_model.max_len=128",
            "ppo.iterations=8",
            "ppo.prompts_per_iteration=16",
            "ppo.max_new_tokens=16",
            "ppo.mini_batch_size=8",
            "ppo.micro_batch_size=8",
            "ppo.ppo_epochs=2",
            "ppo.actor_lr=1e-3",
            "ppo.critic_lr=1e-3",
            "ppo.kl_coef=0.0",
            "ppo.checkpoint_every=0",
            "eval.num_red_team=16",
            "eval.num_helpful=4",
            "eval.num_sensitive=4",
            "eval.max_new_tokens=16",
        ]
    )
    ctx = StageContext(run, Path(run.run_dir), policy, NullSink())
    stages = ["preferences", "reward_model", "rl_cai", "evaluate"]
    assert run_stages(ctx, [(s, STAGES[s]) for s in stages]) == stages
    out = Path(run.run_dir)

    _check_construction_labels(run, out / "preferences")

    # The reward model learns them.
    rm = read_manifest(out / "reward_model")
    # Not 1: about a quarter of the bare answers are refusals too, and a pair of two refusals has no
    # right answer (measured: 0.83 on the held-out pairs).
    assert rm is not None and rm["heldout_after"]["accuracy"] >= 0.7, rm

    # PPO raises the reward model's score.
    rewards = [row["reward_mean"] for row in read_jsonl(out / "rl_cai" / "metrics.jsonl")]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:2]) / 2, rewards

    # And the refusal rate on held-out red-team prompts moves up from the starting policy's.
    summary = json.loads((out / "evaluate" / "summary.json").read_text())
    refusal = summary["refusal"]
    assert refusal["policy"]["red_team"] > refusal["sft"]["red_team"], refusal
    _, heldout = split_train_heldout(load_prompts("builtin:red_team"), run.sl_cai.heldout_fraction, run.seed)
    assert not {r.id for r in heldout} & {row["prompt_id"] for row in read_jsonl(out / "rl_cai" / "samples.jsonl")}


def _check_construction_labels(run: RunConfig, out: Path) -> None:
    """Contrastive pairs labelled by construction (the test fails if a judge starts): the in-context answer, the
    positive in its seeded slot, preferred at the configured confidence in the labels, TRL export and reward pairs."""
    pairs = read_pairs(out / "pairs.jsonl")
    labels = read_labels(out / "labels.jsonl")
    prompts = select_prompts(run)
    assert len(prompts) == run.label.num_prompts
    assert [p.id for p in pairs] == [label.pair_id for label in labels] == [pair_id(r.id) for r in prompts]
    assert all(p.pairs == PairBuilder.CONTRASTIVE and p.context_principle == "harmless" for p in pairs)
    assert [p.positive for p in pairs] == [positive_slot(p.id, seed=run.seed) for p in pairs]
    for pair, label in zip(pairs, labels, strict=True):
        assert label.source == LabelSource.CONSTRUCTION and label.judge is None
        assert label.p_first == pytest.approx(0.9 if pair.positive == "a" else 0.1)
    rows = list(read_jsonl(out / "labels.jsonl"))
    assert {r["source"] for r in rows} == {"construction"} and all(r["p_judge"] is None for r in rows)
    # The taught policy declines after the setting: the positives are refusals.
    positives = [p.response_a if p.positive == "a" else p.response_b for p in pairs]
    assert sum(map(is_refusal, positives)) >= 0.9 * len(positives), positives[:4]

    manifest = read_manifest(out)
    assert manifest is not None
    n = len(prompts)
    assert manifest["counts"] == {
        "pairs": n,
        "labels": n,
        "trl_rows": n,
        "sensitive_pairs": 0,
        "refusal_rule_labels": 0,
    }
    assert manifest["pairs"] == "contrastive" and manifest["label_source"] == "construction"
    assert manifest["judge_throughput"] is None and manifest["position_bias"] is None
    assert manifest["construction_agreement"] is None

    # trl.jsonl chooses the positive; the reward model reads P(response a preferred).
    trl = list(read_jsonl(out / "trl.jsonl"))
    assert [row["id"] for row in trl] == [p.id for p in pairs]
    for row, pair in zip(trl, pairs, strict=True):
        assert row["chosen"] == (pair.response_a if pair.positive == "a" else pair.response_b)
        assert row["p_chosen"] == pytest.approx(0.9)
    train, heldout = load_reward_pairs(out, run.reward_model.heldout_fraction, run.seed)
    by_id = {p.id: p for p in pairs}
    assert sorted(r.id for r in [*train, *heldout]) == sorted(by_id)
    for reward_pair in [*train, *heldout]:
        assert reward_pair.p_a == pytest.approx(0.9 if by_id[reward_pair.id].positive == "a" else 0.1)
