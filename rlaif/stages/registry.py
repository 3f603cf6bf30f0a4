"""The stages `python -m rlaif.run` knows, by name, in pipeline order.

The names live in `rlaif.config.STAGE_NAMES`, so that config validation checks them without
importing the stages (and with them Ray and the engines); this module maps each to its code
and imports a stage's module only when the stage is looked up.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from rlaif.config import STAGE_NAMES
from rlaif.stages.pipeline import Stage

# name -> "module:function"
_STAGES = {
    "smoke": "rlaif.stages.smoke:smoke_stage",
    "sl_cai": "rlaif.stages.sl_cai:sl_cai_stage",
    "sft": "rlaif.stages.sft:sft_stage",
    "preferences": "rlaif.stages.preferences:preferences_stage",
    "reward_model": "rlaif.stages.reward_model:reward_model_stage",
    "rl_cai": "rlaif.stages.rl_cai:rl_cai_stage",
    "evaluate": "rlaif.stages.evaluate:evaluate_stage",
}
if tuple(_STAGES) != STAGE_NAMES:
    raise ImportError(
        f"rlaif.stages.registry: stages {tuple(_STAGES)} differ from rlaif.config.STAGE_NAMES {STAGE_NAMES}"
    )


class _Registry(Mapping[str, Stage]):
    """Imports a stage's module only when the stage is looked up."""

    def __getitem__(self, name: str) -> Stage:
        module, func = _STAGES[name].split(":")
        stage: Stage = getattr(importlib.import_module(module), func)
        return stage

    def __iter__(self) -> Iterator[str]:
        return iter(_STAGES)

    def __len__(self) -> int:
        return len(_STAGES)


STAGES = _Registry()
