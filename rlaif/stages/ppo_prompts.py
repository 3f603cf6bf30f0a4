"""RL-CAI's training prompts: iteration k's batch as a pure function of k, so a resumed run continues the sequence.

Two sources:

- `TrainPrompts` (the default): sl_cai's red-team prompts, plus ``ppo.helpful_fraction``
  helpfulness and ``ppo.sensitive_fraction`` sensitive-but-benign ones, each minus its held-out
  split (the evaluate stage's alone), read in reshuffled passes;
- `FilePrompts` (``ppo.prompt_file``): one file's prompts in file order, iteration k taking
  rows ``[k*B, (k+1)*B)`` with B = ``ppo.prompts_per_iteration``, wrapping around at the end.
  The user chose the file, so no held-out split is taken from it; this is how two trainers
  can be fed the very same batches (bench/ppo.py).

    batch = train_prompts(run)   # batch(k) -> list[PromptRecord]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rlaif.config import RunConfig
from rlaif.core.prompts import DatasetError, PromptRecord, load_prompts, split_train_heldout
from rlaif.core.schedule import cycled_batches, in_order_batch


def train_prompts(run: RunConfig) -> Callable[[int], list[PromptRecord]]:
    """Iteration k's prompts: ``ppo.prompt_file`` in file order if set, else the red-team/helpful/sensitive mix."""
    cfg = run.ppo
    if cfg.prompt_file:
        return FilePrompts.load(cfg.prompt_file, cfg.prompts_per_iteration).batch
    mix = TrainPrompts.load(run)
    return lambda iteration: mix.batch(iteration, run.seed)


@dataclass(frozen=True)
class TrainPrompts:
    """The training splits of the red-team, helpfulness and sensitive prompts, and how many of each per iteration."""

    red_team: tuple[PromptRecord, ...]
    helpful: tuple[PromptRecord, ...]
    n_red_team: int
    n_helpful: int
    sensitive: tuple[PromptRecord, ...] = ()
    n_sensitive: int = 0

    @classmethod
    def load(cls, run: RunConfig) -> TrainPrompts:
        """sl_cai's prompt sources minus its held-out split, which only the evaluate stage sees."""
        s, cfg = run.sl_cai, run.ppo
        red_team, _ = split_train_heldout(
            load_prompts(s.red_team, data_dir=s.red_team_data_dir), s.heldout_fraction, run.seed
        )
        n_helpful = round(cfg.helpful_fraction * cfg.prompts_per_iteration)
        n_sensitive = round(cfg.sensitive_fraction * cfg.prompts_per_iteration)
        helpful: tuple[PromptRecord, ...] = ()
        sensitive: tuple[PromptRecord, ...] = ()
        if n_helpful:
            all_helpful = load_prompts(s.helpful, data_dir=s.helpful_data_dir)
            helpful, _ = split_train_heldout(all_helpful, s.heldout_fraction, run.seed)
        if n_sensitive:
            all_sensitive = load_prompts(s.sensitive, data_dir=s.sensitive_data_dir)
            sensitive, _ = split_train_heldout(all_sensitive, s.heldout_fraction, run.seed)
        n_red_team = cfg.prompts_per_iteration - n_helpful - n_sensitive
        return cls(red_team, helpful, n_red_team, n_helpful, sensitive, n_sensitive)

    def batch(self, iteration: int, seed: int) -> list[PromptRecord]:
        """Iteration `iteration`'s prompts: reshuffled passes over each pool, a pure function of the index."""
        chosen: list[PromptRecord] = []
        pools = ((self.red_team, self.n_red_team), (self.helpful, self.n_helpful), (self.sensitive, self.n_sensitive))
        for pool, n in pools:
            if n:
                chosen += cycled_batches(pool, n, iteration + 1, seed)[iteration]
        return chosen


@dataclass(frozen=True)
class FilePrompts:
    """``ppo.prompt_file``'s prompts in file order, `per_iteration` to a batch, wrapping around at the end."""

    records: tuple[PromptRecord, ...]
    per_iteration: int

    @classmethod
    def load(cls, path: str, per_iteration: int) -> FilePrompts:
        return cls(load_prompt_file(path), per_iteration)

    def batch(self, iteration: int) -> list[PromptRecord]:
        """Records ``[iteration*B, (iteration+1)*B)`` modulo the file's length (B = `per_iteration`)."""
        return in_order_batch(self.records, self.per_iteration, iteration)


def load_prompt_file(path: str) -> tuple[PromptRecord, ...]:
    """Every record of ``ppo.prompt_file``, in file order (`rlaif.core.prompts.load_prompts` reads it).

    As everywhere, a line that repeats an earlier prompt without an id of its own is the same
    record and is read once. A missing, unreadable or empty file raises `DatasetError` naming
    the field and the file.
    """
    if not path.startswith("builtin:") and not Path(path).is_file():
        raise DatasetError(f"ppo.prompt_file: {path}: no such prompt file")
    try:
        return load_prompts(path)
    except DatasetError as e:
        raise DatasetError(f"ppo.prompt_file: {e}") from e
