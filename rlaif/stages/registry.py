"""The stages `python -m rlaif.run` knows, by name, in pipeline order.

Names are plain strings here so that config validation can check them without
importing the stages (and with them Ray and the engines).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

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
STAGE_NAMES = tuple(_STAGES)


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
