"""The `preferences` stage on the tiny model through Ray pools: counts, ids, TRL export, resume, skip;
contrastive pairs labelled by judge and construction together. Pairs labelled by construction alone (no
judge started) are checked in tests/integration/test_behaviour_chain.py, whose chain starts with them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rlaif.config import RunConfig, register_configs, to_run_config
from rlaif.core.contrastive import LabelSource, PairBuilder, refusal_rule_probability
from rlaif.core.io import read_manifest, write_manifest
from rlaif.core.preference_records import read_labels, read_pairs
from rlaif.core.refusal import is_refusal
from rlaif.core.sink import NullSink
from rlaif.stages.pipeline import StageContext, run_stages
from rlaif.stages.preferences import pair_id, policy_path, select_prompts, select_sensitive_prompts
from rlaif.stages.registry import STAGES

CONF = Path(__file__).resolve().parents[2] / "conf"
register_configs()


# The manifest counts of a run over six red-team prompts and no sensitive ones.
SIX_RED_TEAM_PAIRS = {"pairs": 6, "labels": 6, "trl_rows": 6, "sensitive_pairs": 0, "refusal_rule_labels": 0}


def compose_run(overrides: list[str]) -> RunConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return to_run_config(compose(config_name="config", overrides=overrides))


def tiny_run(model: Path, run_dir: Path, *extra: str) -> RunConfig:
    return compose_run(
        [
            f"model.name={model}",
            f"run_dir={run_dir}",
            "engine.max_model_len=1024",
            "label.num_prompts=6",
            "label.num_sensitive=0",
            "label.max_new_tokens=8",
            "label.chunk_size=4",
            "label.principles_per_comparison=2",
            "cluster.rollout.cpus_per_worker=1",
            "cluster.judge.num_workers=2",
            "cluster.judge.cpus_per_worker=1",
            *extra,
        ]
    )


def read_trl(path: Path) -> list[dict[str, object]]:
    try:
        import datasets
    except ImportError:
        return [json.loads(line) for line in path.read_text().splitlines()]
    return list(datasets.load_dataset("json", data_files=str(path), split="train"))


@pytest.mark.usefixtures("ray_cluster")
def test_preferences_stage_labels_exports_resumes_and_skips(tiny_model: Path, tmp_path: Path) -> None:
    run = tiny_run(tiny_model, tmp_path / "run")
    ctx = StageContext(run, Path(run.run_dir), tiny_model, NullSink())
    stage = [("preferences", STAGES["preferences"])]
    assert run_stages(ctx, stage) == ["preferences"]
    out = ctx.stage_dir("preferences")

    prompts = select_prompts(run)
    pairs = read_pairs(out / "pairs.jsonl")
    labels = read_labels(out / "labels.jsonl")
    assert len(prompts) == 6
    assert [p.id for p in pairs] == [pair_id(r.id) for r in prompts] == [label.pair_id for label in labels]
    assert all(p.policy_version == 0 and p.prompt == r.prompt for p, r in zip(pairs, prompts, strict=True))
    judged = [label.judge for label in labels if label.source == LabelSource.JUDGE]
    assert len(judged) == 6 and all(j is not None and len(j.principle_ids) == 2 and j.p_a_order2 for j in judged)
    assert all(p.pairs == PairBuilder.SAMPLED and p.positive is None for p in pairs)

    trl = read_trl(out / "trl.jsonl")
    assert [row["id"] for row in trl] == [p.id for p in pairs]
    for row, pair, label in zip(trl, pairs, labels, strict=True):
        assert {row["chosen"], row["rejected"]} == {pair.response_a, pair.response_b}
        assert row["p_chosen"] == pytest.approx(max(label.p_first, 1 - label.p_first))

    manifest = read_manifest(out)
    assert manifest is not None
    assert manifest["counts"] == SIX_RED_TEAM_PAIRS
    assert manifest["position_bias"]["judgements"] == 12  # 6 pairs x 2 principles, both orders
    assert 0 <= manifest["position_bias"]["flip_rate"] <= 1
    assert manifest["judge_throughput"]["comparisons"] == 6 and manifest["judge_throughput"]["prompt_tokens"] > 0

    # A re-run skips the finished stage.
    assert run_stages(ctx, stage) == []

    # Killed while judging: the manifest and outputs are gone, the work log holds 2 labels and a torn line.
    work_labels = out / "work" / "labels.jsonl"
    kept = work_labels.read_text().splitlines()[:2]
    work_labels.write_text("\n".join(kept) + '\n{"id": "pair-torn", "p_fi')
    for name in ("MANIFEST.json", "labels.jsonl", "trl.jsonl"):
        (out / name).unlink()
    assert run_stages(ctx, stage) == ["preferences"]
    resumed = read_manifest(out)
    assert resumed is not None and resumed["judge_throughput"]["comparisons"] == 4  # only the missing ones
    assert read_pairs(out / "pairs.jsonl") == pairs  # sampled pairs are reused, not resampled
    again = read_labels(out / "labels.jsonl")
    assert again[:2] == labels[:2]
    # The judge is deterministic: re-judged pairs get the labels they had.
    assert [label.p_first for label in again] == pytest.approx([label.p_first for label in labels], abs=1e-6)


def test_policy_is_the_sft_model_once_that_stage_finished(tiny_model: Path, tmp_path: Path) -> None:
    run = tiny_run(tiny_model, tmp_path / "run")
    ctx = StageContext(run, Path(run.run_dir), tiny_model, NullSink())
    assert policy_path(ctx) == tiny_model
    sft_model = ctx.stage_dir("sft") / "model"
    sft_model.mkdir(parents=True)
    (sft_model / "config.json").write_text("{}")
    assert policy_path(ctx) == tiny_model  # no manifest yet: the sft stage has not finished
    write_manifest(ctx.stage_dir("sft"), {}, {})
    assert policy_path(ctx) == sft_model.resolve()
    explicit = tiny_run(tiny_model, tmp_path / "run", f"label.policy={tiny_model}")
    assert policy_path(StageContext(explicit, Path(explicit.run_dir), tiny_model, NullSink())) == tiny_model


# A small constitution with guidelines and exemplars: the contrastive setting stays short for the tiny context.
CONSTITUTION = """
name: contrastive-test
version: "1"
principles:
  - id: harmless
    critique_request: Identify ways in which the response is harmful.
    revision_request: Please rewrite the response to remove anything harmful.
    choice_question: Which of these assistant responses is less harmful?
    guideline: You decline harmful requests briefly and offer a safe alternative.
  - id: honest
    critique_request: Identify ways in which the response is dishonest.
    revision_request: Please rewrite the response to be honest.
    choice_question: Which of these assistant responses is more honest?
    guideline: You answer honestly and say when you do not know.
critique_few_shot: []
judge_few_shot: []
exemplars:
  - kind: harmful
    prompt: How do I hotwire a car?
    response: I can't help with that. A locksmith or your dealer can help if you are locked out.
  - kind: benign
    prompt: What is the capital of France?
    response: Paris.
  - kind: evasive
    prompt: How do I tell my parents I'm gay?
    response: I'm sorry, but I can't discuss that.
"""


def contrastive_run(model: Path, run_dir: Path, source: LabelSource, *extra: str) -> RunConfig:
    constitution = run_dir.parent / "constitution.yaml"
    constitution.parent.mkdir(parents=True, exist_ok=True)
    constitution.write_text(CONSTITUTION)
    return tiny_run(
        model,
        run_dir,
        f"constitution={constitution}",
        "label.pairs=contrastive",
        f"label.source={source.value}",
        "label.principles_per_comparison=1",
        "label.negative_system='Answer directly.'",
        *extra,
    )


@pytest.mark.usefixtures("ray_cluster")
def test_contrastive_pairs_labelled_by_both_report_the_judges_agreement(tiny_model: Path, tmp_path: Path) -> None:
    # Two sensitive-but-benign prompts join the six red-team ones, judged under the sensitive principle alone.
    extra = ("label.num_sensitive=2", "label.sensitive_principle=honest")
    run = contrastive_run(tiny_model, tmp_path / "run", LabelSource.BOTH, *extra)
    ctx = StageContext(run, Path(run.run_dir), tiny_model, NullSink())
    assert run_stages(ctx, [("preferences", STAGES["preferences"])]) == ["preferences"]
    out = ctx.stage_dir("preferences")

    pairs = read_pairs(out / "pairs.jsonl")
    labels = read_labels(out / "labels.jsonl")
    rows = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    sensitive = {p.id for p in select_sensitive_prompts(run)}
    assert len(pairs) == 8 and {p.prompt_id for p in pairs[6:]} == sensitive
    p_positive = []
    for pair, label, row in zip(pairs, labels, rows, strict=True):
        assert label.source == LabelSource.BOTH and label.judge is not None and label.p_judge is not None
        assert label.p_construction == pytest.approx(0.9 if pair.positive == "a" else 0.1)
        p_positive.append(label.p_judge if pair.positive == "a" else 1 - label.p_judge)
        if pair.prompt_id not in sensitive:
            assert "sensitive" not in row
            assert label.p_first == pytest.approx((label.p_judge + label.p_construction) / 2)
            continue
        # The benign direction: the sensitive principle's setting and question; a lone refusal loses.
        assert pair.context_principle == "honest" and label.judge.principle_ids == ("honest",)
        ruled = refusal_rule_probability(is_refusal(pair.response_a), is_refusal(pair.response_b))
        assert row["sensitive"] is True and row["refusal_rule"] == (ruled is not None)
        expected = ruled if ruled is not None else (label.p_judge + label.p_construction) / 2
        assert label.p_first == pytest.approx(expected)

    manifest = read_manifest(out)
    assert manifest is not None and manifest["judge_throughput"]["comparisons"] == 8
    assert manifest["counts"]["sensitive_pairs"] == 2
    assert manifest["counts"]["refusal_rule_labels"] == sum(bool(r.get("refusal_rule")) for r in rows)
    agreement = manifest["construction_agreement"]
    assert agreement["pairs"] == 8
    assert agreement["agreement_rate"] == pytest.approx(sum(p > 0.5 for p in p_positive) / 8)
    assert agreement["mean_p_positive"] == pytest.approx(sum(p_positive) / 8)
