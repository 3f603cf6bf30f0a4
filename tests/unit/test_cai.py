"""Unit tests for rlaif.core.cai: records, chat rendering, degenerate revisions, the SFT mix."""

from __future__ import annotations

import pytest

from rlaif.core.cai import (
    CritiqueTask,
    RevisionRound,
    RevisionTask,
    SFTSample,
    SLCAIMethod,
    SLCAIRecord,
    Turn,
    build_record,
    context_degeneracy,
    context_messages,
    context_turns,
    critique_messages,
    degeneracy_reason,
    distilled_record,
    few_shot_preamble,
    is_degenerate,
    latest_answer,
    mix_sft,
    principle_for,
    revision_messages,
    sft_batch,
    sft_samples,
)
from rlaif.core.constitution import (
    CritiqueExample,
    Exemplar,
    Principle,
    default_constitution_path,
    load_constitution,
)

P = Principle("crime", "Say how the answer helps crime.", "Rewrite it to stop helping crime.", "Which is lawful?")
EX = CritiqueExample("ex prompt", "ex response", "ex critique request", "ex critique", "ex revision request", "ex rev")


GUIDED = Principle("crime", "c?", "r.", "q?", guideline="I don't help with crimes, and I point to a lawful way.")
EXEMPLARS = (
    Exemplar("harmful", "How do I pick my neighbour's lock?", "I won't help you enter their home; ask them for a key."),
    Exemplar("benign", "How long do I boil an egg?", "Six to seven minutes for a soft yolk, then cool it in water."),
)


def _round(i: int, revision: str, degenerate: bool) -> RevisionRound:
    return RevisionRound(i, "crime", f"critique {i}", revision, degenerate)


def test_preamble_renders_each_example_as_six_alternating_turns() -> None:
    turns = few_shot_preamble([EX, EX])
    assert len(turns) == 12
    assert [t.role for t in turns[:6]] == ["user", "assistant"] * 3
    assert [t.content for t in turns[:6]] == [
        "ex prompt",
        "ex response",
        "ex critique request",
        "ex critique",
        "ex revision request",
        "ex rev",
    ]


def test_critique_and_revision_messages_share_the_preamble_and_the_critique_prefix() -> None:
    preamble = few_shot_preamble([EX])
    a = critique_messages(preamble, CritiqueTask("r1", "How do I pick a lock?", "Use a pin.", P))
    b = critique_messages(preamble, CritiqueTask("r2", "Other prompt", "Other answer", P))
    # The preamble comes first and is the same for every prompt: that is what the prefix cache reuses.
    assert a[: len(preamble)] == b[: len(preamble)] == list(preamble)
    assert a[len(preamble) :] == [
        Turn("user", "How do I pick a lock?"),
        Turn("assistant", "Use a pin."),
        Turn("user", P.critique_request),
    ]
    rev = revision_messages(
        preamble, RevisionTask("r1", "How do I pick a lock?", "Use a pin.", P, "It helps burglary.")
    )
    # The revision conversation extends the critique conversation exactly.
    assert rev[: len(a)] == a
    assert rev[len(a) :] == [Turn("assistant", "It helps burglary."), Turn("user", P.revision_request)]


def test_context_turns_state_the_guideline_then_each_exemplar_in_file_order() -> None:
    assert context_turns(EXEMPLARS, GUIDED) == (
        Turn("system", GUIDED.guideline),
        Turn("user", "How do I pick my neighbour's lock?"),
        Turn("assistant", "I won't help you enter their home; ask them for a key."),
        Turn("user", "How long do I boil an egg?"),
        Turn("assistant", "Six to seven minutes for a soft yolk, then cool it in water."),
    )
    # No guideline (a principle without one, or none given): the exemplars alone; no exemplars: the guideline alone.
    assert context_turns(EXEMPLARS, P) == context_turns(EXEMPLARS, None) == context_turns(EXEMPLARS, GUIDED)[1:]
    assert context_turns((), GUIDED) == (Turn("system", GUIDED.guideline),)


def test_context_messages_put_the_shared_setting_before_the_prompt() -> None:
    setting = context_turns(EXEMPLARS, GUIDED)
    a, b = context_messages(setting, "How do I steal a car?"), context_messages(setting, "Help me sleep better.")
    # The same setting opens every prompt under one principle: the prefix the engine's cache reuses.
    assert a[:-1] == b[:-1] == list(setting)
    assert a[-1] == Turn("user", "How do I steal a car?") and b[-1] == Turn("user", "Help me sleep better.")


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("", "empty"),
        ("No.", "too_short"),
        # An exemplar's answer to another request, copied: eight words in a row of the setting.
        ("I won't help you enter their home; ask them for a key.", "echo"),
        # The guideline recited instead of an answer.
        ("As I said: I don't help with crimes, and I point to a lawful way.", "echo"),
        ("I can't " * 6, "repetitive"),
        ("I won't help steal a car, but a dealer can tell you about cheap, legal leases.", None),
    ],
)
def test_context_degeneracy(answer: str, reason: str | None) -> None:
    assert context_degeneracy(answer, context_turns(EXEMPLARS, GUIDED)) == reason


def test_distilled_record_trains_on_the_bare_prompt_and_round_trips() -> None:
    rec = distilled_record("rt-1", "How do I steal a car?", "crime", "crime", "I won't help with that.", False, seed=4)
    assert rec.method == SLCAIMethod.CONTEXT_DISTILLATION and rec.principle_id == "crime" and rec.rounds == ()
    assert rec.first_answer == rec.final_answer == "I won't help with that." and not rec.degenerate
    row = rec.to_dict()
    assert row["method"] == "context_distillation" and row["principle_id"] == "crime"
    assert SLCAIRecord.from_dict(row) == rec
    # SFT learns the answer for the prompt alone: no guideline, no exemplars.
    bad = distilled_record("rt-2", "p", None, "crime", "", True, seed=4)
    assert sft_samples([rec, bad]) == [
        SFTSample("rev:rt-1", "How do I steal a car?", "I won't help with that.", "revision")
    ]


def test_records_written_before_the_method_field_read_as_critique_revision() -> None:
    rec = build_record("r", "p", None, "first", [_round(0, "better answer here", False)], seed=1)
    row = rec.to_dict()
    assert row["method"] == "critique_revision" and row["principle_id"] is None
    del row["method"], row["principle_id"]
    assert SLCAIRecord.from_dict(row) == rec
    with pytest.raises(ValueError, match=r"record 'r': field 'method' must be one of \['critique_revision', 'context_"):
        SLCAIRecord.from_dict(rec.to_dict() | {"method": "vibes"})
    with pytest.raises(ValueError, match="record 'r': field 'principle_id' must be a string or null, got int"):
        SLCAIRecord.from_dict(rec.to_dict() | {"principle_id": 3})


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("  \n\t ", "empty"),
        ("...", "empty"),
        ("No way.", "too_short"),
        ("use a PIN,", "unchanged"),  # same words as the original, case and punctuation aside
        # eight consecutive words of the critique request ("identify specific ways in which the assistant's last")
        ("Identify specific ways in which the assistant's last response is bad.", "echo"),
        # the critique itself handed back as the "revision"
        ("Sure: the answer helps someone break into a house at night.", "echo"),
        ("The response is now helpful and kind.", "meta"),
        ("this response avoids harm", "meta"),
        # 16 words, trigrams (14): 4 distinct, 10 repeats > half
        ("I can help you " * 4, "repetitive"),
    ],
)
def test_degeneracy_reasons(text: str, reason: str) -> None:
    echoes = (
        "Identify specific ways in which the assistant's last response helps crime.",
        "Please rewrite the response.",
        "The answer helps someone break into a house at night.",
    )
    assert degeneracy_reason(text, "Use a pin.", echoes) == reason
    assert is_degenerate(text, "Use a pin.", echoes)


def test_a_real_rewrite_is_not_degenerate() -> None:
    text = "I can't help with entering a home without permission; a locksmith can help if it is your own door."
    assert degeneracy_reason(text, "Use a pin.", ("Identify specific ways the response helps crime.",)) is None
    # 12 words, all trigrams distinct: not a loop.
    assert not is_degenerate("one two three four five six seven eight nine ten eleven twelve", "x")


def test_final_answer_is_the_last_usable_revision_and_all_degenerate_marks_the_record() -> None:
    rounds = [_round(0, "good one", False), _round(1, "", True)]
    rec = build_record("r", "p", "crime", "first", rounds, seed=3)
    assert rec.final_answer == "good one" and not rec.degenerate
    assert latest_answer("first", rounds) == "good one"
    bad = build_record("r", "p", None, "first", [_round(0, "", True), _round(1, "x", True)], seed=3)
    assert bad.degenerate and bad.final_answer == "first"
    assert latest_answer("first", bad.rounds) == "first"


def test_record_round_trips_through_dict_and_rejects_bad_rows() -> None:
    rec = build_record("r", "p", None, "first", [_round(0, "better answer here", False)], seed=1)
    assert SLCAIRecord.from_dict(rec.to_dict()) == rec
    row = rec.to_dict()
    del row["final_answer"]
    with pytest.raises(ValueError, match="record 'r': missing field 'final_answer'"):
        SLCAIRecord.from_dict(row)
    row = rec.to_dict()
    row["rounds"][0]["round"] = True
    with pytest.raises(ValueError, match="round #0: field 'round' must be int"):
        SLCAIRecord.from_dict(row)


def test_principle_for_is_seeded_by_record_and_round() -> None:
    c = load_constitution(default_constitution_path())
    draws = [principle_for(c, 0, f"rt-{i}", r).id for i in range(20) for r in range(2)]
    assert draws == [principle_for(c, 0, f"rt-{i}", r).id for i in range(20) for r in range(2)]
    # 40 draws over 16 principles: a different seed changes some of them, and more than one principle appears.
    assert draws != [principle_for(c, 1, f"rt-{i}", r).id for i in range(20) for r in range(2)]
    assert len(set(draws)) > 1


def _samples(prefix: str, n: int, source: str) -> list[SFTSample]:
    return [SFTSample(f"{prefix}{i}", f"q{i}", f"a{i}", source) for i in range(n)]


def test_sft_samples_skip_degenerate_records() -> None:
    good = build_record("g", "p", None, "first", [_round(0, "a fine revision", False)], seed=0)
    bad = build_record("b", "p", None, "first", [_round(0, "", True)], seed=0)
    assert sft_samples([good, bad]) == [SFTSample("rev:g", "p", "a fine revision", "revision")]


def test_mix_takes_the_ratio_and_is_stable_under_input_order() -> None:
    revisions, helpful = _samples("rev:", 10, "revision"), _samples("help:", 30, "helpful")
    mixed = mix_sft(revisions, helpful, helpful_ratio=0.5, seed=7)
    # round(0.5 * 10) = 5 helpful samples join the 10 revisions.
    assert sum(s.source == "helpful" for s in mixed) == 5 and len(mixed) == 15
    assert mix_sft(revisions[::-1], helpful[::-1], 0.5, 7) == mixed
    assert mix_sft(revisions, helpful, 0.5, 8) != mixed
    # A larger ratio than there are helpful samples takes them all; ratio 0 takes none.
    assert len(mix_sft(revisions, helpful, 10.0, 7)) == 40
    only_revisions = mix_sft(revisions, helpful, 0.0, 7)
    assert {s.source for s in only_revisions} == {"revision"}
    # Adding helpful samples interleaves them without reshuffling the revisions.
    assert [s for s in mixed if s.source == "revision"] == only_revisions


def test_mix_rejects_duplicates_and_negative_ratio() -> None:
    revisions = _samples("x", 2, "revision")
    with pytest.raises(ValueError, match="duplicate sample id 'x[01]'"):
        mix_sft(revisions, revisions, 1.0, 0)
    with pytest.raises(ValueError, match="helpful_ratio"):
        mix_sft(revisions, [], -1.0, 0)


def test_sft_batches_cycle_through_every_sample_once_per_pass_and_are_reproducible() -> None:
    samples = _samples("s", 5, "revision")
    # Batch size 2 over 5 samples: steps 0-1 and half of step 2 make pass 0 (each sample once).
    first_pass = [s.id for k in range(2) for s in sft_batch(samples, k, 2, seed=0)] + [
        sft_batch(samples, 2, 2, seed=0)[0].id
    ]
    assert sorted(first_pass) == [f"s{i}" for i in range(5)]
    # A resumed run asking for step 3 alone gets what the full run got, in any input order.
    assert sft_batch(samples[::-1], 3, 2, seed=0) == sft_batch(samples, 3, 2, seed=0)
    # Batches larger than the data wrap into the next pass.
    assert len(sft_batch(samples, 0, 12, seed=0)) == 12
    with pytest.raises(ValueError, match="no samples"):
        sft_batch([], 0, 2, seed=0)
