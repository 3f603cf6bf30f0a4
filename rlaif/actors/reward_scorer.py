"""The reward scorer: a trained reward-model folder, scoring (prompt, response) pairs for PPO.

Plain Python, testable in-process; apply `ray.remote` where roles are composed. It
loads the Hugging Face folder the `reward_model` stage writes
(``<run_dir>/reward_model/model/``, sequence classification with one label) and reads
each reward exactly as `rlaif.trainers.reward.RewardTrainer` did in training: the
prompt and response rendered with the chat template, the head applied at the last
real token, over right-padded batches, long texts keeping their last `max_len` tokens.

    scorer = RewardScorer("runs/smoke/reward_model/model")
    scorer.score(["How do I pick a lock?"], ["I can't help with that."])   # [0.42]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rlaif.engines.base import Message, Prompt
from rlaif.trainers.distributed import pad_token_id
from rlaif.trainers.reward import RewardModel, render_conversation, right_padded

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class RewardScorer:
    """Holds a reward model for inference; `score` returns one scalar reward per (prompt, response)."""

    def __init__(
        self, model_path: str, device: str = "cpu", dtype: str = "float32", batch_size: int = 8, max_len: int = 1024
    ) -> None:
        from transformers import AutoTokenizer

        if batch_size < 1 or max_len < 1:
            raise ValueError(f"batch_size and max_len must be >= 1, got {batch_size}, {max_len}")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.pad_token_id = pad_token_id(self.tokenizer)
        self.device = torch.device(device)
        self.model = RewardModel.from_pretrained(model_path, self.pad_token_id, _DTYPES[dtype]).to(self.device)
        self.model.eval()
        self.batch_size, self.max_len = batch_size, max_len

    def render(self, prompt: Prompt, response: str) -> str:
        """The conversation as the reward model saw it in training; a string prompt is one user turn."""
        messages = [Message("user", prompt)] if isinstance(prompt, str) else list(prompt)
        return render_conversation(self.tokenizer, messages, response)

    @torch.no_grad()
    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        """Rewards of each response to its prompt, in order."""
        if len(prompts) != len(responses):
            raise ValueError(f"need one response per prompt, got {len(prompts)} prompts and {len(responses)}")
        texts = [self.render(p, r) for p, r in zip(prompts, responses, strict=True)]
        rewards: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            rewards.extend(self.score_texts(texts[start : start + self.batch_size]).tolist())
        return rewards

    def score_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts),) rewards of already rendered conversations, one right-padded batch."""
        ids, mask = right_padded(self.tokenizer, texts, self.max_len, self.pad_token_id)
        rewards: torch.Tensor = self.model(ids.to(self.device), mask.to(self.device))
        return rewards.cpu()
