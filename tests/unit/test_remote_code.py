"""`model.trust_remote_code` is honoured where the trainers and the reward scorer load models.

The folder here carries its own model code (``auto_map`` in config.json), as a hub model that
needs ``trust_remote_code`` does: without the flag loading must fail, with it the folder's class
is what gets built.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlaif.actors.reward_scorer import RewardScorer
from rlaif.trainers.reward import RewardModel

CUSTOM_CODE = """
from transformers import AutoModel, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, LlamaModel


class CustomLlamaConfig(LlamaConfig):
    model_type = "rlaif-custom-llama"


class CustomLlamaModel(LlamaModel):
    config_class = CustomLlamaConfig


# The sequence-classification class builds its trunk through AutoModel.
AutoModel.register(CustomLlamaConfig, CustomLlamaModel, exist_ok=True)


class CustomLlamaForCausalLM(LlamaForCausalLM):
    config_class = CustomLlamaConfig


class CustomLlamaForSequenceClassification(LlamaForSequenceClassification):
    config_class = CustomLlamaConfig
"""


@pytest.fixture(scope="module")
def custom_code_model(embedded_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("remote-code") / "custom-llama"
    tokenizer = AutoTokenizer.from_pretrained(embedded_model)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / "custom_llama.py").write_text(CUSTOM_CODE)
    meta = json.loads((folder / "config.json").read_text())
    meta.update(
        model_type="rlaif-custom-llama",
        architectures=["CustomLlamaForCausalLM"],
        auto_map={
            "AutoConfig": "custom_llama.CustomLlamaConfig",
            "AutoModelForCausalLM": "custom_llama.CustomLlamaForCausalLM",
            "AutoModelForSequenceClassification": "custom_llama.CustomLlamaForSequenceClassification",
        },
    )
    (folder / "config.json").write_text(json.dumps(meta))
    return folder


def test_reward_model_loads_custom_code_only_when_trusted(custom_code_model: Path) -> None:
    with pytest.raises(ValueError, match="trust_remote_code"):
        RewardModel.from_pretrained(str(custom_code_model), 0, torch.float32)
    model = RewardModel.from_pretrained(str(custom_code_model), 0, torch.float32, trust_remote_code=True)
    assert type(model.model).__name__ == "CustomLlamaForSequenceClassification"


def test_reward_scorer_passes_the_flag_through(custom_code_model: Path) -> None:
    with pytest.raises(ValueError, match="trust_remote_code"):
        RewardScorer(str(custom_code_model))
    scorer = RewardScorer(str(custom_code_model), trust_remote_code=True)
    assert type(scorer.model.model).__name__ == "CustomLlamaForSequenceClassification"


def test_learner_args_carry_the_run_s_setting(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from rlaif.config import register_configs, to_run_config
    from rlaif.stages.ppo_roles import ModelPaths, learner_args

    paths = ModelPaths(tmp_path / "policy", tmp_path / "rm")
    register_configs()
    conf = Path(__file__).resolve().parents[2] / "conf"
    for value in (False, True):
        with initialize_config_dir(config_dir=str(conf), version_base=None):
            run = to_run_config(compose(config_name="config", overrides=[f"model.trust_remote_code={value}"]))
        assert learner_args(run, paths, 1)["trust_remote_code"] is value


def test_every_trainer_and_stage_takes_the_flag() -> None:
    """Each trainer accepts the flag, and the stages that build their arguments pass the run's setting."""
    import inspect

    from rlaif.stages import eval_measures, ppo_roles, reward_model, sft
    from rlaif.trainers.ppo import PPOTrainer
    from rlaif.trainers.reward import RewardTrainer
    from rlaif.trainers.sft import SFTTrainer

    for cls in (SFTTrainer, RewardTrainer, PPOTrainer, RewardScorer):
        assert inspect.signature(cls).parameters["trust_remote_code"].default is False, cls
    for module, function in (
        (sft, "_start_group"),
        (reward_model, "start_group"),
        (ppo_roles, "_make_scorer"),
        (eval_measures, "score_responses"),
    ):
        source = inspect.getsource(getattr(module, function))
        assert "run.model.trust_remote_code" in source, f"{module.__name__}.{function} drops trust_remote_code"
