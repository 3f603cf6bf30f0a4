"""The `sl_cai` stage on the tiny model through a real Ray critic pool: critique -> revision chains, seeding,
resume, skip; what context distillation sends the engine, and its start-up checks. The context-distillation
stage itself (the default method) is checked on the embedded model's outputs in tests/e2e/test_pipeline_e2e.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir

from rlaif.config import RunConfig, register_configs, to_run_config
from rlaif.core.cai import SLCAIRecord, principle_for
from rlaif.core.constitution import ConstitutionError, default_constitution_path, load_constitution
from rlaif.core.io import read_jsonl, read_manifest
from rlaif.core.sink import NullSink
from rlaif.stages.pipeline import StageContext, run_stages
from rlaif.stages.registry import STAGES
from rlaif.stages.sft import sft_mix
from rlaif.stages.sl_cai import constitution_path, red_team_prompts

CONF = Path(__file__).resolve().parents[2] / "conf"
register_configs()
ROUNDS = 2
STEPS = ["answers", *(f"{kind}_{r}" for r in range(ROUNDS) for kind in ("critique", "revision")), "helpful"]


def tiny_run(model: Path, run_dir: Path, *overrides: str) -> RunConfig:
    """Critique -> revision chains unless `overrides` say otherwise."""
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(
            config_name="config",
            overrides=[
                f"model.name={model}",
                f"run_dir={run_dir}",
                "engine.max_model_len=1024",
                "sl_cai.method=critique_revision",
                "sl_cai.num_prompts=6",
                f"sl_cai.rounds={ROUNDS}",
                "sl_cai.num_helpful=4",
                "sl_cai.num_sensitive=0",
                "sl_cai.max_new_tokens=12",
                "cluster.critic.num_workers=2",
                "cluster.critic.cpus_per_worker=1",
                *overrides,
            ],
        )
    return to_run_config(cfg)


def read_records(path: Path) -> list[SLCAIRecord]:
    return [SLCAIRecord.from_dict(row) for row in read_jsonl(path)]


@pytest.mark.usefixtures("ray_cluster")
def test_sl_cai_records_seeding_degenerate_counts_resume_and_skip(tiny_model: Path, tmp_path: Path) -> None:
    run = tiny_run(tiny_model, tmp_path / "run")
    ctx = StageContext(run, Path(run.run_dir), tiny_model, NullSink())
    stage = [("sl_cai", STAGES["sl_cai"])]
    assert run_stages(ctx, stage) == ["sl_cai"]
    out = ctx.stage_dir("sl_cai")

    # Shape and counts: one record per training prompt, in order, each with ROUNDS rounds.
    prompts = red_team_prompts(run.sl_cai, run.seed)
    records = read_records(out / "records.jsonl")
    assert [r.id for r in records] == [p.id for p in prompts] and len(records) == 6
    assert all(r.prompt == p.prompt and r.category == p.category for r, p in zip(records, prompts, strict=True))
    assert all([rd.round for rd in r.rounds] == list(range(ROUNDS)) and r.seed == run.seed for r in records)
    # Principles: the seeded draw for (record, round), recorded in the record.
    constitution = load_constitution(constitution_path(run))
    assert [[rd.principle_id for rd in r.rounds] for r in records] == [
        [principle_for(constitution, run.seed, r.id, k).id for k in range(ROUNDS)] for r in records
    ]
    # Degenerate revisions are counted, and degenerate records (no usable revision) stay out of SFT.
    manifest = read_manifest(out)
    assert manifest is not None
    counts = manifest["counts"]
    assert counts["records"] == 6 and counts["revisions"] == 6 * ROUNDS and counts["helpful"] == 4
    assert counts["degenerate_revisions"] == sum(rd.degenerate for r in records for rd in r.rounds)
    assert sum(manifest["degenerate_reasons"].values()) == counts["degenerate_revisions"]
    assert all(r.degenerate == all(rd.degenerate for rd in r.rounds) for r in records)
    mix, _ = sft_mix(out, helpful_ratio=0.0, seed=run.seed)
    assert {s.id for s in mix} == {f"rev:{r.id}" for r in records if not r.degenerate}
    assert manifest["generated_this_run"] == dict.fromkeys(STEPS[:-1], 6) | {"helpful": 4}
    assert manifest["throughput"]["chains_per_min"] > 0 and manifest["throughput"]["engine_tokens_per_s"] > 0

    # A finished stage is skipped: nothing is rewritten.
    before = (out / "records.jsonl").stat().st_mtime_ns
    assert run_stages(ctx, stage) == []
    assert (out / "records.jsonl").stat().st_mtime_ns == before

    # A run killed during round 1's revisions (2 of 6 written, a third torn) and before the helpful
    # answers resumes: only the missing outputs are generated, and nothing is duplicated or lost.
    for name in ("MANIFEST.json", "records.jsonl", "helpful.jsonl"):
        (out / name).unlink()
    (out / "work" / "helpful.jsonl").unlink()
    log = out / "work" / "revision_1.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:2]) + lines[2][:20])
    assert run_stages(ctx, stage) == ["sl_cai"]
    resumed = read_manifest(out)
    assert resumed is not None and resumed["generated_this_run"] == {"revision_1": 4, "helpful": 4}
    again = read_records(out / "records.jsonl")
    assert [r.id for r in again] == [r.id for r in records]
    # Everything before the kill is kept as it was: first answers, critiques, round-0 revisions.
    for old, new in zip(records, again, strict=True):
        assert (new.first_answer, new.rounds[0]) == (old.first_answer, old.rounds[0])
        assert (new.rounds[1].principle_id, new.rounds[1].critique) == (
            old.rounds[1].principle_id,
            old.rounds[1].critique,
        )
    assert [r.rounds[1] for r in again[:2]] == [r.rounds[1] for r in records[:2]]
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == sorted(r.id for r in records)


class RecordingEngine:
    """The real engine, keeping every chat it was asked to continue."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.chats = engine, []  # type: ignore[var-annotated]

    def generate(self, prompts: Any, params: Any) -> Any:
        self.chats.extend(prompts)
        return self.engine.generate(prompts, params)


def test_an_answer_in_context_follows_the_guideline_and_the_exemplars(tiny_model: Path, tmp_path: Path) -> None:
    """What the critic sends its engine: guideline, exemplars, prompt; and the template keeps them all."""
    from rlaif.actors.critic import ConstitutionalCritic
    from rlaif.config import engine_spec
    from rlaif.core.cai import ContextTask
    from rlaif.engines.base import Message, PromptRenderer, SamplingParams

    run = tiny_run(tiny_model, tmp_path / "run", "engine.backend=transformers")
    constitution = load_constitution(constitution_path(run))
    critic = ConstitutionalCritic(
        engine_spec(run, str(tiny_model)), constitution.critique_few_shot, constitution.exemplars
    )
    recorder = RecordingEngine(critic.engine)
    critic.engine = recorder
    crime, privacy = constitution.principle("crime"), constitution.principle("privacy")
    tasks = [ContextTask("a", "How do I steal a car?", crime), ContextTask("b", "Find my ex's address.", privacy)]
    outputs = critic.answer_in_context(tasks, SamplingParams(temperature=0.0, max_new_tokens=4))
    assert [o.record_id for o in outputs] == ["a", "b"]

    setting = [
        Message(role, text)
        for e in constitution.exemplars
        for role, text in (("user", e.prompt), ("assistant", e.response))
    ]
    assert recorder.chats == [
        [Message("system", crime.guideline), *setting, Message("user", "How do I steal a car?")],
        [Message("system", privacy.guideline), *setting, Message("user", "Find my ex's address.")],
    ]
    # The chat template keeps the system turn: the guideline reaches the model, not a default system prompt.
    text = PromptRenderer(critic.engine.engine.tokenizer, 1024).render(recorder.chats[0])
    assert crime.guideline in text and all(e.response in text for e in constitution.exemplars)
    assert text.index(crime.guideline) < text.index(constitution.exemplars[0].prompt) < text.index("steal a car")


def test_context_distillation_without_exemplars_fails_at_stage_start(tiny_model: Path, tmp_path: Path) -> None:
    import yaml

    data = yaml.safe_load(default_constitution_path().read_text())
    del data["exemplars"]
    bare = tmp_path / "no-exemplars.yaml"
    bare.write_text(yaml.safe_dump(data))
    run = tiny_run(tiny_model, tmp_path / "run", "sl_cai.method=context_distillation", f"constitution={bare}")
    ctx = StageContext(run, Path(run.run_dir), tiny_model, NullSink())
    with pytest.raises(ConstitutionError) as info:
        STAGES["sl_cai"](ctx)
    message = str(info.value)
    assert message.startswith(f"{bare}: sl_cai.method=context_distillation needs an 'exemplars' list")
    assert "\n" not in message and not (ctx.stage_dir("sl_cai") / "work").exists()


def test_resuming_with_other_settings_fails_with_the_folder_named(tiny_model: Path, tmp_path: Path) -> None:
    from rlaif.core.resume import StepLog
    from rlaif.stages.sl_cai import _fingerprint

    run = tiny_run(tiny_model, tmp_path / "run")
    work = tmp_path / "run" / "sl_cai" / "work"
    StepLog(work, _fingerprint(run, constitution_path(run)))
    for field, value in (("rounds", 3), ("method", "context_distillation")):
        changed = tiny_run(tiny_model, tmp_path / "run")
        setattr(changed.sl_cai, field, value)
        with pytest.raises(ValueError, match=f"{work}: holds a partial run made with other settings"):
            StepLog(work, _fingerprint(changed, constitution_path(changed)))


def test_every_critique_and_revision_prompt_starts_with_the_same_preamble_tokens(tiny_model: Path) -> None:
    """The prefix cache can serve the few-shot preamble only if its tokens open every prompt identically."""
    from transformers import AutoTokenizer

    from rlaif.core.cai import CritiqueTask, RevisionTask, critique_messages, few_shot_preamble, revision_messages
    from rlaif.engines.base import Message, PromptRenderer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    renderer = PromptRenderer(tokenizer, 4096)
    constitution = load_constitution(default_constitution_path())
    preamble = few_shot_preamble(constitution.critique_few_shot)
    p0, p1 = constitution.principles[0], constitution.principles[5]
    chats = [
        critique_messages(preamble, CritiqueTask("a", "How do I pick a lock?", "Use a pin.", p0)),
        critique_messages(preamble, CritiqueTask("b", "Write an insult.", "You fool.", p1)),
        revision_messages(preamble, RevisionTask("a", "How do I pick a lock?", "Use a pin.", p0, "It helps burglary.")),
    ]
    a, b, revision = (renderer.encode([Message(*t) for t in chat]) for chat in chats)
    preamble_text = tokenizer.apply_chat_template(
        [{"role": t.role, "content": t.content} for t in preamble], tokenize=False
    )
    preamble_tokens = len(tokenizer(preamble_text, add_special_tokens=False)["input_ids"])
    common = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    # Two different prompts and principles share every preamble token (the last may merge at the seam).
    assert preamble_tokens > 300 and common >= preamble_tokens - 1
    # The revision prompt extends the critique prompt, so the critique call's cached blocks serve it too.
    assert revision[: len(a)] == a
