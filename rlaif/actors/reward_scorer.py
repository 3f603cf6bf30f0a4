"""The reward scorer: a trained reward-model folder, scoring (prompt, response) pairs for PPO.

Plain Python, testable in-process; apply `ray.remote` where roles are composed. It
loads the Hugging Face folder the `reward_model` stage writes
(``<run_dir>/reward_model/model/``, sequence classification with one label) and reads
each reward exactly as `rlaif.trainers.reward.RewardTrainer` did in training: the
prompt and response rendered with the chat template, the head applied at the last
real token, over right-padded batches, long texts keeping their last `max_len` tokens.
A response cut off at the token limit (`finished` False) is rendered without the
template's end-of-turn markup: the reward model sees an answer that stops mid-way,
not a complete one that happens to end there (`render_unfinished`).

    scorer = RewardScorer("runs/smoke/reward_model/model")
    scorer.score(["How do I pick a lock?"], ["I can't help with that."])   # [0.42]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rlaif.engines.base import Message, Prompt
from rlaif.trainers.distributed import pad_token_id
from rlaif.trainers.reward import RewardModel, render_conversation, right_padded

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# A placeholder reply that no chat template alters, marking where the assistant's text starts.
_MARK = "\u2063rlaif-response\u2063"


def render_unfinished(tokenizer: Any, prompt_messages: Sequence[Message], response: str) -> str:
    """The conversation with `response` as an assistant turn that was never closed.

    Rendered with the chat template around a placeholder reply, cut where the placeholder
    starts, then `response` appended: everything the template puts before an assistant
    turn in a finished conversation (which may differ from its generation prompt), and
    none of the end-of-turn text it puts after it.
    """
    text = render_conversation(tokenizer, prompt_messages, _MARK)
    return text[: text.rindex(_MARK)] + response


class RewardScorer:
    """Holds a reward model for inference; `score` returns one scalar reward per (prompt, response)."""

    def __init__(
        self,
        model_path: str,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 8,
        max_len: int = 1024,
        trust_remote_code: bool = False,
    ) -> None:
        from transformers import AutoTokenizer

        if batch_size < 1 or max_len < 1:
            raise ValueError(f"batch_size and max_len must be >= 1, got {batch_size}, {max_len}")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self.pad_token_id = pad_token_id(self.tokenizer)
        self.device = torch.device(device)
        self.model = RewardModel.from_pretrained(model_path, self.pad_token_id, _DTYPES[dtype], trust_remote_code).to(
            self.device
        )
        self.model.eval()
        self.batch_size, self.max_len = batch_size, max_len

    def render(self, prompt: Prompt, response: str, finished: bool = True) -> str:
        """The conversation as the reward model saw it in training; a string prompt is one user turn.

        An unfinished response (cut off at the token limit) keeps its turn open (`render_unfinished`).
        """
        messages = [Message("user", prompt)] if isinstance(prompt, str) else list(prompt)
        render = render_conversation if finished else render_unfinished
        return render(self.tokenizer, messages, response)

    @torch.no_grad()
    def score(
        self, prompts: Sequence[Prompt], responses: Sequence[str], finished: Sequence[bool] | None = None
    ) -> list[float]:
        """Rewards of each response to its prompt, in order; `finished` (default: all True) as in `render`."""
        done = [True] * len(responses) if finished is None else list(finished)
        if not len(prompts) == len(responses) == len(done):
            raise ValueError(
                f"need one response and finished flag per prompt, got {len(prompts)} prompts, "
                f"{len(responses)} responses and {len(done)} flags"
            )
        texts = [self.render(p, r, f) for p, r, f in zip(prompts, responses, done, strict=True)]
        rewards: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            rewards.extend(self.score_texts(texts[start : start + self.batch_size]).tolist())
        return rewards

    def score_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts),) rewards of already rendered conversations, one right-padded batch."""
        ids, mask = right_padded(self.tokenizer, texts, self.max_len, self.pad_token_id)
        rewards: torch.Tensor = self.model(ids.to(self.device), mask.to(self.device))
        return rewards.cpu()
