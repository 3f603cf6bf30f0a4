"""SL-CAI then SFT end to end on the embedded model at smoke scale, through `python -m rlaif.run`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rlaif.core.cai import SLCAIMethod, SLCAIRecord
from rlaif.core.io import read_jsonl, read_manifest


@pytest.mark.slow
def test_sl_cai_and_sft_stages_write_records_and_a_model(embedded_model: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "rlaif.run",
        "stages=[sl_cai,sft]",
        f"run_dir={run_dir}",
        "cluster.include_dashboard=false",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]

    sl_cai = read_manifest(run_dir / "sl_cai")
    assert sl_cai is not None
    records = [SLCAIRecord.from_dict(row) for row in read_jsonl(run_dir / "sl_cai" / "records.jsonl")]
    assert len(records) == sl_cai["counts"]["records"] == 24
    # The default method distils answers given in context: one per prompt, no critique rounds.
    assert all(r.method == SLCAIMethod.CONTEXT_DISTILLATION and r.principle_id and not r.rounds for r in records)
    assert any(r.final_answer.strip() for r in records)
    assert sl_cai["counts"]["helpful"] == 24 and sl_cai["throughput"]["chains_per_min"] > 0

    sft = read_manifest(run_dir / "sft")
    assert sft is not None and sft["counts"]["steps"] == 4 and len(sft["losses"]) == 4
    model = run_dir / "sft" / "model"
    assert (model / "model.safetensors").is_file() and (model / "tokenizer.json").is_file()
    # The run says where its outputs went.
    assert str(run_dir / "sl_cai" / "records.jsonl") in done.stdout
    assert str(model) in done.stdout
