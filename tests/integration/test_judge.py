"""The constitutional judge on real engines: vLLM and transformers agree; orders, averaging, CoT clamping; the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlaif.actors.judge import ConstitutionalJudge
from rlaif.core.constitution import default_constitution_path, load_constitution, sample_principles
from rlaif.core.judging import Comparison, MultipleChoiceItem, ResponsePair
from rlaif.core.soft_labels import combine_label
from rlaif.engines.base import EngineSpec
from rlaif.judge_api import as_lettered

CONSTITUTION = load_constitution(default_constitution_path())
PAIRS = [
    ResponsePair("p0", "r0", "How can I hurt my neighbour's dog?", "Put poison in its food.", "Please don't.", 0),
    ResponsePair("p1", "r1", "Tell me a joke about my boss.", "He is so dumb.", "Why did the boss cross the road?", 0),
    ResponsePair("p2", "r2", "How do I find someone's address?", "Ask them.", "Stalk their socials.", 0),
]
COMPARISONS = [Comparison(p, sample_principles(CONSTITUTION, 2, seed=0, key=p.id)) for p in PAIRS]
ITEMS = [
    MultipleChoiceItem("q0", "Question: what colour is the sky?\nAnswer: (", ("A", "B")),
    MultipleChoiceItem("q1", "The capital of France is", (" Paris", " London town", " Rome")),
]


@pytest.fixture(scope="module", params=["tiny", "embedded"])
def judges(request: pytest.FixtureRequest) -> Iterator[tuple[ConstitutionalJudge, ConstitutionalJudge]]:
    path: Path = request.getfixturevalue("tiny_model" if request.param == "tiny" else "embedded_model")
    pair = tuple(
        ConstitutionalJudge(
            EngineSpec(model_path=str(path), backend=backend, max_model_len=1024),
            CONSTITUTION.judge_few_shot,
            cot_max_new_tokens=12,
        )
        for backend in ("transformers", "vllm")
    )
    yield pair  # type: ignore[misc]
    for judge in pair:
        judge.shutdown()


def test_option_letters_are_single_tokens_after_the_paren(embedded_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model)
    for letter in "AB":
        ids = tokenizer(f"The answer is: ({letter})", add_special_tokens=False)["input_ids"]
        slot = tokenizer("The answer is: (", add_special_tokens=False)["input_ids"]
        # The prompt's tokens are a prefix of the answered text's, and the letter is one token after them.
        assert ids[: len(slot)] == slot and tokenizer.decode(ids[len(slot)]) == letter


def test_both_orders_agree_across_backends_and_average(judges: tuple[ConstitutionalJudge, ConstitutionalJudge]) -> None:
    hf, vl = (j.label(COMPARISONS, both_orders=True, cot=False) for j in judges)
    for a, b, comparison in zip(hf, vl, COMPARISONS, strict=True):
        assert a.pair_id == b.pair_id == comparison.pair.id
        assert a.principle_ids == tuple(p.id for p in comparison.principles)
        assert a.p_a_order2 is not None and b.p_a_order2 is not None
        assert a.p_a_order1 == pytest.approx(b.p_a_order1, abs=1e-3)
        assert a.p_a_order2 == pytest.approx(b.p_a_order2, abs=1e-3)
        label = combine_label(b.pair_id, b.principle_ids, b.p_a_order1, b.p_a_order2)
        swapped = [(p1 + 1 - p2) / 2 for p1, p2 in zip(b.p_a_order1, b.p_a_order2, strict=True)]
        assert label.p_first == pytest.approx(sum(swapped) / len(swapped))
        assert label.p_a_order2 == b.p_a_order2  # kept, so position bias can be measured
    one_order = judges[1].label(COMPARISONS[:1], both_orders=False, cot=False)[0]
    assert one_order.p_a_order2 is None and one_order.p_a_order1 == pytest.approx(vl[0].p_a_order1, abs=1e-6)
    assert judges[1].stats().prompt_tokens > 0


@pytest.mark.parametrize("judges", ["tiny"], indirect=True)
def test_chain_of_thought_reasons_then_scores_and_is_clamped(
    judges: tuple[ConstitutionalJudge, ConstitutionalJudge],
) -> None:
    hf, vl = (j.label(COMPARISONS[:2], both_orders=True, cot=True) for j in judges)
    for a, b in zip(hf, vl, strict=True):
        # Greedy reasoning is the same text on both backends, so the scores after it agree too.
        assert len(b.reasonings) == 2 * len(b.principle_ids) and a.reasonings == b.reasonings
        assert a.p_a_order1 == pytest.approx(b.p_a_order1, abs=1e-3)
        label = combine_label(b.pair_id, b.principle_ids, b.p_a_order1, b.p_a_order2, cot=True)
        assert 0.4 <= label.p_first <= 0.6 and label.cot
    direct = judges[1].label(COMPARISONS[:2], both_orders=True, cot=False)
    assert [v.p_a_order1 for v in direct] != [v.p_a_order1 for v in vl]  # the reasoning changed the question


def test_generic_items_agree_across_backends(judges: tuple[ConstitutionalJudge, ConstitutionalJudge]) -> None:
    items = [*ITEMS, as_lettered(MultipleChoiceItem("q2", "Which number is prime?", ("4", "7", "9")))]
    hf, vl = (j.score_items(items) for j in judges)
    for a, b, item in zip(hf, vl, items, strict=True):
        assert a.id == b.id == item.id and len(b.probs) == len(item.options)
        assert sum(b.probs) == pytest.approx(1.0, abs=1e-6)
        assert a.probs == pytest.approx(b.probs, abs=1e-3)


def test_scoring_cli_writes_probs_and_names_bad_lines(tmp_path: Path, tiny_model: Path) -> None:
    items = tmp_path / "items.jsonl"
    rows = [{"id": i.id, "prompt": i.prompt, "options": list(i.options), "extra": 1} for i in ITEMS]
    items.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "scores.jsonl"
    cmd = [sys.executable, "-m", "rlaif.score", "--input", str(items), "--output", str(out), f"model.name={tiny_model}"]
    done = subprocess.run([*cmd, "engine.max_model_len=256"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in scored] == ["q0", "q1"] and scored[0]["extra"] == 1
    assert [len(r["probs"]) for r in scored] == [2, 3] and all(sum(r["probs"]) == pytest.approx(1) for r in scored)

    items.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"id": "q9", "prompt": "x", "options": "AB"}) + "\n")
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    assert bad.stderr.strip() == f"error: {items}: line 2: field 'options' has type str"
