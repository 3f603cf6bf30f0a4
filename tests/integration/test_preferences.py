"""The `preferences` stage on the tiny model through Ray pools: counts, ids, TRL export, resume, skip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rlaif.config import RunConfig, register_configs, to_run_config
from rlaif.core.io import read_manifest, write_manifest
from rlaif.core.preference_records import read_labels, read_pairs
from rlaif.core.sink import NullSink
from rlaif.stages.pipeline import StageContext, run_stages
from rlaif.stages.preferences import pair_id, policy_path, select_prompts
from rlaif.stages.registry import STAGES

CONF = Path(__file__).resolve().parents[2] / "conf"
register_configs()


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
    assert all(len(label.principle_ids) == 2 and label.p_a_order2 is not None for label in labels)

    trl = read_trl(out / "trl.jsonl")
    assert [row["id"] for row in trl] == [p.id for p in pairs]
    for row, pair, label in zip(trl, pairs, labels, strict=True):
        assert {row["chosen"], row["rejected"]} == {pair.response_a, pair.response_b}
        assert row["p_chosen"] == pytest.approx(max(label.p_first, 1 - label.p_first))

    manifest = read_manifest(out)
    assert manifest is not None and manifest["counts"] == {"pairs": 6, "labels": 6, "trl_rows": 6}
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
