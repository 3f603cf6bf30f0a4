"""How the `preferences` stage turns a chunk of prompts into response pairs (``label.pairs``).

Each builder is a function registered under its `PairBuilder` name. It gets the
chunk's prompts, a ``generate`` function (the rollout pool's batched call, or a fake in
a unit test), the sampling settings and a `PairSetting`, and makes one engine call per
chunk:

- ``sampled``: two samples of the bare prompt (RL-CAI, Bai et al. 2022 §4.1);
- ``contrastive``: one response after the constitution's in-context setting
  (`rlaif.core.cai.context_turns`: the guideline of a principle sampled per prompt,
  then the exemplars) and one without it, on the bare prompt or after
  ``label.negative_system`` (RLCD, Yang et al. 2023, arXiv 2307.12950). Both sides
  use the same sampling settings. The positive takes the slot `positive_slot` picks.
  For sensitive-but-benign prompts (`PairSetting.benign_principle` set) the direction
  turns: the positive side states that principle (against needless refusal) before the
  benign exemplars only, and the negative side follows the evasive exemplars, needless
  refusals, so the pair contrasts a caring answer with an evasive one.

Plain Python (no Ray): the stage passes the pool in as ``generate``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from rlaif.core.cai import context_turns
from rlaif.core.constitution import Constitution, Exemplar, ExemplarKind, Principle, sample_principles
from rlaif.core.contrastive import PairBuilder, place_positive, positive_slot
from rlaif.core.judging import ResponsePair
from rlaif.core.prompts import PromptRecord
from rlaif.engines.base import Generation, Message, SamplingParams

Generate = Callable[[Sequence[Sequence[Message]], SamplingParams], list[Generation]]
"""Batched generation: chats in, one `Generation` per chat out, in order."""


@dataclass(frozen=True)
class PairSetting:
    """What a builder needs besides the prompts: the constitution, the run's seed, the negative side's system.

    ``benign_principle``: set for a chunk of sensitive-but-benign prompts (the principle
    against needless refusal); None for red-team prompts.
    """

    constitution: Constitution
    seed: int
    negative_system: str | None = None
    benign_principle: Principle | None = None


class BuildPairs(Protocol):
    def __call__(
        self, prompts: Sequence[PromptRecord], *, generate: Generate, params: SamplingParams, setting: PairSetting
    ) -> list[ResponsePair]: ...


PAIR_BUILDERS: dict[PairBuilder, BuildPairs] = {}


def register_pair_builder(name: PairBuilder) -> Callable[[BuildPairs], BuildPairs]:
    """Decorator: register a builder under `name` (the value of ``label.pairs``)."""

    def register(fn: BuildPairs) -> BuildPairs:
        PAIR_BUILDERS[name] = fn
        return fn

    return register


def pair_id(prompt_id: str) -> str:
    """The stable id of the (one) response pair made for a prompt."""
    return f"pair-{prompt_id}"


def context_principle(constitution: Constitution, seed: int, prompt_id: str) -> Principle:
    """The principle whose guideline a prompt's positive context states: seeded per prompt.

    Its key differs from the judge's (the pair id), so the two samplings are independent.
    """
    return sample_principles(constitution, 1, seed, key=f"context:{pair_id(prompt_id)}")[0]


@register_pair_builder(PairBuilder.SAMPLED)
def sampled_pairs(
    prompts: Sequence[PromptRecord], *, generate: Generate, params: SamplingParams, setting: PairSetting
) -> list[ResponsePair]:
    """Two samples per bare prompt, in one call (``n=2``)."""
    generations = generate([[Message("user", p.prompt)] for p in prompts], replace(params, n=2))
    pairs = []
    for prompt, generation in zip(prompts, generations, strict=True):
        a, b = generation.completions
        pairs.append(
            ResponsePair(pair_id(prompt.id), prompt.id, prompt.prompt, a.text, b.text, generation.policy_version)
        )
    return pairs


def positive_chat(
    constitution: Constitution, principle: Principle, prompt: str, *, benign: bool = False
) -> list[Message]:
    """The setting (guideline, then exemplars) and the prompt: the setting first, so the prefix cache serves it.

    The exemplars are the wanted ones (harmful and benign); for a sensitive prompt (`benign`),
    the benign ones alone, so no refusal is in view.
    """
    exemplars = constitution.exemplars_of(ExemplarKind.BENIGN) if benign else constitution.wanted_exemplars
    return [*(Message(t.role, t.content) for t in context_turns(exemplars, principle)), Message("user", prompt)]


def negative_chat(negative_system: str | None, prompt: str, evasive: Sequence[Exemplar] = ()) -> list[Message]:
    """The prompt, after `negative_system` when one is given and after the `evasive` exemplars (sensitive prompts)."""
    system = [Message("system", negative_system)] if negative_system is not None else []
    shown = [Message(t.role, t.content) for t in context_turns(evasive, None)]
    return [*system, *shown, Message("user", prompt)]


@register_pair_builder(PairBuilder.CONTRASTIVE)
def contrastive_pairs(
    prompts: Sequence[PromptRecord], *, generate: Generate, params: SamplingParams, setting: PairSetting
) -> list[ResponsePair]:
    """One response with the constitution's setting and one without, in one call; positive slot by `positive_slot`.

    The call holds the positives, grouped by principle so that requests sharing a
    setting run together (and a pool's contiguous shards see few distinct settings),
    then the negatives.
    """
    c, benign = setting.constitution, setting.benign_principle
    principles = [benign or context_principle(c, setting.seed, p.id) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: principles[i].id)
    chats = [positive_chat(c, principles[i], prompts[i].prompt, benign=benign is not None) for i in order]
    evasive = c.evasive_exemplars if benign is not None else ()
    chats += [negative_chat(setting.negative_system, p.prompt, evasive) for p in prompts]
    generations = generate(chats, replace(params, n=1))
    if len(generations) != 2 * len(prompts):
        raise ValueError(f"contrastive pairs: {len(chats)} chats gave {len(generations)} generations")
    positives = dict(zip(order, generations[: len(prompts)], strict=True))
    pairs = []
    for i, prompt in enumerate(prompts):
        positive, negative = positives[i], generations[len(prompts) + i]
        pid = pair_id(prompt.id)
        slot = positive_slot(pid, seed=setting.seed)
        a, b = place_positive(positive.completions[0].text, negative.completions[0].text, slot)
        pairs.append(
            ResponsePair(
                id=pid,
                prompt_id=prompt.id,
                prompt=prompt.prompt,
                response_a=a,
                response_b=b,
                policy_version=positive.policy_version,
                pairs=PairBuilder.CONTRASTIVE,
                positive=slot,
                context_principle=principles[i].id,
            )
        )
    return pairs
