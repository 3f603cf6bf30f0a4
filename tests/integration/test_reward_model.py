"""The `reward_model` stage learns a synthetic preference whose right answer is learnable.

The synthetic judge prefers the response that ends with a marker word ("banana")
over one that ends with another word, at p = 0.9 from whichever slot holds it. A
reward model that reads the end of the conversation can learn this, so at the
default learning rate and step budget its loss must fall and its held-out accuracy
against the majority label must reach 0.9; the saved folder must score the same
through `RewardScorer`.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rlaif.actors.reward_scorer import RewardScorer
from rlaif.config import RunConfig, register_configs, to_run_config
from rlaif.core.io import read_jsonl, read_manifest, write_jsonl, write_manifest
from rlaif.core.judging import ResponsePair
from rlaif.core.metrics import accuracy
from rlaif.core.preference_records import label_to_row, pair_to_row
from rlaif.core.sink import NullSink
from rlaif.core.soft_labels import combine_label
from rlaif.stages.pipeline import StageContext, run_stages
from rlaif.stages.registry import STAGES
from rlaif.stages.reward_model import load_reward_pairs

CONF = Path(__file__).resolve().parents[2] / "conf"
register_configs()
TOPICS = ["locks", "cars", "dogs", "money", "knives", "fire", "pills", "phones", "rivers", "songs", "bread", "trains"]


def compose_run(overrides: list[str]) -> RunConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return to_run_config(compose(config_name="config", overrides=overrides))


def write_synthetic_preferences(stage_dir: Path, n: int, seed: int = 0) -> None:
    """`n` pairs: the response ending in "banana" is preferred with p = 0.9, in a random slot."""
    rng = random.Random(seed)
    pairs, labels = [], []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        good = f"Here is what I know about {topic}, number {i}. banana"
        bad = f"Here is what I know about {topic}, number {i}. {rng.choice(['apple', 'cherry', 'lemon'])}"
        good_first = rng.random() < 0.5
        a, b = (good, bad) if good_first else (bad, good)
        pair = ResponsePair(f"pair-{i}", f"prompt-{i}", f"Tell me about {topic} ({i}).", a, b, 0)
        pairs.append(pair_to_row(pair))
        p = 0.9 if good_first else 0.1
        labels.append({"id": pair.id, **label_to_row(combine_label(pair.id, ["harmful"], [p]))})
    write_jsonl(stage_dir / "pairs.jsonl", pairs)
    write_jsonl(stage_dir / "labels.jsonl", labels)
    write_manifest(stage_dir, {"pairs": n}, {"synthetic": True})


@pytest.mark.usefixtures("ray_cluster")
def test_reward_model_learns_a_learnable_preference(tiny_model: Path, tmp_path: Path) -> None:
    run = compose_run(
        [
            f"model.name={tiny_model}",
            f"run_dir={tmp_path / 'run'}",
            "reward_model.max_len=128",
            "reward_model.checkpoint_every=8",
            "cluster.reward_trainer.num_workers=2",
            "cluster.reward_trainer.cpus_per_worker=1",
        ]
    )
    ctx = StageContext(run, Path(run.run_dir), tiny_model, NullSink())
    write_synthetic_preferences(ctx.stage_dir("preferences"), n=64)
    assert run_stages(ctx, [("reward_model", STAGES["reward_model"])]) == ["reward_model"]

    out = ctx.stage_dir("reward_model")
    manifest = read_manifest(out)
    assert manifest is not None
    steps = list(read_jsonl(out / "steps.jsonl"))
    assert [s["id"] for s in steps] == [f"step-{i}" for i in range(1, 17)]
    before, after = manifest["heldout_before"], manifest["heldout_after"]
    # The fresh head is small (RewardModel.init_head): every reward starts near 0, so the first loss is
    # close to the labels' cross-entropy at p = 0.5, ln 2.
    assert before["loss"] == pytest.approx(0.6931, abs=0.02)
    assert after["loss"] < before["loss"] - 0.1
    first, last = sum(s["loss"] for s in steps[:4]) / 4, sum(s["loss"] for s in steps[-4:]) / 4
    assert last < first
    # At the default learning rate and step budget (issue: >= 0.9 on a set with known preferences).
    assert after["accuracy"] >= 0.9, manifest
    assert 0.0 <= after["ece"] <= 1.0
    assert not (out / "checkpoints").exists()  # spent once the model folder is in place

    # The saved folder scores the held-out pairs as the trainer did.
    _, heldout = load_reward_pairs(ctx.stage_dir("preferences"), run.reward_model.heldout_fraction, run.seed)
    scorer = RewardScorer(str(out / "model"), max_len=run.reward_model.max_len)
    prompts = [p.prompt_messages[0].content for p in heldout]
    r_a = scorer.score(prompts, [p.response_a for p in heldout])
    r_b = scorer.score(prompts, [p.response_b for p in heldout])
    prefers_a = [1.0 if ra > rb else 0.0 for ra, rb in zip(r_a, r_b, strict=True)]
    assert accuracy(prefers_a, [p.p_a for p in heldout]) == pytest.approx(after["accuracy"])
