"""The preference (reward) model and one DeepSpeed rank that trains it (docs/design.md §1, stage 2 step 6).

`RewardModel` is a causal-LM backbone with a scalar head: a transformers
`AutoModelForSequenceClassification` with ``num_labels=1`` (for Llama-family
models, the backbone plus a bias-free linear ``score`` layer). Its reward for a
conversation is the head applied to the final hidden state of the last real
token, found from the attention mask rather than from the pad id: chat models
often pad with their end-of-turn token, which also appears inside the text.
Rendered conversations end with the template's end-of-turn markup, so the last
token is the same one transformers' own pooling picks for an unpadded sequence,
and a saved folder scores the same when loaded with
``AutoModelForSequenceClassification.from_pretrained``.

`RewardTrainer` trains it on AI-labelled pairs with the soft-label
Bradley-Terry loss ``-[p log σ(r_a - r_b) + (1 - p) log σ(r_b - r_a)]``
(`rlaif.core.losses.bradley_terry_loss`; Bai et al. 2022 §4.1), and scores
texts for PPO. `train_step` renders and tokenises its pairs (`encode_pair`);
`train_step_encoded` takes pairs tokenised ahead of time (`RewardTrainer.encode`),
so a caller can keep tokenisation out of a timed step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlaif.core.losses import bradley_terry_loss
from rlaif.core.shared_prefix import right_pad, split_pairs
from rlaif.engines.base import Message
from rlaif.engines.models import resolve_model
from rlaif.trainers import distributed as D


@dataclass(frozen=True)
class RewardPair:
    """Two responses to one prompt and the judge's soft label `p_a` = P(response_a preferred)."""

    id: str
    prompt_messages: tuple[Message, ...]
    response_a: str
    response_b: str
    p_a: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt_messages", tuple(Message(*m) for m in self.prompt_messages))
        _check_label(self.id, self.p_a)


@dataclass(frozen=True)
class EncodedPair:
    """A `RewardPair` tokenised (`encode_pair`): each conversation's token ids, and the label `p_a`."""

    id: str
    ids_a: tuple[int, ...]
    ids_b: tuple[int, ...]
    p_a: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids_a", tuple(self.ids_a))
        object.__setattr__(self, "ids_b", tuple(self.ids_b))
        _check_label(self.id, self.p_a)


def _check_label(pair_id: str, p_a: float) -> None:
    if not 0.0 <= p_a <= 1.0 or math.isnan(p_a):
        raise ValueError(f"reward pair {pair_id!r}: p_a must be in [0, 1], got {p_a}")


def render_conversation(tokenizer: Any, prompt_messages: Sequence[Message], response: str) -> str:
    """The prompt plus `response` as the assistant's reply, rendered with the chat template."""
    chat = [{"role": m.role, "content": m.content} for m in prompt_messages]
    chat.append({"role": "assistant", "content": response})
    return str(tokenizer.apply_chat_template(chat, tokenize=False))


class RewardModel(torch.nn.Module):
    """A sequence-classification LM with one output: ``forward(input_ids, attention_mask) -> (batch,)``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        # Any: transformers' heads and backbones are looked up by name below.
        self.model: Any = model
        if not isinstance(getattr(model, "score", None), torch.nn.Module):
            raise ValueError(f"{type(model).__name__} has no `score` head; rlaif reads rewards from it")

    # Properties, not attributes: a second reference to a submodule would register it twice,
    # doubling its keys in state_dict and its hooks under ZeRO-3.
    @property
    def backbone(self) -> torch.nn.Module:
        """The transformer without a head (transformers' `base_model`)."""
        backbone: torch.nn.Module = getattr(self.model, self.model.base_model_prefix)
        return backbone

    @property
    def head(self) -> torch.nn.Module:
        """The value head: hidden_size -> 1."""
        head: torch.nn.Module = self.model.score
        return head

    @classmethod
    def from_pretrained(
        cls, model_path: str, pad_token_id: int, dtype: torch.dtype, trust_remote_code: bool = False
    ) -> RewardModel:
        """Load a reward model, or start one from a causal LM with a fresh head (`init_head`).

        `trust_remote_code` lets transformers run the model folder's own code (``model.trust_remote_code``)."""
        from transformers import AutoConfig, AutoModelForSequenceClassification

        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        fresh = not any(arch.endswith("ForSequenceClassification") for arch in config.architectures or ())
        config.num_labels = 1
        # transformers' own pooling (used by anyone loading the saved folder) needs a pad id.
        config.pad_token_id = pad_token_id
        model = AutoModelForSequenceClassification.from_pretrained(
            model_path, config=config, dtype=dtype, trust_remote_code=trust_remote_code
        )
        reward_model = cls(model)
        if fresh:
            reward_model.init_head()
        return reward_model

    def init_head(self) -> None:
        """Draw the fresh head's weights from N(0, (1 / (hidden_size + 1))²), biases 0.

        Small enough that every reward starts near 0 (the first loss is close to the labels'
        cross-entropy at p = 0.5), but not zero: a zero head passes no gradient to the
        backbone (d reward / d hidden = the head's weights), so only the head itself would
        learn at first, and at a fine-tuning learning rate the loss stayed at ln 2. The scale
        is the one OpenRLHF gives its value heads. Drawn from torch's global generator, which
        the trainers seed.
        """
        with torch.no_grad():
            for name, param in self.head.named_parameters():
                if name.endswith("bias"):
                    param.zero_()
                else:
                    param.normal_(mean=0.0, std=1.0 / (param.shape[-1] + 1))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        prefix_ids: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Rewards of right-padded sequences, or of continuations of shared prefixes.

        Args:
            input_ids: (batch, seq_len).
            attention_mask: (batch, seq_len), 1 on real tokens, right padding.
            prefix_ids, prefix_mask: optional (n, prefix_len), right-padded, with batch a
                multiple k of n: row r of `input_ids` then continues prefix row r // k
                (`rlaif.core.shared_prefix`). The prefixes run once, and their key/value
                cache is repeated for the k continuations of each.

        Returns:
            (batch,) the head's output at each sequence's last real token.
        """
        if prefix_ids is None or prefix_mask is None:
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        else:
            repeats = input_ids.shape[0] // prefix_ids.shape[0]
            if repeats * prefix_ids.shape[0] != input_ids.shape[0]:
                raise ValueError(f"{input_ids.shape[0]} continuations for {prefix_ids.shape[0]} prefixes")
            cache = self.backbone(input_ids=prefix_ids, attention_mask=prefix_mask, use_cache=True).past_key_values
            cache.batch_repeat_interleave(repeats)
            prefix_mask = prefix_mask.repeat_interleave(repeats, dim=0)
            # Each continuation starts where its own prefix's real tokens end, padding in between.
            start = prefix_mask.sum(dim=1, keepdim=True)
            positions = start + torch.arange(input_ids.shape[1], device=input_ids.device)
            hidden = self.backbone(
                input_ids=input_ids,
                attention_mask=torch.cat([prefix_mask, attention_mask], dim=1),
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
            )
        last_hidden = hidden.last_hidden_state
        last = attention_mask.sum(dim=1).clamp(min=1) - 1
        pooled = last_hidden[torch.arange(last_hidden.size(0), device=last_hidden.device), last]
        return self.head(pooled).squeeze(-1).float()


def right_padded(tokenizer: Any, texts: Sequence[str], max_len: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(len(texts), longest) token ids and attention mask, right-padded; long texts keep their last
    `max_len` tokens, because the reward is read at the final token."""
    return right_pad([encode_tail(tokenizer, t, max_len) for t in texts], pad_id)


def encode_tail(tokenizer: Any, text: str, max_len: int) -> list[int]:
    """`text`'s token ids, at most the last `max_len` of them."""
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"][-max_len:]
    return ids


def encode_pair(tokenizer: Any, pair: RewardPair, max_len: int) -> EncodedPair:
    """Both of `pair`'s conversations rendered (`render_conversation`) and tokenised, each keeping
    its last `max_len` tokens: what `RewardTrainer` trains on."""

    def ids(response: str) -> list[int]:
        return encode_tail(tokenizer, render_conversation(tokenizer, pair.prompt_messages, response), max_len)

    return EncodedPair(pair.id, tuple(ids(pair.response_a)), tuple(ids(pair.response_b)), pair.p_a)


class RewardTrainer:
    """One rank of a data-parallel DeepSpeed group training a `RewardModel` on `RewardPair`s."""

    def __init__(
        self,
        model_path: str,
        ds_config: dict[str, Any],
        rank: int,
        world_size: int,
        master_addr: str,
        master_port: int,
        gradient_checkpointing: bool = False,
        seed: int = 0,
        max_len: int = 1024,
        trust_remote_code: bool = False,
    ) -> None:
        """As `rlaif.trainers.sft.SFTTrainer`; `model_path` is a causal LM (a fresh head is added,
        `RewardModel.init_head`) or a saved reward model; `max_len` keeps the last tokens of longer texts."""
        from transformers import AutoTokenizer

        # Resolved before joining the group, so a bad path fails fast instead of at rendezvous.
        model_path = str(resolve_model(model_path))
        D.init_process_group(rank, world_size, master_addr, master_port, D.default_backend())
        self.rank, self.world_size, self.max_len = rank, world_size, max_len
        self.gradient_checkpointing = gradient_checkpointing
        torch.manual_seed(seed)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self.pad_token_id = D.pad_token_id(self.tokenizer)
        dtype = torch.bfloat16 if ds_config.get("bf16", {}).get("enabled") else torch.float32
        model = RewardModel.from_pretrained(model_path, self.pad_token_id, dtype, trust_remote_code)
        if gradient_checkpointing:
            model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.engine = D.create_engine(model, ds_config)
        self.micro_batch_size = int(self.engine.train_micro_batch_size_per_gpu())
        self.grad_accum_steps = int(self.engine.gradient_accumulation_steps())
        self.zero_stage = D.zero_stage(self.engine)
        self.step = 0

    @property
    def pairs_per_step(self) -> int:
        """This rank's share of the global batch: micro_batch_size x grad_accum_steps pairs."""
        return self.micro_batch_size * self.grad_accum_steps

    def encode(self, pairs: Sequence[RewardPair]) -> list[EncodedPair]:
        """`pairs` tokenised as `train_step` tokenises them (`encode_pair`, this trainer's `max_len`)."""
        return [encode_pair(self.tokenizer, p, self.max_len) for p in pairs]

    def train_step(self, pairs: Sequence[RewardPair]) -> dict[str, float]:
        """One optimizer step on this rank's `pairs_per_step` pairs; all ranks call it together.

        Returns metrics over the global batch, identical on every rank: ``loss``
        (pair mean), ``accuracy`` (share of pairs with p_a != 0.5 where the model's
        preferred response is the label's), ``margin`` (mean r_a - r_b), ``lr``,
        ``grad_norm`` (before clipping), ``step_time_s`` (the whole call, tokenisation
        included), ``step``.
        """
        started = time.perf_counter()
        metrics = self.train_step_encoded(self.encode(pairs))
        metrics["step_time_s"] = time.perf_counter() - started
        return metrics

    def train_step_encoded(self, pairs: Sequence[EncodedPair]) -> dict[str, float]:
        """`train_step` on pairs tokenised ahead of time (`encode`); ``step_time_s`` then leaves tokenisation out."""
        if len(pairs) != self.pairs_per_step:
            raise ValueError(
                f"rank {self.rank}: train_step needs micro_batch_size x grad_accum_steps = "
                f"{self.pairs_per_step} pairs, got {len(pairs)}"
            )
        started = time.perf_counter()
        lr = float(self.engine.get_lr()[0])
        self.engine.train()
        totals = _PairTotals()
        for start in range(0, len(pairs), self.micro_batch_size):
            chunk = pairs[start : start + self.micro_batch_size]
            r_a, r_b, p = self._pair_rewards(chunk)
            # Every micro-batch on every rank holds the same number of pairs, so DeepSpeed's
            # averaging over micro-batches and ranks turns these means into the global pair mean.
            loss = bradley_terry_loss(r_a, r_b, p)
            self.engine.backward(loss)
            self.engine.step()
            totals.add(r_a.detach(), r_b.detach(), p, loss.detach())
        self.step += 1
        metrics = totals.reduce()
        metrics.update(
            lr=lr, grad_norm=D.grad_norm(self.engine), step_time_s=time.perf_counter() - started, step=float(self.step)
        )
        return metrics

    def evaluate(self, pairs: Sequence[RewardPair]) -> dict[str, float]:
        """``loss``, ``accuracy`` and ``margin`` over every rank's `pairs` (shards may differ; all ranks call)."""
        totals = _PairTotals()
        self.engine.eval()
        with torch.no_grad():
            for chunk in D.lockstep_chunks(pairs, self.micro_batch_size):
                if not chunk:
                    self._rewards([self.tokenizer.eos_token or " "])  # keeps ZeRO-3's collective gathers in step
                    continue
                r_a, r_b, p = self._pair_rewards(self.encode(chunk))
                totals.add(r_a, r_b, p, bradley_terry_loss(r_a, r_b, p))
        self.engine.train()
        return totals.reduce()

    def score(self, texts: Sequence[str]) -> list[float]:
        """Rewards of already rendered texts (see `render_conversation`), in order; all ranks call."""
        rewards: list[float] = []
        self.engine.eval()
        with torch.no_grad():
            for chunk in D.lockstep_chunks(texts, self.micro_batch_size):
                values = self._rewards(list(chunk) or [self.tokenizer.eos_token or " "])
                rewards.extend(values.tolist()[: len(chunk)])
        self.engine.train()
        return rewards

    def render(self, prompt_messages: Sequence[Message], response: str) -> str:
        return render_conversation(self.tokenizer, prompt_messages, response)

    def save(self, path: str) -> None:
        """Write the reward model (sequence classification, num_labels=1) and tokenizer as a Hugging Face folder."""
        D.save_hf_folder(self.engine.module.model, self.tokenizer, path, self.zero_stage, self.rank)

    def save_checkpoint(self, directory: str) -> None:
        D.save_engine_checkpoint(self.engine, directory, self.step)

    def load_checkpoint(self, directory: str) -> int:
        self.step = D.load_engine_checkpoint(self.engine, directory)
        return self.step

    def _pair_rewards(self, chunk: Sequence[EncodedPair]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """r_a, r_b and p_a, each (len(chunk),); both responses go through one forward pass.

        The tokens the two conversations of a pair start with (system prompt, user turn,
        assistant header) are encoded once and their cache shared by both responses
        (`rlaif.core.shared_prefix`). Not under gradient checkpointing, which turns the cache off.
        """
        a = [p.ids_a for p in chunk]
        b = [p.ids_b for p in chunk]
        split = None if self.gradient_checkpointing else split_pairs(list(zip(a, b, strict=True)), self.pad_token_id)
        device = self.engine.device
        if split is None:
            ids, mask = right_pad(a + b, self.pad_token_id)
            rewards = self.engine(ids.to(device), mask.to(device))
            r_a, r_b = rewards[: len(chunk)], rewards[len(chunk) :]
        else:
            tensors = (t.to(device) for t in (split.suffix_ids, split.suffix_mask, split.prefix_ids, split.prefix_mask))
            rewards = self.engine(*tensors)
            r_a, r_b = rewards[0::2], rewards[1::2]
        p = torch.tensor([pair.p_a for pair in chunk], dtype=rewards.dtype, device=rewards.device)
        return r_a, r_b, p

    def _rewards(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts),) rewards; long texts keep their last `max_len` tokens (the reward is read at the end)."""
        ids, mask = right_padded(self.tokenizer, texts, self.max_len, self.pad_token_id)
        device = self.engine.device
        return self.engine(ids.to(device), mask.to(device))


class _PairTotals:
    """Running sums of pair metrics on this rank, reduced over all ranks at the end."""

    def __init__(self) -> None:
        self.pairs = 0.0
        self.loss_sum = 0.0
        self.correct = 0.0
        self.decided = 0.0
        self.margin_sum = 0.0

    def add(self, r_a: torch.Tensor, r_b: torch.Tensor, p: torch.Tensor, mean_loss: torch.Tensor) -> None:
        n = r_a.numel()
        margin = r_a - r_b
        decided = p != 0.5
        self.pairs += n
        self.loss_sum += float(mean_loss) * n
        self.correct += float(((margin > 0) == (p > 0.5))[decided].sum())
        self.decided += float(decided.sum())
        self.margin_sum += float(margin.sum())

    def reduce(self) -> dict[str, float]:
        pairs, loss, correct, decided, margin = D.all_reduce_sums(
            [self.pairs, self.loss_sum, self.correct, self.decided, self.margin_sum]
        )
        return {
            "loss": loss / max(pairs, 1.0),
            "accuracy": correct / decided if decided else float("nan"),
            "margin": margin / max(pairs, 1.0),
            "pairs": pairs,
        }
