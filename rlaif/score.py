"""Command line for the multiple-choice scoring API (`rlaif.judge_api`).

    python -m rlaif.score --input items.jsonl --output scores.jsonl
    python -m rlaif.score --input items.jsonl --output scores.jsonl --lettered engine=transformers
    python -m rlaif.score --input items.jsonl --output scores.jsonl model.name=/path/to/hf-folder

Each input line is ``{"id": ..., "prompt": "...", "options": ["...", "..."]}``; each
output line is the input row plus ``probs``, one probability per option. Arguments
of the form ``key=value`` are Hydra overrides of the same config `python -m rlaif.run`
composes (``model=``, ``engine=``, ``model.name=``, ``engine.backend=``,
``engine.max_model_len=``, ...). A bad line ends the run with one line naming the
file, line and field, and exit status 1; the output is written atomically.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from rlaif.config import RunConfig, engine_spec, register_configs, to_run_config

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m rlaif.score",
        description=__doc__.split("\n\n")[0],
        epilog="Other arguments are config overrides, key=value, as for python -m rlaif.run "
        "(model=, engine=, model.name=, engine.backend=, engine.max_model_len=, ...).",
    )
    parser.add_argument("--input", required=True, type=Path, help="JSONL of {id, prompt, options}")
    parser.add_argument("--output", required=True, type=Path, help="JSONL to write: each input row plus probs")
    parser.add_argument("--lettered", action="store_true", help="list options as (A), (B), ... and score the letters")
    parser.add_argument("--batch-size", type=int, default=256, help="items per engine call")
    args, rest = parser.parse_known_args(argv)
    bad = [a for a in rest if "=" not in a or a.startswith("-")]
    if bad:
        parser.error(f"unrecognised arguments: {' '.join(bad)} (config overrides look like key=value)")
    return args, rest


def compose(overrides: list[str]) -> RunConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return to_run_config(hydra_compose(config_name="config", overrides=overrides))


def main(argv: list[str] | None = None) -> int:
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import OmegaConfBaseException

    from rlaif.core.io import write_jsonl
    from rlaif.core.preference_records import read_item_rows
    from rlaif.engines.models import resolve_model
    from rlaif.errors import USER_ERRORS
    from rlaif.judge_api import score_with_spec

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run = compose(overrides)
        rows = read_item_rows(args.input)
        items = [item for _, item in rows]
        spec = engine_spec(run, str(resolve_model(run.model.name)))
        started = time.perf_counter()
        scores = score_with_spec(items, spec, args.lettered, args.batch_size)
        seconds = time.perf_counter() - started
        write_jsonl(args.output, ({**row, "probs": list(s.probs)} for (row, _), s in zip(rows, scores, strict=True)))
    except (ConfigCompositionException, OmegaConfBaseException, *USER_ERRORS) as err:
        print(f"error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"scored {len(items)} items in {seconds:.1f} s ({len(items) / seconds:.1f} items/s) -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
