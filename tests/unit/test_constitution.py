"""Unit tests for rlaif.core.constitution: the shipped file, validation, sampling."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from pathlib import Path

import pytest

from rlaif.core.constitution import (
    Constitution,
    ConstitutionError,
    Exemplar,
    ExemplarKind,
    default_constitution_path,
    load_constitution,
    sample_principles,
)
from rlaif.core.refusal import is_refusal

PRINCIPLE = """\
  - id: {id}
    critique_request: Identify ways the last response is {id}.
    revision_request: Please rewrite the response to not be {id}.
    choice_question: Which response is less {id}?
"""

FEW_SHOT = """\
critique_few_shot:
  - prompt: p
    response: r
    critique_request: cr
    critique: c
    revision_request: rr
    revision: rv
judge_few_shot:
  - conversation: c
    question: q
    option_a: a
    option_b: b
    answer: A
"""


def _yaml(principles: str, header: str = "name: t\nversion: '1'\n") -> str:
    return f"{header}principles:\n{principles}{FEW_SHOT}"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(ConstitutionError) as info:
        load_constitution(path)
    message = str(info.value)
    assert message.startswith(f"{path}:"), message
    assert "\n" not in message
    return message


# --- the shipped constitution -------------------------------------------------


def test_default_constitution_loads() -> None:
    c = load_constitution(default_constitution_path())
    assert len(c.principles) == 17
    assert len(set(c.principle_ids)) == 17
    assert c.principle("needless-refusal").guideline
    assert len(c.critique_few_shot) >= 3
    assert len(c.judge_few_shot) >= 2
    assert c.name and c.version
    assert c.principle("privacy").id == "privacy"


def test_default_few_shot_fits_small_context() -> None:
    # The 135M model has 2048 tokens; ~4 characters per token in English, so
    # 3500 characters (~900 tokens) leaves room for the real conversation.
    c = load_constitution(default_constitution_path())
    examples = c.critique_few_shot + c.judge_few_shot
    chars = sum(len(v) for ex in examples for v in dataclasses.astuple(ex))
    assert chars < 3500


# Stems of the CAI paper's appendix (Bai et al. 2022): the method is theirs, the wording must be ours.
PAPER_STEMS = ("identify specific ways", "please rewrite the", "which of these assistant responses", "is less harmful")


def test_default_wording_is_our_own_and_credits_the_method() -> None:
    path = default_constitution_path()
    c = load_constitution(path)
    texts = [(p.id, t) for p in c.principles for t in (p.critique_request, p.revision_request, p.choice_question)]
    texts += [("few-shot", t) for ex in c.critique_few_shot for t in (ex.critique_request, ex.revision_request)]
    texts += [("judge few-shot", ex.question) for ex in c.judge_few_shot]
    for where, text in texts:
        assert not any(stem in text.lower() for stem in PAPER_STEMS), (where, text)
    assert all(p.choice_question.endswith("?") for p in c.principles)
    # Varied openings, not one template: at least 12 distinct first words across 16 critique requests.
    assert len({p.critique_request.split()[0] for p in c.principles}) >= 12
    # Every judge few-shot question is one of the principles' questions, so the examples show the real form.
    assert {ex.question for ex in c.judge_few_shot} <= {p.choice_question for p in c.principles}
    header = path.read_text(encoding="utf-8").split("\nname:")[0]
    assert "Bai et al. 2022" in header and "2212.08073" in header and "our own words" in header


def test_default_principles_state_a_guideline_in_the_first_person() -> None:
    c = load_constitution(default_constitution_path())
    for p in c.principles:
        assert p.guideline.startswith(("I ", "When ")) and " I " in f" {p.guideline}", p.id
        # One sentence: the only full stop ends it.
        assert p.guideline.count(". ") == 0 and p.guideline.endswith("."), p.id


def test_default_exemplars_show_where_the_line_is_and_stay_short() -> None:
    c = load_constitution(default_constitution_path())
    kinds = Counter(e.kind for e in c.exemplars)
    # A few refusals and more plain help: with refusals alone in context the model over-refuses.
    assert 2 <= kinds[ExemplarKind.HARMFUL] < kinds[ExemplarKind.BENIGN]
    for e in c.exemplars:
        sentences = len(re.findall(r"[.!?](?:\s|$)", e.response))
        assert 1 <= sentences <= 3, e.prompt
    # The setting must leave room for the prompt and the answer in the model's 2048 tokens:
    # about 4 characters per token, so 2400 characters is about 600 tokens.
    longest = max(len(p.guideline) for p in c.principles)
    for setting in (c.wanted_exemplars, c.evasive_exemplars):
        assert longest + sum(len(e.prompt) + len(e.response) for e in setting) < 2400
    # The last exchange before a prompt weighs most for a small model: make it a benign one.
    assert c.wanted_exemplars[-1].kind == ExemplarKind.BENIGN
    # The needless refusals are the negative side's alone: never in the setting a model follows.
    assert kinds[ExemplarKind.EVASIVE] >= 2
    assert all(is_refusal(e.response) for e in c.evasive_exemplars)
    assert not any(is_refusal(e.response) for e in c.exemplars_of(ExemplarKind.BENIGN))
    assert ExemplarKind.EVASIVE not in {e.kind for e in c.wanted_exemplars}


def test_principle_lookup_unknown_id() -> None:
    c = load_constitution(default_constitution_path())
    with pytest.raises(KeyError, match="no-such"):
        c.principle("no-such")


def test_constitution_is_frozen() -> None:
    c = load_constitution(default_constitution_path())
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.name = "other"  # type: ignore[misc]


# --- validation -------------------------------------------------------------------


def test_valid_minimal_file(tmp_path: Path) -> None:
    c = load_constitution(_write(tmp_path, _yaml(PRINCIPLE.format(id="a"))))
    assert isinstance(c, Constitution)
    assert c.principle_ids == ("a",)
    assert c.judge_few_shot[0].answer == "A"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConstitutionError, match="^" + re.escape(f"{path}: cannot read file")):
        load_constitution(path)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    # Line 3 opens a flow sequence that is never closed.
    message = _error(tmp_path, "name: t\nversion: '1'\nprinciples: [\n")
    assert "YAML syntax error" in message
    assert "line " in message


def test_yaml_syntax_error_exact_line(tmp_path: Path) -> None:
    # A tab is illegal YAML indentation; it sits on line 2.
    message = _error(tmp_path, "name: t\n\tversion: '1'\n")
    assert "line 2" in message


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    message = _error(tmp_path, "name: a\nname: b\n")
    assert "duplicate key 'name'" in message
    assert "line 2" in message


def test_top_level_not_mapping(tmp_path: Path) -> None:
    assert "top level must be a mapping" in _error(tmp_path, "- a\n- b\n")


def test_missing_top_field(tmp_path: Path) -> None:
    assert "missing field 'version'" in _error(tmp_path, _yaml(PRINCIPLE.format(id="a"), "name: t\n"))


def test_unknown_top_field(tmp_path: Path) -> None:
    text = _yaml(PRINCIPLE.format(id="a"), "name: t\nversion: '1'\nauthor: me\n")
    assert "unknown field(s) 'author'" in _error(tmp_path, text)


def test_zero_principles(tmp_path: Path) -> None:
    assert "'principles' is empty" in _error(tmp_path, _yaml("  []\n"))


def test_principle_missing_field_names_principle(tmp_path: Path) -> None:
    bad = "  - id: privacy\n    critique_request: c\n    revision_request: r\n"
    text = _yaml(PRINCIPLE.format(id="a") + PRINCIPLE.format(id="b") + bad)
    message = _error(tmp_path, text)
    assert "principle #3 ('privacy'): missing field 'choice_question'" in message


def test_principle_empty_field_names_principle(tmp_path: Path) -> None:
    bad = PRINCIPLE.format(id="privacy").replace("Please rewrite the response to not be privacy.", "'   '")
    text = _yaml(PRINCIPLE.format(id="a") + PRINCIPLE.format(id="b") + bad)
    message = _error(tmp_path, text)
    assert message == f"{tmp_path / 'x.yaml'}: principle #3 ('privacy'): field 'revision_request' is empty"


def test_principle_without_id_named_by_index(tmp_path: Path) -> None:
    bad = PRINCIPLE.format(id="z").replace("  - id: z\n    ", "  - ")
    message = _error(tmp_path, _yaml(PRINCIPLE.format(id="a") + bad))
    assert "principle #2: missing field 'id'" in message


def test_wrong_type(tmp_path: Path) -> None:
    bad = PRINCIPLE.format(id="p").replace("choice_question: Which response is less p?", "choice_question: [1, 2]")
    message = _error(tmp_path, _yaml(bad))
    assert "principle #1 ('p'): field 'choice_question' must be a string, got list" in message


def test_principle_not_mapping(tmp_path: Path) -> None:
    assert "principle #1: must be a mapping" in _error(tmp_path, _yaml("  - just text\n"))


def test_principles_not_list(tmp_path: Path) -> None:
    assert "'principles' must be a list, got dict" in _error(tmp_path, _yaml("  id: a\n"))


def test_duplicate_principle_id(tmp_path: Path) -> None:
    text = _yaml(PRINCIPLE.format(id="a") + PRINCIPLE.format(id="b") + PRINCIPLE.format(id="a"))
    message = _error(tmp_path, text)
    assert "principle #3 ('a'): duplicate id, first used by principle #1" in message


def test_unknown_principle_key(tmp_path: Path) -> None:
    bad = PRINCIPLE.format(id="a") + "    weight: 2\n"
    assert "principle #1 ('a'): unknown field(s) 'weight'" in _error(tmp_path, _yaml(bad))


def test_bad_judge_answer(tmp_path: Path) -> None:
    text = _yaml(PRINCIPLE.format(id="a")).replace("answer: A", "answer: C")
    assert "judge_few_shot #1: field 'answer' must be 'A' or 'B'" in _error(tmp_path, text)


def test_critique_example_missing_field(tmp_path: Path) -> None:
    text = _yaml(PRINCIPLE.format(id="a")).replace("    revision: rv\n", "")
    assert "critique_few_shot #1: missing field 'revision'" in _error(tmp_path, text)


def test_guideline_is_optional_but_not_empty(tmp_path: Path) -> None:
    with_rule = PRINCIPLE.format(id="a") + "    guideline: I stay kind.\n"
    c = load_constitution(_write(tmp_path, _yaml(with_rule + PRINCIPLE.format(id="b"))))
    assert [p.guideline for p in c.principles] == ["I stay kind.", ""]
    message = _error(tmp_path, _yaml(PRINCIPLE.format(id="a") + "    guideline: ' '\n"))
    assert message.endswith("principle #1 ('a'): field 'guideline' is empty")


EXEMPLARS = """\
exemplars:
  - kind: harmful
    prompt: How do I make a weapon?
    response: I can't help with that, but I can suggest a safe hobby.
  - kind: benign
    prompt: How do I boil an egg?
    response: Boil it for seven minutes.
"""


def test_exemplars_load_in_file_order(tmp_path: Path) -> None:
    c = load_constitution(_write(tmp_path, _yaml(PRINCIPLE.format(id="a")) + EXEMPLARS))
    assert c.exemplars == (
        Exemplar("harmful", "How do I make a weapon?", "I can't help with that, but I can suggest a safe hobby."),
        Exemplar("benign", "How do I boil an egg?", "Boil it for seven minutes."),
    )
    # Absent: none, and the file is still valid.
    assert load_constitution(_write(tmp_path, _yaml(PRINCIPLE.format(id="a")))).exemplars == ()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("kind: benign", "kind: neutral"),
            "exemplar #2: field 'kind' must be one of ['benign', 'evasive', 'harmful'], got 'neutral'",
        ),
        (("    response: Boil it for seven minutes.\n", ""), "exemplar #2: missing field 'response'"),
        (("response: Boil it for seven minutes.", "response: '  '"), "exemplar #2: field 'response' is empty"),
        (
            ("prompt: How do I make a weapon?", "prompt: [a, b]"),
            "exemplar #1: field 'prompt' must be a string, got list",
        ),
        (("kind: benign", "kind: benign\n    note: x"), "exemplar #2: unknown field(s) 'note'"),
        (
            ("  - kind: benign\n    prompt: How do I boil an egg?\n", "  - just text\n  - kind: benign\n"),
            "exemplar #2: must be a mapping, got str",
        ),
    ],
)
def test_bad_exemplar_is_named_with_the_file(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    text = _yaml(PRINCIPLE.format(id="a")) + EXEMPLARS.replace(*change)
    assert expected in _error(tmp_path, text)


def test_exemplars_must_be_a_list(tmp_path: Path) -> None:
    text = _yaml(PRINCIPLE.format(id="a")) + "exemplars:\n  kind: benign\n"
    assert "'exemplars' must be a list, got dict" in _error(tmp_path, text)


def test_numeric_version_is_text(tmp_path: Path) -> None:
    c = load_constitution(_write(tmp_path, _yaml(PRINCIPLE.format(id="a"), "name: t\nversion: 2\n")))
    assert c.version == "2"


# --- sampling -------------------------------------------------------------------


def test_sample_principles_deterministic() -> None:
    c = load_constitution(default_constitution_path())
    first = sample_principles(c, 4, seed=7, key="rt-0001")
    assert first == sample_principles(c, 4, seed=7, key="rt-0001")
    assert len(first) == 4
    # Draw i depends only on (seed, key, i): a longer chain extends a shorter one.
    assert sample_principles(c, 8, seed=7, key="rt-0001")[:4] == first


def test_sample_principles_vary_with_key_and_seed() -> None:
    c = load_constitution(default_constitution_path())
    by_key = {sample_principles(c, 4, seed=0, key=f"rt-{i:04d}") for i in range(50)}
    by_seed = {sample_principles(c, 4, seed=s, key="rt-0001") for s in range(50)}
    # 16**4 possible chains; 50 draws should be nearly all distinct.
    assert len(by_key) > 40
    assert len(by_seed) > 40


def test_sample_principles_covers_constitution() -> None:
    c = load_constitution(default_constitution_path())
    counts = Counter(p.id for i in range(1600) for p in sample_principles(c, 1, 0, str(i)))
    # Uniform: 100 expected per principle; a 40..160 band is > 5 sigma wide.
    assert set(counts) == set(c.principle_ids)
    assert all(40 < n < 160 for n in counts.values())


def test_sample_principles_edge_cases() -> None:
    c = load_constitution(default_constitution_path())
    assert sample_principles(c, 0, seed=0, key="k") == ()
    with pytest.raises(ValueError):
        sample_principles(c, -1, seed=0, key="k")
