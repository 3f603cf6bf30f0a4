"""Checks of the user's input before Ray starts or a model loads: bad input fails in seconds.

For every stage the run will execute (those without a MANIFEST), the files it reads are
loaded and validated: the constitution (YAML syntax, required fields), the prompt
datasets (JSON lines, the prompt field, at least one record) and the models it names.
Every prompt is rendered with the model's chat template (after the longest in-context
setting where ``sl_cai.method=context_distillation`` puts one before it) and must leave
room for the stage's ``max_new_tokens`` within ``engine.max_model_len``. Each failure raises one of
`rlaif.errors.USER_ERRORS` with a message naming the culprit (file and line, or field),
which `rlaif.run` prints as one line; nothing has been written to the run folder yet.

    check_inputs(run_cfg, Path(run_cfg.run_dir), model_path)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from rlaif.config import RunConfig
from rlaif.core.constitution import Constitution, default_constitution_path, load_constitution
from rlaif.core.prompts import DatasetError, PromptRecord, load_prompts
from rlaif.engines.base import Message, PromptRenderer, PromptTooLongError
from rlaif.engines.models import resolve_model
from rlaif.stages.pipeline import pending_stages

log = logging.getLogger(__name__)

# Stages that read the constitution.
_USES_CONSTITUTION = ("sl_cai", "preferences", "rl_cai", "evaluate")


def check_inputs(run: RunConfig, run_dir: Path, model_path: Path) -> None:
    """Raise a user error naming the first bad input of the stages still to run; return quietly if all is well."""
    pending = pending_stages(run_dir, run.stages)
    if any(s in _USES_CONSTITUTION for s in pending):
        constitution_file = Path(run.constitution) if run.constitution else default_constitution_path()
        constitution = load_constitution(constitution_file)
    # (prompt source, records, tokens to leave room for, turns before each prompt) per dataset read.
    datasets: list[tuple[str, Sequence[PromptRecord], int, Sequence[Message]]] = []
    # Only the prompts each stage will use (its first num_prompts) are length-checked.
    if "smoke" in pending:
        smoke = load_prompts(run.smoke.prompts)[: run.smoke.num_prompts]
        datasets.append((f"smoke.prompts={run.smoke.prompts}", smoke, run.smoke.max_new_tokens, ()))
    if "sl_cai" in pending:
        from rlaif.core.cai import SLCAIMethod
        from rlaif.stages.sl_cai import check_constitution, helpful_prompts, red_team_prompts

        c = run.sl_cai
        check_constitution(SLCAIMethod(c.method), constitution, constitution_file)
        setting = _longest_setting(constitution) if c.method == SLCAIMethod.CONTEXT_DISTILLATION else ()
        datasets.append((f"sl_cai.red_team={c.red_team}", red_team_prompts(c, run.seed), c.max_new_tokens, setting))
        datasets.append((f"sl_cai.helpful={c.helpful}", helpful_prompts(c, run.seed), c.max_new_tokens, ()))
    if "sl_cai" not in pending and any(s in ("rl_cai", "evaluate") for s in pending):
        # PPO and evaluation read sl_cai's sources too: their lines must parse and hold records.
        load_prompts(run.sl_cai.red_team, data_dir=run.sl_cai.red_team_data_dir)
        load_prompts(run.sl_cai.helpful, data_dir=run.sl_cai.helpful_data_dir)
    if "rl_cai" in pending and run.ppo.prompt_file:
        from rlaif.stages.ppo_prompts import load_prompt_file

        records = load_prompt_file(run.ppo.prompt_file)
        datasets.append((f"ppo.prompt_file={run.ppo.prompt_file}", records, run.ppo.max_new_tokens, ()))
    if "preferences" in pending:
        from rlaif.stages.preferences import select_prompts

        for name in (run.label.policy, run.label.judge_model):
            if name:
                resolve_model(name)
        datasets.append((f"label.prompts={run.label.prompts}", select_prompts(run), run.label.max_new_tokens, ()))
    if datasets:
        _check_lengths(run, model_path, datasets)


def _longest_setting(constitution: Constitution) -> tuple[Message, ...]:
    """The in-context setting (guideline and exemplars) of the principle with the longest guideline."""
    from rlaif.core.cai import context_turns

    principle = max(constitution.principles, key=lambda p: len(p.guideline))
    return tuple(Message(t.role, t.content) for t in context_turns(constitution.exemplars, principle))


def _check_lengths(
    run: RunConfig, model_path: Path, datasets: list[tuple[str, Sequence[PromptRecord], int, Sequence[Message]]]
) -> None:
    """Every prompt, after its setting in the model's chat template, plus the stage's new tokens fits the context."""
    from transformers import AutoTokenizer

    renderer = PromptRenderer(AutoTokenizer.from_pretrained(model_path), run.engine.max_model_len)
    for field, records, room, setting in datasets:
        if not records:
            raise DatasetError(f"{field}: no records")
        limit = renderer.max_model_len
        where = f" (with the {len(setting)}-turn in-context setting of sl_cai.method)" if setting else ""
        for record in records:
            text = renderer.render([*setting, Message("user", record.prompt)])
            tokens = len(renderer.tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]
            if tokens + room > limit:
                raise PromptTooLongError(
                    f"{field}: record id {record.id} ({record.prompt[:40]!r}…): {tokens} prompt tokens{where} "
                    f"plus {room} new tokens exceed the model's context, engine.max_model_len={limit}"
                )
