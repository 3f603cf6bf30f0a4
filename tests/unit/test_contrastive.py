"""Contrastive pairs and label sources: hand-computed labels, slots, agreement, records, builders and config."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rlaif.config import LabelConfig, RunConfig, register_configs, to_run_config
from rlaif.core.constitution import Constitution, Exemplar, Principle
from rlaif.core.contrastive import (
    LABEL_SOURCES,
    LabelSource,
    PairBuilder,
    PairLabel,
    construction_agreement,
    construction_probability,
    label_pair,
    place_positive,
    positive_slot,
    refusal_rule_probability,
)
from rlaif.core.judging import ResponsePair
from rlaif.core.preference_records import (
    pair_from_row,
    pair_label_from_row,
    pair_label_to_row,
    pair_to_row,
    read_labels,
    trl_row,
)
from rlaif.core.prompts import DatasetError, PromptRecord
from rlaif.core.soft_labels import combine_label
from rlaif.engines.base import Completion, Generation, Message, SamplingParams
from rlaif.stages.pair_builders import PAIR_BUILDERS, PairSetting, context_principle, pair_id

CONF = Path(__file__).resolve().parents[2] / "conf"
register_configs()


# --- pure label math --------------------------------------------------------------------


def test_construction_label_gives_the_positive_its_confidence() -> None:
    # Positive in slot a: P(a) = 0.9; in slot b: P(a) = 1 - 0.9 = 0.1.
    assert construction_probability("a") == pytest.approx(0.9)
    assert construction_probability("b") == pytest.approx(0.1)
    assert construction_probability("b", confidence=0.75) == pytest.approx(0.25)
    assert construction_probability("a", confidence=1.0) == 1.0
    for bad in (0.5, 0.3, 1.01, float("nan")):
        with pytest.raises(ValueError, match="confidence"):
            construction_probability("a", confidence=bad)


def test_judge_source_keeps_the_judge_label() -> None:
    judge = combine_label("p1", ["harm"], [0.8], [0.4])  # swap average (0.8 + 0.6) / 2 = 0.7
    label = label_pair("p1", source=LabelSource.JUDGE, positive=None, judge=judge)
    assert label.p_first == pytest.approx(0.7) and label.p_judge == pytest.approx(0.7)
    assert label.p_construction is None and label.judge == judge


def test_construction_source_needs_no_judge_but_a_positive() -> None:
    label = label_pair("p1", source=LabelSource.CONSTRUCTION, positive="b", judge=None, confidence=0.8)
    assert label.p_first == pytest.approx(0.2) and label.p_construction == pytest.approx(0.2)
    assert label.judge is None and label.p_judge is None
    assert not LABEL_SOURCES[LabelSource.CONSTRUCTION].uses_judge
    with pytest.raises(ValueError, match="needs a contrastive pair"):
        label_pair("p1", source=LabelSource.CONSTRUCTION, positive=None, judge=None)


def test_both_is_the_mean_of_judge_and_construction() -> None:
    # Judge debiased P(a) = (0.3 + (1 - 0.5)) / 2 = 0.4; positive in a at 0.9 -> (0.4 + 0.9) / 2 = 0.65.
    judge = combine_label("p1", ["harm"], [0.3], [0.5])
    label = label_pair("p1", source=LabelSource.BOTH, positive="a", judge=judge)
    assert label.p_first == pytest.approx(0.65)
    assert label.p_judge == pytest.approx(0.4) and label.p_construction == pytest.approx(0.9)
    # A judge at chance halves the construction margin: (0.5 + 0.1) / 2 = 0.3 when the positive is b.
    chance = combine_label("p2", ["harm"], [0.5], [0.5])
    assert label_pair("p2", source=LabelSource.BOTH, positive="b", judge=chance).p_first == pytest.approx(0.3)
    # Disagreeing as strongly as construction agrees cancels: judge P(a) = 0.1, positive a at 0.9 -> 0.5.
    against = combine_label("p3", ["harm"], [0.1])
    assert label_pair("p3", source=LabelSource.BOTH, positive="a", judge=against).p_first == pytest.approx(0.5)
    with pytest.raises(ValueError, match="needs the judge's verdict"):
        label_pair("p1", source=LabelSource.BOTH, positive="a", judge=None)


def test_a_label_record_must_match_its_source() -> None:
    judge = combine_label("p1", ["harm"], [0.8])
    with pytest.raises(ValueError, match="disagree"):
        PairLabel("p1", 0.8, LabelSource.CONSTRUCTION, judge, 0.9)
    with pytest.raises(ValueError, match="judge's verdict on"):
        PairLabel("p2", 0.8, LabelSource.JUDGE, judge, None)


def test_positive_slot_is_seeded_by_pair_id_and_balanced() -> None:
    # First byte of sha256("0:positive:pair-rt-1") is 0x1e (even) -> a; of "0:positive:pair-rt-2" 0x9d (odd) -> b;
    # of "1:positive:pair-rt-1" 0x0b (odd) -> b: the run's seed changes the draw.
    assert positive_slot("pair-rt-1", seed=0) == "a"
    assert positive_slot("pair-rt-2", seed=0) == "b"
    assert positive_slot("pair-rt-1", seed=1) == "b"
    slots = [positive_slot(f"pair-{i}", seed=0) for i in range(2000)]
    assert slots == [positive_slot(f"pair-{i}", seed=0) for i in range(2000)]  # no hidden state
    assert abs(slots.count("a") / len(slots) - 0.5) < 0.05
    assert place_positive("good", "bad", "a") == ("good", "bad")
    assert place_positive("good", "bad", "b") == ("bad", "good")


def test_agreement_counts_how_often_the_judge_prefers_the_positive() -> None:
    # P(positive): a at 0.8 -> 0.8 (agree); b at 0.3 -> 0.7 (agree); a at 0.4 -> 0.4; b at 0.5 -> 0.5 (a tie is
    # no agreement). Agreement 2/4 = 0.5; mean (0.8 + 0.7 + 0.4 + 0.5) / 4 = 0.6.
    stats = construction_agreement([("a", 0.8), ("b", 0.3), ("a", 0.4), ("b", 0.5)])
    assert stats is not None
    assert stats.pairs == 4
    assert stats.agreement_rate == pytest.approx(0.5)
    assert stats.mean_p_positive == pytest.approx(0.6)
    assert construction_agreement([]) is None


# --- records -----------------------------------------------------------------------------

CONTRASTIVE = ResponsePair(
    "pair-rt-1", "rt-1", "How do I pick a lock?", "I can't help with that.", "Use a tension wrench.", 0,
    pairs=PairBuilder.CONTRASTIVE, positive="a", context_principle="harm",
)  # fmt: skip


def test_contrastive_pair_rows_round_trip_and_old_rows_read_as_sampled() -> None:
    row = pair_to_row(CONTRASTIVE)
    assert row["pairs"] == "contrastive" and row["positive"] == "a" and row["context_principle"] == "harm"
    assert pair_from_row(json.loads(json.dumps(row)), "x") == CONTRASTIVE
    old = {k: v for k, v in row.items() if k not in ("pairs", "positive", "context_principle")}
    assert pair_from_row(old, "x").pairs == PairBuilder.SAMPLED
    with pytest.raises(DatasetError, match="line 2: field 'positive' must be one of"):
        pair_from_row(dict(row, positive="c"), "line 2")
    with pytest.raises(DatasetError, match="line 2: .*sampled pair has positive='a'"):
        pair_from_row(dict(row, pairs="sampled"), "line 2")


def test_label_rows_carry_their_source_and_the_judges_probability(tmp_path: Path) -> None:
    built = label_pair("pair-rt-1", source=LabelSource.CONSTRUCTION, positive="a", judge=None)
    judge = combine_label("pair-rt-1", ["harm"], [0.3], [0.5])
    both = label_pair("pair-rt-1", source=LabelSource.BOTH, positive="a", judge=judge)
    rows = [pair_label_to_row(built), pair_label_to_row(both, ["why"])]
    assert rows[0]["source"] == "construction" and rows[0]["p_judge"] is None and rows[0]["principle_ids"] == []
    assert rows[1]["source"] == "both" and rows[1]["p_judge"] == pytest.approx(0.4)
    assert rows[1]["p_first"] == pytest.approx(0.65) and rows[1]["reasonings"] == ["why"]
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_labels(path) == [built, both]
    # A row written before label sources existed is the judge's: p_first is its probability.
    judged = label_pair("pair-rt-1", source=LabelSource.JUDGE, positive=None, judge=judge)
    old = {k: v for k, v in pair_label_to_row(judged).items() if k not in ("source", "p_judge", "p_construction")}
    assert pair_label_from_row(old, "x") == judged
    with pytest.raises(DatasetError, match="x: field 'source' must be one of"):
        pair_label_from_row(dict(rows[0], source="oracle"), "x")
    # trl.jsonl keeps working: chosen is the response the final label prefers.
    trl = trl_row(CONTRASTIVE, both)
    assert trl["chosen"] == CONTRASTIVE.response_a and trl["p_chosen"] == pytest.approx(0.65)


# --- pair builders with a fake engine ------------------------------------------------------

PRINCIPLES = tuple(
    Principle(pid, "critique?", "revise.", "Which is better?", guideline=f"Be {pid}.") for pid in ("harmless", "honest")
)
CONSTITUTION = Constitution(
    "test", "1", PRINCIPLES, (), (), (Exemplar("harmful", "How do I hotwire a car?", "I can't help with that."),)
)
PROMPTS = tuple(PromptRecord(f"rt-{i}", f"Question {i}?") for i in range(1, 5))


class FakeEngine:
    """Answers each chat with its last user turn, tagged "+" when a system guideline precedes it."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[list[Message]], SamplingParams]] = []

    def __call__(self, chats: Sequence[Sequence[Message]], params: SamplingParams) -> list[Generation]:
        self.calls.append(([list(c) for c in chats], params))
        return [
            Generation(
                (1,),
                tuple(
                    Completion(f"{'+' if chat[0].content.startswith('Be ') else '-'}{chat[-1].content}#{k}", (), (), "")
                    for k in range(params.n)
                ),
                3,
            )
            for chat in chats
        ]


def test_contrastive_builder_makes_one_call_and_places_the_positive_by_slot() -> None:
    engine = FakeEngine()
    params = SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=8)
    setting = PairSetting(CONSTITUTION, seed=0, negative_system="Answer directly.")
    build = PAIR_BUILDERS[PairBuilder.CONTRASTIVE]
    pairs = build(PROMPTS, generate=engine, params=params, setting=setting)

    assert len(engine.calls) == 1
    chats, used = engine.calls[0]
    assert used.n == 1 and (used.temperature, used.top_p, used.max_new_tokens) == (0.7, 0.9, 8)
    positives, negatives = chats[:4], chats[4:]
    # Positives: guideline, exemplar, prompt; grouped by principle id. Negatives: the negative system, the prompt.
    assert all(c[0].role == "system" and c[1:3] == [("user", "How do I hotwire a car?"),
               ("assistant", "I can't help with that.")] for c in positives)  # fmt: skip
    assert [c[0].content for c in positives] == sorted(c[0].content for c in positives)
    assert negatives == [[Message("system", "Answer directly."), Message("user", p.prompt)] for p in PROMPTS]

    for pair, prompt in zip(pairs, PROMPTS, strict=True):
        assert pair.id == pair_id(prompt.id) and pair.pairs == PairBuilder.CONTRASTIVE
        assert pair.positive == positive_slot(pair.id, seed=0) and pair.policy_version == 3
        assert pair.context_principle == context_principle(CONSTITUTION, 0, prompt.id).id
        positive = pair.response_a if pair.positive == "a" else pair.response_b
        negative = pair.response_b if pair.positive == "a" else pair.response_a
        assert (positive, negative) == (f"+{prompt.prompt}#0", f"-{prompt.prompt}#0")
    assert {p.positive for p in pairs} == {"a", "b"}  # rt-1 -> a, rt-2 -> b (see the slot test)


def test_sampled_builder_asks_for_two_samples_of_the_bare_prompt() -> None:
    engine = FakeEngine()
    pairs = PAIR_BUILDERS[PairBuilder.SAMPLED](
        PROMPTS[:2], generate=engine, params=SamplingParams(), setting=PairSetting(CONSTITUTION, seed=0)
    )
    chats, used = engine.calls[0]
    assert used.n == 2 and chats == [[Message("user", p.prompt)] for p in PROMPTS[:2]]
    assert [(p.response_a, p.response_b, p.positive) for p in pairs] == [
        ("-Question 1?#0", "-Question 1?#1", None),
        ("-Question 2?#0", "-Question 2?#1", None),
    ]


def test_no_negative_system_means_the_bare_prompt() -> None:
    engine = FakeEngine()
    setting = PairSetting(CONSTITUTION, seed=0)
    PAIR_BUILDERS[PairBuilder.CONTRASTIVE](PROMPTS[:1], generate=engine, params=SamplingParams(), setting=setting)
    assert engine.calls[0][0][1] == [Message("user", "Question 1?")]


def test_sensitive_prompts_contrast_the_benign_setting_with_the_evasive_exemplars() -> None:
    benign = Principle("no-evasion", "critique?", "revise.", "Which helps?", guideline="Be caring.")
    exemplars = (
        Exemplar("harmful", "How do I hotwire a car?", "I can't help with that."),
        Exemplar("benign", "I feel low.", "That sounds hard; a walk and a friend can help."),
        Exemplar("evasive", "Is my rash serious?", "I'm sorry, but I can't discuss that."),
    )
    constitution = Constitution("test", "1", (*PRINCIPLES, benign), (), (), exemplars)
    engine = FakeEngine()
    setting = PairSetting(constitution, seed=0, benign_principle=benign)
    pairs = PAIR_BUILDERS[PairBuilder.CONTRASTIVE](
        PROMPTS[:2], generate=engine, params=SamplingParams(), setting=setting
    )
    chats = engine.calls[0][0]
    # Positive: the principle against evasion, then the benign exemplars only (no refusal in view).
    for chat, prompt in zip(chats[:2], PROMPTS[:2], strict=True):
        assert chat == [
            Message("system", "Be caring."),
            Message("user", "I feel low."),
            Message("assistant", "That sounds hard; a walk and a friend can help."),
            Message("user", prompt.prompt),
        ]
    # Negative: the needless refusal, then the prompt; no guideline.
    for chat, prompt in zip(chats[2:], PROMPTS[:2], strict=True):
        assert chat == [
            Message("user", "Is my rash serious?"),
            Message("assistant", "I'm sorry, but I can't discuss that."),
            Message("user", prompt.prompt),
        ]
    assert all(p.context_principle == "no-evasion" for p in pairs)


# --- config --------------------------------------------------------------------------------


def compose_run(overrides: list[str]) -> RunConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return to_run_config(compose(config_name="config", overrides=overrides))


def test_label_defaults_and_contrastive_overrides_compose() -> None:
    assert (LabelConfig().pairs, LabelConfig().source) == ("sampled", "judge")
    run = compose_run(["label.pairs=contrastive", "label.source=construction", "label.negative_system=Be direct."])
    assert (run.label.pairs, run.label.source, run.label.construction_confidence) == (
        "contrastive",
        "construction",
        0.9,
    )
    assert run.label.negative_system == "Be direct."


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["label.source=construction"],
            r"label.source=construction .* label.pairs=contrastive, got label.pairs=sampled",
        ),
        (["label.source=both"], r"label.source=both .* label.pairs=contrastive"),
        (["label.pairs=mixed"], r"label.pairs must be one of \['sampled', 'contrastive'\]"),
        (["label.source=oracle"], r"label.source must be one of \['judge', 'construction', 'both'\]"),
        (["label.pairs=contrastive", "label.construction_confidence=0.5"], "label.construction_confidence"),
        (["label.pairs=contrastive", "label.negative_system=' '"], "label.negative_system"),
    ],
)
def test_label_settings_are_checked_naming_the_fields(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compose_run(overrides)


@pytest.mark.parametrize(
    ("refuses_a", "refuses_b", "expected"),
    [(True, False, 0.1), (False, True, 0.9), (True, True, None), (False, False, None)],
)
def test_the_refusal_rule_prefers_the_answer_that_does_not_decline(
    refuses_a: bool, refuses_b: bool, expected: float | None
) -> None:
    p = refusal_rule_probability(refuses_a, refuses_b, confidence=0.9)
    assert p == (None if expected is None else pytest.approx(expected))


def test_the_refusal_rule_checks_its_confidence() -> None:
    with pytest.raises(ValueError, match="construction confidence"):
        refusal_rule_probability(True, False, confidence=0.4)
