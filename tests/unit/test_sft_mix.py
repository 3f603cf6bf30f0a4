"""The SFT mix leaves out refusals of benign requests, whatever sl_cai marked (rlaif.stages.sft.sft_mix)."""

from __future__ import annotations

from pathlib import Path

from rlaif.core.cai import distilled_record
from rlaif.core.io import write_jsonl
from rlaif.stages.sft import sft_mix


def _benign(i: str, kind: str, answer: str, *, refusal: bool | None = None, degenerate: bool = False) -> dict:
    row = {"id": i, "kind": kind, "prompt": f"prompt {i}", "answer": answer, "degenerate": degenerate}
    return row if refusal is None else row | {"refusal": refusal}


def test_refusals_of_benign_requests_are_counted_and_left_out(tmp_path: Path) -> None:
    record = distilled_record("rt-1", "harmful?", None, "harmless", "I won't help with that.", False, 0)
    write_jsonl(tmp_path / "records.jsonl", [record.to_dict()])
    rows = [
        _benign("hp-1", "helpful", "Reverse it with s[::-1].", refusal=False),
        # Marked by sl_cai.
        _benign("sb-1", "sensitive", "I'm sorry, but I can't help with that.", refusal=True),
        # Unmarked (an older helpful.jsonl): SFT's own check finds it.
        _benign("sb-2", "sensitive", "I cannot provide advice on that topic."),
        _benign("sb-3", "sensitive", "Grief comes in waves; it helps to talk to someone you trust.", refusal=False),
        # Degenerate rows were never usable, so they are not counted as refusals left out.
        _benign("sb-4", "sensitive", "I'm sorry, I can't.", refusal=True, degenerate=True),
    ]
    write_jsonl(tmp_path / "helpful.jsonl", rows)
    samples, refusals = sft_mix(tmp_path, helpful_ratio=10.0, seed=0)
    assert refusals == 2
    assert sorted(s.id for s in samples) == ["help:hp-1", "help:sb-3", "rev:rt-1"]
    assert {s.id: s.source for s in samples}["help:sb-3"] == "sensitive"
