"""rlaif: Constitutional AI (SL-CAI and RL-CAI) on Ray, vLLM and DeepSpeed.

Layers import downward only: core <- engines <- trainers <- actors <- stages <- run.
This file stays light so that ``import rlaif.core`` is instant.
"""

__version__ = "0.1.0"
