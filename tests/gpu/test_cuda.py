"""What rlaif runs on a GPU without vLLM, Ray or DeepSpeed: the transformers engine in bf16,
the reward model's forward and backward in bf16, and the core losses on CUDA tensors.

Skipped where there is no CUDA device; run on a GPU machine with `pytest -m gpu tests/gpu`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlaif.core.advantages import gae, kl_penalty
from rlaif.core.losses import bradley_terry_loss
from rlaif.engines.base import EngineSpec, OptionRequest, SamplingParams
from rlaif.engines.hf_engine import TransformersEngine
from tests.gpu.conftest import needs_cuda

pytestmark = [pytest.mark.gpu, needs_cuda]

PROMPTS = ["How do I bake bread?", "Name three colours.", "What is 2 + 2?"]


@pytest.fixture(scope="module")
def engines(gpu_tiny_model: Path) -> tuple[TransformersEngine, TransformersEngine]:
    gpu = TransformersEngine(EngineSpec(str(gpu_tiny_model), backend="transformers", dtype="bfloat16", device="cuda"))
    cpu = TransformersEngine(EngineSpec(str(gpu_tiny_model), backend="transformers", dtype="float32", device="cpu"))
    return gpu, cpu


def test_bf16_engine_lives_on_the_gpu_in_bf16(engines: tuple[TransformersEngine, TransformersEngine]) -> None:
    gpu, _ = engines
    param = next(gpu.model.parameters())
    assert param.device.type == "cuda"
    assert param.dtype == torch.bfloat16


def test_bf16_greedy_generation_matches_fp32_cpu_start(
    engines: tuple[TransformersEngine, TransformersEngine],
) -> None:
    gpu, cpu = engines
    params = SamplingParams(temperature=0.0, max_new_tokens=8)
    on_gpu = gpu.generate(PROMPTS, params)
    on_cpu = cpu.generate(PROMPTS, params)
    for g, c in zip(on_gpu, on_cpu, strict=True):
        assert g.prompt_token_ids == c.prompt_token_ids
        gpu_ids, cpu_ids = g.completions[0].token_ids, c.completions[0].token_ids
        assert len(gpu_ids) > 0
        # bf16 rounding flips later near-ties; the first token of a peaked tiny model agrees, with its log-prob.
        assert gpu_ids[0] == cpu_ids[0]
        assert g.completions[0].logprobs[0] == pytest.approx(c.completions[0].logprobs[0], abs=0.1)
        assert all(lp <= 0.0 and lp == lp for lp in g.completions[0].logprobs)


def test_bf16_option_scores_match_fp32(engines: tuple[TransformersEngine, TransformersEngine]) -> None:
    gpu, cpu = engines
    requests = [OptionRequest(prompt=p, options=(" A", " B", " yes please")) for p in PROMPTS]
    for g, c in zip(gpu.score_options(requests), cpu.score_options(requests), strict=True):
        g_p, c_p = torch.tensor(g.logprobs).exp(), torch.tensor(c.logprobs).exp()
        assert g_p.sum().item() == pytest.approx(1.0, abs=1e-4)
        assert torch.allclose(g_p, c_p, atol=0.05), (g_p, c_p)


def test_update_weights_on_gpu_changes_outputs(gpu_tiny_model: Path) -> None:
    spec = EngineSpec(str(gpu_tiny_model), backend="transformers", dtype="bfloat16", device="cuda")
    engine = TransformersEngine(spec)
    params = SamplingParams(temperature=0.0, max_new_tokens=6)
    before = engine.generate(PROMPTS, params)
    # Weights arrive as fp32 CPU tensors (what a learner sends); the engine casts and moves them.
    shifted = {name: (t.float().cpu() * -1.0) for name, t in engine.model.state_dict().items() if "embed" in name}
    engine.update_weights(shifted.items(), version=3)
    after = engine.generate(PROMPTS, params)
    assert engine.policy_version == 3
    assert [g.completions[0].token_ids for g in before] != [g.completions[0].token_ids for g in after]


def test_reward_model_trains_in_bf16_on_gpu(gpu_tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    from rlaif.trainers.reward import RewardModel, right_padded

    tokenizer = AutoTokenizer.from_pretrained(gpu_tiny_model)
    model = RewardModel.from_pretrained(str(gpu_tiny_model), tokenizer.pad_token_id, torch.bfloat16).cuda()
    chosen = ["I can't help with that, but here is a safe alternative."] * 4
    rejected = ["Sure, here is exactly how to do the harmful thing."] * 4
    ids_c, mask_c = right_padded(tokenizer, chosen, 64, tokenizer.pad_token_id)
    ids_r, mask_r = right_padded(tokenizer, rejected, 64, tokenizer.pad_token_id)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        r_c = model(ids_c.cuda(), mask_c.cuda())
        r_r = model(ids_r.cuda(), mask_r.cuda())
        assert r_c.dtype == torch.float32 and r_c.device.type == "cuda"
        loss = bradley_terry_loss(r_c, r_r, 1.0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(0.6931, abs=0.05)  # small fresh head: every reward near 0, p near 0.5
    assert losses[-1] < 0.2 * losses[0]


def test_core_ops_agree_on_cuda_and_cpu() -> None:
    torch.manual_seed(0)
    logprobs, ref = torch.randn(4, 16), torch.randn(4, 16)
    rewards, values = torch.randn(4, 16), torch.randn(4, 16)
    mask = torch.ones(4, 16)
    mask[:, 12:] = 0
    for kind in ("k1", "k2", "k3"):
        cpu_kl = kl_penalty(logprobs, ref, kind)
        gpu_kl = kl_penalty(logprobs.cuda(), ref.cuda(), kind).cpu()
        assert torch.allclose(cpu_kl, gpu_kl, atol=1e-5)
    cpu_gae = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    gpu_gae = gae(rewards.cuda(), values.cuda(), mask.cuda(), gamma=1.0, lam=0.95)
    for a, b in zip(cpu_gae, gpu_gae, strict=True):
        assert torch.allclose(a, b.cpu(), atol=1e-5)
