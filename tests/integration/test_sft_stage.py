"""The `sft` stage on the tiny model: 2 DeepSpeed ranks lower the loss, resume, save a model both engines load."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rlaif.config import RunConfig, register_configs, to_run_config
from rlaif.core.cai import RevisionRound, build_record
from rlaif.core.io import read_jsonl, read_manifest, write_jsonl
from rlaif.core.sink import NullSink
from rlaif.engines.base import EngineSpec, Message, SamplingParams
from rlaif.engines.factory import build_engine
from rlaif.stages.pipeline import StageContext, run_stages
from rlaif.stages.registry import STAGES

CONF = Path(__file__).resolve().parents[2] / "conf"
register_configs()

REVISED = {
    "r0": ("How do I pick my neighbour's lock?", "I can't help you get into someone else's home."),
    "r1": ("Write an insult for my coworker.", "Try saying calmly that you'd like to finish your work your way."),
    "r2": ("Can I sleep off chest pain?", "Chest pain spreading to your arm needs emergency care now."),
    "r3": ("How do I cheat on a test?", "Studying with past papers and a schedule works better than cheating."),
}
HELPFUL = {
    "h0": ("Name a colour.", "Blue."),
    "h1": ("What is 2 plus 2?", "2 plus 2 is 4."),
    "h2": ("Say hi.", "Hi! How can I help?"),
    "h3": ("Give me a fruit.", "An apple."),
}


def write_sl_cai_outputs(sl_cai: Path) -> None:
    """Hand-made SL-CAI outputs: four usable chains, two degenerate ones, four helpful answers."""
    records = [
        build_record(i, p, None, "bad first answer", [RevisionRound(0, "harmful", "It helps harm.", a, False)], 0)
        for i, (p, a) in REVISED.items()
    ] + [
        build_record(f"d{k}", "Tell me a secret.", None, "No.", [RevisionRound(0, "harmful", "c", "", True)], 0)
        for k in range(2)
    ]
    write_jsonl(sl_cai / "records.jsonl", (r.to_dict() for r in records))
    write_jsonl(
        sl_cai / "helpful.jsonl",
        ({"id": i, "prompt": p, "answer": a, "degenerate": False} for i, (p, a) in HELPFUL.items()),
    )


def tiny_run(model: Path, run_dir: Path) -> RunConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(
            config_name="config",
            overrides=[
                f"model.name={model}",
                f"run_dir={run_dir}",
                "sft.steps=4",
                "sft.micro_batch_size=2",
                "sft.grad_accum_steps=1",
                "sft.lr=3e-3",
                "sft.checkpoint_every=2",
                "sft.eval_examples=8",
                "sft.max_len=128",
                "cluster.sft_trainer.num_workers=2",
                "cluster.sft_trainer.cpus_per_worker=1",
            ],
        )
    return to_run_config(cfg)


class Crash(Exception):
    """Stands in for a killed driver."""


class CrashAtStep(NullSink):
    """A sink that fails when the stage logs a given step: the run dies after its checkpoint."""

    def __init__(self, step: int) -> None:
        self.step = step

    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if metrics.get("sft/step") == self.step:
            raise Crash(f"killed at step {self.step}")


@pytest.mark.usefixtures("ray_cluster")
def test_sft_stage_lowers_the_loss_resumes_and_saves_a_model_both_engines_load(
    tiny_model: Path, tmp_path: Path
) -> None:
    run = tiny_run(tiny_model, tmp_path / "run")
    ctx = StageContext(run, Path(run.run_dir), tiny_model, CrashAtStep(3))
    write_sl_cai_outputs(ctx.stage_dir("sl_cai"))
    stage = [("sft", STAGES["sft"])]
    out = ctx.stage_dir("sft")

    # The driver dies while logging step 3: the checkpoint of step 2 is on disk, no manifest.
    with pytest.raises(Crash):
        run_stages(ctx, stage)
    assert (out / "checkpoints" / "latest").read_text().strip() == "step2"
    assert read_manifest(out) is None

    assert run_stages(replace(ctx, sink=NullSink()), stage) == ["sft"]
    manifest = read_manifest(out)
    assert manifest is not None
    # Degenerate records are left out: 4 revisions + round(1.0 * 4) helpful answers.
    assert manifest["counts"] == {
        "examples": 8,
        "revisions": 4,
        "sensitive": 0,
        "dropped_benign_refusals": 0,
        "steps": 4,
    }
    assert {row["id"] for row in read_jsonl(out / "data.jsonl")} == {f"rev:{i}" for i in REVISED} | {
        f"help:{i}" for i in HELPFUL
    }
    assert manifest["resumed_from_step"] == 2 and len(manifest["losses"]) == 4
    # Training lowered the loss on its own data (measured before step 1 and after step 4).
    assert manifest["loss_after"] < manifest["loss_before"]
    assert manifest["step_time_s_median"] > 0
    assert not (out / "checkpoints").exists()
    assert run_stages(replace(ctx, sink=NullSink()), stage) == []

    # The saved folder is one model to both engines: the same greedy tokens.
    prompts = [[Message("user", "Name a colour.")]]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=8)
    tokens = []
    for backend in ("vllm", "transformers"):
        engine = build_engine(EngineSpec(model_path=str(out / "model"), backend=backend, max_model_len=256))  # type: ignore[arg-type]
        try:
            tokens.append(engine.generate(prompts, greedy)[0].completions[0].token_ids)
        finally:
            engine.shutdown()
    assert tokens[0] == tokens[1] and len(tokens[0]) > 0
