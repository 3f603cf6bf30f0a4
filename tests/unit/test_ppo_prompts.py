"""RL-CAI's prompt sources: ppo.prompt_file read in file order with wrap-around, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rlaif.config import RunConfig, register_configs, to_run_config
from rlaif.core.prompts import DatasetError, PromptRecord
from rlaif.stages.ppo_prompts import FilePrompts, TrainPrompts, load_prompt_file, train_prompts

CONF = Path(__file__).resolve().parents[2] / "conf"
register_configs()


def compose_run(overrides: list[str]) -> RunConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return to_run_config(compose(config_name="config", overrides=overrides))


def write_prompts(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"prompt {i}"}) + "\n" for i in range(n)))
    return path


def ids(batch: list[PromptRecord]) -> list[str]:
    return [r.id for r in batch]


def test_iteration_k_takes_the_files_rows_k_times_b_onwards_and_wraps_around(tmp_path: Path) -> None:
    prompts = FilePrompts.load(str(write_prompts(tmp_path / "p.jsonl", 6)), per_iteration=4)
    # B = 4 over 6 rows: iteration 1 runs off the end (rows 4, 5) and wraps to rows 0, 1.
    assert [ids(prompts.batch(k)) for k in range(4)] == [
        ["p0", "p1", "p2", "p3"],
        ["p4", "p5", "p0", "p1"],
        ["p2", "p3", "p4", "p5"],
        ["p0", "p1", "p2", "p3"],
    ]
    # A pure function of the index: a resumed run, loading the file again, continues the sequence.
    again = FilePrompts.load(str(tmp_path / "p.jsonl"), per_iteration=4)
    assert ids(again.batch(2)) == ids(prompts.batch(2))


def test_plain_text_files_are_read_in_line_order(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("zebra\napple\n\nmango\n")
    prompts = FilePrompts.load(str(path), per_iteration=2)
    assert [r.prompt for r in prompts.batch(0)] == ["zebra", "apple"]
    assert [r.prompt for r in prompts.batch(1)] == ["mango", "zebra"]


def test_the_config_switches_the_stage_to_the_file_with_nothing_held_out(tmp_path: Path) -> None:
    path = write_prompts(tmp_path / "p.jsonl", 40)
    # A held-out fraction of 0.5 would drop about half the rows from sl_cai's sources; none from the file.
    run = compose_run([f"ppo.prompt_file={path}", "ppo.prompts_per_iteration=8", "sl_cai.heldout_fraction=0.5"])
    batch = train_prompts(run)
    assert [ids(batch(k)) for k in range(5)] == [[f"p{i}" for i in range(8 * k, 8 * k + 8)] for k in range(5)]
    # Without it, the red-team mix as before.
    mix = compose_run(["ppo.prompts_per_iteration=8"])
    assert ids(train_prompts(mix)(0)) == ids(TrainPrompts.load(mix).batch(0, mix.seed))


def test_a_missing_or_empty_prompt_file_names_the_field_and_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.jsonl"
    with pytest.raises(DatasetError, match=rf"ppo.prompt_file: {missing}: no such prompt file"):
        load_prompt_file(str(missing))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DatasetError, match=rf"ppo.prompt_file: {empty}: no records"):
        load_prompt_file(str(empty))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"question": "no prompt"}\n')
    with pytest.raises(DatasetError, match=rf"ppo.prompt_file: {bad}: line 2: missing field 'prompt'"):
        load_prompt_file(str(bad))


def test_prompt_file_values_are_checked_with_the_field_named(tmp_path: Path) -> None:
    path = write_prompts(tmp_path / "p.jsonl", 8)
    assert compose_run([]).ppo.prompt_file is None
    with pytest.raises(ValueError, match="ppo.prompt_file must name a file"):
        compose_run(["ppo.prompt_file=' '"])
    # The file replaces the mix: a share of helpful prompts would be silently ignored, so it is refused.
    with pytest.raises(ValueError, match=r"ppo.prompt_file=.* ppo.helpful_fraction and ppo.sensitive_fraction"):
        compose_run([f"ppo.prompt_file={path}", "ppo.helpful_fraction=0.25"])
