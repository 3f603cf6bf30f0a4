"""SFT and reward trainers as DeepSpeed groups of Ray actors (real gloo, real ZeRO) on tiny Llamas.

The slow tests start groups on the session's 2-CPU Ray cluster, one group at a
time; the first one to run compiles DeepSpeed's CPU ops (about two minutes, once,
cached in TORCH_EXTENSIONS_DIR).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import pytest
import ray
import torch

from rlaif.actors.cluster import RoleGroupSpec, reserve
from rlaif.actors.pool import ActorPool
from rlaif.actors.trainer_group import TrainerGroup, TrainerGroupError
from rlaif.engines.base import Message
from rlaif.trainers.ds_config import ADAM_BETAS, CPU_ADAM_KEY, build_ds_config
from rlaif.trainers.reward import RewardPair, RewardTrainer, render_conversation
from rlaif.trainers.sft import SFTExample, SFTTrainer, collate, summed_token_nll, tokenize_sft_example

LR = 3e-3
# Replies of different lengths, so that the two ranks' shards hold different token counts.
SFT_EXAMPLES = [
    SFTExample("add-1", (Message("user", "What is 1 plus 1?"), Message("assistant", "2."))),
    SFTExample("add-2", (Message("user", "What is 2 plus 2?"), Message("assistant", "2 plus 2 is 4, of course."))),
    SFTExample(
        "colour",
        (Message("user", "Name a colour."), Message("assistant", "Blue, the colour of a clear sky at noon in June.")),
    ),
    SFTExample("hi", (Message("user", "Say hi."), Message("assistant", "Hi!"))),
]


def sft_config(zero_stage: int, world_size: int) -> dict[str, Any]:
    return build_ds_config(
        zero_stage=zero_stage,
        micro_batch_size=2,
        grad_accum_steps=1,
        world_size=world_size,
        lr=LR,
        weight_decay=0.0,
        grad_clip=1.0,
        bf16=False,
        offload_optimizer=True,
        warmup_steps=0,
    )


def token_mean_loss(model: Any, tokenizer: Any, examples: list[SFTExample]) -> torch.Tensor:
    """The SFT loss of `examples` computed in-process: summed target NLL over all target tokens."""
    tokenized = [tokenize_sft_example(tokenizer, ex, 256) for ex in examples]
    batch = collate(tokenized, tokenizer.pad_token_id)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = int((batch["labels"][:, 1:] != -100).sum())
    return summed_token_nll(logits, batch["labels"]) / targets


def reference_first_step(model_path: Path, examples: list[SFTExample]) -> tuple[float, float]:
    """Plain torch on one process: the gradient norm of the global token-mean loss, and the loss
    after one AdamW step with that gradient clipped to norm 1."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=ADAM_BETAS, eps=1e-8, weight_decay=0.0)
    token_mean_loss(model, tokenizer, examples).backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
    optimizer.step()
    with torch.no_grad():
        return grad_norm, float(token_mean_loss(model, tokenizer, examples))


def _without_time(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k != "step_time_s"}


def test_ds_config_batch_arithmetic_and_validation() -> None:
    config = build_ds_config(3, 4, 2, 3, 1e-5, 0.1, 1.0, False, True, 5)
    assert config["train_batch_size"] == 4 * 2 * 3
    assert config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert config["scheduler"]["params"]["warmup_num_steps"] == 5
    with pytest.raises(ValueError, match="zero_stage"):
        build_ds_config(4, 4, 2, 3, 1e-5, 0.1, 1.0, False, True, 5)
    with pytest.raises(ValueError, match="micro_batch_size"):
        build_ds_config(2, 0, 2, 3, 1e-5, 0.1, 1.0, False, True, 5)
    with pytest.raises(ValueError, match="offload_optimizer needs zero_stage"):
        build_ds_config(0, 4, 2, 3, 1e-5, 0.1, 1.0, False, True, 5)
    with pytest.raises(ValueError, match="lr"):
        build_ds_config(2, 4, 2, 3, 0.0, 0.1, 1.0, False, True, 5)

    # One fp32 rank has nothing to shard: ZeRO stage 0, with CPU Adam (and its clipping) built by rlaif.
    single = build_ds_config(2, 4, 2, 1, 1e-5, 0.1, 0.5, False, True, 5)
    assert single["zero_optimization"] == {"stage": 0} and "optimizer" not in single
    adam = {"lr": 1e-5, "betas": list(ADAM_BETAS), "eps": 1e-8, "weight_decay": 0.1, "grad_clip": 0.5}
    assert single[CPU_ADAM_KEY] == adam
    assert single["gradient_clipping"] == 0.0 and single["train_batch_size"] == 8
    assert build_ds_config(3, 4, 2, 1, 1e-5, 0.1, 1.0, False, True, 5)["zero_optimization"]["stage"] == 3


def test_gloo_ranks_join_without_deepspeeds_shm_comm_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """When `init_process_group` hands over to DeepSpeed, DeepSpeed's `build_shm_op` builds nothing.

    DeepSpeed is not started: its `init_distributed` is replaced by a probe that asks
    `build_shm_op` what the torch backend would get, and the op's builder by one that fails
    the test instead of compiling.
    """
    import deepspeed
    import torch.distributed as dist
    from deepspeed.accelerator import get_accelerator
    from deepspeed.comm.torch import build_shm_op

    from rlaif.trainers.distributed import find_free_port, init_process_group

    builder = get_accelerator().get_op_builder("ShareMemCommBuilder")
    if builder is not None:
        monkeypatch.setattr(builder, "load", lambda *_, **__: pytest.fail("DeepSpeed built the shm comm op"))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "")  # init_process_group sets them; the monkeypatch puts them back
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    shm_ops: list[object] = []
    monkeypatch.setattr(deepspeed, "init_distributed", lambda **_: shm_ops.append(build_shm_op()))
    init_process_group(0, 1, "127.0.0.1", find_free_port(), "gloo")
    assert shm_ops == [None]


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_one_rank_runs_as_zero0_cpu_adam_like_plain_torch_and_resumes(tiny_model: Path, tmp_path: Path) -> None:
    # Two micro-batches of 2 accumulated into one step of all 4 examples on a single rank.
    config = build_ds_config(2, 2, 2, 1, LR, 0.0, 1.0, False, True, 0)
    group = TrainerGroup(
        SFTTrainer,
        RoleGroupSpec("sft", num_workers=1, cpus_per_worker=1, gpus_per_worker=0),
        {"model_path": str(tiny_model), "ds_config": config, "max_len": 256},
    )
    try:
        history = [group.run("train_step", [(SFT_EXAMPLES,)])[0] for _ in range(2)]
        # The norm before clipping and the clipped AdamW update are plain torch's.
        grad_norm, second_loss = reference_first_step(tiny_model, SFT_EXAMPLES)
        assert history[0]["grad_norm"] == pytest.approx(grad_norm, rel=1e-4)
        assert history[1]["loss"] == pytest.approx(second_loss, rel=1e-4)
        group.run_all("save_checkpoint", str(tmp_path / "ckpt"))
        third = group.run("train_step", [(SFT_EXAMPLES,)])[0]["loss"]
        assert group.run_all("load_checkpoint", str(tmp_path / "ckpt")) == [2]
        assert group.run("train_step", [(SFT_EXAMPLES,)])[0]["loss"] == pytest.approx(third, rel=1e-5)
    finally:
        group.shutdown()


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_sft_group_zero2_learns_saves_and_resumes(tiny_model: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    group = TrainerGroup(
        SFTTrainer,
        RoleGroupSpec("sft", num_workers=2, cpus_per_worker=1, gpus_per_worker=0),
        {"model_path": str(tiny_model), "ds_config": sft_config(2, 2), "max_len": 256},
    )
    try:
        shards = [(shard,) for shard in group.shard(SFT_EXAMPLES)]
        history = [group.run("train_step", shards) for _ in range(8)]
        # Every rank reports the same global metrics (its own wall time aside).
        assert all(_without_time(step[0]) == _without_time(step[1]) for step in history)
        losses = [step[0]["loss"] for step in history]
        assert losses[-1] < 0.4 * losses[0], losses
        assert history[0][0]["tokens"] == history[-1][0]["tokens"] > 0

        # The same numbers as one process on the whole batch: DeepSpeed's averaging over ranks and
        # our scaling by the global token count compose to the gradient of the global token mean
        # (the norm checks its scale, which Adam's first step and clipping would hide).
        grad_norm, second_loss = reference_first_step(tiny_model, SFT_EXAMPLES)
        assert history[0][0]["grad_norm"] == pytest.approx(grad_norm, rel=1e-4)
        assert losses[1] == pytest.approx(second_loss, rel=1e-4)

        eval_loss = group.run_all("eval_loss", SFT_EXAMPLES[:3])[0]
        group.run_all("save", str(tmp_path / "sft-model"))
        saved = AutoModelForCausalLM.from_pretrained(tmp_path / "sft-model", dtype=torch.float32)
        initial = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
        assert any(not torch.equal(a, b) for a, b in zip(saved.parameters(), initial.parameters(), strict=True))
        # The folder holds the trained weights: it reproduces the group's evaluation loss.
        tokenizer = AutoTokenizer.from_pretrained(tmp_path / "sft-model")
        with torch.no_grad():
            assert float(token_mean_loss(saved, tokenizer, SFT_EXAMPLES[:3])) == pytest.approx(eval_loss, rel=1e-4)

        # Resuming from a checkpoint replays the next step exactly.
        group.run_all("save_checkpoint", str(tmp_path / "ckpt"))
        ninth = group.run("train_step", shards)[0]["loss"]
        assert group.run_all("load_checkpoint", str(tmp_path / "ckpt")) == [8, 8]
        assert group.run("train_step", shards)[0]["loss"] == pytest.approx(ninth, rel=1e-5)
    finally:
        group.shutdown()


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_sft_group_zero3_save_gathers_whole_weights(tiny_model: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    group = TrainerGroup(
        SFTTrainer,
        RoleGroupSpec("sft-z3", num_workers=2, cpus_per_worker=1, gpus_per_worker=0),
        {"model_path": str(tiny_model), "ds_config": sft_config(3, 2), "max_len": 256},
    )
    try:
        shards = [(shard,) for shard in group.shard(SFT_EXAMPLES)]
        first, second = (group.run("train_step", shards)[0]["loss"] for _ in range(2))
        assert second < first
        # Uneven evaluation shards (3 and 1 examples): ranks still run forwards in lockstep.
        uneven = group.shard(SFT_EXAMPLES[:3], drop_remainder=False)
        assert [len(s) for s in uneven] == [2, 1]
        assert len(set(group.run("eval_loss", [(s,) for s in uneven]))) == 1
        group.run_all("save", str(tmp_path / "z3-model"))
        # Each rank writes and reads back its own shards of weights and optimizer state.
        group.run_all("save_checkpoint", str(tmp_path / "z3-ckpt"))
        assert group.run_all("load_checkpoint", str(tmp_path / "z3-ckpt")) == [2, 2]
    finally:
        group.shutdown()
    saved = load_file(str(tmp_path / "z3-model" / "model.safetensors"))
    initial = load_file(str(tiny_model / "model.safetensors"))
    # ZeRO-3 holds 1/world_size of each tensor per rank; the folder has them whole.
    assert {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in initial.items()}
    assert any(not torch.equal(saved[k], initial[k]) for k in initial)


def tiny_reward_backbone(dest: Path, tokenizer_dir: Path) -> Path:
    """A tiny Llama with the usual 0.02 init. The shared tiny model's wide init (built for
    peaked generation) saturates attention, and its last-token states barely depend on the text."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=0.02,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "paper",
    "window",
    "music",
    "garden",
    "yellow",
    "quiet",
    "table",
    "summer",
    "bridge",
    "candle",
    "forest",
]


def preference_pairs(n: int, seed: int) -> list[RewardPair]:
    """Responses with the word "golden" are preferred (soft label 0.8); its position varies, and so
    does which side it is on, so neither position nor length gives the answer away."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        good = rng.sample(WORDS, 5)
        good.insert(rng.randrange(6), "golden")
        bad = rng.sample(WORDS, 6)
        prompt = (Message("user", f"Say something, please ({seed}-{i})."),)
        if rng.random() < 0.5:
            pairs.append(RewardPair(f"{seed}-{i}", prompt, " ".join(good), " ".join(bad), 0.8))
        else:
            pairs.append(RewardPair(f"{seed}-{i}", prompt, " ".join(bad), " ".join(good), 0.2))
    return pairs


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_reward_group_learns_a_soft_preference(embedded_model: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    backbone = tiny_reward_backbone(tmp_path / "rm-backbone", embedded_model)
    config = build_ds_config(2, 4, 1, 2, LR, 0.0, 1.0, False, True, 0)
    group = TrainerGroup(
        RewardTrainer,
        RoleGroupSpec("reward", num_workers=2, cpus_per_worker=1, gpus_per_worker=0),
        {"model_path": str(backbone), "ds_config": config, "max_len": 128},
    )
    train, held_out = preference_pairs(8 * 24, seed=0), preference_pairs(40, seed=1)
    try:
        before = group.run("evaluate", [(s,) for s in group.shard(held_out, drop_remainder=False)])[0]
        losses = [
            group.run("train_step", [(s,) for s in group.shard(train[i : i + 8])])[0]["loss"]
            for i in range(0, len(train), 8)
        ]
        after = group.run("evaluate", [(s,) for s in group.shard(held_out, drop_remainder=False)])[0]
        # The small fresh head (RewardModel.init_head) starts every pair near p = 0.5, loss near
        # log 2; the floor for labels of 0.8 / 0.2 is their entropy, 0.500.
        assert before["loss"] == pytest.approx(0.6931, abs=0.02)
        assert sum(losses[-4:]) / 4 < losses[0] - 0.1, losses
        assert after["accuracy"] > 0.75, after
        assert after["loss"] < before["loss"] - 0.1, after

        texts = [
            render_conversation(AutoTokenizer.from_pretrained(backbone), p.prompt_messages, p.response_a)
            for p in held_out[:4]
        ]
        scores = group.run_all("score", texts)
        assert scores[0] == pytest.approx(scores[1], abs=1e-6)
        group.run_all("save", str(tmp_path / "rm"))
    finally:
        group.shutdown()
    # The saved folder is a standard sequence classifier that scores exactly as the trainer did.
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm", dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "rm")
    assert saved.config.num_labels == 1 and saved.config.pad_token_id == tokenizer.pad_token_id
    with torch.no_grad():
        reloaded = [float(saved(**tokenizer(t, return_tensors="pt", add_special_tokens=False)).logits) for t in texts]
    assert reloaded == pytest.approx(scores[0], abs=1e-4)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_a_failing_rank_fails_the_group_and_frees_its_resources(tmp_path: Path) -> None:
    import ray

    spec = RoleGroupSpec("broken", num_workers=2, cpus_per_worker=1, gpus_per_worker=0)
    args = {"model_path": str(tmp_path / "missing"), "ds_config": sft_config(2, 2)}
    with pytest.raises(TrainerGroupError, match=r"rank \d failed in start"):
        TrainerGroup(SFTTrainer, spec, args)
    with pytest.raises(ValueError, match="must not set"):
        TrainerGroup(SFTTrainer, spec, {**args, "rank": 0})
    # The failed group's placement group is gone: both CPUs can be reserved again.
    ray.util.remove_placement_group(reserve(spec, timeout_s=60))


# Ray workers cannot import test modules: ship this module's classes (MallocProbe) by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class MallocProbe:
    """A stand-in trainer rank that measures how its malloc treats freed memory."""

    def __init__(self, rank: int, world_size: int, master_addr: str, master_port: int) -> None:
        self.rank = rank

    def refaults(self) -> int:
        """Page faults of filling four 64 MB tensors, one after another, once a dozen came and went."""
        import resource

        for _ in range(12):  # past glibc's top pad: later blocks land on pages touched before
            torch.ones(16 << 20)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(4):
            torch.ones(16 << 20)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.usefixtures("ray_cluster")
def test_trainer_ranks_keep_freed_memory_when_told_to() -> None:
    """'retain' reuses freed 64 MB blocks; glibc's defaults give each back and fault its 16 K pages again."""
    spec = RoleGroupSpec("probe", num_workers=1, cpus_per_worker=0.5, gpus_per_worker=0)
    faults = {}
    for malloc in ("retain", "system"):
        group = TrainerGroup(MallocProbe, spec, {}, malloc=malloc)
        try:
            (faults[malloc],) = group.run_all("refaults")
        finally:
            group.shutdown()
    assert faults["retain"] < 1000, faults
    assert faults["system"] > 4 * 15000, faults
    with pytest.raises(ValueError, match="trainer_malloc"):
        TrainerGroup(MallocProbe, spec, {}, malloc="jemalloc")


class StandIn:
    """A stand-in pool actor or trainer rank that starts at once, or fails to start when told to."""

    def __init__(
        self, fail: bool, rank: int = 0, world_size: int = 1, master_addr: str = "", master_port: int = 0
    ) -> None:
        if fail:
            raise RuntimeError("this stand-in was told to fail")

    def ping(self) -> str:
        return "up"


@pytest.mark.usefixtures("ray_cluster")
def test_roles_started_without_waiting_fail_in_wait_ready_and_free_their_resources() -> None:
    pool_spec = RoleGroupSpec("standin-pool", num_workers=1, cpus_per_worker=0.5, gpus_per_worker=0)
    group_spec = RoleGroupSpec("standin-group", num_workers=2, cpus_per_worker=0.5, gpus_per_worker=0)
    # Both requested before either is waited for; waiting again is a no-op, and so is a second shutdown.
    pool = ActorPool(StandIn, pool_spec, (False,), {}, wait=False)
    group = TrainerGroup(StandIn, group_spec, {"fail": False}, wait=False)
    try:
        for role in (pool, group, pool, group):
            role.wait_ready()
        assert pool.call_all("ping") == ["up"] and group.run_all("ping") == ["up", "up"]
    finally:
        pool.shutdown()
        group.shutdown()
        pool.shutdown()
    # A constructor's failure surfaces in wait_ready, raised as a waiting constructor raises it.
    pool = ActorPool(StandIn, pool_spec, (True,), {}, wait=False)
    with pytest.raises(ray.exceptions.RayActorError, match="told to fail"):
        pool.wait_ready()
    group = TrainerGroup(StandIn, group_spec, {"fail": True}, wait=False)
    with pytest.raises(TrainerGroupError, match=r"standin-group: rank \d failed in start"):
        group.wait_ready()
    with pytest.raises(ray.exceptions.RayActorError, match="told to fail"):
        ActorPool(StandIn, pool_spec, (True,), {})
    # Every failed role's placement group is gone: both CPUs can be reserved again.
    ray.util.remove_placement_group(reserve(RoleGroupSpec("all", 1, 2, 0), timeout_s=60))
