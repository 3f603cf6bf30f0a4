"""Supervised fine-tuning (SL-CAI, docs/design.md §1 stage 1): one DeepSpeed rank.

`SFTTrainer` is plain Python holding one rank of a data-parallel DeepSpeed group;
`rlaif.actors.trainer_group.TrainerGroup` runs N of them as Ray actors. Each
`train_step` takes this rank's shard of the global batch of `SFTExample`s and
makes one optimizer step.

The loss is next-token cross-entropy on assistant tokens only (the user's turns,
the system prompt and the template's markup are context, not targets), averaged
over every assistant token of the *global* batch: each rank scales its summed
loss by the global token count, so long and short answers weigh per token, not
per example, whatever the sharding.

Assistant spans are found by rendering the chat template on growing prefixes of
the conversation: the text an assistant turn adds after the template's generation
prompt is that turn's target (its content and end-of-turn marker), whatever the
template's markup. Tokens are labelled through the fast tokenizer's character
offsets, so no re-tokenisation at span seams can shift them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from rlaif.engines.base import Message
from rlaif.engines.models import resolve_model
from rlaif.trainers import distributed as D

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
"""Label of tokens that are not trained (torch's cross-entropy default `ignore_index`)."""


@dataclass(frozen=True)
class SFTExample:
    """A conversation whose assistant turns are trained; `id` is stable across retries."""

    id: str
    messages: tuple[Message, ...]

    def __post_init__(self) -> None:
        messages = tuple(Message(*m) for m in self.messages)
        object.__setattr__(self, "messages", messages)
        if not any(m.role == "assistant" for m in messages):
            raise ValueError(f"SFT example {self.id!r} has no assistant turn to train on")
        if messages[0].role == "assistant":
            raise ValueError(f"SFT example {self.id!r} opens with an assistant turn; it needs a prompt before it")


class TokenizedExample(NamedTuple):
    """`input_ids` and `labels`, both (seq_len,); labels are -100 outside assistant turns."""

    input_ids: list[int]
    labels: list[int]


def assistant_char_spans(tokenizer: Any, messages: Sequence[Message]) -> tuple[str, list[tuple[int, int]]]:
    """Render `messages` with the chat template; return the text and each assistant turn's [start, end).

    Raises:
        ValueError: the template renders a prefix of the conversation that is not a
            prefix of the whole (it rewrites earlier turns), so spans cannot be found.
    """
    chat = [{"role": m.role, "content": m.content} for m in messages]
    full = tokenizer.apply_chat_template(chat, tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message.role != "assistant":
            continue
        before = tokenizer.apply_chat_template(chat[:i], tokenize=False, add_generation_prompt=True)
        through = tokenizer.apply_chat_template(chat[: i + 1], tokenize=False)
        if not (full.startswith(through) and through.startswith(before)):
            raise ValueError(
                "the chat template does not render conversations prefix by prefix; "
                f"cannot locate assistant turn {i} ({message.content[:40]!r})"
            )
        spans.append((len(before), len(through)))
    return full, spans


def tokenize_sft_example(tokenizer: Any, example: SFTExample, max_len: int) -> TokenizedExample:
    """Token ids of the rendered conversation and labels that keep only assistant tokens.

    A token is a target if its characters overlap an assistant span. Sequences
    longer than `max_len` are cut at the end (the opening of a conversation is
    the context of everything after it).
    """
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2, got {max_len}")
    text, spans = assistant_char_spans(tokenizer, example.messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoded["input_ids"])[:max_len]
    labels = [IGNORE_INDEX] * len(input_ids)
    for i, (start, end) in enumerate(encoded["offset_mapping"][: len(input_ids)]):
        if any(start < span_end and end > span_start for span_start, span_end in spans):
            labels[i] = input_ids[i]
    return TokenizedExample(input_ids, labels)


def collate(batch: Sequence[TokenizedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence: input_ids, attention_mask, labels, each (batch, seq_len)."""
    length = max(len(ex.input_ids) for ex in batch)
    ids = torch.full((len(batch), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), length), dtype=torch.long)
    for row, ex in enumerate(batch):
        n = len(ex.input_ids)
        ids[row, :n] = torch.tensor(ex.input_ids)
        labels[row, :n] = torch.tensor(ex.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def target_count(example: TokenizedExample) -> int:
    """Tokens that carry loss: labelled positions after the first (position 0 has no context)."""
    return sum(1 for label in example.labels[1:] if label != IGNORE_INDEX)


def summed_token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of next-token negative log-likelihoods over labelled positions.

    Args:
        logits: (batch, seq_len, vocab) from the causal LM.
        labels: (batch, seq_len), IGNORE_INDEX where not trained.

    Returns:
        A 0-dim tensor: the loss summed (not averaged) so callers can normalise globally.
    """
    shifted_logits = logits[:, :-1].reshape(-1, logits.size(-1)).float()
    shifted_labels = labels[:, 1:].reshape(-1)
    return F.cross_entropy(shifted_logits, shifted_labels, ignore_index=IGNORE_INDEX, reduction="sum")


class SFTTrainer:
    """One rank of a data-parallel DeepSpeed group fine-tuning a causal LM on conversations."""

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
        """Load the model, join the process group and build the DeepSpeed engine.

        Args:
            model_path: the embedded model's name, a local Hugging Face folder or a hub id
                (`rlaif.engines.models.resolve_model`).
            ds_config: from `rlaif.trainers.ds_config.build_ds_config`; it fixes the
                micro-batch size and gradient-accumulation steps of `train_step`.
            rank, world_size, master_addr, master_port: this rank's place in the group
                and rank 0's rendezvous address (`TrainerGroup` fills them in).
            gradient_checkpointing: recompute activations in backward to save memory.
            seed: torch's seed (DeepSpeed broadcasts rank 0's weights, so ranks agree anyway).
            max_len: conversations are cut to this many tokens.
            trust_remote_code: let transformers run the model folder's own code (``model.trust_remote_code``).
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # Resolved before joining the group, so a bad path fails fast instead of at rendezvous.
        model_path = str(resolve_model(model_path))
        D.init_process_group(rank, world_size, master_addr, master_port, D.default_backend())
        self.rank, self.world_size, self.max_len = rank, world_size, max_len
        torch.manual_seed(seed)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self.pad_token_id = D.pad_token_id(self.tokenizer)
        dtype = torch.bfloat16 if ds_config.get("bf16", {}).get("enabled") else torch.float32
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, trust_remote_code=trust_remote_code)
        if gradient_checkpointing:
            # Non-reentrant checkpointing works with frozen inputs and with ZeRO-3's parameter hooks.
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.engine = D.create_engine(model, ds_config)
        self.micro_batch_size = int(self.engine.train_micro_batch_size_per_gpu())
        self.grad_accum_steps = int(self.engine.gradient_accumulation_steps())
        self.zero_stage = D.zero_stage(self.engine)
        self.step = 0

    @property
    def examples_per_step(self) -> int:
        """This rank's share of the global batch: micro_batch_size x grad_accum_steps."""
        return self.micro_batch_size * self.grad_accum_steps

    def train_step(self, examples: Sequence[SFTExample]) -> dict[str, float]:
        """One optimizer step on this rank's `examples_per_step` examples; all ranks call it together.

        Returns metrics, identical on every rank: ``loss`` (token-mean over the
        global batch), ``tokens`` (global target tokens), ``lr`` (the rate this step
        used), ``grad_norm`` (global, before clipping), ``step_time_s``, ``step``.
        """
        if len(examples) != self.examples_per_step:
            raise ValueError(
                f"rank {self.rank}: train_step needs micro_batch_size x grad_accum_steps = "
                f"{self.examples_per_step} examples, got {len(examples)}"
            )
        started = time.perf_counter()
        tokenized = [tokenize_sft_example(self.tokenizer, ex, self.max_len) for ex in examples]
        (global_tokens,) = D.all_reduce_sums([sum(target_count(t) for t in tokenized)])
        # DeepSpeed divides each micro-batch loss by grad_accum_steps and averages gradients
        # over ranks; scaling by both over the global count leaves d(sum nll)/d(theta) / global_tokens.
        scale = self.world_size * self.grad_accum_steps / max(global_tokens, 1.0)
        lr = float(self.engine.get_lr()[0])
        self.engine.train()
        nll_total = 0.0
        for start in range(0, len(tokenized), self.micro_batch_size):
            batch = collate(tokenized[start : start + self.micro_batch_size], self.pad_token_id)
            nll = self._summed_nll(batch)
            self.engine.backward(nll * scale)
            self.engine.step()
            nll_total += float(nll.detach())
        self.step += 1
        (nll_global,) = D.all_reduce_sums([nll_total])
        return {
            "loss": nll_global / max(global_tokens, 1.0),
            "tokens": global_tokens,
            "lr": lr,
            "grad_norm": D.grad_norm(self.engine),
            "step_time_s": time.perf_counter() - started,
            "step": float(self.step),
        }

    def eval_loss(self, examples: Sequence[SFTExample]) -> float:
        """Token-mean loss over every rank's `examples` (shards may differ in size; all ranks call)."""
        tokenized = [tokenize_sft_example(self.tokenizer, ex, self.max_len) for ex in examples]
        nll_total, tokens = 0.0, 0
        self.engine.eval()
        with torch.no_grad():
            for chunk in D.lockstep_chunks(tokenized, self.micro_batch_size):
                # A rank out of examples still runs a forward: ZeRO-3 gathers parameters collectively.
                batch = collate(chunk or [_DUMMY], self.pad_token_id)
                nll_total += float(self._summed_nll(batch))
                tokens += sum(target_count(t) for t in chunk)
        self.engine.train()
        nll_global, tokens_global = D.all_reduce_sums([nll_total, tokens])
        return nll_global / max(tokens_global, 1.0)

    def save(self, path: str) -> None:
        """Write the model and tokenizer as a Hugging Face folder at `path` (all ranks call; rank 0 writes)."""
        D.save_hf_folder(self.engine.module, self.tokenizer, path, self.zero_stage, self.rank)

    def save_checkpoint(self, directory: str) -> None:
        """Save the full training state (all ranks call) for `load_checkpoint`."""
        D.save_engine_checkpoint(self.engine, directory, self.step)

    def load_checkpoint(self, directory: str) -> int:
        """Resume from the newest checkpoint under `directory`; return the optimizer step reached."""
        self.step = D.load_engine_checkpoint(self.engine, directory)
        return self.step

    def _summed_nll(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        device = self.engine.device
        out = self.engine(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            use_cache=False,
        )
        return summed_token_nll(out.logits, batch["labels"].to(device))


# Stands in for a missing micro-batch on a rank whose eval shard ran out: no targets.
_DUMMY = TokenizedExample(input_ids=[0, 0], labels=[IGNORE_INDEX, IGNORE_INDEX])
