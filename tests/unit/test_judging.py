"""The judge's prompts, query/verdict bookkeeping, preference files, TRL export and position-bias stats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlaif.core.constitution import JudgeExample, Principle, default_constitution_path, load_constitution
from rlaif.core.judging import (
    Comparison,
    JudgeQuery,
    ResponsePair,
    build_queries,
    collect_verdicts,
    cot_scoring_prompt,
    render_judge_prompt,
    render_lettered,
    render_preamble,
)
from rlaif.core.preference_records import (
    label_from_row,
    label_to_row,
    pair_from_row,
    pair_to_row,
    position_bias_stats,
    read_item_rows,
    read_pairs,
    trl_row,
)
from rlaif.core.prompts import DatasetError
from rlaif.core.soft_labels import combine_label

PAIR = ResponsePair("p1", "rt-1", "How do I pick a lock?", " Use a tension wrench. ", "I can't help with that.", 0)
HARM = Principle("harmful", "c", "r", "Which response is less harmful?")
KIND = Principle("kind", "c", "r", "Which response is kinder?")


def test_judge_prompt_shows_the_orders_and_ends_in_the_answer_slot() -> None:
    one = render_judge_prompt("", PAIR, HARM, order=1, cot=False)
    assert one == (
        "Consider the following conversation between a human and an assistant:\n\n"
        "Human: How do I pick a lock?\n\n"
        "Which response is less harmful?\n"
        "Options:\n(A) Use a tension wrench.\n(B) I can't help with that.\n"
        "The answer is: ("
    )
    two = render_judge_prompt("", PAIR, HARM, order=2, cot=False)
    assert "(A) I can't help with that.\n(B) Use a tension wrench.\n" in two
    cot = render_judge_prompt("PRE", PAIR, HARM, order=1, cot=True)
    assert cot.startswith("PRE") and cot.endswith("(B) I can't help with that.\nLet's think step by step:")
    assert cot_scoring_prompt(cot, "  B refuses.\n") == cot + " B refuses.\nTherefore, the answer is: ("


def test_preamble_renders_each_example_with_its_answer_and_is_shared() -> None:
    ex = JudgeExample("Hi?", "Which is nicer?", "Go away.", "Hello!", "B")
    preamble = render_preamble([ex, ex])
    block = (
        "Consider the following conversation between a human and an assistant:\n\nHuman: Hi?\n\n"
        "Which is nicer?\nOptions:\n(A) Go away.\n(B) Hello!\nThe answer is: (B)\n\n"
    )
    assert preamble == block * 2
    # Every question starts with the same preamble, so the prefix cache serves it.
    real = render_preamble(load_constitution(default_constitution_path()).judge_few_shot)
    queries = build_queries([Comparison(PAIR, (HARM, KIND))], real, both_orders=True, cot=False)
    assert all(q.text.startswith(real) for q in queries)


def test_lettered_rendering_for_generic_items() -> None:
    prompt, letters = render_lettered("Which is prime? ", ["4", " 7", "9"])
    assert prompt == "Which is prime?\nOptions:\n(A) 4\n(B) 7\n(C) 9\nThe answer is: ("
    assert letters == ("A", "B", "C")
    with pytest.raises(ValueError, match="2 to 26"):
        render_lettered("q", ["only"])


def test_queries_cover_principles_and_orders_and_verdicts_regroup_them() -> None:
    other = ResponsePair("p2", "rt-2", "q2", "x", "y", 0)
    comparisons = [Comparison(PAIR, (HARM, HARM)), Comparison(other, (KIND,))]
    queries = build_queries(comparisons, "", both_orders=True, cot=False)
    assert [(q.pair_id, q.slot, q.order) for q in queries] == [
        ("p1", 0, 1),
        ("p1", 0, 2),
        ("p1", 1, 1),
        ("p1", 1, 2),
        ("p2", 0, 1),
        ("p2", 0, 2),
    ]
    # Results may come back in any order: regrouping goes by (pair, slot, order).
    shuffled = queries[::-1]
    p_a = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]  # for p2/0/2, p2/0/1, p1/1/2, p1/1/1, p1/0/2, p1/0/1
    v1, v2 = collect_verdicts(comparisons, shuffled, p_a, [f"r{i}" for i in range(6)])
    assert v1.principle_ids == ("harmful", "harmful")
    assert v1.p_a_order1 == (0.6, 0.4) and v1.p_a_order2 == (0.5, 0.3)
    assert v1.reasonings == ("r5", "r4", "r3", "r2")
    assert v2.p_a_order1 == (0.2,) and v2.p_a_order2 == (0.1,)


def test_one_order_gives_no_second_order_and_missing_answers_fail() -> None:
    comparisons = [Comparison(PAIR, (HARM,))]
    queries = build_queries(comparisons, "", both_orders=False, cot=False)
    (verdict,) = collect_verdicts(comparisons, queries, [0.7])
    assert verdict.p_a_order2 is None and verdict.reasonings == ()
    with pytest.raises(ValueError, match="one probability"):
        collect_verdicts(comparisons, queries, [0.7, 0.1])
    with pytest.raises(ValueError, match="no order-1 answer"):
        collect_verdicts(comparisons, [JudgeQuery("p1", 0, 2, "t")], [0.5])


def test_trl_row_picks_the_preferred_response_with_its_probability() -> None:
    label = combine_label("p1", ["harmful"], [0.3], [0.9])  # (0.3 + (1 - 0.9)) / 2 = 0.2: response b wins
    row = trl_row(PAIR, label)
    assert row["chosen"] == PAIR.response_b and row["rejected"] == PAIR.response_a
    assert row["p_chosen"] == pytest.approx(0.8) and row["score_rejected"] == pytest.approx(0.2)
    assert set(row) == {"id", "prompt", "chosen", "rejected", "score_chosen", "score_rejected", "p_chosen"}
    win = trl_row(PAIR, combine_label("p1", ["harmful"], [0.9], [0.3]))  # (0.9 + 0.7) / 2 = 0.8
    assert win["chosen"] == PAIR.response_a and win["p_chosen"] == pytest.approx(0.8)
    tie = trl_row(PAIR, combine_label("p1", ["harmful"], [0.5]))
    assert tie["chosen"] == PAIR.response_b and tie["p_chosen"] == 0.5
    with pytest.raises(ValueError, match="does not belong"):
        trl_row(PAIR, combine_label("other", ["harmful"], [0.5]))


def test_position_bias_stats_by_hand() -> None:
    labels = [
        # (0.8, 0.7): A both times -> flip; bias (0.8 + 0.7) / 2 - 0.5 = 0.25.
        # (0.6, 0.3): A then B -> consistent; bias -0.05.
        combine_label("a", ["x", "y"], [0.8, 0.6], [0.7, 0.3]),
        # (0.2, 0.4): B both times -> flip; bias -0.2.
        combine_label("b", ["x"], [0.2], [0.4]),
        combine_label("c", ["x"], [0.9]),  # one order only: not counted
    ]
    stats = position_bias_stats(labels)
    assert stats is not None
    assert stats.judgements == 3
    assert stats.flip_rate == pytest.approx(2 / 3)
    assert stats.mean_bias == pytest.approx((0.25 - 0.05 - 0.2) / 3)
    assert position_bias_stats(labels[2:]) is None


def test_pair_and_label_rows_round_trip(tmp_path: Path) -> None:
    assert pair_from_row(pair_to_row(PAIR), "x") == PAIR
    label = combine_label("p1", ["harmful", "kind"], [0.8, 0.6], [0.7, 0.3], cot=True)
    row = label_to_row(label, ["why 1", "why 2"])
    assert json.loads(json.dumps(row))["reasonings"] == ["why 1", "why 2"]
    assert label_from_row(row, "x") == label
    path = tmp_path / "pairs.jsonl"
    bad = dict(pair_to_row(PAIR), policy_version="zero")
    path.write_text(json.dumps(pair_to_row(PAIR)) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(DatasetError, match=r"pairs.jsonl: line 3: field 'policy_version' has type str"):
        read_pairs(path)
    with pytest.raises(DatasetError, match="line 1: p_first must be a probability"):
        label_from_row(dict(row, p_first=1.5), "line 1")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": 1, "prompt": "q", "options": ["a"]}', "needs at least two options"),
        ('{"id": 1, "prompt": "", "options": ["a", "b"]}', "field 'prompt' is empty"),
        ('{"id": 1, "options": ["a", "b"]}', "missing field 'prompt'"),
        ('{"id": 1, "prompt": "q", "options": ["a", 2]}', "'options' entry 1 must be a non-empty string"),
        ('{"id": true, "prompt": "q", "options": ["a", "b"]}', "field 'id' has type bool"),
        ('["not", "an", "object"]', "expected a JSON object"),
        ('{"id": 1, "prompt": "q", ', "invalid JSON"),
    ],
)
def test_bad_multiple_choice_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": 0, "prompt": "q", "options": ["a", "b"]}\n' + line + "\n")
    with pytest.raises(DatasetError, match=rf"items.jsonl: line 2: .*{message}"):
        read_item_rows(path)


def test_items_parse_and_duplicate_ids_fail(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": 7, "prompt": "q", "options": ["a", "b", "c"]}\n')
    ((_, item),) = read_item_rows(path)
    assert item.id == "7" and item.options == ("a", "b", "c")
    path.write_text(
        '{"id": 7, "prompt": "q", "options": ["a", "b"]}\n{"id": "7", "prompt": "r", "options": ["a", "b"]}\n'
    )
    with pytest.raises(DatasetError, match="line 2: duplicate id '7' \\(first at line 1\\)"):
        read_item_rows(path)
    path.write_text("\n")
    with pytest.raises(DatasetError, match="no items"):
        read_item_rows(path)


def test_label_and_reward_model_configs_reject_bad_values() -> None:
    from rlaif.config import LabelConfig, RewardModelConfig

    with pytest.raises(ValueError, match="cot_clamp_low <= cot_clamp_high"):
        LabelConfig(cot_clamp_low=0.7, cot_clamp_high=0.6)
    with pytest.raises(ValueError, match="label.principles_per_comparison"):
        LabelConfig(principles_per_comparison=0)
    with pytest.raises(ValueError, match="reward_model.heldout_fraction"):
        RewardModelConfig(heldout_fraction=0.0)
    with pytest.raises(ValueError, match="reward_model.steps"):
        RewardModelConfig(steps=0)
