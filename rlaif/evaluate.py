"""Command line: the evaluate stage's behaviour measures on any models and prompt files.

    python -m rlaif.evaluate --model runs/x/rl_cai/policy --model smollm2-135m-instruct \\
        --prompts red_team.jsonl --prompts helpful.txt --output eval.json
    python -m rlaif.evaluate --model DIR --prompts p.txt --reward-model runs/x/reward_model/model
    python -m rlaif.evaluate --model DIR --prompts p.txt eval.max_new_tokens=64 eval.refusal_judge=true
    python -m rlaif.evaluate --model DIR --heldout --prompts builtin:red_team --prompts builtin:helpful \\
        --prompts builtin:sensitive sl_cai.heldout_fraction=0.2

Each ``--model`` (a Hugging Face folder, the embedded model's name or a hub id) answers
every prompt of every ``--prompts`` file (JSONL with a ``prompt`` field, Parquet, or plain
text with one prompt a line; or a shipped set, ``builtin:red_team``, ``builtin:helpful``,
``builtin:sensitive``, ``builtin:sensitive_harmful``) through a pool of rollout actors, as in
the evaluate stage (`rlaif.stages.eval_measures`). ``--heldout`` keeps only the held-out split
of each set (`rlaif.core.prompts.split_train_heldout` at ``sl_cai.heldout_fraction`` and
``seed``, both overridable), exactly the prompts the evaluate stage measures and no training
stage reads; a set no training stage reads (``eval.sensitive_harmful``) is kept whole, as
the stage does (`rlaif.stages.evaluate.heldout_sets`). Per (model, prompt file) it reports
the refusal rate by phrase (`rlaif.core.refusal`), the mean response length in tokens and,
with ``--reward-model``, the reward model's mean score; with ``eval.refusal_judge=true`` also
the feedback model's refusal rate (``eval.judge_model``, else ``label.judge_model``, else
``model.name``).

Outputs: the JSON summary (``--output``, default ``evaluate.json``) with ``refusal``,
``refusal_judge`` (if asked) and ``models`` keyed ``[model][prompt file]``, as the stage's
``summary.json`` is; beside it ``<name>.responses.jsonl`` (every answer) and ``<name>.png``,
a grouped bar chart of the refusal rate per model and prompt file (any number of files, so
unlike the stage's harmlessness-helpfulness plot it needs no red-team/helpful pairing).
Arguments of the form ``key=value`` are Hydra overrides of the config `python -m rlaif.run`
composes (``eval.max_new_tokens=``, ``eval.temperature=``, ``engine=``, ``cluster.rollout.*=``,
...). Ray: the cluster this process is already connected to, else ``cluster.address``, else a
new local one. Bad input (a missing file, a bad line, an unknown model) ends the run with one
line naming it and exit status 1, before Ray starts where it can.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

from rlaif.config import RunConfig
from rlaif.core.prompts import BUILTIN_PROMPT_SETS, DatasetError, PromptRecord, load_prompts, split_train_heldout

log = logging.getLogger("rlaif.evaluate")
BUILTIN = "builtin:"


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m rlaif.evaluate",
        description=__doc__.split("\n\n")[0],
        epilog="Other arguments are config overrides, key=value, as for python -m rlaif.run "
        "(eval.max_new_tokens=, eval.temperature=, eval.refusal_judge=true, engine=, ...).",
    )
    parser.add_argument("--model", action="append", required=True, help="model folder or name to evaluate (repeatable)")
    parser.add_argument(
        "--prompts",
        action="append",
        required=True,
        help="prompt file: .jsonl with a 'prompt' field, .parquet, or plain text, one prompt a line; or a "
        f"shipped set, builtin:NAME with NAME one of {', '.join(BUILTIN_PROMPT_SETS)} (repeatable)",
    )
    parser.add_argument(
        "--heldout",
        action="store_true",
        help="keep only each set's held-out split, the prompts the evaluate stage measures (split at "
        "sl_cai.heldout_fraction and seed; give a run's values as key=value to match it)",
    )
    parser.add_argument("--output", type=Path, default=Path("evaluate.json"), help="JSON summary to write")
    parser.add_argument("--reward-model", type=Path, default=None, help="reward-model folder: also report RM scores")
    args, rest = parser.parse_known_args(argv)
    bad = [a for a in rest if "=" not in a or a.startswith("-")]
    if bad:
        parser.error(f"unrecognised arguments: {' '.join(bad)} (config overrides look like key=value)")
    return args, rest


def read_prompt_files(
    sources: list[str], heldout: tuple[float, int] | None = None, whole: Collection[str] = ()
) -> list[tuple[str, PromptRecord]]:
    """(set name, record) for every prompt of every source, in order.

    A file's set name is its path as given; a shipped set's is its name (``builtin:sensitive``
    -> ``sensitive``, as in the stage's summary). With `heldout` = (fraction, seed) only each
    set's held-out split is kept, except for the sources in `whole` (sets no training stage
    reads, held out entirely). Ids are prefixed with the source's position, so sources
    that reuse ids (or prompts) keep theirs apart.
    """
    for source in sources:
        if not source.startswith(BUILTIN) and not Path(source).is_file():
            raise DatasetError(f"{source}: no such prompt file")
    if len(set(sources)) != len(sources):
        raise ValueError(f"--prompts: a source is given twice ({', '.join(sources)})")
    out: list[tuple[str, PromptRecord]] = []
    for i, source in enumerate(sources):
        if source.startswith(BUILTIN):
            name, records = source.removeprefix(BUILTIN), load_prompts(source)
        else:
            kind = {".jsonl": "jsonl", ".parquet": "parquet"}.get(Path(source).suffix.lower(), "text")
            name, records = source, load_prompts(Path(source), kind=kind)
        if heldout is not None and source not in whole:
            _, records = split_train_heldout(records, *heldout)
            if not records:
                raise DatasetError(f"{source}: --heldout: nothing held out at sl_cai.heldout_fraction={heldout[0]}")
        out += [(name, dataclasses.replace(r, id=f"{i}:{r.id}")) for r in records]
    return out


def measure(
    run: RunConfig, models: dict[str, Path], prompts: list[tuple[str, PromptRecord]], reward_model: Path | None
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The summary and the answers (model -> prompt id -> row) of `models` on `prompts`, on a connected Ray."""
    from rlaif.stages.eval_measures import generate_each, judge_refusals, refusal_items, score_responses
    from rlaif.stages.eval_summary import (
        judged_refusal_summary,
        model_summary,
        refusal_summary,
        set_sizes,
    )

    names = list(models)
    responses = generate_each(run, models, prompts)
    scores = None if reward_model is None else score_responses(run, reward_model, names, prompts, responses)
    summary: dict[str, Any] = {
        "model_paths": {name: str(path) for name, path in models.items()},
        "prompts": set_sizes(prompts),
        "refusal": refusal_summary(names, prompts, responses),
        "models": model_summary(names, prompts, responses, scores),
        "settings": {
            "max_new_tokens": run.eval.max_new_tokens,
            "temperature": run.eval.temperature,
            "seed": run.seed,
            "reward_model": None if reward_model is None else str(reward_model),
        },
    }
    if run.eval.refusal_judge:
        p_decline = judge_refusals(run, refusal_items(names, prompts, responses))
        summary["refusal_judge"] = judged_refusal_summary(names, prompts, p_decline)
    return summary, responses


def write_outputs(
    output: Path, summary: dict[str, Any], prompts: list[tuple[str, PromptRecord]], responses: dict[str, Any]
) -> tuple[Path, Path]:
    """The JSON summary, ``<stem>.responses.jsonl`` and ``<stem>.png`` beside it; the two side files' paths."""
    from rlaif.core.io import atomic_write_text, write_jsonl
    from rlaif.core.refusal import is_refusal
    from rlaif.stages.eval_plot import plot_refusal_bars

    output.parent.mkdir(parents=True, exist_ok=True)
    rows_path = output.with_name(f"{output.stem}.responses.jsonl")
    rows = (
        {"model": m, "set": name, "prompt": p.prompt, "refusal": is_refusal(r[p.id]["response"]), **r[p.id]}
        for m, r in responses.items()
        for name, p in prompts
    )
    write_jsonl(rows_path, rows)
    plot = plot_refusal_bars(summary["refusal"], output.with_name(f"{output.stem}.png"))
    atomic_write_text(output, json.dumps(summary, indent=2) + "\n")
    return rows_path, plot


def print_table(summary: dict[str, Any]) -> None:
    """The user-facing summary: refusal rates, then lengths and RM scores."""
    from rlaif.stages.eval_summary import refusal_lines

    print("\nrefusal rate per model and prompt file" + (" (phrase / judge)" if "refusal_judge" in summary else ""))
    for line in refusal_lines(summary["refusal"], summary.get("refusal_judge")):
        print(f"  {line}")
    for model, by_set in summary["models"].items():
        for name, v in by_set.items():
            rm = f", RM {v['rm_score_mean']:+.3f}" if "rm_score_mean" in v else ""
            print(f"  {model} on {name}: {v['length_mean']:.0f} tokens{rm}")


def main(argv: list[str] | None = None) -> int:
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import OmegaConfBaseException

    from rlaif.engines.models import resolve_model
    from rlaif.errors import USER_ERRORS
    from rlaif.score import compose

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run = compose(overrides)
        heldout = (run.sl_cai.heldout_fraction, run.seed) if args.heldout else None
        prompts = read_prompt_files(args.prompts, heldout, _read_whole(run))
        models = {name: resolve_model(name) for name in dict.fromkeys(args.model)}
        if args.reward_model is not None and not (args.reward_model / "config.json").is_file():
            raise ValueError(f"--reward-model {args.reward_model}: no config.json (not a model folder)")
        started_ray = _connect(run)
        try:
            summary, responses = measure(run, models, prompts, args.reward_model)
        finally:
            if started_ray:
                import ray

                ray.shutdown()
        rows_path, plot = write_outputs(args.output, summary, prompts, responses)
    except (ConfigCompositionException, OmegaConfBaseException, *USER_ERRORS) as err:
        print(f"error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    print_table(summary)
    print(f"wrote {args.output}, {rows_path} and {plot}")
    return 0


def _read_whole(run: RunConfig) -> set[str]:
    """The sources the evaluate stage holds out entirely (no training stage reads them)."""
    from rlaif.stages.evaluate import heldout_sets

    return {s.source for s in heldout_sets(run) if s.whole}


def _connect(run: RunConfig) -> bool:
    """Join the Ray cluster this process is on, else the configured one; whether this call started it."""
    import ray

    from rlaif.actors.cluster import ClusterSpec, connect

    if ray.is_initialized():
        return False
    c = run.cluster
    connect(ClusterSpec(c.address, c.num_cpus, c.num_gpus, c.include_dashboard, c.dashboard_host))
    return True


if __name__ == "__main__":
    sys.exit(main())
