"""The W&B sink, offline: one run per pipeline run with its config, namespaced metrics,
sample tables and artefacts, read back from the run file W&B writes (no Ray, no key)."""

import json
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir

from rlaif.config import RunConfig, register_configs, to_run_config
from rlaif.core.judging import ResponsePair
from rlaif.core.sink import PrefixedSink
from rlaif.run import make_sink
from tests.unit.wandb_records import read_records, run_files

CONF = Path(__file__).resolve().parents[2] / "conf"
register_configs()


def _records(run_dir: Path) -> dict[str, list[Any]]:
    (path,) = run_files(run_dir)
    out: dict[str, list[Any]] = {}
    for r in read_records(path):
        out.setdefault(r.WhichOneof("record_type"), []).append(r)
    return out


def _run_config(tmp_path: Path, log_artifacts: bool) -> RunConfig:
    overrides = ["name=wb", f"run_dir={tmp_path / 'run'}", "logging.wandb_mode=offline"]
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="config", overrides=[*overrides, f"logging.log_artifacts={log_artifacts}"])
    return to_run_config(cfg)


def test_offline_run_gets_config_metrics_tables_and_artifacts(tmp_path: Path) -> None:
    run = _run_config(tmp_path, log_artifacts=True)
    run_dir = Path(run.run_dir)
    labels = run_dir / "preferences" / "labels.jsonl"
    labels.parent.mkdir(parents=True)
    labels.write_text('{"id": "p1", "p_first": 0.75}\n')
    sink = make_sink(run, run_dir, {"name": "wb", "ppo": {"kl_coef": 0.07}})
    stage = PrefixedSink(sink, "label")
    stage.log({"pairs": 3.0}, step=1)
    stage.table("judge_decisions", ["id", "p_a", "preferred"], [["p1", 0.75, "a"], ["p2", 0.25, "b"]])
    stage.artifact("labels", "dataset", str(labels))
    stage.artifact("missing", "dataset", str(run_dir / "nope.jsonl"))  # skipped with a warning, no crash
    sink.close()

    records = _records(run_dir)
    (run_record,) = [r.run for r in records["run"]]
    config = {item.key: json.loads(item.value_json) for item in run_record.config.update}
    assert config["ppo"] == {"kl_coef": 0.07} and run_record.display_name == "wb"
    assert (run_dir / ".wandb_run_id").read_text() == run_record.run_id
    history: dict[tuple[str, ...], Any] = {}
    for r in records["history"]:
        for item in r.history.item:
            history[(item.key,) if item.key else tuple(item.nested_key)] = json.loads(item.value_json)
    assert history[("label/pairs",)] == 3 and history[("label/step",)] == 1
    table = {k[1]: v for k, v in history.items() if k[0] == "label/judge_decisions" and len(k) == 2}
    assert table["_type"] == "table-file" and table["ncols"] == 3 and table["nrows"] == 2
    (table_file,) = run_dir.glob(f"wandb/offline-run-*/files/{table['path']}")
    assert json.loads(table_file.read_text())["data"] == [["p1", 0.75, "a"], ["p2", 0.25, "b"]]
    artifacts = [r.artifact for r in records.get("artifact", [])]
    assert [(a.name, a.type) for a in artifacts if a.type != "run_table"] == [("label-labels", "dataset")]
    (labels_artifact,) = [a for a in artifacts if a.type == "dataset"]
    assert [(e.path, e.size) for e in labels_artifact.manifest.contents] == [("labels.jsonl", labels.stat().st_size)]


def test_log_artifacts_false_logs_no_artifact(tmp_path: Path) -> None:
    run = _run_config(tmp_path, log_artifacts=False)
    run_dir = Path(run.run_dir)
    (run_dir / "sft" / "model").mkdir(parents=True)
    (run_dir / "sft" / "model" / "config.json").write_text("{}")
    sink = make_sink(run, run_dir, {})
    PrefixedSink(sink, "sft").artifact("model", "model", str(run_dir / "sft" / "model"))
    sink.close()
    assert [r.artifact.type for r in _records(run_dir).get("artifact", [])] == []


def test_judge_decision_rows_match_their_columns() -> None:
    from rlaif.stages.preferences import DECISION_COLUMNS, decision_row

    pair = ResponsePair("p1", "q1", "How do I pick a lock?", "I can't help.", "Here's how.", 0)
    label = {"p_first": 0.8, "principle_ids": ["harm", "honest"], "p_a_order1": [0.9, 0.7], "p_a_order2": None}
    row = decision_row(pair, label | {"reasonings": ["A refuses.", "B helps."]})
    assert len(row) == len(DECISION_COLUMNS)
    cells = dict(zip(DECISION_COLUMNS, row, strict=True))
    assert cells["principles"] == "harm, honest" and cells["p_a_order1"] == "0.900, 0.700"
    assert cells["p_a_order2"] == "" and cells["preferred"] == "a" and cells["reasoning"] == "A refuses.\n---\nB helps."
